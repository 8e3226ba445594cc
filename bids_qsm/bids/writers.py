"""Atomic writers, derivative file names and the derivatives' top-level files.

Every output is first written to a hidden temporary file in the destination folder and then
renamed over the final name (``os.replace`` is atomic on POSIX), so a killed run never leaves
a truncated file under a final name and parallel jobs writing the same file (e.g.
``dataset_description.json``) never interleave. Re-writing identical content is harmless, so
re-runs over the same OUTPUT_DIR are idempotent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nibabel as nib

from bids_qsm import __version__
from bids_qsm.errors import OutputError

CODE_URL = "https://github.com/bids-qsm/bids-qsm"
BIDS_VERSION = "1.10.0"

#: Order of the BIDS entities in file names (BIDS specification, appendix "Entity table").
ENTITY_ORDER: tuple[str, ...] = (
    "sub",
    "ses",
    "task",
    "acq",
    "ce",
    "rec",
    "dir",
    "run",
    "echo",
    "flip",
    "inv",
    "mt",
    "part",
    "chunk",
    "space",
    "seg",
    "res",
    "den",
    "label",
    "desc",
)


#: ``.<final name>.<host>-<pid>.<random>.tmp<ext>``: the writer of a temporary file.
_TMP_WRITER = re.compile(r"\.([A-Za-z0-9_-]+)-(\d+)\.[A-Za-z0-9_]+\.tmp")
#: Temporaries of another host are taken as stale after this long (s).
STALE_AFTER_S = 24 * 3600.0


def _writer_tag() -> str:
    return f"{socket.gethostname().replace('.', '_') or 'host'}-{os.getpid()}"


def is_stale_temporary(path: Path) -> bool:
    """True for a temporary file left by a killed writer (safe to delete).

    Temporaries carry the writer's host and process id: one of this host whose process is
    gone is stale; one of another host (a parallel job on a shared file system) only after
    :data:`STALE_AFTER_S`; one without a writer tag (older versions) always.
    """
    m = _TMP_WRITER.search(Path(path).name)
    if m is None:
        return True
    host, pid = m.group(1), int(m.group(2))
    if host == _writer_tag().rsplit("-", 1)[0]:
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False
    try:
        return time.time() - Path(path).lstat().st_mtime > STALE_AFTER_S
    except OSError:
        return False


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``.

    The temporary name keeps the extension (e.g. ``.nii.gz``) so that writers that infer the
    format from it work. On error the temporary file is removed and the final name untouched.
    Failing to create the folder or to write raises :class:`OutputError` (exit 73).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create folder: {exc.strerror or exc}", path.parent) from exc
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{path.name}.{_writer_tag()}.", suffix=f".tmp{suffix}", dir=path.parent
        )
    except OSError as exc:
        raise OutputError(f"cannot write file: {exc.strerror or exc}", path) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write file: {exc.strerror or exc}", path) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_output_folders(output_dir: Path, subjects: Iterable[str]) -> None:
    """Fail early (73) when an existing ``sub-<l>[/ses-<l>]/anat`` output folder is unwritable.

    Otherwise the run would only find out when writing the derivatives, after the processing.
    """
    for subject in subjects:
        sub_dir = Path(output_dir) / f"sub-{subject}"
        for folder in [sub_dir / "anat", *sorted(sub_dir.glob("ses-*/anat"))]:
            if not folder.exists() and not folder.is_symlink():
                continue
            if not folder.is_dir():
                raise OutputError("output folder is not a folder", folder)
            try:
                with tempfile.TemporaryFile(dir=folder):
                    pass
            except OSError as exc:
                raise OutputError(
                    f"output folder is not writable ({exc.strerror or exc})", folder
                ) from exc


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any, sort_keys: bool = True) -> Path:
    """Write ``data`` as indented JSON (keys sorted unless ``sort_keys=False``, a final
    newline) atomically: the one JSON writer of the package."""
    text = json.dumps(data, indent=2, sort_keys=sort_keys, default=_json_default) + "\n"
    return atomic_write_text(path, text)


def atomic_save_nifti(img: nib.spatialimages.SpatialImage, path: Path) -> Path:
    """Save a nibabel image to ``path`` (``.nii`` or ``.nii.gz``) atomically."""
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


def atomic_write_with(path: Path, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` then rename ``tmp_path`` to ``path`` (temp removed on error)."""
    with atomic_path(Path(path)) as tmp:
        writer(tmp)
    return Path(path)


def atomic_copy(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` atomically (no-op when both name the same file)."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and os.path.samefile(src, dst):
        return dst
    return atomic_write_with(dst, lambda tmp: shutil.copyfile(src, tmp))


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# ---------------------------------------------------------------------- derivative names
def parse_entities(filename: str) -> dict[str, str]:
    """Entities of a BIDS file name: ``sub-01_ses-1_echo-2_MEGRE.nii.gz`` -> {sub, ses, echo}.

    The suffix is returned under ``"suffix"`` and the extension under ``"extension"``.
    """
    name = Path(filename).name
    stem, dot, ext = name.partition(".")
    parts = stem.split("_")
    out: dict[str, str] = {}
    for part in parts[:-1]:
        key, sep, value = part.partition("-")
        if sep:
            out[key] = value
    last = parts[-1]
    if "-" in last:
        key, _, value = last.partition("-")
        out[key] = value
    else:
        out["suffix"] = last
    out["extension"] = dot + ext if dot else ""
    return out


def build_name(
    entities: Mapping[str, str | int | None],
    suffix: str,
    extension: str = ".nii.gz",
) -> str:
    """File name from entities in BIDS order, e.g. ``sub-01_ses-1_seg-AAL3_dseg.nii.gz``.

    Unknown entity keys are an error (they would produce non-BIDS names).
    """
    unknown = set(entities) - set(ENTITY_ORDER)
    if unknown:
        raise ValueError(f"unknown BIDS entities: {sorted(unknown)}")
    parts = [f"{k}-{entities[k]}" for k in ENTITY_ORDER if entities.get(k) not in (None, "")]
    if not extension.startswith(".") and extension:
        extension = "." + extension
    return "_".join([*parts, suffix]) + extension


def derivative_path(
    output_dir: Path,
    source_prefix: str,
    suffix: str,
    extension: str = ".nii.gz",
    datatype: str = "anat",
    **entities: str | int | None,
) -> Path:
    """Where a derivative of one acquisition goes, keeping the source entities.

    ``source_prefix`` is :attr:`GreAcquisition.source_prefix` (e.g. ``sub-01_ses-1_run-1``);
    ``entities`` adds derivative entities (``space``, ``seg``, ``label``, ``desc``...).

    >>> derivative_path(Path("out"), "sub-01_ses-1", "mask", desc="brain").as_posix()
    'out/sub-01/ses-1/anat/sub-01_ses-1_desc-brain_mask.nii.gz'
    """
    base = parse_entities(source_prefix + "_x")
    base.pop("suffix", None)
    base.pop("extension", None)
    merged: dict[str, str | int | None] = {**base, **entities}
    if "sub" not in merged:
        raise ValueError(f"source prefix without subject: {source_prefix!r}")
    folder = Path(output_dir) / f"sub-{merged['sub']}"
    if merged.get("ses"):
        folder = folder / f"ses-{merged['ses']}"
    return folder / datatype / build_name(merged, suffix, extension)


# ---------------------------------------------------------------------- top-level files
def detect_container() -> dict[str, str] | None:
    """``{"Type": "docker"|"podman"|..., "Tag": ...}`` when running in a container, else None.

    The image tag is read from the ``BIDS_QSM_CONTAINER_TAG`` environment variable (set in
    the Dockerfile) when present.
    """
    kind = os.environ.get("BIDS_QSM_CONTAINER_TYPE")
    if kind is None:
        if Path("/.dockerenv").exists():
            kind = "docker"
        elif Path("/run/.containerenv").exists():
            kind = "podman"
        elif os.environ.get("SINGULARITY_CONTAINER") or os.environ.get("APPTAINER_CONTAINER"):
            kind = "singularity"
        elif os.environ.get("container"):  # set by podman (also with --read-only)
            kind = os.environ["container"]
        elif os.environ.get("BIDS_QSM_CONTAINER_TAG"):  # set in the bids-qsm image
            kind = "docker"
    if kind is None:
        return None
    info = {"Type": kind}
    tag = os.environ.get("BIDS_QSM_CONTAINER_TAG")
    if tag:
        info["Tag"] = tag
    return info


def dataset_description(source_dir: Path | None = None) -> dict[str, Any]:
    """Content of the derivatives' ``dataset_description.json`` (BIDS derivative)."""
    generated: dict[str, Any] = {"Name": "bids-qsm", "Version": __version__, "CodeURL": CODE_URL}
    container = detect_container()
    if container:
        generated["Container"] = container
    desc: dict[str, Any] = {
        "Name": "bids-qsm derivatives: QSM, R2*, SWI and regional iron",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "HowToAcknowledge": "Cite the methods listed in logs/CITATION.md.",
    }
    if source_dir is not None:
        source: dict[str, Any] = {"URL": Path(source_dir).resolve().as_uri()}
        try:
            src = json.loads((Path(source_dir) / "dataset_description.json").read_text())
            if isinstance(src, dict) and src.get("DatasetDOI"):
                source["DOI"] = src["DatasetDOI"]
        except (OSError, ValueError):
            pass
        desc["SourceDatasets"] = [source]
    return desc


def write_dataset_description(output_dir: Path, source_dir: Path | None = None) -> Path:
    """Write ``OUTPUT_DIR/dataset_description.json`` (atomic; safe for parallel jobs)."""
    return atomic_write_json(
        Path(output_dir) / "dataset_description.json", dataset_description(source_dir)
    )


#: Files of OUTPUT_DIR that the BIDS specification does not cover.
DEFAULT_BIDSIGNORE: tuple[str, ...] = (
    # bids-validator-deno matches bare names at any depth ("log" ignores sub-*/log/)
    "logs",
    "log",
    "figures",
    "*.html",
    "group",
    "*_stats.tsv",
    "*_stats.json",
    "*_xfm.h5",
    "*_xfm.mat",
    "*_xfm.nii.gz",
    "*_bids_qsm.toml",
)


def update_bidsignore(output_dir: Path, patterns: Iterable[str] = DEFAULT_BIDSIGNORE) -> Path:
    """Ensure ``OUTPUT_DIR/.bidsignore`` lists ``patterns`` (keeps existing lines, atomic)."""
    path = Path(output_dir) / ".bidsignore"
    lines: list[str] = []
    if path.is_file():
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    for pattern in patterns:
        if pattern not in lines:
            lines.append(pattern)
    return atomic_write_text(path, "\n".join(lines) + "\n")

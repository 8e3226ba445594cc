"""Find the GRE acquisitions to process in a BIDS dataset (pybids).

One :class:`GreAcquisition` per subject, session, acquisition (``acq``), run (and the other
naming entities such as ``rec``) and suffix (``MEGRE`` or ``T2starw``). Supported layouts:

* one 3D file per echo and part: ``sub-01_echo-1_part-mag_MEGRE.nii.gz`` / ``part-phase``;
* all echoes in one 4D file per part (``EchoTime`` is then a list in the sidecar);
* ``part-real`` / ``part-imag`` instead of magnitude and phase (converted when loading);
* single-echo ``T2starw`` (with or without ``part``); a file without ``part`` is magnitude.

Each acquisition also gets the subject's T1w (same session first, else any session) and the
lesion masks found in the ``--lesion-masks`` derivatives folder. Discovery only reads names
and sidecars; :func:`bids_qsm.bids.checks.check_acquisition` validates the images.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bids_qsm.bids.writers import ENTITY_ORDER, parse_entities
from bids_qsm.config import Config
from bids_qsm.errors import InputDataError, NoDataError

LOGGER = logging.getLogger(__name__)

GRE_SUFFIXES: tuple[str, str] = ("MEGRE", "T2starw")
NIFTI_EXTENSIONS: list[str] = [".nii", ".nii.gz"]

#: Derivative entities: never part of a raw acquisition's name.
_DERIVATIVE_ENTITIES = {"space", "desc", "label", "seg", "res", "den"}

#: Entities that name an acquisition (everything but echo, part and derivative entities), in
#: BIDS order.
ACQ_ENTITIES: tuple[str, ...] = tuple(
    e for e in ENTITY_ORDER if e not in {"echo", "part", *_DERIVATIVE_ENTITIES}
)

#: Keys accepted in a --bids-filter-file and the suffix each one queries.
FILTER_KEYS: dict[str, str] = {"megre": "MEGRE", "t2starw": "T2starw", "t1w": "T1w"}

_PARTS = ("mag", "phase", "real", "imag")


@dataclass
class GreAcquisition:
    """One GRE acquisition (all its echoes and parts) and its companion files."""

    subject: str
    session: str | None
    acq: str | None
    run: str | None
    suffix: str  # "MEGRE" | "T2starw"
    mag_files: list[Path] = field(default_factory=list)
    phase_files: list[Path] = field(default_factory=list)
    real_files: list[Path] = field(default_factory=list)
    imag_files: list[Path] = field(default_factory=list)
    #: Echo times (s) in the order of the echoes; empty if a sidecar lacks ``EchoTime``.
    echo_times_s: list[float] = field(default_factory=list)
    #: Field strength (T): ``--b0-tesla`` or ``MagneticFieldStrength``; None if neither.
    b0_tesla: float | None = None
    #: "rad" or "arbitrary" from the phase sidecar's ``Units``; "unknown" until detected.
    phase_units: str = "unknown"
    t1w: Path | None = None
    lesion_masks: dict[str, Path] = field(default_factory=dict)
    #: Merged sidecar of the first echo (magnitude, else phase/real), plus run metadata.
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Every naming entity of the acquisition (short keys: sub, ses, acq, rec, run...).
    entities: dict[str, str] = field(default_factory=dict)
    #: Echo number of each file per part ("mag", "phase", "real", "imag"), parallel to the
    #: file lists; None for a file without ``echo-`` (a 4D or single-echo file).
    echo_numbers: dict[str, list[int | None]] = field(default_factory=dict)
    #: Sidecar (with inheritance) of every image file.
    file_metadata: dict[Path, dict[str, Any]] = field(default_factory=dict)

    @property
    def source_prefix(self) -> str:
        """BIDS name prefix of the outputs, e.g. ``sub-01_ses-1_acq-x_run-1``."""
        ents = self.entities or {
            k: v
            for k, v in (
                ("sub", self.subject),
                ("ses", self.session),
                ("acq", self.acq),
                ("run", self.run),
            )
            if v
        }
        return "_".join(f"{k}-{ents[k]}" for k in ACQ_ENTITIES if ents.get(k))

    @property
    def is_complex(self) -> bool:
        """True when the acquisition is stored as real/imaginary parts."""
        return not self.phase_files and bool(self.real_files)

    @property
    def n_echoes(self) -> int:
        """Number of echoes (from the echo times, else the number of per-echo files)."""
        if self.echo_times_s:
            return len(self.echo_times_s)
        return len(self.mag_files or self.real_files)

    def all_files(self) -> list[Path]:
        """Every GRE image file of the acquisition."""
        return [*self.mag_files, *self.phase_files, *self.real_files, *self.imag_files]


# ---------------------------------------------------------------------- layout / database
def get_layout(
    bids_dir: Path, database_dir: Path | None = None, exclude: Iterable[Path | None] = ()
) -> Any:
    """A pybids ``BIDSLayout`` of ``bids_dir`` (no pybids validation; we run the validator).

    ``exclude`` lists folders not to index when they lie inside ``bids_dir`` (OUTPUT_DIR or the
    work dir placed in the dataset: their outputs must never be taken as inputs).

    With ``database_dir`` the index is stored there and reused by later runs and by parallel
    jobs: the first job builds it in a temporary sibling folder and renames it into place, so
    concurrent jobs never see a half-written database.
    """
    from bids import BIDSLayout, BIDSLayoutIndexer

    root = Path(bids_dir).resolve()
    indexer = BIDSLayoutIndexer(validate=False, ignore=_ignore_patterns(root, exclude))
    if database_dir is None:
        return BIDSLayout(root, validate=False, indexer=indexer)

    database_dir = Path(database_dir).resolve()
    db_file = database_dir / "layout_index.sqlite"
    if db_file.is_file():
        LOGGER.info("Reusing the pybids index in %s", database_dir)
        return BIDSLayout(root, validate=False, database_path=database_dir, indexer=indexer)

    LOGGER.info("Indexing %s into %s", root, database_dir)
    database_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{database_dir.name}.", dir=database_dir.parent))
    try:
        BIDSLayout(root, validate=False, database_path=tmp, indexer=indexer)
        try:
            if database_dir.is_dir() and not any(database_dir.iterdir()):
                database_dir.rmdir()  # an empty folder created by the user
            os.rename(tmp, database_dir)
        except OSError:
            LOGGER.debug("Another job created %s first; using it", database_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return BIDSLayout(root, validate=False, database_path=database_dir, indexer=indexer)


def _ignore_patterns(root: Path, exclude: Iterable[Path | None] = ()) -> list[Any]:
    patterns: list[Any] = [
        re.compile(r"^/(code|models|sourcedata|stimuli|derivatives)(/|$)"),
        re.compile(r"/\."),
    ]
    for folder in exclude:
        if folder is None:
            continue
        try:
            rel = Path(folder).resolve().relative_to(root)
        except ValueError:
            continue
        if rel.parts:
            patterns.append(re.compile("^/" + re.escape(rel.as_posix()) + "(/|$)"))
    return patterns


# ---------------------------------------------------------------------- discovery
_PYBIDS_TO_SHORT = {
    "subject": "sub",
    "session": "ses",
    "acquisition": "acq",
    "ceagent": "ce",
    "reconstruction": "rec",
    "direction": "dir",
}


def discover(config: Config, layout: Any | None = None) -> list[GreAcquisition]:
    """All GRE acquisitions selected by the labels and filters of ``config``.

    Raises :class:`NoDataError` (exit 18) when the selection is empty (unknown participant or
    session label, filters matching nothing) and :class:`InputDataError` (65) when a GRE file
    has a ``part`` the app cannot use.
    """
    ex = config.execution
    if ex.bids_dir is None:
        raise ValueError("config.execution.bids_dir is not set")
    if layout is None:
        layout = get_layout(
            ex.bids_dir,
            ex.bids_database_dir,
            exclude=(ex.output_dir, ex.work_dir, ex.bids_database_dir),
        )

    subjects = sorted(layout.get_subjects())
    if ex.participant_label:
        missing = sorted(set(ex.participant_label) - set(subjects))
        if missing:
            LOGGER.warning(
                "Participant label(s) not found in %s: %s", ex.bids_dir, ", ".join(missing)
            )
        subjects = [s for s in subjects if s in set(ex.participant_label)]
        if not subjects:
            raise NoDataError(
                "no subject matches --participant-label "
                + " ".join(f"sub-{s}" for s in ex.participant_label),
                ex.bids_dir,
            )

    if not subjects:
        raise NoDataError("no sub-* subjects in the dataset", ex.bids_dir)
    filters = _filters(ex.bids_filters)
    base_query: dict[str, Any] = {"extension": NIFTI_EXTENSIONS, "return_type": "object"}
    # --session-label wins over a session in the filter file; it does not restrict the T1w.
    cli_session: dict[str, Any] = {"session": list(ex.session_label)} if ex.session_label else {}

    gre_files: list[Any] = []
    for key in ("megre", "t2starw"):
        query = {**base_query, **filters.get(key, {}), **cli_session, "suffix": FILTER_KEYS[key]}
        gre_files.extend(layout.get(subject=subjects, **query))

    if not gre_files:
        what = ["no MEGRE or T2starw images"]
        if ex.participant_label:
            what.append("for participant(s) " + " ".join(ex.participant_label))
        if ex.session_label:
            what.append("in session(s) " + " ".join(ex.session_label))
        if ex.bids_filters:
            what.append("matching the BIDS filter file")
        raise NoDataError(" ".join(what), ex.bids_dir)

    acquisitions = _group(gre_files)
    t1w_query = {**base_query, **filters.get("t1w", {}), "suffix": "T1w"}
    for acq in acquisitions:
        acq.t1w = _find_t1w(layout, acq, t1w_query)
        if ex.lesion_masks is not None:
            acq.lesion_masks = find_lesion_masks(Path(ex.lesion_masks), acq.subject, acq.session)
        if ex.b0_tesla is not None:
            acq.b0_tesla = float(ex.b0_tesla)
            acq.metadata["MagneticFieldStrengthSource"] = "--b0-tesla"
        LOGGER.info(
            "Found %s (%s, %d echo file(s)%s%s%s)",
            acq.source_prefix,
            acq.suffix,
            max(len(acq.mag_files), len(acq.real_files)),
            ", real/imaginary" if acq.is_complex else "",
            f", T1w {acq.t1w.name}" if acq.t1w else ", no T1w",
            f", lesion masks {', '.join(acq.lesion_masks)}" if acq.lesion_masks else "",
        )
    return acquisitions


def _filters(raw: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """pybids queries from a filter file: null -> Query.NONE, "*" -> Query.ANY."""
    from bids.layout import Query

    out: dict[str, dict[str, Any]] = {}
    for key, query in raw.items():
        if key.lower() not in FILTER_KEYS:
            LOGGER.warning(
                "Ignoring unknown key %r in the BIDS filter file (known: %s)",
                key,
                ", ".join(FILTER_KEYS),
            )
            continue
        converted: dict[str, Any] = {}
        for entity, value in query.items():
            if entity in ("suffix", "extension", "subject", "return_type"):
                LOGGER.warning("Ignoring %r in the BIDS filter file entry %r", entity, key)
                continue
            if value is None:
                value = Query.NONE
            elif value == "*":
                value = Query.ANY
            converted[entity] = value
        out[key.lower()] = converted
    return out


def _file_entities(path: Path) -> dict[str, str]:
    """Short-key entities parsed from a file name (exact spelling, e.g. ``run-01``)."""
    ents = parse_entities(path.name)
    ents.pop("extension", None)
    return ents


def _group(files: Iterable[Any]) -> list[GreAcquisition]:
    groups: dict[tuple, list[tuple[Path, dict[str, str], dict[str, Any]]]] = defaultdict(list)
    for bids_file in files:
        path = Path(bids_file.path)
        ents = _file_entities(path)
        derived = sorted(set(ents) & _DERIVATIVE_ENTITIES)
        if derived:
            LOGGER.warning("Ignoring %s: derivative entities %s in raw data", path, derived)
            continue
        key_ents = tuple((k, ents[k]) for k in ACQ_ENTITIES if k in ents)
        groups[(key_ents, ents["suffix"])].append((path, ents, dict(bids_file.get_metadata())))

    acquisitions = []
    for (key_ents, suffix), members in sorted(groups.items()):
        ents = dict(key_ents)
        acq = GreAcquisition(
            subject=ents["sub"],
            session=ents.get("ses"),
            acq=ents.get("acq"),
            run=ents.get("run"),
            suffix=suffix,
            entities=ents,
        )
        by_part: dict[str, list[tuple[int | None, Path]]] = defaultdict(list)
        for path, fents, meta in members:
            part = fents.get("part", "mag")
            if part not in _PARTS:
                raise InputDataError(
                    f"unsupported part-{part} (expected mag, phase, real or imag)", path
                )
            echo = fents.get("echo")
            try:
                echo_number = int(echo) if echo is not None else None
            except ValueError:
                raise InputDataError(f"echo-{echo} is not a number", path) from None
            by_part[part].append((echo_number, path))
            acq.file_metadata[path] = meta
        for part in _PARTS:
            entries = sorted(by_part.get(part, []), key=lambda e: (e[0] or 0, e[1].name))
            getattr(acq, f"{part}_files").extend(p for _, p in entries)
            acq.echo_numbers[part] = [n for n, _ in entries]
        if acq.phase_files and (acq.real_files or acq.imag_files):
            LOGGER.warning(
                "%s has both mag/phase and real/imag images; using mag/phase", acq.source_prefix
            )
            acq.real_files, acq.imag_files = [], []
            acq.echo_numbers["real"], acq.echo_numbers["imag"] = [], []
        _fill_metadata(acq)
        acquisitions.append(acq)
    return acquisitions


def _fill_metadata(acq: GreAcquisition) -> None:
    """Echo times, field strength, phase units and merged metadata from the sidecars."""
    primary = acq.mag_files or acq.real_files or acq.phase_files
    if primary:
        acq.metadata = {**acq.file_metadata[primary[0]]}
    echo_times: list[float] = []
    for path in primary:
        te = acq.file_metadata[path].get("EchoTime")
        if te is None:
            echo_times = []
            break
        if isinstance(te, (list, tuple)):
            echo_times.extend(float(t) for t in te)
        else:
            echo_times.append(float(te))
    acq.echo_times_s = echo_times
    field_strength = acq.metadata.get("MagneticFieldStrength")
    if field_strength is not None:
        try:
            acq.b0_tesla = float(field_strength)
        except (TypeError, ValueError):
            acq.b0_tesla = None
    if acq.phase_files:
        units = acq.file_metadata[acq.phase_files[0]].get("Units")
        if units in ("rad", "arbitrary"):
            acq.phase_units = units
    elif acq.real_files:
        acq.phase_units = "rad"  # computed from real/imag with arctan2


def _find_t1w(layout: Any, acq: GreAcquisition, query: dict[str, Any]) -> Path | None:
    """The subject's T1w: same session first, then any session; magnitude only."""
    candidates = [Path(f.path) for f in layout.get(subject=acq.subject, **query)]
    candidates = [p for p in candidates if _file_entities(p).get("part", "mag") == "mag"]
    if not candidates:
        return None
    same = [p for p in candidates if _file_entities(p).get("ses") == acq.session]
    pool = same or candidates
    pool.sort(key=lambda p: (_file_entities(p).get("acq") is not None, p.name))
    if len(pool) > 1:
        LOGGER.debug("Several T1w for %s; using %s", acq.source_prefix, pool[0].name)
    return pool[0]


_MASK_RE = re.compile(r"^sub-[A-Za-z0-9]+(_[a-z]+-[A-Za-z0-9]+)*_mask\.nii(\.gz)?$")


def find_lesion_masks(masks_dir: Path, subject: str, session: str | None) -> dict[str, Path]:
    """Lesion masks of one subject/session: ``label -> path``.

    Matches ``sub-<subject>[_ses-<session>]_..._label-<name>_mask.nii[.gz]`` anywhere below
    ``masks_dir``. A mask with the acquisition's session wins over one without a session; a
    mask of another session is ignored.
    """
    found: dict[str, tuple[int, Path]] = {}
    for path in sorted(Path(masks_dir).rglob(f"sub-{subject}_*mask.nii*")):
        if not _MASK_RE.match(path.name):
            continue
        ents = parse_entities(path.name)
        label = ents.get("label")
        if ents.get("sub") != subject or not label:
            continue
        mask_session = ents.get("ses")
        if mask_session is not None and mask_session != session:
            continue
        rank = 0 if mask_session == session and session is not None else 1
        if label not in found or rank < found[label][0]:
            found[label] = (rank, path)
        elif rank == found[label][0]:
            LOGGER.warning(
                "Several %s lesion masks for sub-%s; using %s", label, subject, found[label][1]
            )
    return {label: path for label, (_, path) in sorted(found.items())}


def selected_subjects(bids_dir: Path, participant_label: list[str]) -> list[str]:
    """Subjects present as ``sub-*`` folders, restricted to ``participant_label`` if given.

    A cheap listing (no pybids) used to set up log folders and validation before indexing.
    """
    present = sorted(
        p.name[4:] for p in Path(bids_dir).glob("sub-*") if p.is_dir() and p.name[4:].isalnum()
    )
    if participant_label:
        wanted = set(participant_label)
        return [s for s in present if s in wanted]
    return present

"""Group level: gathering the participant stats tables into one cohort table.

:func:`find_stats_tables` / :func:`gather_tables` / :func:`read_participants` gather every
``sub-*/[ses-*/]anat/*_seg-<atlas>_stats.tsv`` (and lesion tables) into one long table joined
with ``participants.tsv``; :func:`wide_table` pivots it to one row per acquisition.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from bids_qsm.bids.derivatives import find_tables
from bids_qsm.errors import InputDataError, InputMissingError
from bids_qsm.stats.columns import column_units

LOGGER = logging.getLogger("bids_qsm.group")


#: Columns identifying one acquisition in the participant tables.
ENTITY_COLUMNS: tuple[str, ...] = ("participant_id", "session_id", "acq", "run")

#: Measures tested by default (those present with finite values are used), with units.
DEFAULT_MEASURES: dict[str, str] = column_units(
    "regional",
    "chi_mean_ppm",
    "phaseiron_mean_rad",
    "r2star_mean_hz",
    "mpapt_rad",
    "apt_volume_mm3",
)

#: Covariate token meaning "the volume_mm3 of the structure being tested".
VOLUME_TOKENS: tuple[str, ...] = ("volume", "volume_mm3")

#: Columns of the participant stats table that identify rows rather than measure.
_NON_MEASURE = {*ENTITY_COLUMNS, "atlas", "structure", "hemisphere", "reference_region"}


# ----------------------------------------------------------------------------- gathering
def find_stats_tables(output_dir: Path, atlas: str) -> list[Path]:
    """Every participant ``*_seg-<atlas>_stats.tsv`` under ``output_dir`` (sorted)."""
    output_dir = Path(output_dir)
    return find_tables(output_dir, "stats", atlas)


def regions(long: pd.DataFrame) -> list[tuple[str, str]]:
    """The (structure, hemisphere) pairs of a long regional table, in order of appearance."""
    return list(dict.fromkeys(zip(long["structure"], long["hemisphere"], strict=True)))


def region_rows(
    table: pd.DataFrame, structure: str, measure: str, hemisphere: str = "bilateral", **match: str
) -> pd.Series:
    """Boolean mask of the rows of a model table (structure, hemisphere, measure columns)
    for one region and measure, and the other ``match`` column values (e.g. contrast)."""
    sel = (
        (table["structure"] == structure)
        & (table["hemisphere"] == hemisphere)
        & (table["measure"] == measure)
    )
    for k, v in match.items():
        sel &= table[k] == v
    return sel


def find_lesion_tables(output_dir: Path) -> list[Path]:
    """Every participant ``*_desc-lesions_stats.tsv`` under ``output_dir`` (sorted)."""
    output_dir = Path(output_dir)
    return find_tables(output_dir, "lesions")


def _with_sub(label: object) -> str:
    text = str(label).strip()
    return text if text.startswith("sub-") else f"sub-{text}"


def _read_csv(path: Path, dtype: dict[str, type]) -> pd.DataFrame:
    """A BIDS TSV with ``n/a`` as missing; an unreadable one -> :class:`InputDataError` (65)."""
    try:
        return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=True, dtype=dtype)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise InputDataError(f"corrupt table ({type(exc).__name__}: {reason})", path) from exc


def read_tsv(path: Path) -> pd.DataFrame:
    """Read a BIDS TSV: ``n/a`` as missing, entity columns kept as text (``n/a`` when empty).

    An unreadable, undecodable, malformed or empty table raises :class:`InputDataError` (65).
    """
    df = _read_csv(path, {c: str for c in (*ENTITY_COLUMNS, "lesion_id", "label")})
    if df.shape[1] < 2:
        raise InputDataError(f"corrupt table: {df.shape[1]} column (not tab-separated?)", path)
    for col in ("session_id", "acq", "run"):
        if col in df.columns:
            df[col] = df[col].fillna("n/a").astype(str)
    return df


def read_participants(bids_dir: Path, group_column: str = "group") -> pd.DataFrame:
    """``BIDS_DIR/participants.tsv`` with ``participant_id`` normalised to ``sub-<label>``.

    Raises :class:`InputMissingError` (66) when the file is absent and
    :class:`InputDataError` (65) when it lacks ``participant_id`` or ``group_column``.
    """
    path = Path(bids_dir) / "participants.tsv"
    if not path.is_file():
        raise InputMissingError(
            "participants.tsv not found: the group level needs it for the group and covariates",
            path,
        )
    df = _read_csv(path, {"participant_id": str, group_column: str})
    if "participant_id" not in df.columns:
        raise InputDataError("no participant_id column", path)
    if group_column not in df.columns:
        raise InputDataError(
            f"no {group_column!r} column (needed to compare groups; "
            f"set --group-column); columns are: {', '.join(map(str, df.columns))}",
            path,
        )
    df["participant_id"] = df["participant_id"].map(_with_sub)
    if df["participant_id"].duplicated().any():
        dup = df.loc[df["participant_id"].duplicated(), "participant_id"].iloc[0]
        raise InputDataError(f"participants.tsv lists {dup} more than once", path)
    return df


def gather_tables(paths: Sequence[Path], participants: pd.DataFrame | None = None) -> pd.DataFrame:
    """Concatenate participant tables and join them with ``participants`` (left join).

    The participant columns (other than ``participant_id``) are appended after the table's
    own columns; participants absent from ``participants.tsv`` get missing values (logged).
    """
    if not paths:
        return pd.DataFrame()
    frames = []
    for p in paths:
        df = read_tsv(p)
        if "participant_id" not in df.columns:  # take it from the file name
            df.insert(0, "participant_id", Path(p).name.split("_")[0])
        frames.append(df)
    long = pd.concat(frames, ignore_index=True)
    long["participant_id"] = long["participant_id"].map(_with_sub)
    if participants is None:
        return long
    extra = [c for c in participants.columns if c not in long.columns or c == "participant_id"]
    missing = sorted(set(long["participant_id"]) - set(participants["participant_id"]))
    if missing:
        LOGGER.warning("not in participants.tsv (no group/covariates): %s", ", ".join(missing))
    return long.merge(participants[extra], on="participant_id", how="left")


def first_acquisition(long: pd.DataFrame) -> pd.DataFrame:
    """Keep one acquisition per participant (first session, acq, run in sorted order).

    The group models assume one observation per participant; extra sessions/runs are
    dropped with a warning (longitudinal designs need a mixed model, not provided here).
    """
    if long.empty:
        return long
    keys = long[list(ENTITY_COLUMNS)].drop_duplicates().sort_values(list(ENTITY_COLUMNS))
    first = keys.drop_duplicates("participant_id")
    if len(first) < len(keys):
        LOGGER.warning(
            "%d extra session/acq/run tables ignored by the group models (first one per "
            "participant kept)",
            len(keys) - len(first),
        )
    return long.merge(first, on=list(ENTITY_COLUMNS), how="inner")


def measure_columns(long: pd.DataFrame) -> list[str]:
    """Numeric measure columns of a regional long table (in table order)."""
    return [
        c
        for c in long.columns
        if c not in _NON_MEASURE
        and c.endswith(("_ppm", "_hz", "_rad", "_mm3", "nvox"))
        and pd.api.types.is_numeric_dtype(long[c])
    ]


def wide_table(long: pd.DataFrame, participants: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per acquisition; columns ``<structure>_<hemisphere>_<measure>``.

    Joined with ``participants`` (its columns first, after the entity columns).
    """
    regional_cols = [c for c in long.columns if c in _NON_MEASURE or c in measure_columns(long)]
    regional = long[regional_cols]
    measures = measure_columns(regional)
    wide = regional.pivot_table(
        index=list(ENTITY_COLUMNS),
        columns=["structure", "hemisphere"],
        values=measures,
        aggfunc="first",
        dropna=False,
        sort=False,
    )
    order = regions(long)
    cols = [(m, s, h) for (s, h) in order for m in measures if (m, s, h) in wide.columns]
    wide = wide[cols]
    wide.columns = [f"{s}_{h}_{m}" for (m, s, h) in cols]
    wide = wide.reset_index()
    if participants is not None:
        pcols = [c for c in participants.columns if c not in wide.columns or c == "participant_id"]
        wide = wide.merge(participants[pcols], on="participant_id", how="left")
        lead = list(ENTITY_COLUMNS) + [c for c in pcols if c != "participant_id"]
        wide = wide[lead + [c for c in wide.columns if c not in lead]]
    return wide

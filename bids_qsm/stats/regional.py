"""Regional iron table: one row per structure and hemisphere (L, R, bilateral) plus whole brain.

Pure numpy/pandas: takes arrays on the GRE grid (susceptibility in ppm, R2* in Hz, filtered
phase and phase-iron in rad) and an atlas label image on the same grid, and returns the
``<src>_seg-<atlas>_stats.tsv`` content. Statistics use the voxels of a structure that lie
inside the QSM mask (where the susceptibility is defined); ``volume_mm3`` is the volume of the
structure's labels on the GRE grid, whether or not they lie inside the mask.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bids_qsm.atlas.structures import StructureDef
from bids_qsm.stats.columns import column_descriptions

#: Column order of the regional stats TSV (see :data:`COLUMN_DESCRIPTIONS`).
STATS_COLUMNS: tuple[str, ...] = (
    "participant_id",
    "session_id",
    "acq",
    "run",
    "atlas",
    "structure",
    "hemisphere",
    "nvox",
    "volume_mm3",
    "chi_mean_ppm",
    "chi_median_ppm",
    "chi_std_ppm",
    "chi_p25_ppm",
    "chi_p75_ppm",
    "r2star_mean_hz",
    "hpphase_mean_rad",
    "phaseiron_mean_rad",
    "mpapt_rad",
    "apt_volume_mm3",
    "apt_threshold_rad",
    "reference_region",
    "reference_value_ppm",
)

#: BIDS-style column descriptions for the TSV's JSON sidecar.
COLUMN_DESCRIPTIONS: dict[str, dict[str, str]] = column_descriptions("regional")


@dataclass(frozen=True)
class Entities:
    """Identifying columns of a regional table."""

    participant_id: str
    session_id: str | None = None
    acq: str | None = None
    run: str | None = None


def _stats(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return dict.fromkeys(
            ("chi_mean_ppm", "chi_median_ppm", "chi_std_ppm", "chi_p25_ppm", "chi_p75_ppm"),
            np.nan,
        )
    p25, p50, p75 = np.percentile(values, [25, 50, 75])
    return {
        "chi_mean_ppm": float(values.mean(dtype=np.float64)),
        "chi_median_ppm": float(p50),
        "chi_std_ppm": float(values.std(dtype=np.float64)),
        "chi_p25_ppm": float(p25),
        "chi_p75_ppm": float(p75),
    }


def finite_mean(arr: np.ndarray | None, sel: np.ndarray) -> float:
    """Mean of the finite values of ``arr`` in ``sel`` (NaN when there are none)."""
    if arr is None or not sel.any():
        return np.nan
    v = arr[sel]
    v = v[np.isfinite(v)]
    return float(v.mean(dtype=np.float64)) if v.size else np.nan


def phase_abnormality(
    phase_iron_rad: np.ndarray, sel: np.ndarray, threshold_rad: float, voxel_volume_mm3: float
) -> tuple[float, float]:
    """MP-APT (rad) and abnormal-phase volume (mm^3) of the voxels ``sel``.

    Abnormal-phase tissue: voxels whose phase-iron (iron positive) exceeds ``threshold_rad``.
    MP-APT is their mean phase-iron (NaN when there are none). NaN voxels (excluded by the
    phase-quality mask) are never abnormal.
    """
    vals = phase_iron_rad[sel]
    vals = vals[np.isfinite(vals)]
    abnormal = vals > threshold_rad
    n = int(abnormal.sum())
    mpapt = float(vals[abnormal].mean(dtype=np.float64)) if n else np.nan
    return mpapt, n * voxel_volume_mm3


def _in_labels(labels: np.ndarray, ids: set[int], top: int | None) -> np.ndarray:
    """``np.isin(labels, ids)`` (boolean, same shape); with ``top`` (the largest label of
    non-negative integer ``labels``) by one lookup-table pass instead of one pass per id."""
    if top is None:
        return np.isin(labels, sorted(ids))
    lut = np.zeros(top + 1, dtype=bool)
    lut[[i for i in ids if 0 <= i <= top]] = True
    return lut[labels]


def _lut_top(labels: np.ndarray) -> int | None:
    """The largest label when ``labels`` suit :func:`_in_labels`' lookup table, else None."""
    if not (labels.size and np.issubdtype(labels.dtype, np.integer)):
        return None
    lo, hi = int(labels.min()), int(labels.max())
    return hi if lo >= 0 and hi < 2**20 else None


def _label_box(*label_maps: np.ndarray) -> tuple[slice, ...]:
    """Bounding box (slices) of the non-zero voxels of all ``label_maps`` (the whole grid
    when there are none)."""
    shape = label_maps[0].shape
    nonzero = np.zeros(shape, dtype=bool)
    for lab in label_maps:
        nonzero |= lab != 0
    if not nonzero.any():
        return (slice(None),) * len(shape)
    box = []
    for axis in range(len(shape)):
        other = tuple(a for a in range(len(shape)) if a != axis)
        hit = np.flatnonzero(nonzero.any(axis=other))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def structure_groups(
    structures: Sequence[StructureDef],
) -> tuple[dict[tuple[str, str], set[int]], list[str]]:
    """(structure, hemisphere) -> label values (bilateral = L and R united) and the structure
    names in first-seen order."""
    groups: dict[tuple[str, str], set[int]] = {}
    order: list[str] = []
    for s in structures:
        groups.setdefault((s.name, s.hemisphere), set()).update(s.labels)
        groups.setdefault((s.name, "bilateral"), set()).update(s.labels)
        if s.name not in order:
            order.append(s.name)
    return groups, order


def _apt_columns(
    phase_iron_rad: np.ndarray | None,
    sel: np.ndarray,
    threshold_rad: float | None,
    voxel_volume_mm3: float,
) -> dict[str, float]:
    """``mpapt_rad`` (rad), ``apt_volume_mm3`` (mm3) and ``apt_threshold_rad`` of one region;
    NaN without a phase-iron map, a threshold or voxels. MP-APT is taken over the whole
    structure: the threshold selects the voxels (measured better than the self-positive ROI
    for MP-APT, docs/methods_swi.md)."""
    if phase_iron_rad is None or threshold_rad is None or not sel.any():
        return {"mpapt_rad": np.nan, "apt_volume_mm3": np.nan, "apt_threshold_rad": np.nan}
    mpapt, volume = phase_abnormality(phase_iron_rad, sel, float(threshold_rad), voxel_volume_mm3)
    return {"mpapt_rad": mpapt, "apt_volume_mm3": volume, "apt_threshold_rad": float(threshold_rad)}


def regional_table(
    chi_ppm: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray,
    structures: Sequence[StructureDef],
    voxel_volume_mm3: float,
    entities: Entities,
    atlas: str,
    *,
    r2star_hz: np.ndarray | None = None,
    hp_phase_rad: np.ndarray | None = None,
    phase_iron_rad: np.ndarray | None = None,
    apt_threshold_rad: float | Mapping[str, float] | None = None,
    phase_labels: np.ndarray | None = None,
    reference_region: str = "n/a",
    reference_value_ppm: float = np.nan,
) -> pd.DataFrame:
    """Build the regional stats table.

    Parameters
    ----------
    chi_ppm, r2star_hz, hp_phase_rad, phase_iron_rad
        Maps on the GRE grid (ppm, Hz, rad, rad). Optional maps give NaN columns when absent.
    labels
        Integer atlas labels on the same grid.
    mask
        QSM mask: statistics use structure voxels inside it.
    structures
        Reporting groups (name, hemisphere, label values); bilateral rows unite L and R.
    apt_threshold_rad
        Abnormal-phase threshold in phase-iron units, one value or one per structure name.
    phase_labels
        Labels for the mean phase columns (``hpphase_mean_rad``, ``phaseiron_mean_rad``),
        e.g. the self-positive ROIs of :func:`bids_qsm.swi.dipole_roi.self_positive_labels`;
        default ``labels``. MP-APT and the abnormal-phase volume use the whole structure
        (``labels``). Phase statistics use finite values only (NaN = excluded by the
        phase-quality mask).
    """
    mask = np.asarray(mask, dtype=bool)
    labels = np.asarray(labels)
    plabels = labels if phase_labels is None else np.asarray(phase_labels)
    top = _lut_top(labels)
    ptop = top if phase_labels is None else _lut_top(plabels)
    # the structures' rows on the bounding box of all labels: the same voxels in the same
    # (C) order as on the whole grid, so the same sums, in a fraction of the passes
    box = _label_box(labels, plabels)
    groups, order = structure_groups(structures)

    rows: list[dict[str, object]] = []
    keys = [
        (name, hemi) for name in order for hemi in ("L", "R", "bilateral") if (name, hemi) in groups
    ]
    for name, hemi in [*keys, ("whole_brain", "bilateral")]:
        if name == "whole_brain":
            region = pregion = mask
            at = (slice(None),) * mask.ndim
        else:
            at = box
            ids = {int(i) for i in groups[(name, hemi)]}
            region = _in_labels(labels[at], ids, top)
            pregion = region if phase_labels is None else _in_labels(plabels[at], ids, ptop)
        sel = region & mask[at]
        psel = pregion & mask[at]
        maps = {
            k: None if v is None else v[at]
            for k, v in (("r2", r2star_hz), ("hp", hp_phase_rad), ("pi", phase_iron_rad))
        }
        row: dict[str, object] = {
            "structure": name,
            "hemisphere": hemi,
            "nvox": int(sel.sum()),
            "volume_mm3": float(region.sum()) * voxel_volume_mm3,
            **_stats(chi_ppm[at][sel]),
            "r2star_mean_hz": finite_mean(maps["r2"], sel),
            "hpphase_mean_rad": finite_mean(maps["hp"], psel),
            "phaseiron_mean_rad": finite_mean(maps["pi"], psel),
        }
        thr = (
            apt_threshold_rad.get(name)
            if isinstance(apt_threshold_rad, Mapping)
            else apt_threshold_rad
        )
        row.update(_apt_columns(maps["pi"], sel, thr, voxel_volume_mm3))
        rows.append(row)

    df = pd.DataFrame(rows).assign(
        reference_region=reference_region, reference_value_ppm=reference_value_ppm
    )
    return _with_entities(df, entities, atlas)[list(STATS_COLUMNS)]


def _with_entities(df: pd.DataFrame, entities: Entities, atlas: str) -> pd.DataFrame:
    """``df`` with the entity and atlas columns first (n/a for absent entities)."""
    df.insert(0, "participant_id", entities.participant_id)
    df.insert(1, "session_id", entities.session_id or "n/a")
    df.insert(2, "acq", entities.acq or "n/a")
    df.insert(3, "run", entities.run or "n/a")
    df.insert(4, "atlas", atlas)
    return df

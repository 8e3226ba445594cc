"""Regional iron table: one row per structure and hemisphere (L, R, bilateral) plus whole brain.

Pure numpy/pandas: takes arrays on the GRE grid (susceptibility in ppm, R2* in Hz, filtered
phase and phase-iron in rad) and an atlas label image on the same grid, and returns the
``<src>_seg-<atlas>_stats.tsv`` content. Statistics use the voxels of a structure that lie
inside the QSM mask (where the susceptibility is defined); ``volume_label_mm3`` is the volume
of the structure's labels on the GRE grid, whether or not they lie inside the mask, and
``volume_mm3`` the structure's tissue-fraction volume (:mod:`bids_qsm.stats.volumetry`) when
the GRE magnitude and R2* are given, else the label volume.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bids_qsm.atlas.structures import StructureDef
from bids_qsm.stats.volumetry import tissue_volumes

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
    "volume_label_mm3",
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
COLUMN_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "participant_id": {"Description": "Participant label, with the sub- prefix."},
    "session_id": {"Description": "Session label with the ses- prefix, n/a without sessions."},
    "acq": {"Description": "acq entity of the source GRE, n/a if absent."},
    "run": {"Description": "run entity of the source GRE, n/a if absent."},
    "atlas": {"Description": "Atlas whose labels define the structures (seg- entity)."},
    "structure": {
        "Description": "Deep gray matter structure (or whole_brain: the whole QSM mask).",
    },
    "hemisphere": {"Description": "L, R, or bilateral (union of left and right)."},
    "nvox": {
        "Description": "Number of structure voxels inside the QSM mask used for the statistics."
    },
    "volume_mm3": {
        "Description": "Structure volume: sum of the voxels' fractions of the structure's tissue "
        "over its registered label and a one-voxel ring, unmixed from the subject's GRE "
        "magnitude, susceptibility and R2* into structure (median of the label's deepest 20 % "
        "of voxels), white matter (lowest magnitude mode) and CSF (R2* below 0.35 of white "
        "matter's), relative to the background (median fraction of the next ring) "
        "(bids_qsm.stats.volumetry, docs/atlas.md); the label volume (volume_label_mm3) "
        "without magnitude or R2* (single echo); whole_brain: the QSM mask.",
        "Units": "mm^3",
    },
    "volume_label_mm3": {
        "Description": "Volume of the structure labels in GRE space (registration-derived).",
        "Units": "mm^3",
    },
    "chi_mean_ppm": {"Description": "Mean magnetic susceptibility.", "Units": "ppm"},
    "chi_median_ppm": {"Description": "Median magnetic susceptibility.", "Units": "ppm"},
    "chi_std_ppm": {"Description": "Standard deviation of susceptibility.", "Units": "ppm"},
    "chi_p25_ppm": {"Description": "25th percentile of susceptibility.", "Units": "ppm"},
    "chi_p75_ppm": {"Description": "75th percentile of susceptibility.", "Units": "ppm"},
    "r2star_mean_hz": {"Description": "Mean R2* (n/a for single-echo data).", "Units": "Hz"},
    "hpphase_mean_rad": {
        "Description": "Mean SWI high-pass filtered phase (SWI convention: paramagnetic "
        "negative) over the structure's self-positive ROI (voxels where the structure's own "
        "iron raises the filtered phase; docs/methods_swi.md).",
        "Units": "rad",
    },
    "phaseiron_mean_rad": {
        "Description": "Mean phase-iron value (negated filtered phase: iron positive) over the "
        "structure's self-positive ROI; voxels excluded by the phase-quality mask ignored.",
        "Units": "rad",
    },
    "mpapt_rad": {
        "Description": "MP-APT: mean phase-iron of abnormal-phase tissue, i.e. voxels whose "
        "phase-iron exceeds apt_threshold_rad (Buffalo SWI-filtered-phase measure; "
        "n/a when no voxel exceeds it).",
        "Units": "rad",
    },
    "apt_volume_mm3": {"Description": "Volume of abnormal-phase tissue.", "Units": "mm^3"},
    "apt_threshold_rad": {
        "Description": "Phase-iron threshold defining abnormal-phase tissue at participant level "
        "(fixed per run; the group level recomputes MP-APT with control-derived thresholds).",
        "Units": "rad",
    },
    "reference_region": {"Description": "Susceptibility reference region (mean set to zero)."},
    "reference_value_ppm": {
        "Description": "Mean of the unreferenced susceptibility in the reference region, "
        "subtracted from the map.",
        "Units": "ppm",
    },
}


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
    magnitude: np.ndarray | None = None,
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
    magnitude
        GRE magnitude (a.u., e.g. the combined echoes): with ``r2star_hz`` it gives
        ``volume_mm3`` as a tissue-fraction volume (:func:`.volumetry.tissue_volumes`).
    """
    mask = np.asarray(mask, dtype=bool)
    labels = np.asarray(labels)
    plabels = labels if phase_labels is None else np.asarray(phase_labels)
    groups: dict[tuple[str, str], set[int]] = {}
    order: list[str] = []
    for s in structures:
        groups.setdefault((s.name, s.hemisphere), set()).update(s.labels)
        groups.setdefault((s.name, "bilateral"), set()).update(s.labels)
        if s.name not in order:
            order.append(s.name)

    tissue = (
        tissue_volumes(magnitude, chi_ppm, r2star_hz, labels, groups, mask, voxel_volume_mm3)
        if magnitude is not None and r2star_hz is not None and groups
        else {}
    )
    rows: list[dict[str, object]] = []
    keys = [
        (name, hemi) for name in order for hemi in ("L", "R", "bilateral") if (name, hemi) in groups
    ]
    for name, hemi in [*keys, ("whole_brain", "bilateral")]:
        if name == "whole_brain":
            region = pregion = mask
        else:
            region = np.isin(labels, sorted(groups[(name, hemi)]))
            pregion = (
                region if phase_labels is None else np.isin(plabels, sorted(groups[(name, hemi)]))
            )
        sel = region & mask
        psel = pregion & mask
        row: dict[str, object] = {
            "structure": name,
            "hemisphere": hemi,
            "nvox": int(sel.sum()),
            "volume_mm3": tissue.get((name, hemi), float(region.sum()) * voxel_volume_mm3),
            "volume_label_mm3": float(region.sum()) * voxel_volume_mm3,
            **_stats(chi_ppm[sel]),
            "r2star_mean_hz": finite_mean(r2star_hz, sel),
            "hpphase_mean_rad": finite_mean(hp_phase_rad, psel),
            "phaseiron_mean_rad": finite_mean(phase_iron_rad, psel),
        }
        thr = (
            apt_threshold_rad.get(name)
            if isinstance(apt_threshold_rad, Mapping)
            else apt_threshold_rad
        )
        if phase_iron_rad is not None and thr is not None and sel.any():
            # MP-APT over the whole structure: the threshold selects the voxels (measured
            # better than the ROI for MP-APT, docs/methods_swi.md)
            row["mpapt_rad"], row["apt_volume_mm3"] = phase_abnormality(
                phase_iron_rad, sel, float(thr), voxel_volume_mm3
            )
            row["apt_threshold_rad"] = float(thr)
        else:
            row["mpapt_rad"] = row["apt_volume_mm3"] = row["apt_threshold_rad"] = np.nan
        rows.append(row)

    df = pd.DataFrame(rows)
    df.insert(0, "participant_id", entities.participant_id)
    df.insert(1, "session_id", entities.session_id or "n/a")
    df.insert(2, "acq", entities.acq or "n/a")
    df.insert(3, "run", entities.run or "n/a")
    df.insert(4, "atlas", atlas)
    df["reference_region"] = reference_region
    df["reference_value_ppm"] = reference_value_ppm
    return df[list(STATS_COLUMNS)]

"""Lesion-wise iron measures: one row per lesion (connected component) and label, plus totals.

Each lesion mask (e.g. ``label-T2lesion``) is split into 3D connected components (26-connected).
For each lesion the table gives its volume, the susceptibility mean and median over the
lesion, and the same for its *rim* versus its *core*:

* rim: the shell of voxels within one voxel of the lesion boundary, on either side of it
  (``dilate(lesion, 1) & ~erode(lesion, 1)``, a 1-2 voxel shell), which is where
  paramagnetic rim lesions (PRL) carry their iron;
* core: ``erode(lesion, 1)`` (empty for lesions thinner than three voxels).

A ``rim_minus_core_ppm`` column and the phase-iron rim/core means give quick PRL screening
values. Any label name is accepted; the four lesion types of the seed SWI study have the
canonical names of :data:`LESION_LABELS` (T1-hypointense, T2-hyperintense, SWI-phase and
SWI-magnitude lesions). Phase-iron values ignore NaN voxels (excluded by the SWI phase-quality
mask). Pure numpy/scipy; all maps on the GRE grid.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from bids_qsm.stats.columns import column_descriptions
from bids_qsm.stats.regional import Entities, finite_mean

#: Canonical ``label-`` entities of lesion masks (``sub-<l>_label-<name>_mask.nii.gz``).
LESION_LABELS: dict[str, str] = {
    "T1lesion": "T1-hypointense lesions (black holes)",
    "T2lesion": "T2/FLAIR-hyperintense lesions",
    "SWIphaselesion": "lesions visible on the SWI filtered phase (e.g. phase-rim lesions)",
    "SWImaglesion": "lesions hypointense on the SWI magnitude / minIP",
}

LESION_COLUMNS: tuple[str, ...] = (
    "participant_id",
    "session_id",
    "acq",
    "run",
    "label",
    "lesion_id",
    "nvox",
    "volume_mm3",
    "centroid_i",
    "centroid_j",
    "centroid_k",
    "chi_mean_ppm",
    "chi_median_ppm",
    "rim_chi_mean_ppm",
    "core_chi_mean_ppm",
    "rim_minus_core_ppm",
    "phaseiron_mean_rad",
    "rim_phaseiron_mean_rad",
    "core_phaseiron_mean_rad",
    "rim_minus_core_phaseiron_rad",
    "mpapt_rad",
    "apt_volume_mm3",
)

LESION_COLUMN_DESCRIPTIONS: dict[str, dict[str, str]] = column_descriptions("lesions")

_STRUCT = ndi.generate_binary_structure(3, 1)


def _lesion_row(
    lesion: np.ndarray,
    chi_ppm: np.ndarray,
    mask: np.ndarray,
    voxel_volume_mm3: float,
    phase_iron_rad: np.ndarray | None,
    apt_threshold_rad: float | None,
) -> dict[str, object]:
    sel = lesion & mask
    rim = ndi.binary_dilation(lesion, _STRUCT) & ~ndi.binary_erosion(lesion, _STRUCT) & mask
    core = ndi.binary_erosion(lesion, _STRUCT) & mask
    vals = chi_ppm[sel]
    rim_mean, core_mean = finite_mean(chi_ppm, rim), finite_mean(chi_ppm, core)
    rim_pi, core_pi = finite_mean(phase_iron_rad, rim), finite_mean(phase_iron_rad, core)
    ci, cj, ck = (float(c) for c in ndi.center_of_mass(lesion)) if lesion.any() else (np.nan,) * 3
    row: dict[str, object] = {
        "nvox": int(sel.sum()),
        "volume_mm3": float(lesion.sum()) * voxel_volume_mm3,
        "centroid_i": ci,
        "centroid_j": cj,
        "centroid_k": ck,
        "chi_mean_ppm": float(vals.mean(dtype=np.float64)) if vals.size else np.nan,
        "chi_median_ppm": float(np.median(vals)) if vals.size else np.nan,
        "rim_chi_mean_ppm": rim_mean,
        "core_chi_mean_ppm": core_mean,
        "rim_minus_core_ppm": rim_mean - core_mean,
        "phaseiron_mean_rad": finite_mean(phase_iron_rad, sel),
        "rim_phaseiron_mean_rad": rim_pi,
        "core_phaseiron_mean_rad": core_pi,
        "rim_minus_core_phaseiron_rad": rim_pi - core_pi,
        "mpapt_rad": np.nan,
        "apt_volume_mm3": np.nan,
    }
    if phase_iron_rad is not None and apt_threshold_rad is not None and sel.any():
        pv = phase_iron_rad[sel]
        pv = pv[np.isfinite(pv)]
        ab = pv > apt_threshold_rad
        row["mpapt_rad"] = float(pv[ab].mean(dtype=np.float64)) if ab.any() else np.nan
        row["apt_volume_mm3"] = float(ab.sum()) * voxel_volume_mm3
    return row


def lesion_table(
    lesion_masks: Mapping[str, np.ndarray],
    chi_ppm: np.ndarray,
    mask: np.ndarray,
    voxel_volume_mm3: float,
    entities: Entities,
    *,
    phase_iron_rad: np.ndarray | None = None,
    apt_threshold_rad: float | None = None,
    min_voxels: int = 1,
) -> pd.DataFrame:
    """Lesion-wise table for every label's mask (boolean arrays on the GRE grid).

    Components smaller than ``min_voxels`` are ignored. Each label ends with a ``total`` row
    computed over the union of its lesions (so ``volume_mm3`` there is the lesion load).
    """
    mask = np.asarray(mask, dtype=bool)
    rows: list[dict[str, object]] = []
    for label in sorted(lesion_masks):
        lm = np.asarray(lesion_masks[label], dtype=bool)
        comp, n = ndi.label(lm, structure=ndi.generate_binary_structure(3, 3))
        kept = np.zeros_like(lm)
        lesion_id = 0
        for idx, slc in enumerate(ndi.find_objects(comp), start=1):
            if slc is None:
                continue
            lesion = comp == idx
            if lesion.sum() < min_voxels:
                continue
            lesion_id += 1
            kept |= lesion
            row = _lesion_row(
                lesion, chi_ppm, mask, voxel_volume_mm3, phase_iron_rad, apt_threshold_rad
            )
            rows.append({"label": label, "lesion_id": str(lesion_id), **row})
        total = _lesion_row(
            kept, chi_ppm, mask, voxel_volume_mm3, phase_iron_rad, apt_threshold_rad
        )
        rows.append({"label": label, "lesion_id": "total", **total})
    df = pd.DataFrame(
        rows, columns=[c for c in LESION_COLUMNS if c not in Entities.__annotations__]
    )
    df.insert(0, "participant_id", entities.participant_id)
    df.insert(1, "session_id", entities.session_id or "n/a")
    df.insert(2, "acq", entities.acq or "n/a")
    df.insert(3, "run", entities.run or "n/a")
    return df[list(LESION_COLUMNS)]

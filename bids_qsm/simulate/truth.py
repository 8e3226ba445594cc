"""Ground-truth tables of a simulated session: regional means and one row per lesion."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bids_qsm.atlas.structures import BASAL_GANGLIA, aal3_structures
from bids_qsm.simulate.lesions import LesionSet


def regional_truth(
    chi: np.ndarray, r2: np.ndarray, labels: np.ndarray, brain: np.ndarray, vox_mm3: float
) -> pd.DataFrame:
    """Mean true chi and R2* per structure and hemisphere (and bilateral) on the GRE grid."""
    brain_mean = float(chi[brain].mean()) if brain.any() else 0.0
    groups: dict[tuple[str, str], np.ndarray] = {}
    for s in aal3_structures():
        m = np.isin(labels, s.labels)
        groups[(s.name, s.hemisphere)] = m
        key = (s.name, "bilateral")
        groups[key] = groups.get(key, np.zeros_like(m)) | m
    for hemi in ("L", "R", "bilateral"):
        groups[("basal_ganglia", hemi)] = np.logical_or.reduce(
            [groups[(n, hemi)] for n in BASAL_GANGLIA]
        )
    rows = []
    for (name, hemi), m in groups.items():
        n = int(m.sum())
        rows.append(
            {
                "structure": name,
                "hemisphere": hemi,
                "chi_mean_ppm": float(chi[m].mean()) if n else np.nan,
                "chi_mean_ppm_brainref": float(chi[m].mean()) - brain_mean if n else np.nan,
                "r2star_mean_hz": float(r2[m].mean()) if n else np.nan,
                "nvox": n,
                "volume_mm3": n * vox_mm3,
            }
        )
    return pd.DataFrame(rows)


def lesion_truth(
    t2_ids: np.ndarray,
    t1_ids: np.ndarray,
    lesions: LesionSet,
    chi: np.ndarray,
    r2: np.ndarray,
    affine: np.ndarray,
    vox_mm3: float,
) -> pd.DataFrame:
    """One row per lesion and label (T2lesion for all, T1lesion for black holes)."""
    rows = []
    for label, ids in (("T2lesion", t2_ids), ("T1lesion", t1_ids)):
        for k in range(1, len(lesions.is_prl) + 1):
            m = ids == k
            n = int(m.sum())
            if label == "T1lesion" and not lesions.is_t1[k - 1]:
                continue
            centre = affine[:3, :3] @ np.argwhere(m).mean(0) + affine[:3, 3] if n else [np.nan] * 3
            rows.append(
                {
                    "label": label,
                    "lesion_id": k,
                    "volume_mm3": n * vox_mm3,
                    "nvox": n,
                    "chi_mean_ppm": float(chi[m].mean()) if n else np.nan,
                    "r2star_mean_hz": float(r2[m].mean()) if n else np.nan,
                    "is_prl": lesions.is_prl[k - 1],
                    "is_t1_hypointense": lesions.is_t1[k - 1],
                    "x_mm": float(centre[0]),
                    "y_mm": float(centre[1]),
                    "z_mm": float(centre[2]),
                }
            )
    return pd.DataFrame(rows)

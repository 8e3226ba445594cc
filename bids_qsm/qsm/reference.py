"""Susceptibility referencing: subtract the mean of a reference region and report it.

QSM gives susceptibility up to a constant; the consensus asks to reference it (whole brain at
least) and to report the region. "brain": mean over the QSM mask; "csf": mean over the given
CSF mask within it; "none": unreferenced (value 0).
"""

from __future__ import annotations

import numpy as np


def reference_chi(
    chi: np.ndarray, mask: np.ndarray, region: str = "brain", csf_mask: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """Referenced susceptibility (ppm, 0 outside ``mask``) and the subtracted value (ppm)."""
    mask = np.asarray(mask, bool)
    if region == "none":
        value = 0.0
    elif region == "brain":
        value = float(chi[mask].mean(dtype=np.float64))
    elif region == "csf":
        if csf_mask is None:
            raise ValueError("reference 'csf' needs a CSF mask")
        sel = np.asarray(csf_mask, bool) & mask
        if sel.sum() < 10:
            raise ValueError("CSF reference mask has fewer than 10 voxels inside the QSM mask")
        value = float(chi[sel].mean(dtype=np.float64))
    else:
        raise ValueError(f"unknown reference region {region!r}")
    out = np.where(mask, chi - np.float32(value), np.float32(0)).astype(np.float32)
    return out, value


def csf_mask_from_r2star(
    r2star_hz: np.ndarray,
    mask: np.ndarray,
    *,
    max_r2star_hz: float = 5.0,
    min_voxels: int = 50,
) -> np.ndarray:
    """CSF estimate for referencing: voxels of the mask whose R2* (Hz) is below ``max_r2star_hz``.

    Free water has R2* of a few Hz at 3 T, far below any tissue. Raises ``ValueError`` if fewer
    than ``min_voxels`` voxels qualify.
    """
    sel = np.asarray(mask, bool) & (r2star_hz > 0) & (r2star_hz < max_r2star_hz)
    if int(sel.sum()) < min_voxels:
        raise ValueError(
            f"only {int(sel.sum())} voxels with R2* < {max_r2star_hz} Hz: cannot derive a CSF mask"
        )
    return sel

"""Accuracy metrics against a ground-truth susceptibility map (QSM challenge 2.0 definitions).

* NRMSE (%): ``100 ||(x - mean x) - (t - mean t)|| / ||t - mean t||`` inside the mask.
* HFEN (%): NRMSE of Laplacian-of-Gaussian (sigma 1.5 voxels) filtered images in the mask.
* XSIM: SSIM with K1 = 0.01, K2 = 0.001, L = 1, 5x5x5 box windows, averaged over the mask.
* Regional slope: least-squares slope of regional means (recon vs truth) and the mean
  absolute regional error (ppb).
* Rim-vs-centre bias (ppb): mean error in the outer ``rim_mm`` of the mask minus the mean error
  deeper inside (a smooth bias from background removal or phase-offset errors shows here).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy.ndimage import gaussian_laplace, uniform_filter


def nrmse(recon: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Demeaned NRMSE (%) inside ``mask``."""
    m = np.asarray(mask, bool)
    x = recon[m].astype(np.float64)
    t = truth[m].astype(np.float64)
    x -= x.mean()
    t -= t.mean()
    return float(100 * np.linalg.norm(x - t) / np.linalg.norm(t))


def hfen(recon: np.ndarray, truth: np.ndarray, mask: np.ndarray, sigma: float = 1.5) -> float:
    """High-frequency error norm (%): NRMSE of LoG-filtered images (sigma in voxels)."""
    m = np.asarray(mask, bool)
    # Filtered over the whole volume (15-voxel kernel), norms inside the mask (challenge 2016).
    a = gaussian_laplace(recon.astype(np.float64), sigma, truncate=5.0)[m]
    b = gaussian_laplace(truth.astype(np.float64), sigma, truncate=5.0)[m]
    return float(100 * np.linalg.norm(a - b) / np.linalg.norm(b))


def xsim(recon: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """XSIM: SSIM for susceptibility maps (K1 0.01, K2 0.001, L 1), mean over ``mask``."""
    m = np.asarray(mask, bool)
    a = np.where(m, recon, 0).astype(np.float64)
    b = np.where(m, truth, 0).astype(np.float64)
    c1, c2 = (0.01 * 1.0) ** 2, (0.001 * 1.0) ** 2
    mu_a, mu_b = uniform_filter(a, 5), uniform_filter(b, 5)
    saa = uniform_filter(a * a, 5) - mu_a**2
    sbb = uniform_filter(b * b, 5) - mu_b**2
    sab = uniform_filter(a * b, 5) - mu_a * mu_b
    ssim = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    return float(ssim[m].mean())


def regional_means(
    chi: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray,
    regions: Mapping[str, Sequence[int]] | Iterable[int],
) -> dict[str, float]:
    """Mean (ppm) per region over the voxels inside ``mask``; regions with no voxel skipped.

    ``regions`` maps a name to the label values it unites, or is a plain list of label ids.
    """
    m = np.asarray(mask, bool)
    if not isinstance(regions, Mapping):
        regions = {str(i): (int(i),) for i in regions}
    out = {}
    for name, ids in regions.items():
        sel = np.isin(labels, list(ids)) & m
        if sel.any():
            out[name] = float(chi[sel].mean(dtype=np.float64))
    return out


def regional_agreement(
    recon: np.ndarray,
    truth: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray,
    regions: Mapping[str, Sequence[int]] | Iterable[int],
) -> dict[str, float]:
    """Slope, intercept (ppm) and mean absolute error (ppb) of regional means vs truth.

    Regional truth is the mean of ``truth`` over the same voxels as the reconstruction.
    """
    if not isinstance(regions, Mapping):
        regions = {str(i): (int(i),) for i in regions}
    r = regional_means(recon, labels, mask, regions)
    t = regional_means(truth, labels, mask, regions)
    keys = sorted(set(r) & set(t))
    if len(keys) < 2:
        raise ValueError("need at least two regions inside the mask")
    x = np.array([t[k] for k in keys])
    y = np.array([r[k] for k in keys])
    slope, intercept = np.polyfit(x, y, 1)
    return {
        "slope": float(slope),
        "intercept_ppm": float(intercept),
        "mae_ppb": float(1000 * np.mean(np.abs(y - x))),
        "n_regions": float(len(keys)),
    }


def deep_gray_matter_regions() -> dict[str, tuple[int, ...]]:
    """AAL3 deep gray matter regions (thalamus, caudate, putamen, pallidum, SN, RN; L and R)."""
    from ..atlas.structures import aal3_structures

    keep = {"thalamus", "caudate", "putamen", "globus_pallidus", "substantia_nigra", "red_nucleus"}
    return {f"{s.name}_{s.hemisphere}": s.labels for s in aal3_structures() if s.name in keep}


def rim_centre_bias(
    recon: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray,
    voxel_size: Sequence[float],
    rim_mm: float = 5.0,
) -> float:
    """Mean error (ppb) within ``rim_mm`` (mm) of the mask edge minus the mean error deeper in.

    Both maps are demeaned in the mask first (the reference is arbitrary).
    """
    from scipy.ndimage import distance_transform_edt

    m = np.asarray(mask, bool)
    err = np.where(m, recon - recon[m].mean() - (truth - truth[m].mean()), 0)
    dist = distance_transform_edt(m, sampling=[float(v) for v in voxel_size])
    rim = m & (dist <= rim_mm)
    centre = m & (dist > rim_mm)
    if not rim.any() or not centre.any():
        raise ValueError(f"mask has no voxels deeper than {rim_mm} mm")
    return float(1000 * (err[rim].mean(dtype=np.float64) - err[centre].mean(dtype=np.float64)))

"""Brain mask from whole-head GRE magnitude (no FSL) and its phase-quality refinement.

Steps: Otsu threshold of the (combined) magnitude; morphological opening by a ball of a few mm
that cuts the thin bridges between brain and scalp; largest connected component; hole filling.
The mask is then refined by the echo-fit residual (voxels with a large relative residual, such
as near air-tissue interfaces, are dropped). Morphology runs on a grid downsampled to about
2 mm, which is ample for a mask and makes it fast on a full 1 mm head.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi
from skimage.filters import threshold_otsu


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Largest 6-connected component of a boolean mask (empty stays empty)."""
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask.astype(bool, copy=True)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def ball(radius_vox: np.ndarray) -> np.ndarray:
    """Ellipsoidal structuring element with per-axis radii in voxels."""
    r = np.maximum(np.asarray(radius_vox, dtype=float), 0.5)
    n = np.floor(r).astype(int)
    g = np.ogrid[tuple(slice(-k, k + 1) for k in n)]
    return sum((gi / ri) ** 2 for gi, ri in zip(g, r, strict=True)) <= 1.0


def erode_mask(mask: np.ndarray, voxel_size: np.ndarray, radius_mm: float) -> np.ndarray:
    """Erode by a ball of ``radius_mm`` (mm); returns a new boolean array."""
    if radius_mm <= 0:
        return mask.astype(bool, copy=True)
    st = ball(radius_mm / np.asarray(voxel_size, dtype=float))
    return ndi.binary_erosion(mask, structure=st)


def erode_voxels(mask: np.ndarray, voxel_size: np.ndarray, n_voxels: int) -> np.ndarray:
    """Erode by ``n_voxels`` of the finest voxel edge, measured in mm along every axis.

    One step removes ``min(voxel_size)`` mm from every side: on isotropic voxels this is the
    usual 6-connected one-voxel erosion, on thick slices (e.g. 0.5 x 0.5 x 5 mm) it erodes
    in-plane only instead of removing 5 mm of brain at the top and the bottom.
    """
    if n_voxels <= 0:
        return mask.astype(bool, copy=True)
    vs = np.asarray(voxel_size, dtype=float)
    return ndi.binary_erosion(mask, structure=ball(float(vs.min()) / vs), iterations=n_voxels)


def _downsample_factors(voxel_size: np.ndarray, target_mm: float) -> tuple[int, ...]:
    return tuple(max(1, int(round(target_mm / float(v)))) for v in voxel_size)


def brain_mask(
    mag: np.ndarray,
    voxel_size: np.ndarray,
    *,
    threshold_scale: float = 0.5,
    opening_radius_mm: float = 4.0,
    work_resolution_mm: float = 2.0,
) -> np.ndarray:
    """Brain mask from a magnitude image (3D, or 4D echoes combined by root-sum-of-squares).

    Parameters
    ----------
    mag : magnitude (any units), (X, Y, Z) or (X, Y, Z, E).
    voxel_size : voxel edge lengths (mm).
    threshold_scale : the intensity threshold is this fraction of the Otsu threshold between
        background noise and tissue (lower keeps darker, iron-rich or edge tissue).
    opening_radius_mm : radius (mm) of the opening that separates brain from scalp.
    work_resolution_mm : the morphology runs on a grid of about this resolution (mm).

    Returns
    -------
    Boolean mask on the input grid: largest component, holes filled.
    """
    vs = np.asarray(voxel_size, dtype=float)
    m = np.asarray(mag, dtype=np.float32)
    if m.ndim == 4:
        m = np.sqrt((m * m).sum(axis=-1))
    f = _downsample_factors(vs, work_resolution_mm)
    shape_c = tuple(-(-n // k) for n, k in zip(m.shape, f, strict=True))
    # Block mean onto the coarse grid (edge blocks padded with edge values).
    pad = [(0, sc * k - n) for sc, k, n in zip(shape_c, f, m.shape, strict=True)]
    mc = (
        np.pad(m, pad, mode="edge")
        .reshape(shape_c[0], f[0], shape_c[1], f[1], shape_c[2], f[2])
        .mean(axis=(1, 3, 5))
    )
    vs_c = vs * np.asarray(f)
    hi = float(np.percentile(mc, 99.5))
    thr = threshold_scale * float(threshold_otsu(np.minimum(mc, hi)))
    fg = mc > thr
    core = erode_mask(fg, vs_c, opening_radius_mm)
    core = largest_component(core)
    if not core.any():  # small or tight FOV (e.g. a slab): skip the opening
        core = largest_component(fg)
    st = ball(opening_radius_mm / vs_c)
    coarse = ndi.binary_dilation(core, structure=st) & fg
    coarse = largest_component(coarse)
    coarse = ndi.binary_closing(coarse, structure=ball(np.full(3, 1.0)), border_value=0)
    coarse = ndi.binary_fill_holes(coarse | core)
    # Back to the input grid: nearest-neighbour upsampling, then the fine threshold at the edge.
    up = _upsample(coarse, f, m.shape)
    inner = _upsample(erode_mask(coarse, vs_c, max(vs_c)), f, m.shape)
    out = inner | (up & (m > thr))
    out = largest_component(out)
    return fill_holes(out)


def _upsample(x: np.ndarray, f: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour upsampling by integer factors ``f``, cropped to ``shape``."""
    up = x.repeat(f[0], 0).repeat(f[1], 1).repeat(f[2], 2)
    return up[: shape[0], : shape[1], : shape[2]]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed holes in 3D and, slice by slice, in every axial plane."""
    # Holes are the components of the background that do not touch the border (as
    # ndi.binary_fill_holes, 6-connected), found by one labelling instead of iterated
    # dilations; axial holes likewise with in-plane (4-connected) components.
    out = np.asarray(mask, bool)
    st2 = np.zeros((3, 3, 3), bool)
    st2[:, :, 1] = ndi.generate_binary_structure(2, 1)
    for st, faces in ((None, range(6)), (st2, range(4))):
        lab, n = ndi.label(~out, structure=st)
        if n == 0:
            continue
        edge = np.zeros(n + 1, bool)
        for f in faces:
            edge[np.unique(np.take(lab, 0 if f % 2 == 0 else -1, axis=f // 2))] = True
        edge[0] = True
        out = out | ~edge[lab]
    return out


def refine_mask(
    mask: np.ndarray, quality: np.ndarray, threshold: float, *, fill: bool = True
) -> np.ndarray:
    """Drop voxels whose quality map (e.g. relative echo-fit residual) exceeds ``threshold``.

    Keeps the largest component; with ``fill`` enclosed holes (isolated noisy voxels, veins)
    are filled back so that background removal does not erode around them.
    """
    out = mask & (quality <= threshold)
    out = largest_component(out)
    return fill_holes(out) & mask if fill else out

"""Minimum-intensity projection (minIP) over slabs along the slice axis."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["minip", "slab_voxels"]


def slab_voxels(thickness_mm: float, slice_spacing_mm: float) -> int:
    """Number of slices in a slab of ``thickness_mm`` (nearest integer, at least 1)."""
    if thickness_mm <= 0 or slice_spacing_mm <= 0:
        raise ValueError("slab thickness and slice spacing must be positive (mm)")
    return max(1, int(np.floor(thickness_mm / slice_spacing_mm + 0.5)))


def minip(
    image: np.ndarray,
    thickness_mm: float,
    voxel_size: np.ndarray,
    axis: int = 2,
    mode: str = "sliding",
) -> np.ndarray:
    """Minimum-intensity projection over slabs of ``thickness_mm`` along ``axis`` (float32).

    ``n = round(thickness_mm / voxel_size[axis])`` slices per slab.

    * ``"sliding"`` (default): output slice k is the minimum over input slices
      ``k - n//2 .. k - n//2 + n - 1`` (clipped at the volume edges). Same shape and geometry
      (same affine) as the input, so it is written in the GRE space; a single dark voxel
      spreads over exactly ``n`` consecutive slices.
    * ``"slabs"``: non-overlapping slabs ``[0, n), [n, 2n), ...`` each reduced to one slice
      (the last slab may be thinner). The output has ``ceil(N / n)`` slices of spacing
      ``n * voxel_size[axis]``; the first output slice sits at the centre of the first slab.
    """
    img = np.asarray(image, dtype=np.float32)
    n = slab_voxels(thickness_mm, float(np.asarray(voxel_size, float)[axis]))
    if mode == "sliding":
        # Even sizes: scipy's window covers k - n//2 .. k + (n-1)//2 with origin 0.
        return ndimage.minimum_filter1d(img, size=n, axis=axis, mode="nearest")
    if mode == "slabs":
        nz = img.shape[axis]
        starts = np.arange(0, nz, n)
        return np.minimum.reduceat(img, starts, axis=axis)
    raise ValueError(f"unknown minIP mode {mode!r} (sliding, slabs)")

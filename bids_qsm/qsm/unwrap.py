"""Spatial phase unwrapping: exact quality-guided (default) and Laplacian (fast, inexact).

* :func:`unwrap_quality` is scikit-image's 3D reliability-sorting path follower (Abdul-Rahman
  2007): voxels are joined in order of decreasing second-difference reliability and each joins
  its neighbour's cluster by adding the 2 pi multiple that makes the difference smallest. The
  result is the wrapped phase plus an integer multiple of 2 pi at every voxel (exact: no
  harmonic terms are lost), defined up to one global 2 pi n per connected region.
* :func:`unwrap_laplacian` solves ``lap(phi) = cos(phi) lap(sin phi) - sin(phi) lap(cos phi)``
  by FFT. It is smooth and fast but not congruent to the wrapped phase: acceptable for SWI,
  not recommended for QSM (ISMRM consensus 2024).
"""

from __future__ import annotations

import numpy as np
from skimage.restoration import unwrap_phase

from .grid import bounding_box, irfft3, laplacian_eigenvalues, pad_to_fast, rfft3

TWO_PI = np.float32(2 * np.pi)


def unwrap_quality(phase: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Exact quality-guided 3D unwrapping of ``phase`` (rad) inside ``mask``.

    Returns float32 radians, 0 outside the mask. The global 2 pi multiple is chosen so that the
    mean inside the mask lies in [-pi, pi). ``mask`` should be one connected component
    (separate components get independent 2 pi offsets).
    """
    phase = np.asarray(phase, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    sl = bounding_box(mask, 1)
    sub = np.ma.array(phase[sl].astype(np.float64), mask=~mask[sl])
    un = unwrap_phase(sub, wrap_around=False)
    # Snap to the exact 2 pi multiple (removes float noise of the unwrapper).
    k = np.rint((un.filled(0.0) - phase[sl]) / (2 * np.pi)).astype(np.float32)
    out = np.zeros_like(phase)
    m = mask[sl]
    vals = phase[sl] + TWO_PI * k
    shift = TWO_PI * np.float32(np.round(vals[m].mean() / TWO_PI)) if m.any() else 0.0
    out[sl] = np.where(m, vals - shift, np.float32(0))
    return out


def unwrap_laplacian(
    phase: np.ndarray, voxel_size: np.ndarray, mask: np.ndarray | None = None, threads: int = 2
) -> np.ndarray:
    """Laplacian unwrapping (rad, float32) of ``phase`` (rad); 6 real FFTs on a padded grid.

    The Laplacian is the periodic 7-point stencil in mm (``voxel_size``); its inverse sets the
    k = 0 term to 0, so the output is defined up to a constant (removed: mean 0 in ``mask``).
    """
    phase = np.asarray(phase, dtype=np.float32)
    pad = tuple(max(2, n // 8) for n in phase.shape)
    s, region = pad_to_fast(np.sin(phase), pad)
    c, _ = pad_to_fast(np.cos(phase), pad)
    shape = s.shape
    lam = laplacian_eigenvalues(shape, voxel_size)  # symbol of -Laplacian
    lap_s = irfft3(rfft3(s, threads) * -lam, shape, threads)
    lap_c = irfft3(rfft3(c, threads) * -lam, shape, threads)
    lap_phi = c * lap_s - s * lap_c
    del lap_s, lap_c, s, c
    spec = rfft3(lap_phi, threads)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(lam > 0, -1.0 / lam, 0.0).astype(np.float32)
    out = irfft3(spec * inv, shape, threads)[region].astype(np.float32)
    m = np.ones(phase.shape, bool) if mask is None else np.asarray(mask, bool)
    out -= np.float32(out[m].mean())
    return np.where(m, out, np.float32(0))

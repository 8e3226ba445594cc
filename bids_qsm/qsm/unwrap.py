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
import scipy.fft as sfft
from scipy import ndimage as ndi
from skimage.restoration import unwrap_phase

from .grid import (
    block_mean,
    bounding_box,
    upsample_linear,
)
from .mask import largest_component

TWO_PI = np.float32(2 * np.pi)


def auto_downsample(voxel_size: np.ndarray, target_mm: float = 2.0) -> int:
    """Integer downsampling factor that brings the largest voxel edge to about ``target_mm``."""
    return max(1, int(round(target_mm / float(np.max(voxel_size)))))


def unwrap_quality(
    phase: np.ndarray,
    mask: np.ndarray,
    weight: np.ndarray | None = None,
    downsample: int = 1,
    max_uncertain_fraction: float = 0.01,
    grow: bool = True,
) -> np.ndarray:
    """Exact quality-guided 3D unwrapping of ``phase`` (rad) inside ``mask``.

    Returns float32 radians, 0 outside the mask: the wrapped phase plus an exact multiple of
    2 pi at every voxel, the global multiple chosen so that the mask mean lies in [-pi, pi).
    ``mask`` should be one connected component (separate components get independent offsets).

    With ``downsample`` > 1 the quality-guided unwrapping runs on a grid coarsened by that
    factor (complex block average weighted by ``weight``, e.g. magnitude, which also raises
    the SNR), and every fine voxel takes the 2 pi multiple closest to the trilinearly
    interpolated coarse solution. This is exact wherever the phase differs from its local
    2-voxel average by less than pi, i.e. wherever spatial unwrapping is well posed at all,
    and about 8x faster for a factor of 2. If more than ``max_uncertain_fraction`` (1 %) of the
    mask strays more than pi/2 from the coarse solution, the full-resolution unwrapper is used.
    Otherwise, with ``grow``, only the sure voxels (inside the coarse mask, within pi/4 of the
    coarse solution, and not next to a voxel that is not) keep the coarse rounding; the others
    (mainly the mask edge, where the nearest-value extension of the coarse solution misses
    steep fields next to bone and sinuses) are unwrapped by :func:`grow_unwrap` from them.
    """
    phase = np.asarray(phase, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    sl = bounding_box(mask, 1)
    ph, m = phase[sl], mask[sl]
    if downsample <= 1:
        un = _skimage_unwrap(ph, m)
    else:
        w = m.astype(np.float32) if weight is None else np.where(m, weight[sl], 0)
        zc = block_mean((w * np.exp(1j * ph)).astype(np.complex64), downsample)
        mc = block_mean(m.astype(np.float32), downsample) >= 0.5
        if not mc.any():
            un = _skimage_unwrap(ph, m)
        else:
            mc = largest_component(mc)
            coarse = _skimage_unwrap(np.angle(zc).astype(np.float32), mc)
            # Extend the coarse solution outwards (nearest value) so edge voxels interpolate.
            idx = ndi.distance_transform_edt(~mc, return_distances=False, return_indices=True)
            coarse = coarse[tuple(idx)]
            ref = upsample_linear(coarse, downsample, ph.shape)
            un = ph + TWO_PI * np.rint((ref - ph) / TWO_PI)
            # Where the fine phase strays more than pi/2 from the coarse model the rounding
            # is uncertain (phase gradients near pi per coarse voxel): then unwrap at full
            # resolution instead.
            dev = np.abs(un - ref)
            uncertain = dev[m] > np.float32(np.pi / 2)
            if uncertain.mean() > max_uncertain_fraction:
                un = _skimage_unwrap(ph, m)
            elif grow:
                # Voxels well inside the coarse mask and close to the coarse model are sure;
                # the others (mask edge, steep phase) are unwrapped by growing from them.
                inside = upsample_linear(mc.astype(np.float32), downsample, ph.shape) > 0.99
                sure = m & inside & (dev <= np.float32(np.pi / 4))
                sure &= ndi.binary_erosion(sure)
                w_fine = np.where(m, w, 0).astype(np.float32)
                un = grow_unwrap(un, ph, m, sure, w_fine)
    out = np.zeros_like(phase)
    shift = TWO_PI * np.float32(np.round(un[m].mean() / TWO_PI)) if m.any() else 0.0
    out[sl] = np.where(m, un - shift, np.float32(0))
    return out


def grow_unwrap(
    un: np.ndarray,
    ph: np.ndarray,
    mask: np.ndarray,
    sure: np.ndarray,
    weight: np.ndarray,
    max_pass: int = 100,
) -> np.ndarray:
    """Unwrap the voxels of ``mask`` outside ``sure`` by growing outwards from ``sure``.

    In every pass each not yet unwrapped voxel with unwrapped 6-neighbours takes the 2 pi
    multiple of its wrapped phase ``ph`` (rad) closest to the ``weight``-weighted mean of
    those neighbours (path following, ring by ring). ``un`` holds the unwrapped phase of the
    ``sure`` voxels (others are replaced where reached; unreached ones keep their value).
    ``mask`` must be False on the array border. Returns a new float32 array (rad).
    """
    out = np.array(un, dtype=np.float32, copy=True)
    u_f, p_f, w_f = out.ravel(), np.asarray(ph, np.float32).ravel(), weight.ravel()
    done = np.array(sure, bool, copy=True).ravel()
    todo = np.flatnonzero(np.asarray(mask, bool).ravel() & ~done)
    strides = [int(np.prod(out.shape[a + 1 :])) for a in range(out.ndim)]
    for _ in range(max_pass):
        if todo.size == 0:
            break
        num = np.zeros(todo.size, np.float32)
        den = np.zeros(todo.size, np.float32)
        for st in strides:
            for nb in (todo + st, todo - st):
                wn = np.where(done[nb], w_f[nb], np.float32(0))
                num += wn * u_f[nb]
                den += wn
        front = den > 0
        if not front.any():
            break
        i = todo[front]
        pred = num[front] / den[front]
        u_f[i] = p_f[i] + TWO_PI * np.rint((pred - p_f[i]) / TWO_PI)
        done[i] = True
        todo = todo[~front]
    return out


def _skimage_unwrap(ph: np.ndarray, m: np.ndarray) -> np.ndarray:
    """scikit-image reliability-sorting unwrap, snapped to exact 2 pi multiples (float32)."""
    sub = np.ma.array(ph.astype(np.float64), mask=~m)
    un = unwrap_phase(sub, wrap_around=False).filled(0.0)
    k = np.rint((un - ph) / (2 * np.pi)).astype(np.float32)
    return np.where(m, ph + TWO_PI * k, np.float32(0)).astype(np.float32)


def unwrap_laplacian(
    phase: np.ndarray, voxel_size: np.ndarray, mask: np.ndarray | None = None, threads: int = 2
) -> np.ndarray:
    """Laplacian (least-squares) unwrapping of ``phase`` (rad), float32, one DCT pair.

    The Laplacian of the true phase is formed from wrapped neighbour differences (exact where
    the phase changes by less than pi per voxel) and inverted with the 7-point stencil under
    Neumann boundary conditions by DCT (Ghiglia & Romero 1994). Smooth and robust to noise, but
    it does not preserve the wrapped values exactly (not congruent), so it is offered as the
    fast option. The result is defined up to a constant (removed: mean 0 in ``mask``).
    """
    phase = np.asarray(phase, dtype=np.float32)
    vs = [float(v) for v in voxel_size]
    lap = np.zeros(phase.shape, np.float32)
    for ax in range(3):
        d = np.diff(phase, axis=ax)
        d -= TWO_PI * np.rint(d / TWO_PI)  # wrapped differences
        d /= np.float32(vs[ax] ** 2)
        pad = [(0, 0)] * 3
        pad[ax] = (1, 1)
        dp = np.pad(d, pad)  # zero flux across the boundary (Neumann)
        lap += np.diff(dp, axis=ax)
    eig = None
    for ax, n in enumerate(phase.shape):
        e = (2 * np.cos(np.pi * np.arange(n) / n) - 2) / vs[ax] ** 2
        e = e.astype(np.float32).reshape([-1 if a == ax else 1 for a in range(3)])
        eig = e if eig is None else eig + e
    spec = sfft.dctn(lap, type=2, workers=threads)
    eig[0, 0, 0] = 1.0
    spec /= eig
    spec[0, 0, 0] = 0.0
    out = sfft.idctn(spec, type=2, workers=threads).astype(np.float32)
    m = np.ones(phase.shape, bool) if mask is None else np.asarray(mask, bool)
    out -= np.float32(out[m].mean())
    return np.where(m, out, np.float32(0))

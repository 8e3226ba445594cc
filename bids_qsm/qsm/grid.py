"""Grid helpers: bounding-box cropping, zero padding and threaded real FFTs (float32).

The reconstruction works on the bounding box of the brain mask plus a margin, zero padded
to a fast FFT length: on a whole-head 1 mm acquisition this is 2-4x fewer voxels than the
full field of view, and every FFT and element-wise operation scales with it.
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from .geometry import fast_padded_shape


def bounding_box(mask: np.ndarray, margin: int | tuple[int, ...] = 0) -> tuple[slice, ...]:
    """Slices of the smallest box holding ``mask``, grown by ``margin`` voxels (clipped)."""
    if not mask.any():
        raise ValueError("mask is empty: nothing to reconstruct")
    margins = (margin,) * mask.ndim if np.isscalar(margin) else tuple(margin)
    out = []
    for ax in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        lo = max(int(idx[0]) - margins[ax], 0)
        hi = min(int(idx[-1]) + 1 + margins[ax], mask.shape[ax])
        out.append(slice(lo, hi))
    return tuple(out)


def pad_to_fast(x: np.ndarray, pad: int | tuple[int, ...]) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Zero pad ``x`` by at least ``pad`` voxels per side up to a fast FFT shape.

    Returns the padded float32 array and the slices that recover the original region.
    """
    shape = fast_padded_shape(x.shape, pad)
    out = np.zeros(shape, dtype=np.float32)
    lo = [(s - n) // 2 for s, n in zip(shape, x.shape, strict=True)]
    region = tuple(slice(a, a + n) for a, n in zip(lo, x.shape, strict=True))
    out[region] = x
    return out, region


def rfft3(x: np.ndarray, threads: int = 2) -> np.ndarray:
    """Real 3D FFT (complex64 for float32 input)."""
    return sfft.rfftn(x, workers=threads)


def irfft3(x: np.ndarray, shape: tuple[int, ...], threads: int = 2) -> np.ndarray:
    """Inverse of :func:`rfft3` onto ``shape`` (float32 for complex64 input); ``x`` is consumed."""
    return sfft.irfftn(x, s=shape, workers=threads, overwrite_x=True)


def laplacian_eigenvalues(shape: tuple[int, int, int], voxel_size: np.ndarray) -> np.ndarray:
    """``|E(k)|^2 = sum_i 4 sin^2(pi k_i d_i) / d_i^2`` (mm^-2), rfft layout.

    The Fourier symbol of minus the 7-point periodic Laplacian, i.e. of ``grad^T grad`` with
    forward differences; it is 0 only at k = 0.
    """
    out = None
    for ax, (n, d) in enumerate(zip(shape, voxel_size, strict=True)):
        f = sfft.rfftfreq(n) if ax == 2 else sfft.fftfreq(n)
        e = (4.0 * np.sin(np.pi * f) ** 2 / float(d) ** 2).astype(np.float32)
        e = e.reshape([-1 if a == ax else 1 for a in range(3)])
        out = e if out is None else out + e
    return out


def block_mean(x: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor``^3 blocks (edge blocks padded by edge values); any dtype."""
    if factor == 1:
        return x.copy()
    shape_c = tuple(-(-n // factor) for n in x.shape)
    pad = [(0, c * factor - n) for c, n in zip(shape_c, x.shape, strict=True)]
    xp = np.pad(x, pad, mode="edge")
    return xp.reshape(shape_c[0], factor, shape_c[1], factor, shape_c[2], factor).mean(
        axis=(1, 3, 5), dtype=x.dtype
    )


def upsample_linear(x: np.ndarray, factor: int, shape: tuple[int, ...]) -> np.ndarray:
    """Trilinear upsampling of a :func:`block_mean` grid back onto ``shape`` (real input).

    Block centres sit at fine coordinate ``factor * j + (factor - 1) / 2``; separable linear
    interpolation with edge replication, written with strided slices (fast).
    """
    if factor == 1:
        return x.copy()
    out = x
    for ax in range(3):
        c = np.moveaxis(out, ax, 0)
        prev = np.concatenate([c[:1], c[:-1]], axis=0)
        nxt = np.concatenate([c[1:], c[-1:]], axis=0)
        fine = np.empty((c.shape[0] * factor, *c.shape[1:]), dtype=x.dtype)
        for q in range(factor):
            t = (q - (factor - 1) / 2) / factor
            if t < 0:
                fine[q::factor] = (1 + t) * c - t * prev
            else:
                fine[q::factor] = (1 - t) * c + t * nxt
        out = np.moveaxis(fine[: shape[ax]], 0, ax)
    return np.ascontiguousarray(out, dtype=x.dtype)

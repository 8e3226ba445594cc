"""High-pass filtered phase for SWI: Gaussian (CLEAR-SWI style) and homodyne (Haacke).

Sign conventions (see ``docs/methods_swi.md``)
----------------------------------------------
* Input fields and phases follow the bids-qsm internal convention (after the vendor phase-sign
  option): a **positive** field offset (Hz) or echo phase means **paramagnetic** (veins, iron).
  The complex signal is ``S = M exp(+i 2 pi f TE)``.
* The functions here return high-pass filtered *fields* (Hz) or *phases* (rad) in that same
  internal sign (paramagnetic positive). :func:`bids_qsm.swi.pipeline.compute_swi` then flips the
  sign to the SWI convention (paramagnetic negative) for the Haacke negative-phase mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from bids_qsm.errors import InputDataError
from bids_qsm.qsm.phase import wrap_to_pi

__all__ = [
    "field_from_phase",
    "gaussian_highpass",
    "hanning_lowpass_window",
    "homodyne_highpass",
    "laplacian_unwrap",
    "sigma_mm_to_vox",
]


def sigma_mm_to_vox(sigma_mm: Sequence[float], voxel_size: Sequence[float]) -> tuple[float, ...]:
    """Convert Gaussian widths (standard deviation) from mm to voxels, axis by axis."""
    return tuple(
        float(s) / float(d) for s, d in zip(sigma_mm, np.asarray(voxel_size, float), strict=True)
    )


def gaussian_highpass(
    field: np.ndarray,
    mask: np.ndarray,
    sigma_vox: Sequence[float] = (4.0, 4.0, 0.0),
    truncate: float = 4.0,
) -> np.ndarray:
    """Gaussian high-pass of a smooth, unwrapped field (any unit; returned in the same unit).

    ``hp = field - G*field`` where ``G*`` is a *normalised* Gaussian convolution restricted to
    the mask, ``(G*(m f)) / (G*m)``, so that values outside the brain never leak in and the
    high-pass does not create a rim at the brain edge. A sigma of 0 on an axis means no
    smoothing along it (CLEAR-SWI uses ``[4, 4, 0]`` voxels: in-plane only). Output is float32,
    zero outside the mask.

    Parameters
    ----------
    field : (X, Y, Z) array, e.g. the unwrapped combined field in Hz.
    mask : (X, Y, Z) boolean brain mask.
    sigma_vox : Gaussian standard deviation per axis, in voxels.
    truncate : kernel half-width in standard deviations.
    """
    field = np.asarray(field, dtype=np.float32)
    m = np.asarray(mask, dtype=bool)
    if field.shape != m.shape:
        raise InputDataError(f"field shape {field.shape} differs from mask shape {m.shape}")
    sig = tuple(max(0.0, float(s)) for s in sigma_vox)
    mf = m.astype(np.float32)
    num = ndimage.gaussian_filter(
        np.where(m, field, 0.0).astype(np.float32), sig, truncate=truncate, mode="constant"
    )
    den = ndimage.gaussian_filter(mf, sig, truncate=truncate, mode="constant")
    with np.errstate(divide="ignore", invalid="ignore"):
        low = num / den
    hp = np.where(m, field - low, 0.0).astype(np.float32)
    hp[~np.isfinite(hp)] = 0.0
    return hp


def hanning_lowpass_window(shape: tuple[int, int], window: int | Sequence[int]) -> np.ndarray:
    """2D separable Hanning low-pass window in unshifted FFT layout (float32, peak 1 at k=0).

    ``window`` is the full width of the window in k-space samples (e.g. 64 means the central
    64 x 64 k-space samples, Haacke's classic 64 x 64 filter). Along each axis
    ``h(k) = 0.5 (1 + cos(2 pi k / w))`` for ``|k| < w / 2`` (k integer frequency index),
    else 0. A width larger than the matrix is clipped to the matrix size.
    """
    ws = (int(window), int(window)) if np.isscalar(window) else tuple(int(w) for w in window)
    out = []
    for n, w in zip(shape, ws, strict=True):
        w = max(1, min(int(w), int(n)))
        k = sfft.fftfreq(n) * n  # integer frequency indices
        h = np.where(np.abs(k) < w / 2.0, 0.5 * (1.0 + np.cos(2.0 * np.pi * k / w)), 0.0)
        out.append(h.astype(np.float32))
    return out[0][:, None] * out[1][None, :]


def homodyne_highpass(
    mag: np.ndarray,
    phase_rad: np.ndarray,
    window: int | Sequence[int] = 64,
    slice_axis: int = 2,
    workers: int | None = None,
) -> np.ndarray:
    """Homodyne high-pass phase of one echo (rad, float32, in (-pi, pi]).

    Per slice (2D FFT over the two in-plane axes): ``u = mag exp(i phase)``,
    ``u_lp = IFFT2(H * FFT2(u))`` with a Hanning window ``H`` of ``window`` k-space samples,
    ``hp = angle(u conj(u_lp))`` (= ``angle(u / u_lp)``). A larger window removes more of the
    low spatial frequencies. The sign follows the input phase (internal: paramagnetic
    positive). Magnitude weighting in the low-pass keeps noisy background voxels from
    dominating near the brain edge.
    """
    mag = np.asarray(mag, dtype=np.float32)
    phase_rad = np.asarray(phase_rad, dtype=np.float32)
    if mag.shape != phase_rad.shape or mag.ndim != 3:
        raise InputDataError(f"magnitude {mag.shape} and phase {phase_rad.shape} must be 3D alike")
    axes = tuple(a for a in range(3) if a != slice_axis % 3)
    u = (mag * np.exp(1j * phase_rad)).astype(np.complex64)
    h = hanning_lowpass_window((u.shape[axes[0]], u.shape[axes[1]]), window)
    h = np.expand_dims(h, axis=slice_axis % 3)
    k = sfft.fftn(u, axes=axes, workers=workers)
    k *= h
    low = sfft.ifftn(k, axes=axes, workers=workers, overwrite_x=True)
    return np.angle(u * np.conj(low)).astype(np.float32)


def _neumann_laplacian(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Second-difference Laplacian with reflecting (Neumann) boundaries (DCT-II consistent)."""
    out = np.zeros_like(x)
    for ax in range(3):
        w = np.float32(1.0 / d[ax] ** 2)
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax], hi[ax] = slice(0, -1), slice(1, None)
        lo, hi = tuple(lo), tuple(hi)
        diff = (x[hi] - x[lo]) * w  # forward differences; zero flux across the boundary
        out[lo] += diff
        out[hi] -= diff
    return out


def laplacian_unwrap(
    phase_rad: np.ndarray, voxel_size: Sequence[float], workers: int | None = None
) -> np.ndarray:
    """Laplacian (Poisson) phase unwrapping, inexact but adequate for SWI high-pass (rad).

    ``lap(phi) = cos(phi) lap(sin phi) - sin(phi) lap(cos phi)``, then the inverse Laplacian by
    DCT (Neumann boundaries). The result misses constant and harmonic (smooth) terms, which a
    high-pass filter removes anyway. Not for QSM (see METHODS section 1). float32.
    """
    phi = np.asarray(phase_rad, dtype=np.float32)
    d = np.asarray(voxel_size, dtype=float)
    s, c = np.sin(phi), np.cos(phi)
    rhs = c * _neumann_laplacian(s, d)
    rhs -= s * _neumann_laplacian(c, d)
    del s, c
    # Eigenvalues of the Neumann second difference: (2 cos(pi k / N) - 2) / d^2.
    eig = np.zeros((1, 1, 1), np.float32)
    for ax, n in enumerate(phi.shape):
        shape = [1, 1, 1]
        shape[ax] = n
        lam = (2.0 * np.cos(np.pi * np.arange(n) / n) - 2.0) / d[ax] ** 2
        eig = eig + lam.astype(np.float32).reshape(shape)
    eig[0, 0, 0] = 1.0  # the mean (k = 0) is undetermined: set to zero below
    r = sfft.dctn(rhs, type=2, norm="ortho", workers=workers, overwrite_x=True)
    r /= eig
    r[0, 0, 0] = 0.0
    return sfft.idctn(r, type=2, norm="ortho", workers=workers, overwrite_x=True).astype(
        np.float32, copy=False
    )


def field_from_phase(
    mag: np.ndarray,
    phase_rad: np.ndarray,
    te_s: Sequence[float],
    voxel_size: Sequence[float],
    workers: int | None = None,
) -> np.ndarray:
    """Fallback combined field (Hz) from wrapped (multi-)echo phase, for SWI only.

    Multi-echo: for each pair of consecutive echoes the Hermitian product
    ``H_k = S_{k+1} conj(S_k)`` cancels the phase offset and has the small phase
    ``2 pi f (TE_{k+1} - TE_k)`` (far fewer wraps and no aliasing in veins, unlike late
    echoes); ``angle(H_k)`` is Laplacian-unwrapped and the pairs are combined by weighted least
    squares through the origin, ``f = sum_k w_k phi_k / (2 pi sum_k w_k dTE_k)`` with
    ``w_k = |H_k|``. Single echo: ``unwrap(phase) / (2 pi TE)`` (the phase offset is left in;
    the high-pass removes its smooth part). The result misses constant and harmonic terms
    (Laplacian unwrapping); prefer the QSM core's exact field (``field_hz``) when it exists.
    """
    te = np.asarray(te_s, dtype=np.float64)
    ph = np.asarray(phase_rad, dtype=np.float32)
    ne = ph.shape[-1]
    if ne == 1:
        return (laplacian_unwrap(ph[..., 0], voxel_size, workers) / (2.0 * np.pi * te[0])).astype(
            np.float32
        )
    mag = np.asarray(mag, dtype=np.float32)
    num = np.zeros(ph.shape[:3], np.float32)
    den = np.zeros(ph.shape[:3], np.float32)
    for k in range(ne - 1):
        dphi = wrap_to_pi(ph[..., k + 1] - ph[..., k])  # angle of H_k
        w = mag[..., k + 1] * mag[..., k]  # |H_k|
        num += w * laplacian_unwrap(dphi, voxel_size, workers)
        den += w * np.float32(te[k + 1] - te[k])
    with np.errstate(divide="ignore", invalid="ignore"):
        f = num / (np.float32(2.0 * np.pi) * den)
    f[~np.isfinite(f)] = 0.0
    return f.astype(np.float32)

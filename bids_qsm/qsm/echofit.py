"""Multi-echo phase: MCPC-3D-S offset removal, temporal unwrapping and the field fit over TE.

Model: after removing the echo-independent phase offset ``po`` (coil / transmit phase), the
phase of echo k is ``phi_k = 2 pi f TE_k`` with ``f`` the total field (Hz).

1. MCPC-3D-S (Eckstein 2018): ``dphi = angle(S_2 conj(S_1))`` has no offset; unwrap it
   spatially once (exact), giving ``2 pi f (TE_2 - TE_1)``; ``po = phi_1 - TE_1/dTE * dphi_u``,
   smoothed as a complex image (Gaussian, sigma in voxels) and divided out of every echo.
2. Temporal unwrapping: echo k takes the 2 pi multiple closest to the prediction of the field
   fitted on the echoes before it (starting from ``dphi_u``), so only one spatial unwrap is done.
3. Weighted least squares through the origin, ``f = sum w TE phi / (2 pi sum w TE^2)`` with
   ``w_k = mag_k^2`` (SNR weighting), and its relative residual
   ``sqrt(sum w |exp(i phi_k) - exp(i 2 pi f TE_k)|^2 / sum w)`` (0 = perfect fit, about 1.4
   for pure noise), which serves as a phase-quality map.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .grid import block_mean, irfft3, pad_to_fast, rfft3, upsample_linear
from .offset import fit_offset_polynomial
from .slabs import SlabRunner
from .unwrap import auto_downsample, unwrap_laplacian, unwrap_quality

TWO_PI = np.float32(2 * np.pi)

#: ``unwrapper(phase_rad, mask, weight) -> unwrapped_rad``
Unwrapper = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass
class FieldFit:
    """Result of :func:`fit_field`."""

    field_hz: np.ndarray  # total field (Hz), float32, 0 outside the mask
    residual: np.ndarray  # relative echo-fit residual (dimensionless)
    phase_offset: np.ndarray  # removed phase offset po (rad), 0 for single echo
    unwrapped: np.ndarray  # (X, Y, Z, E) offset-free unwrapped phase (rad)


def gaussian_smooth_fft(
    x: np.ndarray,
    sigma_vox: Sequence[float],
    weight: np.ndarray | None = None,
    threads: int = 2,
    downsample: int = 1,
) -> np.ndarray:
    """Normalised Gaussian smoothing by FFT (sigma in voxels), for real or complex ``x``.

    With ``weight``: ``G*(w x) / G*w`` (normalised convolution), so voxels of zero weight (outside
    the mask, padding) do not pull the result towards 0. Zero padding of 2 sigma avoids wrap-around.
    With ``downsample`` > 1 the smoothing runs on a block-averaged grid and is interpolated back
    (for sigma of several voxels the difference is negligible and the cost 8x lower).
    """
    if downsample > 1:
        w = np.ones(x.shape, np.float32) if weight is None else np.asarray(weight, np.float32)
        xc = block_mean(x * w, downsample)
        wc = block_mean(w, downsample)
        sig_c = [s / downsample for s in sigma_vox]
        num = gaussian_smooth_fft(xc, sig_c, None, threads)
        den = gaussian_smooth_fft(wc, sig_c, None, threads)
        den = np.maximum(den, np.float32(1e-6) * max(float(den.max()), 1e-30))
        if np.iscomplexobj(x):
            re = upsample_linear((num.real / den).astype(np.float32), downsample, x.shape)
            im = upsample_linear((num.imag / den).astype(np.float32), downsample, x.shape)
            return (re + 1j * im).astype(np.complex64)
        return upsample_linear((num / den).astype(np.float32), downsample, x.shape)
    sig = np.asarray(sigma_vox, dtype=float)
    pad = tuple(int(np.ceil(2 * s)) + 1 for s in sig)
    w = np.ones(x.shape, np.float32) if weight is None else np.asarray(weight, np.float32)
    parts = [x.real * w, x.imag * w, w] if np.iscomplexobj(x) else [x * w, w]
    if weight is None:
        parts = parts[:-1]
    padded = [pad_to_fast(p, pad) for p in parts]
    region = padded[0][1]
    shape = padded[0][0].shape
    g = None
    for ax, n in enumerate(shape):
        f = np.fft.rfftfreq(n) if ax == 2 else np.fft.fftfreq(n)
        e = np.exp(-2.0 * (np.pi * sig[ax] * f) ** 2).astype(np.float32)
        e = e.reshape([-1 if a == ax else 1 for a in range(3)])
        g = e if g is None else g * e
    sm = [irfft3(rfft3(p, threads) * g, shape, threads)[region] for p, _ in padded]
    if weight is None:  # plain smoothing (used by the downsampled path)
        return (sm[0] + 1j * sm[1]).astype(np.complex64) if np.iscomplexobj(x) else sm[0]
    den = np.maximum(sm[-1], np.float32(1e-6) * max(float(sm[-1].max()), 1e-30))
    if np.iscomplexobj(x):
        return ((sm[0] + 1j * sm[1]) / den).astype(np.complex64)
    return (sm[0] / den).astype(np.float32)


def wrap_fast(x: np.ndarray) -> np.ndarray:
    """Wrap angles (rad) into [-pi, pi] by subtracting the nearest multiple of 2 pi (float32).

    Equivalent to :func:`bids_qsm.qsm.phase.wrap_to_pi` up to the representative of +-pi (both
    are the same angle), and several times faster than ``np.mod`` on large arrays.
    """
    x = np.asarray(x, dtype=np.float32)
    return x - TWO_PI * np.rint(x * np.float32(1 / (2 * np.pi)))


def _default_unwrapper(p: np.ndarray, m: np.ndarray, w: np.ndarray) -> np.ndarray:
    return unwrap_quality(p, m, w)


def mcpc3ds(
    mag: np.ndarray,
    phase: np.ndarray,
    te_s: Sequence[float],
    mask: np.ndarray,
    *,
    sigma_vox: Sequence[float] = (10.0, 10.0, 5.0),
    unwrapper: Unwrapper | None = None,
    refine_passes: int = 1,
    smooth_downsample: int = 1,
    poly_degree: int = 3,
    threads: int = 2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MCPC-3D-S phase-offset removal (needs 2 or more echoes).

    Returns ``(phase_corrected, offset, dphi_unwrapped)``: the offset-free wrapped phase
    (X, Y, Z, E) in rad, the smoothed offset ``po`` (rad) and the spatially unwrapped phase
    difference of echoes 2 and 1 (rad, equal to ``2 pi f (TE_2 - TE_1)``).

    ``poly_degree`` > 0: a polynomial of that degree is fitted to the offset in the mask first
    and only the remainder is smoothed (:mod:`bids_qsm.qsm.offset`; exact up to the mask edge
    for polynomial offsets); 0: the whole offset is smoothed (original MCPC-3D-S).
    """
    te = np.asarray(te_s, dtype=np.float64)
    if phase.shape[-1] < 2:
        raise ValueError("MCPC-3D-S needs at least two echoes")
    if unwrapper is None:
        unwrapper = _default_unwrapper
    dphi = wrap_fast(phase[..., 1] - phase[..., 0])
    dphi_u = unwrapper(dphi, mask, mag[..., 0] * mag[..., 1])
    ratio = np.float32(te[0] / (te[1] - te[0]))
    po = phase[..., 0] - ratio * dphi_u
    w = np.where(mask, mag[..., 0], np.float32(0))
    ds = smooth_downsample
    poly = np.float32(0)
    if poly_degree > 0:
        poly = fit_offset_polynomial(po, mask, w * w, poly_degree)
    po_c = gaussian_smooth_fft(
        np.exp(1j * (po - poly)).astype(np.complex64), sigma_vox, w, threads, ds
    )
    po_s = np.angle(po_c).astype(np.float32) + poly
    for _ in range(refine_passes):
        # Twicing: smooth what the smoothing left behind (curvature and mask-edge bias).
        rest = wrap_fast(po - po_s)
        po_s += gaussian_smooth_fft(rest, sigma_vox, w, threads, ds)
    corrected = np.empty(phase.shape, np.float32)

    def slab(i0: int, i1: int) -> None:
        corrected[i0:i1] = wrap_fast(phase[i0:i1] - po_s[i0:i1, ..., None])

    with SlabRunner(phase.shape[0], threads) as run:
        run(slab)
    return corrected, po_s, dphi_u


def temporal_unwrap(
    phase: np.ndarray, mag: np.ndarray, te_s: Sequence[float], field0_hz: np.ndarray
) -> np.ndarray:
    """Unwrap offset-free phases (rad) over echoes against a running field estimate (Hz).

    Echo k gets ``phi_k + 2 pi round((2 pi f TE_k - phi_k) / 2 pi)`` where ``f`` is the weighted
    fit of the echoes already unwrapped (``field0_hz`` before the first). Exact as long as the
    prediction error stays below pi.
    """
    te = np.asarray(te_s, dtype=np.float32)
    out = np.empty_like(phase, dtype=np.float32)
    f = field0_hz.astype(np.float32)
    num = np.zeros(f.shape, np.float32)
    den = np.zeros(f.shape, np.float32)
    for k in range(phase.shape[-1]):
        pred = TWO_PI * f * te[k]
        out[..., k] = phase[..., k] + TWO_PI * np.rint((pred - phase[..., k]) / TWO_PI)
        w = mag[..., k] * mag[..., k]
        num += w * te[k] * out[..., k]
        den += w * te[k] * te[k]
        f = np.where(den > 0, num / np.maximum(den, 1e-30) / TWO_PI, f)
    return out


def weighted_field_fit(
    unwrapped: np.ndarray, mag: np.ndarray, te_s: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted LS field (Hz) through the origin and its relative complex residual.

    ``unwrapped`` (X, Y, Z, E) offset-free phase (rad); weights ``mag_k^2``.
    """
    te = np.asarray(te_s, dtype=np.float32)
    w = mag * mag
    num = np.einsum("...k,k->...", w * unwrapped, te, dtype=np.float32)
    den = np.einsum("...k,k->...", w, te * te, dtype=np.float32)
    f = np.where(den > 0, num / np.maximum(den, 1e-30), 0).astype(np.float32) / TWO_PI
    res = np.zeros(f.shape, np.float32)
    wsum = np.zeros(f.shape, np.float32)
    for k in range(unwrapped.shape[-1]):
        d = unwrapped[..., k] - TWO_PI * f * te[k]
        s = np.sin(np.float32(0.5) * d)
        res += w[..., k] * 4 * s * s
        wsum += w[..., k]
    res = np.sqrt(res / np.maximum(wsum, 1e-30)).astype(np.float32)
    return f, res


def repair_unwrapping(
    fit: FieldFit,
    mag: np.ndarray,
    te_s: Sequence[float],
    mask: np.ndarray,
    threshold: float,
    passes: int = 3,
) -> tuple[FieldFit, int]:
    """Re-unwrap, in time, the voxels whose echo fit failed, from their neighbours' field.

    A voxel whose spatial unwrap of the echo-2/echo-1 difference is off by 2 pi (e.g. at the
    brain edge next to bone, where the coarse-grid unwrapping interpolates a steep field)
    starts the temporal unwrapping from a field that is wrong by ``1 / (TE_2 - TE_1)`` (about
    170 Hz) and ends with a field error of 100-300 Hz and a residual near 1. Such voxels pass
    the mask when they are enclosed (hole filling) and their field spike, as a boundary value
    of LBV or a local source, gives streaks in the Chimap. Every voxel of ``mask`` with
    residual > ``threshold`` is unwrapped again in time from the mean field (Hz) of its
    good 26 neighbours and refitted; the new fit is kept where its residual is lower.
    ``passes`` rounds let the repair grow into clusters of failed voxels.

    Returns the repaired fit and the number of voxels changed.
    """
    field = fit.field_hz.copy()
    residual = fit.residual.copy()
    un = fit.unwrapped.copy()
    n_changed = 0
    for _ in range(passes):
        good = mask & (residual <= threshold)
        bad = mask & ~good
        if not bad.any():
            break
        idx = np.nonzero(bad)
        num, den = _neighbour_sums(np.where(good, field, np.float32(0)), good, idx)
        cand = den > np.float32(0.5)  # at least one good neighbour
        if not cand.any():
            break
        idx = tuple(i[cand] for i in idx)
        f0 = num[cand] / den[cand]
        u_new = temporal_unwrap(wrap_fast(fit.unwrapped[idx]), mag[idx], te_s, f0)
        f_new, r_new = weighted_field_fit(u_new, mag[idx], te_s)
        better = r_new < residual[idx]
        sel = tuple(i[better] for i in idx)
        field[sel] = f_new[better]
        residual[sel] = r_new[better]
        un[sel] = u_new[better]
        n_changed += int(better.sum())
    return FieldFit(field, residual, fit.phase_offset, un), n_changed


def _neighbour_sums(
    values: np.ndarray, good: np.ndarray, idx: tuple[np.ndarray, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Sums of ``values`` and of ``good`` over the 3x3x3 neighbourhoods (0 beyond the array)
    of the voxels ``idx`` (float32): 27 gathers at those voxels only."""
    vp = np.pad(values.astype(np.float32, copy=False), 1)
    gp = np.pad(good, 1)
    num = np.zeros(idx[0].size, np.float32)
    den = np.zeros(idx[0].size, np.float32)
    for d in itertools.product((0, 1, 2), repeat=3):
        j = tuple(i + o for i, o in zip(idx, d, strict=True))
        num += vp[j]
        den += gp[j]
    return num, den


def fit_field(
    mag: np.ndarray,
    phase: np.ndarray,
    te_s: Sequence[float],
    mask: np.ndarray,
    voxel_size: np.ndarray,
    *,
    unwrapping: str = "quality",
    mcpc_sigma_vox: Sequence[float] = (10.0, 10.0, 5.0),
    mcpc_refine_passes: int = 1,
    mcpc_poly_degree: int = 3,
    downsample: int | None = None,
    edge_grow: bool = True,
    threads: int = 2,
) -> FieldFit:
    """Total field (Hz) from multi-echo (or single-echo) magnitude and phase (rad).

    ``mag`` and ``phase`` are (X, Y, Z, E); ``unwrapping`` is "quality" (exact, one spatial
    unwrap then temporal unwrapping) or "laplacian" (every echo Laplacian-unwrapped, inexact).
    Single echo: the phase is unwrapped spatially and divided by ``2 pi TE`` (no offset removal
    is possible; a smooth offset is removed later with the background field).
    """
    te = [float(t) for t in te_s]
    mag = np.asarray(mag, np.float32)
    phase = np.asarray(phase, np.float32)
    if mag.ndim == 3:
        mag, phase = mag[..., None], phase[..., None]
    mask = np.asarray(mask, bool)
    n_echo = phase.shape[-1]
    if len(te) != n_echo:
        raise ValueError(f"{len(te)} echo times for {n_echo} echoes")
    ds = auto_downsample(voxel_size) if downsample is None else int(downsample)
    if unwrapping == "quality":

        def unwrapper(p: np.ndarray, m: np.ndarray, w: np.ndarray) -> np.ndarray:
            return unwrap_quality(p, m, w, downsample=ds, grow=edge_grow)

    elif unwrapping == "laplacian":

        def unwrapper(p: np.ndarray, m: np.ndarray, w: np.ndarray) -> np.ndarray:
            return unwrap_laplacian(p, voxel_size, m, threads)

    else:
        raise ValueError(f"unknown unwrapping method {unwrapping!r}")
    if n_echo == 1:
        un = unwrapper(phase[..., 0], mask, mag[..., 0])[..., None]
        f = un[..., 0] / (TWO_PI * np.float32(te[0]))
        zeros = np.zeros(mask.shape, np.float32)
        return FieldFit(np.where(mask, f, 0).astype(np.float32), zeros, zeros, un)
    corrected, po, dphi_u = mcpc3ds(
        mag,
        phase,
        te,
        mask,
        sigma_vox=mcpc_sigma_vox,
        unwrapper=unwrapper,
        refine_passes=mcpc_refine_passes,
        poly_degree=mcpc_poly_degree,
        smooth_downsample=max(1, min(ds, int(min(mcpc_sigma_vox) // 2))),
        threads=threads,
    )
    if unwrapping == "quality":
        f0 = dphi_u / (TWO_PI * np.float32(te[1] - te[0]))
        un = np.empty(corrected.shape, np.float32)
    else:
        un = np.stack(
            [unwrapper(corrected[..., k], mask, mag[..., k]) for k in range(n_echo)], axis=-1
        )
    f = np.empty(mask.shape, np.float32)
    res = np.empty(mask.shape, np.float32)

    def slab(i0: int, i1: int) -> None:  # per-voxel work, slab by slab
        m = mask[i0:i1]
        if unwrapping == "quality":
            un[i0:i1] = temporal_unwrap(corrected[i0:i1], mag[i0:i1], te, f0[i0:i1])
        f_s, r_s = weighted_field_fit(un[i0:i1], mag[i0:i1], te)
        f[i0:i1] = np.where(m, f_s, np.float32(0))
        res[i0:i1] = np.where(m, r_s, np.float32(0))
        un[i0:i1] *= m[..., None]

    with SlabRunner(mask.shape[0], threads) as run:
        run(slab)
    return FieldFit(f, res, np.where(mask, po, np.float32(0)), un)

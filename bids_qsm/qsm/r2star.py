"""R2* and T2* from multi-echo magnitude: weighted log-linear fit of ``S = S0 exp(-R2* TE)``.

Weights ``w_k = S_k^2`` make the log-domain fit approximately maximum likelihood (the variance
of ``log S`` is ``sigma^2 / S^2``). R2* is clipped to [0, ``r2star_max_hz``]; T2* = 1/R2*
(s), capped at ``t2star_max_s`` where R2* is tiny.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .slabs import SlabRunner


def fit_r2star(
    mag: np.ndarray,
    te_s: Sequence[float],
    mask: np.ndarray | None = None,
    *,
    r2star_max_hz: float = 1000.0,
    t2star_max_s: float = 1.0,
    threads: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """R2* (Hz = 1/s) and T2* (s) maps, float32, 0 outside ``mask``.

    ``mag`` is (X, Y, Z, E) with E >= 2, ``te_s`` the echo times (s); ``threads`` > 1 fits
    slabs in parallel (same result).
    """
    te = np.asarray(te_s, dtype=np.float32)
    mag = np.asarray(mag, dtype=np.float32)
    if mag.ndim != 4 or mag.shape[-1] < 2:
        raise ValueError("R2* needs at least two echoes on the last axis")
    if len(te) != mag.shape[-1]:
        raise ValueError(f"{len(te)} echo times for {mag.shape[-1]} echoes")
    tiny = np.float32(1e-12) * max(float(mag.max()), 1e-30)
    r2 = np.empty(mag.shape[:3], np.float32)
    t2 = np.empty(mag.shape[:3], np.float32)

    def slab(i0: int, i1: int) -> None:
        r2[i0:i1], t2[i0:i1] = _fit_slab(mag[i0:i1], te, tiny, r2star_max_hz, t2star_max_s)

    with SlabRunner(mag.shape[0], threads) as run:
        run(slab)
    if mask is not None:
        m = np.asarray(mask, bool)
        r2[~m] = 0
        t2[~m] = 0
    return r2, t2


def _fit_slab(
    mag: np.ndarray, te: np.ndarray, tiny: np.float32, r2star_max_hz: float, t2star_max_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted log-linear fit of one slab (X', Y, Z, E): R2* (Hz) and T2* (s), float32."""
    sw = swt = swtt = swy = swty = None
    for k in range(mag.shape[-1]):
        s = np.maximum(mag[..., k], tiny)
        w = s * s
        y = np.log(s)
        t = te[k]
        if sw is None:
            sw, swt, swtt, swy, swty = w.copy(), w * t, w * t * t, w * y, w * t * y
        else:
            sw += w
            swt += w * t
            swtt += w * t * t
            swy += w * y
            swty += w * t * y
    det = sw * swtt - swt * swt
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (sw * swty - swt * swy) / det
    r2 = np.nan_to_num(-slope, nan=0.0, posinf=0.0, neginf=0.0)
    r2 = np.clip(r2, 0, r2star_max_hz).astype(np.float32)
    t2 = np.where(r2 > 1.0 / t2star_max_s, 1.0 / np.maximum(r2, 1e-30), t2star_max_s)
    return r2, t2.astype(np.float32)

"""Phase-offset estimate that stays exact up to the mask edge (used by MCPC-3D-S).

The raw MCPC-3D-S offset ``po = phi_1 - TE_1/dTE * dphi_u`` (rad) is exact in every voxel up
to noise, but it must be smoothed. A Gaussian (even a normalised one, ``G*(w po) / G*w``) is
only exact for a constant: near the mask edge its window is one-sided, so any slope or
curvature of the offset leaks into a rim bias (about 0.07 rad, i.e. 0.7 Hz of total field, in
the outer 5 mm of the simulated heads). Here the smooth part is modelled explicitly:

1. a weighted least-squares polynomial of total degree ``degree`` (in voxel coordinates scaled to
   the mask box) is fitted to the **wrapped finite differences** of ``po`` inside the mask, so
   no unwrapping of the offset is needed (differences of a smooth offset between neighbours
   are far below pi); weights are ``min(w_a, w_b)`` of the two voxels (``w = mag^2``) and one
   reweighting pass drops differences beyond 4 robust standard deviations;
2. the constant is the phase of ``sum w exp(i (po - p))``;
3. only the small remainder ``wrap(po - p - c)`` (non-polynomial part plus noise) is smoothed
   with the normalised Gaussian, so its edge bias is that of a nearly flat image.

A quadratic (or cubic) offset is recovered exactly up to the brain edge.
"""

from __future__ import annotations

import itertools

import numpy as np

TWO_PI = np.float32(2 * np.pi)


def _wrap(x: np.ndarray) -> np.ndarray:
    return x - TWO_PI * np.rint(x * np.float32(1 / (2 * np.pi)))


def _exponents(degree: int) -> list[tuple[int, int, int]]:
    """Monomial exponents of total degree 1..degree (the constant is fitted separately)."""
    return [e for e in itertools.product(range(degree + 1), repeat=3) if 0 < sum(e) <= degree]


def _coords(shape: tuple[int, ...], mask: np.ndarray) -> list[np.ndarray]:
    """Per-axis voxel coordinates (broadcastable), centred on the mask and scaled to about +-1."""
    idx = np.argwhere(mask)
    centre = idx.mean(0)
    half = np.maximum((idx.max(0) - idx.min(0)) / 2.0, 1.0)
    out = []
    for ax in range(3):
        c = (np.arange(shape[ax]) - centre[ax]) / half[ax]
        out.append(c.reshape([-1 if a == ax else 1 for a in range(3)]).astype(np.float64))
    return out


def fit_offset_polynomial(
    po: np.ndarray,
    mask: np.ndarray,
    weight: np.ndarray,
    degree: int = 3,
    stride: int = 2,
) -> np.ndarray:
    """Polynomial (degree ``degree``) fit of a wrapped smooth phase ``po`` (rad) in ``mask``.

    Fitted to wrapped neighbour differences along each axis (on every ``stride``-th line across
    it, to bound memory), weighted by ``min(weight)`` of the pair; the constant by
    the weighted circular mean. Returns the polynomial (rad, float32, not wrapped) on the grid.
    """
    mask = np.asarray(mask, bool)
    w = np.where(mask, np.asarray(weight, np.float32), 0).astype(np.float32)
    exps = _exponents(degree)
    coords = _coords(po.shape, mask)
    rows_a, rows_b, rows_w = [], [], []
    for ax in range(3):
        # Whole lines along ax (their differences telescope: noise averages out best), every
        # stride-th line across it.
        sub = tuple(slice(None) if a == ax else slice(0, None, stride) for a in range(3))
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax] = slice(0, -1)
        hi[ax] = slice(1, None)
        lo_t, hi_t = tuple(lo), tuple(hi)
        g = _wrap(po[hi_t] - po[lo_t])[sub]
        wp = np.minimum(w[lo_t], w[hi_t])[sub]
        sel = wp > 0
        if not sel.any():
            continue
        # Monomial differences m(x + e_ax) - m(x) on the selected pairs.
        pts = np.nonzero(sel)
        cols = []
        for e in exps:
            parts_lo, parts_hi = [], []
            for a in range(3):
                c = coords[a].ravel()
                ix = pts[a] if a == ax else pts[a] * stride
                parts_lo.append(c[ix] ** e[a])
                parts_hi.append(c[ix + (1 if a == ax else 0)] ** e[a])
            cols.append(np.prod(parts_hi, axis=0) - np.prod(parts_lo, axis=0))
        rows_a.append(np.stack(cols, axis=1))
        rows_b.append(g[sel].astype(np.float64))
        rows_w.append(wp[sel].astype(np.float64))
    if not rows_a:
        return np.zeros(po.shape, np.float32)
    A = np.concatenate(rows_a)
    b = np.concatenate(rows_b)
    wt = np.concatenate(rows_w)
    coef = np.zeros(len(exps))
    keep = np.ones(b.shape, bool)
    for _ in range(2):  # fit, then refit without outlying differences (residual-based)
        sw = np.sqrt(wt[keep])
        coef = np.linalg.lstsq(A[keep] * sw[:, None], b[keep] * sw, rcond=None)[0]
        r = b - A @ coef
        scale = 1.4826 * np.median(np.abs(r[keep])) + 1e-6
        keep = np.abs(r) < 4 * scale
    poly = np.zeros(po.shape, np.float64)
    for cf, e in zip(coef, exps, strict=True):
        poly = poly + cf * (coords[0] ** e[0]) * (coords[1] ** e[1]) * (coords[2] ** e[2])
    poly = poly.astype(np.float32)
    z = np.sum(w[mask] * np.exp(1j * (po[mask] - poly[mask])))
    return (poly + np.float32(np.angle(z))).astype(np.float32)

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
    """Per-axis 1D voxel coordinates, centred on the mask and scaled to about +-1 (float64)."""
    out = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        n = np.count_nonzero(mask, axis=other)
        centre = float((np.arange(shape[ax]) * n).sum() / max(n.sum(), 1))
        half = max((float(idx[-1]) - float(idx[0])) / 2.0, 1.0)
        out.append((np.arange(shape[ax]) - centre) / half)
    return out


def _eval_polynomial(
    coef: np.ndarray, exps: list[tuple[int, int, int]], coords: list[np.ndarray]
) -> np.ndarray:
    """``sum_e coef_e x^e0 y^e1 z^e2`` on the grid (float32), one 3D pass per x power."""
    cx, cy, cz = coords
    by_x: dict[int, np.ndarray] = {}
    for cf, (i, j, k) in zip(coef, exps, strict=True):
        plane = cf * np.outer(cy**j, cz**k)
        by_x[i] = by_x[i] + plane if i in by_x else plane
    out = np.zeros((cx.size, cy.size, cz.size), np.float32)
    for i, plane in by_x.items():
        out += (cx**i).astype(np.float32)[:, None, None] * plane.astype(np.float32)[None]
    return out


def fit_offset_polynomial(
    po: np.ndarray, mask: np.ndarray, weight: np.ndarray, degree: int = 3, stride: int = 3
) -> np.ndarray:
    """Polynomial (degree ``degree``) fit of a wrapped smooth phase ``po`` (rad) in ``mask``.

    Fitted to wrapped neighbour differences along each axis (on every ``stride``-th line across
    it: ample rows for the 19 coefficients of a cubic and 9x fewer than all lines), weighted
    by ``min(weight)`` of the pair, by weighted normal equations (float64); the constant by
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
        p_s, w_s = po[sub], w[sub]
        lo = tuple(slice(0, -1) if a == ax else slice(None) for a in range(3))
        hi = tuple(slice(1, None) if a == ax else slice(None) for a in range(3))
        wp = np.minimum(w_s[lo], w_s[hi])
        sel = wp > 0
        if not sel.any():
            continue
        pts = np.nonzero(sel)
        # Powers of the per-axis coordinates of every pair's lower voxel (table look-ups, no
        # pow per row); along ax only the difference of the powers of the two voxels enters.
        powers = []
        for a in range(3):
            c = coords[a][:, None] ** np.arange(degree + 1)
            if a == ax:
                powers.append((c[1:] - c[:-1])[pts[a]])
            else:
                powers.append(c[pts[a] * stride])
        cols = np.empty((len(exps), pts[0].size))  # transposed rows (contiguous columns)
        for n, e in enumerate(exps):
            np.multiply(powers[0][:, e[0]], powers[1][:, e[1]], out=cols[n])
            cols[n] *= powers[2][:, e[2]]
        rows_a.append(cols)
        rows_b.append(_wrap(p_s[hi][sel] - p_s[lo][sel]).astype(np.float64))
        rows_w.append(wp[sel].astype(np.float64))
    if not rows_a:
        return np.zeros(po.shape, np.float32)
    blocks = list(zip(rows_a, rows_b, rows_w, strict=True))  # per axis: A^T, b, weights
    keep = [np.ones(b.shape, bool) for _, b, _ in blocks]
    coef = np.zeros(len(exps))
    for _ in range(2):  # fit, then refit without outlying differences (residual-based)
        gram = np.zeros((len(exps), len(exps)))
        rhs = np.zeros(len(exps))
        for (a_t, b, wt), k in zip(blocks, keep, strict=True):
            aw_t = a_t * np.where(k, wt, 0.0)
            gram += aw_t @ a_t.T
            rhs += aw_t @ b
        coef = np.linalg.lstsq(gram, rhs, rcond=None)[0]
        res = [b - coef @ a_t for a_t, b, _ in blocks]
        kept = np.concatenate([r[k] for r, k in zip(res, keep, strict=True)])
        scale = 1.4826 * np.median(np.abs(kept)) + 1e-6
        keep = [np.abs(r) < 4 * scale for r in res]
    poly = _eval_polynomial(coef, exps, coords)
    z = np.sum(w[mask] * np.exp(1j * (po[mask] - poly[mask])))
    return (poly + np.float32(np.angle(z))).astype(np.float32)

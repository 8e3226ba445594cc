"""Conjugate gradients for the symmetric positive (semi-)definite systems of the QSM stages."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def conjugate_gradient(
    normal: Callable[[np.ndarray], np.ndarray], b: np.ndarray, tol: float, max_iter: int
) -> np.ndarray:
    """Solve ``normal(x) = b`` from ``x = 0`` (float32 arrays, any shape).

    Stops when the residual norm falls below ``tol * ||b||`` or after ``max_iter`` iterations.
    Used by PDF (background dipoles) and iterative Tikhonov (susceptibility).
    """
    x = np.zeros(b.shape, np.float32)
    r = b.copy()
    p = r.copy()
    rr = float(np.vdot(r, r))
    b_norm = np.sqrt(float(np.vdot(b, b))) or 1.0
    for _ in range(max_iter):
        if np.sqrt(rr) <= tol * b_norm:
            break
        q = normal(p)
        alpha = rr / float(np.vdot(p, q))
        x += np.float32(alpha) * p
        r -= np.float32(alpha) * q
        rr_new = float(np.vdot(r, r))
        p = r + np.float32(rr_new / rr) * p
        rr = rr_new
    return x

"""Slab-wise, threaded element-wise kernels equal their whole-array definitions."""

from __future__ import annotations

import numpy as np
import pytest

from bids_qsm.qsm.slabs import SlabRunner, grad_adjoint_slab, grad_slab, neg_laplacian_slab

SHAPE = (7, 6, 5)
INV_H = [np.float32(1.0), np.float32(0.5), np.float32(1 / 3)]


def _grad(x: np.ndarray, ax: int, inv_h: float) -> np.ndarray:
    """Periodic forward difference (per mm), the definition."""
    return (np.roll(x, -1, axis=ax) - x) * np.float32(inv_h)


def _run(fn, n: int, threads: int, planes: int) -> None:
    with SlabRunner(n, threads, planes) as run:
        run(fn)


@pytest.mark.parametrize(("threads", "planes"), [(1, 1), (2, 2), (2, 3), (3, 4), (2, 16)])
def test_gradient_and_adjoint_slab_wise(threads, planes):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(SHAPE).astype(np.float32)
    v = [rng.standard_normal(SHAPE).astype(np.float32) for _ in range(3)]
    for ax in range(3):
        g = np.empty(SHAPE, np.float32)
        _run(
            lambda i0, i1, a=ax, o=g: grad_slab(x, a, INV_H[a], i0, i1, o[i0:i1]),
            7,
            threads,
            planes,
        )
        np.testing.assert_allclose(g, _grad(x, ax, INV_H[ax]), atol=1e-6)
    adj = np.empty(SHAPE, np.float32)
    _run(lambda i0, i1: grad_adjoint_slab(v, INV_H, i0, i1, adj[i0:i1]), 7, threads, planes)
    # <grad x, v> = <x, grad^T v>
    lhs = sum(float(np.vdot(_grad(x, a, INV_H[a]), v[a])) for a in range(3))
    assert abs(lhs - float(np.vdot(x, adj))) < 1e-4 * max(abs(lhs), 1.0)


@pytest.mark.parametrize(("threads", "planes"), [(1, 1), (2, 2), (2, 5)])
def test_negative_laplacian_slab_wise(threads, planes):
    x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    inv_h2 = [h * h for h in INV_H]
    xp = np.pad(x, 1)  # 0 beyond the array
    ref = np.zeros(SHAPE, np.float32)
    for ax in range(3):
        c = tuple(slice(1, -1) for _ in range(3))
        lo = tuple(slice(0, -2) if a == ax else slice(1, -1) for a in range(3))
        hi = tuple(slice(2, None) if a == ax else slice(1, -1) for a in range(3))
        ref += inv_h2[ax] * (2 * xp[c] - xp[lo] - xp[hi])
    out = np.empty(SHAPE, np.float32)
    _run(lambda i0, i1: neg_laplacian_slab(x, inv_h2, i0, i1, out[i0:i1]), 7, threads, planes)
    np.testing.assert_allclose(out, ref, atol=1e-5)

"""Dipole inversion: local field (ppm) -> susceptibility (ppm), paramagnetic positive.

All solvers work on the mask bounding box zero padded by ``pad_mm`` to a fast FFT shape, use the
rfft dipole kernel ``D(k) = 1/3 - (k.b)^2/|k|^2`` with the B0 direction ``b0_dir`` in voxel axes,
and return float32 maps that are 0 outside the mask (mean not referenced).

* TKD: ``chi = F^-1[F f / D~]``, ``D~ = D`` where ``|D| >= t`` else ``t sign(D)``. 2 FFTs. Preview.
* Tikhonov: ``min ||M(F^-1 D F chi - f)||^2 + lambda ||chi||^2`` by conjugate gradients (the
  consensus "standard" inversion), or with a gradient penalty ``lambda ||grad chi||^2``.
* TV-ADMM (Bilgic 2014): ``min 1/2 ||D chi - f||^2 + lambda ||grad chi||_1``; closed-form
  k-space chi step, 1 FFT pair per iteration.
* RTS (Kames 2018): (1) the well-conditioned cone ``|D| > delta`` solved exactly (or by a few
  LSMR iterations);
  (2) ADMM recovering the ill-conditioned cone with an anisotropic TV prior (mu = 1e5, rho = 10).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .cg import conjugate_gradient
from .geometry import dipole_kernel
from .grid import bounding_box, irfft3, laplacian_eigenvalues, pad_to_fast, rfft3


def _prepare(
    field: np.ndarray, mask: np.ndarray, voxel_size: np.ndarray, b0_dir: np.ndarray, pad_mm: float
):
    vs = np.asarray(voxel_size, dtype=float)
    mask = np.asarray(mask, bool)
    sl = bounding_box(mask)
    pad = tuple(int(np.ceil(pad_mm / v)) for v in vs)
    f_pad, region = pad_to_fast(np.where(mask, field, 0)[sl], pad)
    m_pad, _ = pad_to_fast(mask[sl].astype(np.float32), pad)
    D = dipole_kernel(f_pad.shape, vs, b0_dir)
    return f_pad, m_pad, D, sl, region


def _unpad(x: np.ndarray, mask: np.ndarray, sl, region) -> np.ndarray:
    out = np.zeros(mask.shape, np.float32)
    out[sl] = x[region]
    out[~mask] = 0
    return out


def tkd(
    field: np.ndarray,
    mask: np.ndarray,
    voxel_size: np.ndarray,
    b0_dir: np.ndarray,
    threshold: float = 0.15,
    *,
    pad_mm: float = 12.0,
    threads: int = 2,
) -> np.ndarray:
    """Truncated k-space division (ppm in, ppm out); ``threshold`` on ``|D|``."""
    f, _, D, sl, region = _prepare(field, mask, voxel_size, b0_dir, pad_mm)
    t = np.float32(threshold)
    # sign(0) would be 0 on the cone surface: take +t there (no division by zero anywhere).
    dt = np.where(np.abs(D) >= t, D, np.where(D < 0, -t, t))
    with np.errstate(divide="ignore"):
        inv = np.where(dt == 0, 0, 1 / dt).astype(np.float32)  # exact zeros only if t == 0
    inv[0, 0, 0] = 0  # the mean is undetermined (D(0) = 0); referencing fixes it
    chi = irfft3(rfft3(f, threads) * inv, f.shape, threads)
    return _unpad(chi, mask, sl, region)


def tikhonov(
    field: np.ndarray,
    mask: np.ndarray,
    voxel_size: np.ndarray,
    b0_dir: np.ndarray,
    *,
    lam: float = 0.01,
    reg: str = "gradient",
    tol: float = 0.03,
    max_iter: int = 100,
    pad_mm: float = 12.0,
    threads: int = 2,
) -> np.ndarray:
    """Iterative Tikhonov inversion by CG on the normal equations.

    ``(D M D + lam R) chi = D M f`` with ``M`` the mask (data term inside it only) and
    ``R = I`` (``reg="identity"``) or ``grad^T grad`` (``reg="gradient"``, mm^-2); ``tol`` is the
    relative residual tolerance. One FFT pair per (D M D) product, i.e. 2 per iteration.
    """
    vs = np.asarray(voxel_size, dtype=float)
    f, m, D, sl, region = _prepare(field, mask, vs, b0_dir, pad_mm)
    shape = f.shape
    if reg == "identity":
        R = None
    elif reg == "gradient":
        R = laplacian_eigenvalues(shape, vs)
    else:
        raise ValueError(f"unknown Tikhonov regulariser {reg!r}")
    lam32 = np.float32(lam)

    def dconv(x: np.ndarray) -> np.ndarray:
        return irfft3(rfft3(x, threads) * D, shape, threads)

    def normal(x: np.ndarray) -> np.ndarray:
        X = rfft3(x, threads)
        dx = irfft3(X * D, shape, threads)
        dx *= m
        out = irfft3(
            rfft3(dx, threads) * D + (lam32 * (R if R is not None else 1)) * X, shape, threads
        )
        return out

    b = dconv(f * m)
    x = conjugate_gradient(normal, b, tol, max_iter)
    return _unpad(x, mask, sl, region)


def lsmr_diagonal_filter(d: np.ndarray, b: np.ndarray, n_iter: int) -> np.ndarray:
    """Filter ``g(d)``: ``g(d) * b`` is the ``n_iter``-th LSMR iterate for ``diag(d) x = b``.

    LSMR's k-th iterate minimises ``||A^T (b - A x)||`` over the Krylov space
    ``span{u, A^T A u, ..., (A^T A)^(k-1) u}`` with ``u = A^T b``. For a real diagonal ``A`` every
    inner product is a weighted moment ``nu_m = sum |u|^2 d^(2m)``, so the iterate is
    ``x = sum_j c_j d^(2j) u`` with ``c`` solving the k x k system ``nu_(i+j+2) c_j = nu_(i+1)``.
    No FFT or vector iteration is needed: the k-space filter is ``d sum_j c_j d^(2j)``.
    """
    d64 = d.astype(np.float64)
    u2 = (np.abs(b).astype(np.float64) * d64) ** 2
    d2 = d64 * d64
    nu = [float(u2.sum())]
    p = u2.copy()
    for _ in range(2 * n_iter + 1):
        p *= d2
        nu.append(float(p.sum()))
    G = np.array([[nu[i + j + 2] for j in range(n_iter)] for i in range(n_iter)])
    rhs = np.array([nu[i + 1] for i in range(n_iter)])
    c = np.linalg.lstsq(G, rhs, rcond=None)[0]
    poly = np.zeros_like(d, dtype=np.float32)
    for j in reversed(range(n_iter)):  # Horner in d^2
        poly = poly * (d * d) + np.float32(c[j])
    return (poly * d).astype(np.float32)


def _grad_forward(x: np.ndarray, ax: int, h: float, out: np.ndarray) -> np.ndarray:
    """Periodic forward difference along ``ax`` (per mm) into ``out`` (no temporaries)."""
    xs = np.moveaxis(x, ax, 0)
    os_ = np.moveaxis(out, ax, 0)
    np.subtract(xs[1:], xs[:-1], out=os_[:-1])
    np.subtract(xs[0], xs[-1], out=os_[-1])
    if h != 1.0:
        out *= np.float32(1.0 / h)
    return out


def _grad_adjoint_add(v: np.ndarray, ax: int, h: float, acc: np.ndarray) -> None:
    """``acc += grad_ax^T v``: adjoint of the periodic forward difference (minus backward one)."""
    vs = np.moveaxis(v, ax, 0)
    acc_ = np.moveaxis(acc, ax, 0)
    if h != 1.0:
        vs = vs * np.float32(1.0 / h)
    acc_[1:] += vs[:-1]
    acc_[0] += vs[-1]
    acc_ -= vs


def _admm_tv(
    Q: np.ndarray,
    K0: np.ndarray,
    x0: np.ndarray,
    voxel_size: np.ndarray,
    lam: float,
    rho: float,
    tol: float,
    max_iter: int,
    threads: int,
) -> tuple[np.ndarray, int]:
    """ADMM for ``min_x 1/2 <x, Q x>_k - <K0, X>_k + lam ||grad x||_1`` (anisotropic TV).

    ``Q`` (real, rfft layout) and ``K0`` (complex) define the quadratic data term in k-space;
    scaled ADMM with the splitting ``z = grad x``. With ``r = grad x + u`` the z- and u-steps
    are ``u <- clip(r, -lam/rho, lam/rho)``, ``z = r - u``, and the x-step only needs
    ``w = z - u = r - 2u``, which is all that is stored (3 arrays plus u). One FFT pair per
    iteration. Stops when ``||x_k - x_{k-1}|| / ||x_k|| < tol``; returns x and the iterations.
    """
    shape = x0.shape
    vs = [float(v) for v in voxel_size]
    L = laplacian_eigenvalues(shape, voxel_size)
    den = Q + np.float32(rho) * L
    inv = np.where(den > 0, 1 / np.where(den > 0, den, 1), 0).astype(np.float32)
    inv *= np.float32(rho)  # folds the rho of the x-step right-hand side
    K0 = (K0 / np.float32(rho)).astype(np.complex64)
    x = x0.astype(np.float32, copy=True)
    thr = np.float32(lam / rho)
    u = [np.zeros(shape, np.float32) for _ in range(3)]
    # Start from z = grad x0, u = 0, i.e. w = grad x0.
    w = [_grad_forward(x, a, vs[a], np.empty(shape, np.float32)) for a in range(3)]
    acc = np.empty(shape, np.float32)
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        # x-step: (Q + rho L) X = K0 + rho F[grad^T w]
        acc.fill(0)
        for a in range(3):
            _grad_adjoint_add(w[a], a, vs[a], acc)
        X = rfft3(acc, threads)
        X += K0
        X *= inv
        x_new = irfft3(X, shape, threads)
        del X
        for a in range(3):
            r = _grad_forward(x_new, a, vs[a], w[a])
            r += u[a]
            np.clip(r, -thr, thr, out=u[a])
            r -= u[a]
            r -= u[a]  # w = r - 2u
        x -= x_new
        change = float(np.sqrt(np.vdot(x, x)) / max(np.sqrt(float(np.vdot(x_new, x_new))), 1e-30))
        x = x_new
        # The first x-step only reproduces x0 (z = grad x0, u = 0): judge from the second on.
        if n_iter > 1 and change < tol:
            break
    return x, n_iter


def tv_admm(
    field: np.ndarray,
    mask: np.ndarray,
    voxel_size: np.ndarray,
    b0_dir: np.ndarray,
    *,
    lam: float = 1e-3,
    rho: float | None = None,
    tol: float = 1e-3,
    max_iter: int = 250,
    pad_mm: float = 12.0,
    threads: int = 2,
) -> np.ndarray:
    """TV-regularised inversion by ADMM (Bilgic 2014); ``rho`` defaults to ``100 lam``."""
    f, _, D, sl, region = _prepare(field, mask, voxel_size, b0_dir, pad_mm)
    Fk = rfft3(f, threads)
    K0 = (D * Fk).astype(np.complex64)
    Q = D * D
    x0 = np.zeros(f.shape, np.float32)
    x, _ = _admm_tv(Q, K0, x0, voxel_size, lam, rho or 100 * lam, tol, max_iter, threads)
    return _unpad(x, mask, sl, region)


def rts_options(opt: Any, max_iter: int | None = None) -> dict[str, Any]:
    """Keyword arguments of :func:`rts` from a :class:`~bids_qsm.qsm.pipeline.QSMOptions`
    (its ``rts_*`` fields and ``inversion_pad_mm``, mm); ``max_iter`` replaces ``rts_max_iter``
    (the weighted-TV start runs ``wtv_rts_iter`` step-2 iterations)."""
    return {
        "delta": opt.rts_delta,
        "mu": opt.rts_mu,
        "rho": opt.rts_rho,
        "tol": opt.rts_tol,
        "max_iter": opt.rts_max_iter if max_iter is None else max_iter,
        "lsmr_iter": opt.rts_lsmr_iter,
        "pad_mm": opt.inversion_pad_mm,
    }


def rts(
    field: np.ndarray,
    mask: np.ndarray,
    voxel_size: np.ndarray,
    b0_dir: np.ndarray,
    *,
    delta: float = 0.15,
    mu: float = 1e5,
    rho: float = 10.0,
    tol: float = 1e-2,
    max_iter: int = 20,
    lsmr_iter: int | None = None,
    pad_mm: float = 12.0,
    threads: int = 2,
) -> np.ndarray:
    """Rapid two-step inversion (Kames 2018), ppm in and out.

    Step 1 solves ``D X = F f`` on the well-conditioned cone ``|D| > delta``: with
    ``lsmr_iter=None`` (default) exactly, ``X = F f / D`` there and 0 elsewhere (the limit LSMR
    converges to on that cone); with an integer, ``lsmr_iter`` LSMR iterations of the full
    diagonal system (closed form, :func:`lsmr_diagonal_filter`). Four LSMR iterations on the
    full kernel recover only 50-85 % of the coefficients with ``|D|`` in 0.15-0.66, which step 2
    then locks in: that was the main cause of RTS underestimating iron-rich nuclei. The result
    is masked. Step 2 keeps the well-conditioned coefficients (weight ``mu``) and fills the cone
    by minimising ``||grad chi||_1`` (ADMM, penalty ``rho``, at most ``max_iter`` iterations,
    relative-change tolerance ``tol``).
    """
    f, m, D, sl, region = _prepare(field, mask, voxel_size, b0_dir, pad_mm)
    shape = f.shape
    Fk = rfft3(f, threads)
    wc = np.abs(D) > delta
    if lsmr_iter is None:
        X1 = np.where(wc, Fk / np.where(wc, D, 1), 0).astype(np.complex64)
    else:
        X1 = (Fk * lsmr_diagonal_filter(D, Fk, lsmr_iter)).astype(np.complex64)
    del Fk
    x1 = irfft3(X1, shape, threads)
    x1 *= m
    if max_iter <= 0:  # step 1 only (the start of wtv): no ADMM set-up
        return _unpad(x1, mask, sl, region)
    well = wc.astype(np.float32) * np.float32(mu)
    K0 = (well * rfft3(x1, threads)).astype(np.complex64)
    x, _ = _admm_tv(well, K0, x1, voxel_size, 1.0, rho, tol, max_iter, threads)
    return _unpad(x, mask, sl, region)

"""Background field removal: V-SHARP (default), PDF and LBV.

Both take the total field (any unit; ppm recommended) inside ``mask`` and return the local
field in the same unit together with the mask it is valid in.

* V-SHARP (Wu 2012): the background field is harmonic inside the brain, so it is removed by
  ``(delta - s_r) * f`` wherever a sphere of radius r fits in the mask; every voxel takes the
  largest radius that fits (12 mm down to two voxels), then the result is deconvolved by
  ``1 / (1 - S_rmax(k))`` with truncation where ``|1 - S| < threshold``. About 3 FFTs per radius.
* PDF (Liu 2011): background sources ``chi_b`` outside the mask are fitted to the field inside
  it, ``min || W (M (d * chi_b) - f) ||^2`` by conjugate gradients; local = f - d * chi_b. Keeps
  the whole mask (no erosion) but is slower (2 FFT pairs per iteration).
* LBV (Zhou 2014): the background field solves Laplace's equation in the mask with the total
  field as boundary value; solved for the local field by preconditioned conjugate gradients
  (DST preconditioner, about 10-20 iterations). Loses one boundary layer; accurate near the
  edge like PDF, about as fast as V-SHARP.
"""

from __future__ import annotations

import numpy as np

from .cg import conjugate_gradient
from .geometry import dipole_kernel, sphere_kernel
from .grid import bounding_box, irfft3, pad_to_fast, rfft3
from .slabs import SlabRunner, neg_laplacian_slab


def vsharp_radii(
    voxel_size: np.ndarray,
    max_radius_mm: float = 12.0,
    min_radius_mm: float | None = None,
    step_mm: float | None = None,
) -> list[float]:
    """Radii (mm) from ``max_radius_mm`` down to ``min_radius_mm`` in steps of ``step_mm``.

    Defaults, in mm: step of two of the finest voxel edges, smallest radius of two finest edges
    but at least one coarsest edge, so that the smallest sphere still spans three slices
    (12, 10, ..., 2 mm at 1 mm isotropic; 12, 11, ..., 5 mm at 0.5 x 0.5 x 5 mm, where two
    coarsest edges would leave the single radius 12 mm and erode the mask by 10 mm).
    """
    vmin, vmax = float(np.min(voxel_size)), float(np.max(voxel_size))
    step = 2 * vmin if step_mm is None else float(step_mm)
    lo = max(2 * vmin, vmax) if min_radius_mm is None else float(min_radius_mm)
    radii = list(np.arange(float(max_radius_mm), lo - 1e-6, -step))
    return [float(r) for r in radii] or [float(max_radius_mm)]


def vsharp(
    field: np.ndarray,
    mask: np.ndarray,
    voxel_size: np.ndarray,
    *,
    radii_mm: list[float] | None = None,
    max_radius_mm: float = 12.0,
    min_radius_mm: float | None = None,
    threshold: float = 0.05,
    threads: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """V-SHARP local field and the (eroded) mask it is defined in.

    Parameters
    ----------
    field : total field (ppm or Hz), 3D float; only values inside ``mask`` are used.
    mask : brain mask (bool).
    voxel_size : mm.
    radii_mm : sphere radii (mm); default :func:`vsharp_radii` (12 mm down to two voxels).
    threshold : truncation of the deconvolution, ``|1 - S_rmax(k)| < threshold`` set to 0.
    """
    vs = np.asarray(voxel_size, dtype=float)
    mask = np.asarray(mask, bool)
    if not mask.any():  # nothing left to filter: the caller reports the empty mask
        return np.zeros(mask.shape, np.float32), mask.copy()
    radii = sorted(radii_mm or vsharp_radii(vs, max_radius_mm, min_radius_mm), reverse=True)
    sl = bounding_box(mask)
    pad = tuple(int(np.ceil(radii[0] / v)) + 1 for v in vs)
    f_pad, region = pad_to_fast(np.where(mask, field, 0)[sl], pad)
    m_pad, _ = pad_to_fast(mask[sl].astype(np.float32), pad)
    shape = f_pad.shape
    F = rfft3(f_pad, threads)
    Mk = rfft3(m_pad, threads)
    del f_pad
    local = np.zeros(shape, np.float32)
    done = np.zeros(shape, bool)
    s_max = None
    for r in radii:
        S = rfft3(sphere_kernel(shape, vs, r), threads).real.astype(np.float32)
        if s_max is None:
            s_max = S
        # Voxels whose whole sphere lies inside the mask (tolerance for FFT round-off).
        inside = irfft3(Mk * S, shape, threads) > np.float32(0.999)
        inside &= m_pad > 0.5
        new = inside & ~done
        if new.any():
            hp = irfft3(F * (np.float32(1) - S), shape, threads)
            local[new] = hp[new]
            done |= new
    one_minus = np.float32(1) - s_max
    inv = np.where(np.abs(one_minus) < threshold, 0, 1 / np.where(one_minus == 0, 1, one_minus))
    local = irfft3(rfft3(local, threads) * inv.astype(np.float32), shape, threads)
    out_mask = np.zeros(mask.shape, bool)
    out_mask[sl] = done[region]
    out = np.zeros(mask.shape, np.float32)
    out[sl] = np.where(done[region], local[region], 0)
    return out, out_mask


def pdf(
    field: np.ndarray,
    mask: np.ndarray,
    voxel_size: np.ndarray,
    b0_dir: np.ndarray,
    *,
    weight: np.ndarray | None = None,
    tol: float = 1e-3,
    max_iter: int = 100,
    pad_mm: float = 30.0,
    threads: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Projection onto dipole fields (PDF) local field and its mask (the input mask).

    Parameters
    ----------
    field : total field (ppm), 3D; values inside ``mask`` are used.
    b0_dir : unit B0 vector in voxel axes.
    weight : data weights inside the mask (e.g. SNR); default uniform.
    tol : relative CG residual tolerance; max_iter : CG iteration cap.
    pad_mm : the grid extends this far (mm) beyond the mask bounding box, which is where the
        background sources may lie.
    """
    vs = np.asarray(voxel_size, dtype=float)
    mask = np.asarray(mask, bool)
    if not mask.any():  # nothing to fit: the caller reports the empty mask
        return np.zeros(mask.shape, np.float32), mask.copy()
    sl = bounding_box(mask)
    pad = tuple(int(np.ceil(pad_mm / v)) for v in vs)
    f_pad, region = pad_to_fast(np.where(mask, field, 0)[sl], pad)
    m_pad, _ = pad_to_fast(mask[sl].astype(np.float32), pad)
    w = m_pad if weight is None else pad_to_fast(np.where(mask, weight, 0)[sl], pad)[0]
    w2 = w * w
    shape = f_pad.shape
    D = dipole_kernel(shape, vs, b0_dir)
    outside = np.float32(1) - m_pad

    def dconv(x: np.ndarray) -> np.ndarray:
        return irfft3(rfft3(x, threads) * D, shape, threads)

    def normal(x: np.ndarray) -> np.ndarray:  # P D^T W^2 D P x  (D symmetric, real)
        return outside * dconv(w2 * dconv(outside * x))

    b = outside * dconv(w2 * f_pad)
    x = conjugate_gradient(normal, b, tol, max_iter)
    background = dconv(outside * x)
    local = np.zeros(mask.shape, np.float32)
    local[sl] = ((f_pad - background) * m_pad)[region]
    return local, mask.copy()


def lbv(
    field: np.ndarray,
    mask: np.ndarray,
    voxel_size: np.ndarray,
    *,
    tol: float = 1e-2,
    max_iter: int = 100,
    threads: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Laplacian boundary value (LBV, Zhou 2014) local field and its mask.

    The background field ``b`` is harmonic inside the mask and equals the total field on its
    boundary layer, so the local field ``l = f - b`` solves ``lap l = lap f`` in the interior
    (the mask minus its boundary layer) with ``l = 0`` on the boundary. Solved by conjugate
    gradients on the 7-point Laplacian, preconditioned by the inverse of the Dirichlet
    Laplacian of the bounding box (DST-II, one forward/inverse transform pair per iteration);
    ``tol`` is the relative residual. Returns the local field (0 outside) and the interior mask.
    """
    import scipy.fft as sfft
    import scipy.ndimage as ndi

    vs = np.asarray(voxel_size, dtype=float)
    mask = np.asarray(mask, bool)
    if not mask.any():
        return np.zeros(mask.shape, np.float32), mask.copy()
    sl = bounding_box(mask, 1)
    # Pad the box to fast transform sizes (zeros beyond it are outside the mask).
    pad = [(0, sfft.next_fast_len(s.stop - s.start, real=True) - (s.stop - s.start)) for s in sl]
    m = np.pad(mask[sl], pad)
    region = tuple(slice(0, s.stop - s.start) for s in sl)
    interior = ndi.binary_erosion(m)
    if not interior.any():
        return np.zeros(mask.shape, np.float32), np.zeros(mask.shape, bool)
    w = interior.astype(np.float32)
    inv_h2 = [np.float32(1.0 / (v * v)) for v in vs]
    f = np.pad(np.where(mask[sl], field[sl], 0).astype(np.float32), pad)
    tmp = np.empty(f.shape, np.float32)
    run = SlabRunner(f.shape[0], threads)
    b = np.empty(f.shape, np.float32)
    run(lambda i0, i1: neg_laplacian_slab(f, inv_h2, i0, i1, b[i0:i1]))
    b *= -w  # lap f in the interior (all 6 neighbours lie in the mask there)
    ev = np.zeros(f.shape, np.float32)
    for a, n in enumerate(f.shape):
        k = np.arange(1, n + 1)  # DST-II: Dirichlet boundary half a voxel beyond the box
        e = (2 - 2 * np.cos(np.pi * k / n)) * float(inv_h2[a])
        shp = [1, 1, 1]
        shp[a] = n
        ev += e.reshape(shp).astype(np.float32)
    inv_ev = (1 / ev).astype(np.float32)
    del ev

    def apply_a(x: np.ndarray) -> np.ndarray:  # -lap restricted to the interior (SPD)
        def slab(i0: int, i1: int) -> None:
            neg_laplacian_slab(x, inv_h2, i0, i1, tmp[i0:i1])
            tmp[i0:i1] *= w[i0:i1]

        run(slab)
        return tmp

    def precondition(r: np.ndarray) -> np.ndarray:
        z = sfft.idstn(sfft.dstn(r, type=2, workers=threads) * inv_ev, type=2, workers=threads)
        z *= w
        return z

    # -lap l = -lap f: right-hand side -b.
    b *= -1
    x = np.zeros(f.shape, np.float32)
    r = b
    z = precondition(r)
    p = z.copy()
    rz = float(np.vdot(r, z))
    b_norm = float(np.sqrt(np.vdot(b, b))) or 1.0
    for _n_iter in range(max_iter):
        q = apply_a(p)
        alpha = rz / float(np.vdot(p, q))
        x += np.float32(alpha) * p
        r -= np.float32(alpha) * q
        if np.sqrt(float(np.vdot(r, r))) <= tol * b_norm:
            break
        z = precondition(r)
        rz_new = float(np.vdot(r, z))
        p *= np.float32(rz_new / rz)
        p += z
        rz = rz_new
    run.close()
    out = np.zeros(mask.shape, np.float32)
    out[sl] = (x * w)[region]
    out_mask = np.zeros(mask.shape, bool)
    out_mask[sl] = interior[region]
    return out, out_mask

"""Geometry and physical constants shared by the simulator and the reconstruction.

Conventions
-----------
* Arrays are indexed in voxel axes (i, j, k) of the NIfTI image.
* ``voxel_size`` is in mm; ``b0_dir`` is a unit vector in voxel axes (see
  :func:`b0_direction_from_affine`).
* Fields: ``f_ppm = f_hz / (GAMMA_HZ_PER_T * B0)``; ``phase_rad = 2 pi f_hz TE``.
* Susceptibility in ppm, paramagnetic positive; the local field is ``D * chi`` with the
  dipole kernel ``D(k) = 1/3 - (k.b)^2/|k|^2`` (SI convention, no Lorentz-sphere offset).
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

#: Proton gyromagnetic ratio over 2 pi, Hz/T.
GAMMA_HZ_PER_T: float = 42.577478e6


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel edge lengths (mm) from a 4x4 (or 3x3) affine."""
    a = np.asarray(affine, dtype=float)[:3, :3]
    return np.sqrt((a**2).sum(axis=0))


def b0_direction_from_affine(affine: np.ndarray) -> np.ndarray:
    """Unit B0 direction (scanner z) expressed in the image's voxel axes.

    With A the 3x3 part of the affine (voxel index -> scanner mm) and voxel sizes d, the
    scanner z axis in voxel axes is ``(A[2,0]/dx, A[2,1]/dy, A[2,2]/dz)``. For an axial
    acquisition this is (0, 0, +-1); for an oblique slab it is not, and using (0, 0, 1) would
    bias every susceptibility value.
    """
    a = np.asarray(affine, dtype=float)[:3, :3]
    d = voxel_sizes(a)
    b = a[2, :] / d
    n = np.linalg.norm(b)
    if not np.isfinite(n) or n == 0:
        raise ValueError("affine has no z component: cannot derive the B0 direction")
    return b / n


def hz_to_ppm(field_hz: np.ndarray, b0_tesla: float) -> np.ndarray:
    """Convert a field offset from Hz to ppm of the main field."""
    return field_hz / (GAMMA_HZ_PER_T * b0_tesla) * 1e6


def ppm_to_hz(field_ppm: np.ndarray, b0_tesla: float) -> np.ndarray:
    """Convert a field offset from ppm to Hz."""
    return field_ppm * 1e-6 * GAMMA_HZ_PER_T * b0_tesla


def fast_padded_shape(shape: tuple[int, ...], pad: int | tuple[int, ...] = 0) -> tuple[int, ...]:
    """Shape padded by ``pad`` voxels on each side and rounded up to a fast real-FFT length."""
    pads = (pad,) * len(shape) if np.isscalar(pad) else tuple(pad)
    return tuple(
        sfft.next_fast_len(int(n + 2 * p), real=True) for n, p in zip(shape, pads, strict=True)
    )


def kspace_grid(
    shape: tuple[int, int, int], voxel_size: np.ndarray, rfft: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Broadcastable k-space coordinates (cycles/mm) for ``rfftn`` (or ``fftn``) of ``shape``."""
    dx, dy, dz = (float(v) for v in voxel_size)
    kx = sfft.fftfreq(shape[0], dx).astype(np.float32)[:, None, None]
    ky = sfft.fftfreq(shape[1], dy).astype(np.float32)[None, :, None]
    if rfft:
        kz = sfft.rfftfreq(shape[2], dz).astype(np.float32)[None, None, :]
    else:
        kz = sfft.fftfreq(shape[2], dz).astype(np.float32)[None, None, :]
    return kx, ky, kz


def dipole_kernel(
    shape: tuple[int, int, int],
    voxel_size: np.ndarray,
    b0_dir: np.ndarray = (0.0, 0.0, 1.0),
    rfft: bool = True,
) -> np.ndarray:
    """Unit dipole kernel ``D(k) = 1/3 - (k.b)^2 / |k|^2`` with ``D(0) = 0`` (float32).

    ``shape`` is the (padded) spatial grid; with ``rfft=True`` the last axis has
    ``shape[2] // 2 + 1`` entries, matching ``scipy.fft.rfftn``.
    """
    kx, ky, kz = kspace_grid(shape, voxel_size, rfft=rfft)
    b = np.asarray(b0_dir, dtype=np.float64)
    b = (b / np.linalg.norm(b)).astype(np.float32)
    k2 = kx * kx + ky * ky + kz * kz
    kb = kx * b[0] + ky * b[1] + kz * b[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.float32(1.0 / 3.0) - kb * kb / k2
    d[0, 0, 0] = 0.0
    return d.astype(np.float32, copy=False)


def sphere_kernel(
    shape: tuple[int, int, int], voxel_size: np.ndarray, radius_mm: float
) -> np.ndarray:
    """Normalised spherical mean-value kernel of radius ``radius_mm`` centred at voxel 0.

    Returned in the spatial domain (float32, sums to 1), wrapped so that ``rfftn`` of it
    gives the real transfer function of a spherical mean filter.
    """
    axes = [
        (np.fft.fftfreq(n) * n * float(d)).astype(np.float32)
        for n, d in zip(shape, voxel_size, strict=True)
    ]
    x, y, z = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    s = (x * x + y * y + z * z) <= np.float32(radius_mm) ** 2
    s = s.astype(np.float32)
    s /= s.sum()
    return s

"""Forward field model: susceptibility (ppm) -> field (ppm) through the dipole kernel.

``field = IFFT(D(k) FFT(chi))`` with ``D(k) = 1/3 - (k.b)^2/|k|^2`` (no Lorentz-sphere
offset, ``D(0) = 0``), computed on a zero-padded grid with real FFTs in float32. The padding
stands for the surrounding medium: the caller passes susceptibility *relative to that
medium* (for a head in air, chi - chi_air), so that the padded zeros are physically right.
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from bids_qsm.qsm.geometry import dipole_kernel, fast_padded_shape


def forward_field_ppm(
    chi_ppm: np.ndarray | list[np.ndarray],
    voxel_size: np.ndarray | tuple[float, float, float],
    b0_dir: np.ndarray | tuple[float, float, float] = (0.0, 0.0, 1.0),
    *,
    pad_fraction: float = 0.5,
    workers: int = 2,
) -> np.ndarray | list[np.ndarray]:
    """Field perturbation (ppm of B0) produced by the susceptibility distribution(s).

    Parameters
    ----------
    chi_ppm
        3D susceptibility (ppm, relative to the medium outside the grid), or a list of them
        sharing one grid (the kernel is then built once).
    voxel_size
        Voxel edge lengths (mm).
    b0_dir
        Direction of B0 in voxel axes (normalised internally).
    pad_fraction
        Zero padding on each side as a fraction of each dimension (0.5 doubles the grid),
        rounded up to a fast FFT length. Wrap-around from periodic images decays with the
        cube of (object size / padded size).
    workers
        Threads for scipy.fft.
    """
    single = isinstance(chi_ppm, np.ndarray)
    chis = [chi_ppm] if single else list(chi_ppm)
    shape = chis[0].shape
    pad = tuple(int(np.ceil(pad_fraction * n)) for n in shape)
    pshape = fast_padded_shape(shape, pad)
    kernel = dipole_kernel(pshape, np.asarray(voxel_size, float), np.asarray(b0_dir, float))
    out = []
    for chi in chis:
        if chi.shape != shape:
            raise ValueError("all susceptibility maps must share one grid")
        buf = np.zeros(pshape, np.float32)
        buf[: shape[0], : shape[1], : shape[2]] = chi
        spec = sfft.rfftn(buf, workers=workers, overwrite_x=True)
        del buf
        spec *= kernel
        field = sfft.irfftn(spec, s=pshape, workers=workers, overwrite_x=True)
        del spec
        out.append(np.ascontiguousarray(field[: shape[0], : shape[1], : shape[2]], np.float32))
    return out[0] if single else out


def sphere_field_ppm(
    points_mm: np.ndarray,
    radius_mm: float,
    chi_ppm: float,
    b0_dir: np.ndarray | tuple[float, float, float] = (0.0, 0.0, 1.0),
) -> np.ndarray:
    """Analytic field (ppm) of a uniform sphere centred at the origin (same kernel convention).

    Inside the sphere the field is 0 (the Lorentz-sphere term is not in the kernel); outside
    it is ``chi R^3 / (3 r^3) (3 cos^2 theta - 1)``, theta measured from B0.
    ``points_mm`` has shape (..., 3).
    """
    p = np.asarray(points_mm, dtype=np.float64)
    b = np.asarray(b0_dir, dtype=np.float64)
    b = b / np.linalg.norm(b)
    r = np.linalg.norm(p, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos2 = np.where(r > 0, (p @ b) ** 2 / np.maximum(r, 1e-12) ** 2, 0.0)
        outside = chi_ppm * radius_mm**3 / (3.0 * np.maximum(r, 1e-12) ** 3) * (3.0 * cos2 - 1.0)
    return np.where(r <= radius_mm, 0.0, outside)

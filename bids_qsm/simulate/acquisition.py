"""Acquisition geometry and the multi-echo GRE signal model.

World coordinates are scanner mm (RAS, B0 along +z). The subject's head sits in the scanner
with a pose (rotation, shift, isotropic scale) relative to the MNI phantom; the GRE slab has
its own voxel size, field of view and an oblique tilt about the left-right axis. Phantom maps
are blurred to the acquisition voxel size and trilinearly resampled; labels are resampled by
nearest neighbour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bids_qsm.qsm.geometry import ppm_to_hz


def rotation_matrix(angles_deg: tuple[float, float, float]) -> np.ndarray:
    """Rotation about world x, then y, then z (degrees): ``Rz @ Ry @ Rx``."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, float))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class HeadPose:
    """Placement of the phantom in the scanner: ``world = R (scale * mni) + shift`` (mm)."""

    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0

    def matrix(self) -> np.ndarray:
        """4x4 transform MNI mm -> scanner mm."""
        m = np.eye(4)
        m[:3, :3] = rotation_matrix(self.rotation_deg) * self.scale
        m[:3, 3] = self.shift_mm
        return m


def oblique_grid_affine(
    shape: tuple[int, int, int],
    voxel_mm: tuple[float, float, float],
    center_mm: np.ndarray,
    oblique_deg: float = 0.0,
    *,
    flip_x: bool = True,
) -> np.ndarray:
    """Affine of an axial slab centred on ``center_mm``, tilted by ``oblique_deg`` about x.

    ``flip_x`` gives the LAS voxel order (x index runs right to left) that dcm2niix writes
    for axial scans.
    """
    rot = rotation_matrix((oblique_deg, 0.0, 0.0))
    axes = np.diag([(-1.0 if flip_x else 1.0) * voxel_mm[0], voxel_mm[1], voxel_mm[2]])
    a = np.eye(4)
    a[:3, :3] = rot @ axes
    a[:3, 3] = np.asarray(center_mm, float) - a[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return a


def sagittal_grid_affine(
    shape: tuple[int, int, int],
    voxel_mm: float,
    center_mm: np.ndarray,
    angles_deg: tuple[float, float, float] = (6.0, 0.0, 4.0),
) -> np.ndarray:
    """Affine of a sagittal volume in PIR voxel order (i: posterior, j: inferior, k: right)."""
    axes = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]) * voxel_mm
    a = np.eye(4)
    a[:3, :3] = rotation_matrix(angles_deg) @ axes
    a[:3, 3] = np.asarray(center_mm, float) - a[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return a


def grid_shape(fov_mm: tuple[float, float, float], voxel_mm: tuple[float, ...]) -> tuple[int, ...]:
    """Matrix size covering ``fov_mm`` with ``voxel_mm`` voxels."""
    return tuple(max(1, int(round(f / v))) for f, v in zip(fov_mm, voxel_mm, strict=True))


def resample(
    data: np.ndarray,
    src_affine: np.ndarray,
    dst_shape: tuple[int, ...],
    dst_affine: np.ndarray,
    *,
    order: int = 1,
    blur_sigma_vox: float = 0.0,
    cval: float = 0.0,
) -> np.ndarray:
    """Resample ``data`` (on ``src_affine``) onto a grid, both affines mapping to the same mm.

    ``blur_sigma_vox`` (source voxels) applies a Gaussian pre-filter approximating the
    partial volume of a larger destination voxel. ``order=0`` is nearest neighbour.
    """
    m = np.linalg.inv(src_affine) @ dst_affine
    src = data
    if blur_sigma_vox > 0 and order > 0:
        src = ndimage.gaussian_filter(data, blur_sigma_vox, mode="nearest", truncate=3.0)
    out = ndimage.affine_transform(
        src,
        m[:3, :3],
        offset=m[:3, 3],
        output_shape=tuple(dst_shape),
        order=order,
        mode="constant",
        cval=cval,
        prefilter=False,
    )
    return out


def partial_volume_sigma(dst_voxel_mm: np.ndarray, src_voxel_mm: float) -> float:
    """Gaussian sigma (source voxels) matching box averaging over a destination voxel."""
    ratio = float(np.mean(dst_voxel_mm)) / src_voxel_mm
    if ratio <= 1.25:
        return 0.0
    # A box of width w has the variance w^2/12; subtract the source voxel's own box.
    return float(np.sqrt((ratio**2 - 1.0) / 12.0))


def world_coords(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """Scanner mm of every voxel, shape (3, X, Y, Z) float32."""
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1)
    w = affine[:3, :3].astype(np.float32) @ idx + affine[:3, 3:4].astype(np.float32)
    return w.reshape((3, *shape))


def smooth_phase_offset(
    shape: tuple[int, ...], affine: np.ndarray, center_mm: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Smooth coil-combination phase offset phi0 (rad): random 2nd-order polynomial."""
    w = world_coords(shape, affine) - np.asarray(center_mm, np.float32)[:, None, None, None]
    w /= np.float32(100.0)  # coefficients per 100 mm
    lin = rng.normal(0.0, 0.8, 3)
    quad = rng.normal(0.0, 0.4, 6)
    x, y, z = w
    phi0 = np.float32(rng.uniform(-np.pi, np.pi)) + lin[0] * x + lin[1] * y + lin[2] * z
    phi0 += quad[0] * x * x + quad[1] * y * y + quad[2] * z * z
    phi0 += quad[3] * x * y + quad[4] * x * z + quad[5] * y * z
    return phi0.astype(np.float32)


def shim_residual_ppm(
    shape: tuple[int, ...],
    affine: np.ndarray,
    center_mm: np.ndarray,
    amplitude_hz: float,
    b0_tesla: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Second-order spherical-harmonic shim residual (ppm), about ``amplitude_hz`` at 80 mm.

    The terms (x, y, z, xy, xz, yz, x^2 - y^2, 2z^2 - x^2 - y^2) are harmonic, so background
    field removal should remove them.
    """
    w = world_coords(shape, affine) - np.asarray(center_mm, np.float32)[:, None, None, None]
    x, y, z = w / np.float32(80.0)
    terms = (x, y, z, x * y, x * z, y * z, x * x - y * y, 2 * z * z - x * x - y * y)
    c = rng.normal(0.0, 1.0, len(terms))
    c *= amplitude_hz / np.linalg.norm(c)
    f_hz = sum(ci * t for ci, t in zip(c, terms, strict=True))
    return (f_hz / (ppm_to_hz(1.0, b0_tesla))).astype(np.float32)


def gre_signal(
    m0: np.ndarray,
    r2star_hz: np.ndarray,
    field_ppm: np.ndarray,
    phi0_rad: np.ndarray,
    te_s: tuple[float, ...],
    b0_tesla: float,
    noise_sigma: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Multi-echo GRE magnitude and phase (rad, [-pi, pi)), each (X, Y, Z, E) float32.

    ``S_e = M0 exp(-R2* TE_e) exp(i (2 pi f TE_e + phi0)) + n_e`` with complex Gaussian noise
    of standard deviation ``noise_sigma`` per real channel.
    """
    f_hz = ppm_to_hz(field_ppm.astype(np.float32), b0_tesla)
    shape = (*m0.shape, len(te_s))
    mag = np.empty(shape, np.float32)
    phase = np.empty(shape, np.float32)
    for e, te in enumerate(te_s):
        te32 = np.float32(te)
        s = (m0 * np.exp(-r2star_hz * te32)).astype(np.complex64)
        s *= np.exp(1j * (np.float32(2 * np.pi) * f_hz * te32 + phi0_rad)).astype(np.complex64)
        if noise_sigma > 0:
            s.real += rng.normal(0.0, noise_sigma, m0.shape).astype(np.float32)
            s.imag += rng.normal(0.0, noise_sigma, m0.shape).astype(np.float32)
        mag[..., e] = np.abs(s)
        ph = np.angle(s).astype(np.float32)
        ph[ph >= np.pi] -= np.float32(2 * np.pi)  # [-pi, pi)
        phase[..., e] = ph
    return mag, phase

"""Small analytic phantom for tests and examples: spheres in an ellipsoidal "brain".

The susceptibility distribution is a set of uniform spheres inside an ellipsoidal brain, plus
optional strong sources outside it (an air-like sinus) that create a background field. Fields
are ``D * chi`` computed on a grid padded 2x (no wrap-around), in ppm; the multi-echo signal
adds a smooth phase offset, R2* decay and complex Gaussian noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bids_qsm.qsm.geometry import GAMMA_HZ_PER_T, dipole_kernel
from bids_qsm.qsm.grid import irfft3, rfft3


@dataclass
class Phantom:
    chi_ppm: np.ndarray  # all sources (inside and outside the brain)
    brain: np.ndarray  # bool ellipsoid
    total_field_ppm: np.ndarray  # D * chi_ppm (all sources)
    local_field_ppm: np.ndarray  # D * (chi_ppm inside the brain)
    spheres: list[tuple[tuple[float, float, float], float, float]]  # (centre vox, radius mm, chi)
    voxel_size: np.ndarray
    b0_dir: np.ndarray


def _coords(shape: Sequence[int], voxel_size: np.ndarray) -> list[np.ndarray]:
    return [
        ((np.arange(n) - (n - 1) / 2) * float(d)).reshape([-1 if a == ax else 1 for a in range(3)])
        for ax, (n, d) in enumerate(zip(shape, voxel_size, strict=True))
    ]


def forward_field(chi: np.ndarray, voxel_size: np.ndarray, b0_dir: np.ndarray) -> np.ndarray:
    """``D * chi`` (ppm) on a 2x zero-padded grid, cropped back (float32)."""
    shape = tuple(2 * n for n in chi.shape)
    pad = np.zeros(shape, np.float32)
    pad[: chi.shape[0], : chi.shape[1], : chi.shape[2]] = chi
    D = dipole_kernel(shape, voxel_size, b0_dir)
    out = irfft3(rfft3(pad) * D, shape)
    return out[: chi.shape[0], : chi.shape[1], : chi.shape[2]].astype(np.float32)


def sphere_phantom(
    shape: tuple[int, int, int] = (48, 56, 44),
    voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
    b0_dir: Sequence[float] = (0.0, 0.0, 1.0),
    brain_radii_mm: tuple[float, float, float] = (19.0, 23.0, 17.0),
    spheres: Sequence[tuple[tuple[float, float, float], float, float]] = (
        ((-7.0, -6.0, 0.0), 5.0, 0.15),
        ((7.0, 5.0, 2.0), 5.0, -0.08),
        ((0.0, 9.0, -6.0), 4.0, 0.25),
    ),
    external: Sequence[tuple[tuple[float, float, float], float, float]] = (
        ((0.0, -20.0, -21.0), 6.0, -9.0),
    ),
) -> Phantom:
    """Build the phantom; sphere centres are in mm from the grid centre, radii in mm, chi ppm."""
    vs = np.asarray(voxel_size, float)
    b = np.asarray(b0_dir, float)
    b = b / np.linalg.norm(b)
    x, y, z = _coords(shape, vs)
    rx, ry, rz = brain_radii_mm
    brain = (x / rx) ** 2 + (y / ry) ** 2 + (z / rz) ** 2 <= 1.0
    chi_in = np.zeros(shape, np.float32)
    for (cx, cy, cz), r, val in spheres:
        chi_in[(x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= r * r] = val
    chi_in *= brain
    chi_out = np.zeros(shape, np.float32)
    for (cx, cy, cz), r, val in external:
        chi_out[(x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= r * r] = val
    chi_out[brain] = 0
    local = forward_field(chi_in, vs, b)
    total = local + forward_field(chi_out, vs, b)
    return Phantom(
        chi_ppm=chi_in + chi_out,
        brain=brain,
        total_field_ppm=total,
        local_field_ppm=local,
        spheres=list(spheres),
        voxel_size=vs,
        b0_dir=b,
    )


def gre_signal(
    field_ppm: np.ndarray,
    brain: np.ndarray,
    te_s: Sequence[float],
    b0_tesla: float = 3.0,
    *,
    r2star_hz: float | np.ndarray = 20.0,
    snr: float = 100.0,
    offset_rad: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Multi-echo magnitude and wrapped phase (rad), (X, Y, Z, E) float32.

    Magnitude 1 in the brain (0.05 outside, noise only far out), ``snr`` relative to the first
    echo's brain signal; phase ``= offset + 2 pi gamma B0 f TE``.
    """
    rng = np.random.default_rng(seed)
    m0 = np.where(brain, 1.0, 0.0).astype(np.float32)
    f_hz = field_ppm * 1e-6 * GAMMA_HZ_PER_T * b0_tesla
    po = np.zeros(brain.shape, np.float32) if offset_rad is None else offset_rad
    sigma = 1.0 / snr
    mags, phases = [], []
    for te in te_s:
        s = m0 * np.exp(-np.asarray(r2star_hz) * te) * np.exp(1j * (po + 2 * np.pi * f_hz * te))
        s = s + sigma * (rng.standard_normal(s.shape) + 1j * rng.standard_normal(s.shape))
        mags.append(np.abs(s).astype(np.float32))
        phases.append(np.angle(s).astype(np.float32))
    return np.stack(mags, -1), np.stack(phases, -1)

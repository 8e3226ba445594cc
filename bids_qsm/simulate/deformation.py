"""Per-subject anatomical variability: a random affine plus a smooth invertible displacement.

Every simulated subject's anatomy is the template head model pulled back through

    phi(y) = c + L^-1 (y - c) + u(y)        (y: subject mm, phi(y): template / MNI mm)

* ``L = R(rot) diag(scale)`` is a random affine about the brain centre ``c``: rotations
  (normal, SD ``rotation_sd_deg`` about each axis) and per-axis scales (uniform in
  ``scale_range``; a subject of scale 1.05 has a head 5 % larger than the template along that
  axis). The head *pose* in the scanner (:class:`~bids_qsm.simulate.acquisition.HeadPose`)
  comes on top.
* ``u`` is a smooth random displacement (mm): three independent Gaussian random fields with
  correlation ``sigma_mm`` (Gaussian kernel SD), scaled so that the largest displacement
  inside the brain is ``max_displacement_mm``. It lives on a lattice of ``spacing_mm``; between
  lattice points it is trilinear (so the written lattice is the exact deformation).

With the defaults (sigma 19 mm, max 5 mm) the displacement gradient stays below about 0.4,
so ``phi`` is invertible (the Jacobian determinant of ``phi`` is checked to be positive and
reported). Tissues, labels, lesions and the head are all sampled through the same ``phi``:
continuous maps trilinearly on the compute grid, labels by nearest neighbour.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bids_qsm.simulate.acquisition import rotation_matrix


@dataclass(frozen=True)
class DeformationParams:
    """Amplitude and smoothness of the random anatomy (mm, degrees)."""

    sigma_mm: float = 19.0
    max_displacement_mm: float = 5.0
    rotation_sd_deg: float = 3.0
    scale_range: tuple[float, float] = (0.97, 1.07)
    spacing_mm: float = 4.0

    def as_dict(self) -> dict:
        return {
            "SmoothSigmaMM": self.sigma_mm,
            "MaxDisplacementMM": self.max_displacement_mm,
            "RotationSDDeg": self.rotation_sd_deg,
            "ScaleRange": list(self.scale_range),
            "LatticeSpacingMM": self.spacing_mm,
        }


@dataclass
class Deformation:
    """Pull-back subject mm -> template mm (see the module docstring).

    ``linear`` (3x3) and ``centre`` (mm) give the affine part; ``field`` (3, nx, ny, nz)
    holds ``u`` in mm on the lattice ``lattice_affine`` (lattice voxel -> subject mm,
    axis-aligned). ``identity()`` is the rigid anatomy.
    """

    linear: np.ndarray
    centre: np.ndarray
    field: np.ndarray | None
    lattice_affine: np.ndarray | None
    info: dict

    @classmethod
    def identity(cls) -> Deformation:
        return cls(np.eye(3), np.zeros(3), None, None, {"Type": "none (rigid anatomy)"})

    @property
    def is_identity(self) -> bool:
        return self.field is None and np.allclose(self.linear, np.eye(3))

    def template_mm(self, pts: np.ndarray) -> np.ndarray:
        """Template mm of subject points ``pts`` (3, ...) in mm (float64 in, float32 out)."""
        shape = pts.shape[1:]
        p = pts.reshape(3, -1)
        out = self.centre[:, None] + self.linear @ (p - self.centre[:, None])
        if self.field is not None and self.lattice_affine is not None:
            inv = np.linalg.inv(self.lattice_affine)
            idx = inv[:3, :3] @ p + inv[:3, 3:4]
            for k in range(3):
                out[k] += ndimage.map_coordinates(
                    self.field[k], idx, order=1, mode="nearest", prefilter=False
                )
        return out.reshape(3, *shape).astype(np.float32)

    def template_coords_on_lattice(self) -> np.ndarray:
        """phi at every lattice point, (nx, ny, nz, 3) float32 mm (the written truth)."""
        if self.field is None or self.lattice_affine is None:
            raise ValueError("identity deformation has no lattice")
        n = self.field.shape[1:]
        idx = np.indices(n, dtype=np.float64).reshape(3, -1)
        pts = self.lattice_affine[:3, :3] @ idx + self.lattice_affine[:3, 3:4]
        return np.moveaxis(self.template_mm(pts).reshape(3, *n), 0, -1)


def _jacobian_range(field: np.ndarray, linear: np.ndarray, spacing: float) -> tuple[float, float]:
    """Min and max Jacobian determinant of phi on the lattice (finite differences)."""
    grads = np.stack([np.stack(np.gradient(field[k], spacing), 0) for k in range(3)], 0)
    jac = linear[:, :, None, None, None] + grads  # d phi_k / d y_j
    det = np.linalg.det(np.moveaxis(jac, (0, 1), (-2, -1)))
    return float(det.min()), float(det.max())


def random_deformation(
    rng: np.random.Generator,
    brain_mask: np.ndarray,
    mask_affine: np.ndarray,
    params: DeformationParams | None = None,
) -> Deformation:
    """Draw a subject's deformation around the brain ``brain_mask`` (on ``mask_affine``, mm)."""
    p = params or DeformationParams()
    idx = np.argwhere(brain_mask)
    centre = mask_affine[:3, :3] @ idx.mean(0) + mask_affine[:3, 3]
    rot = rotation_matrix(tuple(rng.normal(0.0, p.rotation_sd_deg, 3)))  # type: ignore[arg-type]
    scale = rng.uniform(p.scale_range[0], p.scale_range[1], 3)
    linear = np.linalg.inv(rot @ np.diag(scale))  # template-from-subject
    # lattice over the whole phantom grid (subject mm; the head keeps the template's FOV)
    corners = np.array([[0, 0, 0], brain_mask.shape]) - 0.5
    lo_hi = np.sort((mask_affine[:3, :3] @ corners.T + mask_affine[:3, 3:4]), axis=1)
    s = float(p.spacing_mm)
    n = tuple(int(np.ceil((b - a) / s)) + 3 for a, b in lo_hi)
    lat = np.eye(4)
    lat[:3, :3] *= s
    lat[:3, 3] = lo_hi[:, 0] - s
    field = np.stack(
        [
            ndimage.gaussian_filter(rng.standard_normal(n), p.sigma_mm / s, mode="reflect")
            for _ in range(3)
        ]
    )
    # scale: largest |u| inside the brain (sampled on the lattice) = max_displacement_mm
    inv = np.linalg.inv(mask_affine)
    pts = np.indices(n, dtype=np.float64).reshape(3, -1)
    pts_mm = lat[:3, :3] @ pts + lat[:3, 3:4]
    vox = np.rint(inv[:3, :3] @ pts_mm + inv[:3, 3:4]).astype(int)
    ok = np.all((vox >= 0) & (vox < np.array(brain_mask.shape)[:, None]), axis=0)
    inside = np.zeros(pts.shape[1], bool)
    inside[ok] = brain_mask[vox[0, ok], vox[1, ok], vox[2, ok]]
    mag = np.sqrt((field.reshape(3, -1) ** 2).sum(0))
    peak = float(mag[inside].max()) if inside.any() else float(mag.max())
    field *= p.max_displacement_mm / max(peak, 1e-12)
    jmin, jmax = _jacobian_range(field, linear, s)
    if jmin <= 0:
        raise ValueError("random deformation is not invertible; lower its amplitude")
    mag = np.sqrt((field.reshape(3, -1) ** 2).sum(0))
    info = {
        "Type": "affine + smooth random displacement (pull-back subject mm -> MNI mm)",
        **p.as_dict(),
        "RotationDeg": [round(float(a), 3) for a in np.degrees(_euler(rot))],
        "Scale": [round(float(v), 4) for v in scale],
        "MeanDisplacementInBrainMM": round(float(mag[inside].mean()), 3),
        "JacobianDeterminantRange": [round(jmin, 4), round(jmax, 4)],
    }
    return Deformation(linear, centre, field.astype(np.float32), lat, info)


def _euler(rot: np.ndarray) -> np.ndarray:
    """Approximate rotation angles (rad) about x, y, z (small-angle read-out for the sidecar)."""
    return np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]]) / 2.0


def _slab(ij: np.ndarray, z0: int, z1: int) -> np.ndarray:
    """Voxel indices (3, N) of slices z0..z1-1 (C order; ``ij``: (2, nx*ny) in-plane)."""
    z = np.tile(np.arange(z0, z1, dtype=np.float64), ij.shape[1])[None]
    return np.concatenate([np.repeat(ij, z1 - z0, axis=1), z])


def warp_compute_grid(
    arrays: list[np.ndarray], affine: np.ndarray, deformation: Deformation
) -> list[np.ndarray]:
    """Pull arrays on one grid (``affine``: voxel -> mm) through ``phi`` (trilinear, float32).

    Outside the source grid values are taken from the nearest edge voxel (air / padding).
    """
    if deformation.is_identity:
        return arrays
    shape = arrays[0].shape
    inv = np.linalg.inv(affine)
    out = [np.empty(shape, np.float32) for _ in arrays]
    # slab by slab along the last axis keeps the coordinate arrays small
    for z0, z1, src in _template_coords(shape, affine, inv, deformation):
        for a, o in zip(arrays, out, strict=True):
            o[:, :, z0:z1] = ndimage.map_coordinates(
                a, src, order=1, mode="nearest", prefilter=False
            ).reshape(shape[0], shape[1], z1 - z0)
    return out


def _template_coords(
    shape: tuple[int, ...], dst_affine: np.ndarray, inv: np.ndarray, deformation: Deformation
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Per slab of 16 slices of a ``shape`` grid (``dst_affine``: voxel -> subject mm): the
    first and end slice and the voxel coordinates, in the grid whose inverse affine is
    ``inv``, of the template point ``phi`` maps each voxel to (3 x n, float64)."""
    ij = np.indices(shape[:2], dtype=np.float64).reshape(2, -1)
    for z0 in range(0, shape[2], 16):
        z1 = min(shape[2], z0 + 16)
        vox = _slab(ij, z0, z1)
        pts = dst_affine[:3, :3] @ vox + dst_affine[:3, 3:4]
        src = inv[:3, :3] @ deformation.template_mm(pts).astype(np.float64) + inv[:3, 3:4]
        yield z0, z1, src


def sample_points(
    data: np.ndarray,
    data_affine: np.ndarray,
    dst_shape: tuple[int, ...],
    dst_affine: np.ndarray,
    deformation: Deformation,
    *,
    order: int = 0,
    cval: float = 0.0,
) -> np.ndarray:
    """``data`` (template grid) sampled at ``phi`` of every voxel of a subject grid.

    ``dst_affine`` maps destination voxels to subject mm; ``order`` 0 (labels) or 1.
    """
    inv = np.linalg.inv(data_affine)
    out = np.empty(dst_shape, data.dtype if order == 0 else np.float32)
    for z0, z1, src in _template_coords(dst_shape, dst_affine, inv, deformation):
        out[:, :, z0:z1] = ndimage.map_coordinates(
            data, src, order=order, mode="constant", cval=cval, prefilter=False
        ).reshape(dst_shape[0], dst_shape[1], z1 - z0)
    return out

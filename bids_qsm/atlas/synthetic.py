"""A synthetic subject with known atlas labels, for testing the atlas registration.

The template is deformed by a known affine (rotation, anisotropic scaling, translation) and a
smooth random displacement field, then sampled on an (optionally oblique) acquisition grid.
The atlas labels are carried along with the same mapping (nearest neighbour), so they are the
ground truth in the acquisition space. The magnitude gets a GRE-like contrast: a compressed
T1-weighted intensity, darker iron-rich deep gray matter, a smooth bias field and noise. This
is independent of ``bids_qsm.simulate`` (the project's phantom), which is the primary test
bed; this generator only needs the atlas.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

from bids_qsm.atlas.registry import Atlas


@dataclass
class SyntheticSubject:
    """Images of a synthetic subject (all ``nibabel`` images in the same world space, mm)."""

    mag: nib.Nifti1Image  # GRE-like magnitude (3D) on the acquisition grid
    mask: nib.Nifti1Image  # brain mask on the acquisition grid
    labels: np.ndarray  # true atlas labels on the acquisition grid
    t1w: nib.Nifti1Image  # T1w-like image, axial 1 mm grid, same anatomy


def _rotation(deg_x: float, deg_y: float, deg_z: float) -> np.ndarray:
    ax, ay, az = np.deg2rad([deg_x, deg_y, deg_z])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _grid_affine(voxel_mm: float, shape: tuple[int, int, int], rot: np.ndarray) -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = rot * voxel_mm
    centre = np.array([0.0, -18.0, 8.0])  # roughly the brain centre in MNI mm
    aff[:3, 3] = centre - aff[:3, :3] @ ((np.array(shape) - 1) / 2.0)
    return aff


def synthetic_subject(
    atlas: Atlas,
    seed: int = 0,
    voxel_mm: float = 2.0,
    oblique_deg: float = 0.0,
    warp_mm: float = 3.0,
) -> SyntheticSubject:
    """Deform ``atlas.template_img`` into a synthetic subject with true labels.

    Parameters
    ----------
    voxel_mm : isotropic voxel size of the GRE grid (mm).
    oblique_deg : rotation of the acquisition grid about the left-right axis (degrees).
    warp_mm : amplitude (mm, max) of the smooth nonlinear displacement.
    """
    rng = np.random.default_rng(seed)
    tpl = atlas.template_img
    tdata = np.asarray(tpl.dataobj, dtype=np.float32)
    tdata /= np.percentile(tdata[tdata > 0], 99)
    labels = atlas.labels()
    tmask = atlas.template_mask().astype(np.float32)

    # subject world y -> template world x = M y + u(y)
    rot = _rotation(*rng.uniform(-6, 6, 3))
    scale = np.diag(rng.uniform(0.92, 1.08, 3))
    m = np.eye(4)
    m[:3, :3] = rot @ scale
    m[:3, 3] = rng.uniform(-8, 8, 3)
    coarse = rng.standard_normal((3, 6, 7, 6))
    coarse = ndimage.gaussian_filter(coarse, sigma=(0, 1, 1, 1))
    coarse *= warp_mm / max(np.abs(coarse).max(), 1e-6)
    lo = np.array([-100.0, -140.0, -90.0])
    hi = np.array([100.0, 100.0, 110.0])

    def sample(aff: np.ndarray, shape: tuple[int, int, int]) -> tuple[np.ndarray, ...]:
        ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
        y = aff[:3, :3] @ ijk + aff[:3, 3:4]
        x = m[:3, :3] @ y + m[:3, 3:4]
        cc = (y - lo[:, None]) / (hi - lo)[:, None] * (np.array(coarse.shape[1:])[:, None] - 1)
        for d in range(3):
            x[d] += ndimage.map_coordinates(coarse[d], cc, order=3, mode="nearest")
        v = np.linalg.inv(tpl.affine)
        t = v[:3, :3] @ x + v[:3, 3:4]
        img = ndimage.map_coordinates(tdata, t, order=1, cval=0.0).reshape(shape)
        lab = ndimage.map_coordinates(labels, t, order=0, cval=0).reshape(shape)
        msk = ndimage.map_coordinates(tmask, t, order=1, cval=0.0).reshape(shape) > 0.5
        return img, lab, msk

    rot_acq = _rotation(oblique_deg, 0.0, 0.0)
    shape = tuple(int(np.ceil(s / voxel_mm)) for s in (170, 200, 160))
    aff = _grid_affine(voxel_mm, shape, rot_acq)
    img, lab, msk = sample(aff, shape)

    # GRE-like contrast: compressed T1w, iron-rich deep gray matter darker, bias, noise
    mag = np.clip(img, 0, None) ** 0.6
    iron = {79: 0.55, 80: 0.55, 77: 0.8, 78: 0.8, 161: 0.5, 162: 0.5, 163: 0.5, 164: 0.5}
    iron.update({165: 0.55, 166: 0.55, 75: 0.85, 76: 0.85})
    factor = np.ones_like(mag)
    for lv, f in iron.items():
        factor[lab == lv] = f
    mag *= ndimage.gaussian_filter(factor, 0.7)
    ii = np.indices(shape, dtype=np.float32)
    bias = 1.0 + 0.2 * np.cos(ii[0] / shape[0] * np.pi) * np.sin(ii[2] / shape[2] * np.pi)
    mag = mag * bias + rng.normal(0, 0.03, shape)
    mag = np.abs(mag).astype(np.float32) * msk + np.abs(rng.normal(0, 0.03, shape)) * ~msk

    t1shape = (170, 200, 160)
    t1aff = _grid_affine(1.0, t1shape, np.eye(3))
    t1img, _, t1msk = sample(t1aff, t1shape)
    t1 = (t1img * (1 + 0.1 * rng.standard_normal(t1shape).astype(np.float32) * 0.3)).astype(
        np.float32
    )

    return SyntheticSubject(
        mag=nib.Nifti1Image(mag.astype(np.float32), aff),
        mask=nib.Nifti1Image(msk.astype(np.uint8), aff),
        labels=lab.astype(np.int32),
        t1w=nib.Nifti1Image(t1, t1aff),
    )

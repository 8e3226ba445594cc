"""Within-subject space of a longitudinal subject: the rigid midpoint of its sessions.

Method
------
1. Every later session's brain-masked combined GRE magnitude is registered rigidly to the
   first session's (ANTs ``Rigid``, Mattes MI restricted to the first session's brain mask,
   fixed random seed). ``R_k`` is the resulting point map (RAS mm) from session-1 world to
   session-k world (``R_1`` = identity).
2. The midpoint ``Rbar`` of ``R_1..R_N`` is their mean (rotations: chordal L2 mean, i.e. the
   mean matrix projected on the rotations by SVD; translations: mean vector). The subject
   space ("space-subject") is the session-1 world moved by ``Rbar``: the map from subject
   space to session ``k`` is ``M_k = R_k Rbar^-1``, so that the mean of ``M_k`` is the
   identity: no session is the reference, every session (session 1 included) is resampled
   once and by about the same amount (half the head motion for two sessions).
3. The subject grid is the first session's voxel grid (shape, voxel size, orientation) in
   subject space. Maps are resampled with trilinear interpolation (scipy
   ``affine_transform``, order 1), masks by trilinear interpolation thresholded at 0.5 and
   labels by nearest neighbour.

Pure numpy/scipy apart from the ANTs rigid registrations (no nipype).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from bids_qsm.atlas.transforms import ants_seed, itk_affine_to_ras, itk_threads, nib_to_ants

#: Rigid registration settings (recorded in the sidecars).
RIGID_PARAMETERS: dict[str, object] = {
    "Transform": "Rigid (ANTs, antspyx registration type_of_transform='Rigid')",
    "Metric": "Mattes mutual information (32 bins), random sampling 20 %",
    "Iterations": [200, 100, 50],
    "ShrinkFactors": [4, 2, 1],
    "SmoothingSigmasVox": [2, 1, 0],
    "FixedMask": "first session's brain mask",
    "Images": "combined GRE magnitude masked by each session's brain mask",
    "Midpoint": "chordal L2 mean of the rigid maps (SVD-projected rotation, mean translation)",
    "Grid": "first session's GRE grid in subject space",
    "Interpolation": "trilinear (maps), trilinear > 0.5 (masks), nearest neighbour (labels)",
}


@dataclass
class SubjectSpace:
    """The rigid midpoint space of a subject's sessions.

    Attributes
    ----------
    affine : 4x4 voxel -> subject-space mm of the subject grid.
    shape : the subject grid's shape.
    to_session : per session, the 4x4 point map subject-space mm -> session scanner mm.
    session_affines, session_shapes : per session, its GRE grid (voxel -> session mm).
    timings_s : wall-clock time per step (s).
    """

    affine: np.ndarray
    shape: tuple[int, int, int]
    to_session: list[np.ndarray]
    session_affines: list[np.ndarray]
    session_shapes: list[tuple[int, int, int]]
    timings_s: dict[str, float] = field(default_factory=dict)

    def resample(self, data: np.ndarray, k: int, order: int = 1, cval: float = 0.0) -> np.ndarray:
        """Session ``k``'s 3D array (its GRE grid) on the subject grid (float32)."""
        vox = np.linalg.inv(self.session_affines[k]) @ self.to_session[k] @ self.affine
        arr = np.nan_to_num(np.asarray(data, dtype=np.float32))
        return ndimage.affine_transform(
            arr, vox[:3, :3], vox[:3, 3], self.shape, order=order, mode="constant", cval=cval
        ).astype(np.float32)

    def resample_mask(self, mask: np.ndarray, k: int) -> np.ndarray:
        """Session ``k``'s mask on the subject grid (trilinear > 0.5)."""
        return self.resample(np.asarray(mask, dtype=np.float32), k, order=1) > 0.5

    def labels_to_session(self, labels: np.ndarray, k: int) -> np.ndarray:
        """Labels on the subject grid carried to session ``k``'s GRE grid (nearest)."""
        shape = self.session_shapes[k]
        vox = np.linalg.inv(self.affine) @ np.linalg.inv(self.to_session[k])
        vox = vox @ self.session_affines[k]
        return ndimage.affine_transform(
            np.asarray(labels), vox[:3, :3], vox[:3, 3], shape, order=0, mode="constant", cval=0
        ).astype(np.int32)

    def image_to_subject(self, img: nib.Nifti1Image, k: int) -> nib.Nifti1Image:
        """An image in session ``k``'s scanner world (e.g. a T1w) moved into subject space by
        changing its header only (no resampling)."""
        aff = np.linalg.inv(self.to_session[k]) @ np.asarray(img.affine, dtype=float)
        return nib.Nifti1Image(np.asanyarray(img.dataobj), aff)


def rigid_mean(maps: Sequence[np.ndarray]) -> np.ndarray:
    """Chordal L2 mean of 4x4 rigid maps: SVD projection of the mean rotation, mean shift."""
    rot = np.mean([m[:3, :3] for m in maps], axis=0)
    u, _, vt = np.linalg.svd(rot)
    r = u @ vt
    if np.linalg.det(r) < 0:  # never for nearby rotations; keep a proper rotation
        u[:, -1] *= -1
        r = u @ vt
    out = np.eye(4)
    out[:3, :3] = r
    out[:3, 3] = np.mean([m[:3, 3] for m in maps], axis=0)
    return out


def rigid_register(
    fixed: nib.Nifti1Image,
    moving: nib.Nifti1Image,
    fixed_mask: nib.Nifti1Image,
    *,
    threads: int = 1,
    seed: int = 0,
) -> np.ndarray:
    """ANTs rigid registration; the RAS point map fixed-world -> moving-world (4x4)."""
    import ants

    with tempfile.TemporaryDirectory(prefix="bids-qsm-rigid-") as tmp, itk_threads(threads):
        reg = ants.registration(
            fixed=nib_to_ants(fixed),
            moving=nib_to_ants(moving),
            type_of_transform="Rigid",
            mask=nib_to_ants(fixed_mask),
            aff_metric="mattes",
            aff_sampling=32,
            aff_random_sampling_rate=0.2,
            aff_iterations=(200, 100, 50),
            aff_shrink_factors=(4, 2, 1),
            aff_smoothing_sigmas=(2, 1, 0),
            outprefix=str(Path(tmp) / "rigid_"),
            random_seed=ants_seed(seed),
        )
        mats = [t for t in reg["fwdtransforms"] if str(t).endswith(".mat")]
        if not mats:
            raise RuntimeError("ANTs rigid registration wrote no affine transform")
        return itk_affine_to_ras(Path(mats[0]))


def build_subject_space(
    mags: Sequence[nib.Nifti1Image],
    masks: Sequence[nib.Nifti1Image],
    *,
    threads: int = 1,
    seed: int = 0,
) -> SubjectSpace:
    """The rigid midpoint space of sessions given as (3D magnitude, brain mask) pairs."""
    if len(mags) != len(masks) or len(mags) < 2:
        raise ValueError("need a magnitude and a mask for each of at least two sessions")
    t0 = time.perf_counter()
    brains = [
        nib.Nifti1Image(
            (np.asarray(m.dataobj, np.float32) * (np.asarray(k.dataobj) > 0)).astype(np.float32),
            m.affine,
        )
        for m, k in zip(mags, masks, strict=True)
    ]
    fixed_mask = nib.Nifti1Image(
        (np.asarray(masks[0].dataobj) > 0).astype(np.float32), masks[0].affine
    )
    maps = [np.eye(4)]
    for k in range(1, len(brains)):
        maps.append(rigid_register(brains[0], brains[k], fixed_mask, threads=threads, seed=seed))
    t_reg = time.perf_counter() - t0
    rbar_inv = np.linalg.inv(rigid_mean(maps))
    return SubjectSpace(
        affine=np.asarray(mags[0].affine, dtype=float),
        shape=tuple(int(n) for n in mags[0].shape[:3]),  # type: ignore[arg-type]
        to_session=[m @ rbar_inv for m in maps],
        session_affines=[np.asarray(m.affine, dtype=float) for m in mags],
        session_shapes=[tuple(int(n) for n in m.shape[:3]) for m in mags],  # type: ignore[misc]
        timings_s={"rigid_registrations": round(t_reg, 2)},
    )

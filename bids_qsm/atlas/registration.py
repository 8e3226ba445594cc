"""Atlas registration with ANTs (antspyx): template -> subject GRE space, and back.

Method
------
* Subject image: the combined GRE magnitude (root-sum-of-squares over echoes when 4D) masked
  by the QSM brain mask. With a T1w: the T1w is first registered rigidly to the masked GRE
  (Mattes MI sampled in the GRE brain mask, identity start: same scanner frame); the T1w header
  is then moved into the GRE world by that rigid (no resampling), masked with the (dilated)
  GRE brain mask, and used as the subject image. The template registration therefore always
  maps template <-> GRE world directly and one composite transform per direction suffices.
* Template -> subject: ``antsRegistration`` with rigid, affine and regularized SyN stages
  (Mattes MI; cross-correlation is available for the T1w), the template as the fixed image
  resampled to a coarse registration grid (default 2 mm, never finer than the GRE voxels:
  the SyN displacement field lives on it, which keeps the run time and the transform files
  small), multi-resolution shrink factors, winsorized intensities and a fixed random seed.
* Labels: the atlas labels (1 mm template grid) are carried to the GRE grid with the inverse
  composite and ``genericLabel`` interpolation (label-preserving, smooth boundaries),
  sampled at the template coordinates of the GRE voxels (:func:`.antsutil.labels_at`).

Transform files (ITK composite HDF5 written by antsRegistration, each holding the affine and
the displacement field; ``mode-image`` as in fMRIPrep: the ``from-A_to-B`` file resamples an
image of space A onto space B)::

    {prefix}_from-GRE_to-{template}_mode-image_xfm.h5
    {prefix}_from-{template}_to-GRE_mode-image_xfm.h5
    {prefix}_from-T1w_to-GRE_mode-image_xfm.mat        (only with a T1w; already folded in)
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_qsm.atlas.antsutil import (
    bbox,
    box_shape,
    check_same_grid,
    combine_magnitude,
    labels_at,
    move_atomic,
    run_ants,
    sample_linear,
    save,
    template_coords,
    voxel_mm,
)
from bids_qsm.atlas.qc import dice, registration_qc
from bids_qsm.atlas.registry import Atlas
from bids_qsm.atlas.stages import (
    RegistrationParams,
    dgm_images,
    iron_images,
    registration_args,
    use_dgm_stage,
)
from bids_qsm.atlas.t1w import t1w_to_gre_world
from bids_qsm.atlas.transforms import ants_seed, itk_threads, nib_to_ants, xfm_name
from bids_qsm.errors import InputDataError, OutputError

__all__ = [
    "KEY_FROM_TEMPLATE",
    "KEY_T1W_TO_GRE",
    "KEY_TO_TEMPLATE",
    "AtlasRegistration",
    "RegistrationParams",
    "combine_magnitude",
    "labels_from_template",
    "register_atlas",
    "registration_grid_mm",
    "warp_to_template",
]

#: Dilation (voxels of the registration grid) of the template brain mask used as metric mask.
_MASK_DILATION_VOX = 3

#: Keys of :attr:`AtlasRegistration.transforms`.
KEY_TO_TEMPLATE = "GRE_to_template"
KEY_FROM_TEMPLATE = "template_to_GRE"
KEY_T1W_TO_GRE = "T1w_to_GRE"


@dataclass
class AtlasRegistration:
    """Result of :func:`register_atlas`.

    Attributes
    ----------
    labels : numpy.ndarray
        Atlas labels on the subject GRE grid (int32), genericLabel interpolation.
    transforms : dict[str, Path]
        Saved transforms: ``GRE_to_template`` and ``template_to_GRE`` (composite ``.h5``) and,
        with a T1w, ``T1w_to_GRE`` (rigid ``.mat``, informational: already folded in).
    brain_dice : float
        Dice of the template brain mask warped to the GRE grid with the subject brain mask.
    timings_s : dict[str, float]
        Wall-clock time per step (s).
    parameters : dict
        Method and parameters, for the sidecar / methods boilerplate.
    warped_template : nibabel.Nifti1Image | None
        The template resampled onto the GRE grid (for the QC figure).
    """

    labels: np.ndarray
    transforms: dict[str, Path]
    brain_dice: float
    timings_s: dict[str, float]
    parameters: dict
    warped_template: nib.Nifti1Image | None = None
    labels_img: nib.Nifti1Image | None = field(default=None, repr=False)
    qc: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- main API
def registration_grid_mm(p: RegistrationParams, gre_affine: np.ndarray) -> float:
    """Spacing (mm) of the registration grid: ``p.grid_mm``, or with ``p.grid_at_least_voxel``
    not finer than the GRE's smallest voxel edge (rounded to 0.01 mm)."""
    g = float(p.grid_mm)
    if p.grid_at_least_voxel:
        g = max(g, round(float(voxel_mm(gre_affine).min()), 2))
    return g


def register_atlas(
    gre_mag: nib.Nifti1Image,
    gre_mask: nib.Nifti1Image,
    atlas: Atlas,
    out_dir: Path,
    prefix: str,
    t1w: nib.Nifti1Image | None = None,
    threads: int = 2,
    seed: int = 0,
    params: RegistrationParams | None = None,
    iron: nib.Nifti1Image | None = None,
) -> AtlasRegistration:
    """Register ``atlas`` to the subject and carry its labels onto the GRE grid.

    Parameters
    ----------
    gre_mag : GRE magnitude, 3D (combined) or 4D (echoes, combined here by RSS).
    gre_mask : brain mask on the GRE grid (nonzero = brain).
    atlas : the atlas (labels on the template grid).
    out_dir : directory for the transform files (created if needed).
    prefix : BIDS prefix of the transform names, e.g. ``sub-01_ses-1_acq-x``.
    t1w : optional T1w image of the same subject and scanner frame (may include the skull).
    threads : ITK threads used by ANTs.
    seed : random seed of the metric sampling (same seed and threads -> same result).
    params : iterations, shrink factors, grid spacing (:class:`RegistrationParams`).
    iron : optional iron map on the GRE grid (susceptibility, ppm): adds the iron channel to
        the SyN metrics (see :mod:`bids_qsm.atlas.stages`).
    """
    p = params or RegistrationParams()
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the transform directory ({exc})", path=out_dir) from exc
    check_same_grid(gre_mag, gre_mask, prefix)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    mag = combine_magnitude(gre_mag)
    mask = np.asarray(gre_mask.dataobj) > 0
    if mask.sum() < 1000:
        raise InputDataError(f"{prefix}: brain mask has fewer than 1000 voxels")
    if iron is not None and tuple(iron.shape[:3]) != mask.shape:
        raise InputDataError(f"{prefix}: iron map and GRE magnitude differ in shape")
    gre_affine = np.asarray(gre_mag.affine, dtype=float)
    grid = registration_grid_mm(p, gre_affine)
    parameters = _base_parameters(atlas, p, grid, seed, threads)
    with tempfile.TemporaryDirectory(prefix=".atlasreg-", dir=out_dir) as tmpd:
        tmp = Path(tmpd)
        t0 = time.perf_counter()
        fixed = _fixed_images(atlas, grid, p, tmp)
        parameters["RegistrationDomain"] = fixed["domain"]
        moving_path, syn_metric = _subject_image(
            mag, mask, gre_affine, t1w, tmp, p, threads, seed, timings, parameters
        )
        if t1w is not None:
            _move_atomic_rigid(tmp, out_dir, prefix)
        timings["prepare"] = time.perf_counter() - t0 - timings.get("rigid_T1w_to_GRE", 0.0)
        t0 = time.perf_counter()
        transforms = _template_stage(
            atlas, fixed, moving_path, syn_metric, mask, gre_affine, iron, tmp, out_dir,
            prefix, p, grid, seed, threads, t1w is not None, parameters,
        )  # fmt: skip
        timings["registration"] = time.perf_counter() - t0
    if t1w is not None:
        transforms[KEY_T1W_TO_GRE] = out_dir / xfm_name(prefix, "T1w", "GRE", "mat")
    t0 = time.perf_counter()
    labels, wtpl, coords, sub = _warp_to_gre(atlas, transforms, mask, gre_affine, p, threads)
    brain_dice = dice(wtpl[1], mask)
    timings["warp_labels"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    iron_arr = None
    if iron is not None:
        iron_arr = np.nan_to_num(np.asarray(iron.dataobj, dtype=np.float32)[sub]) * mask[sub]
    qc = registration_qc(
        mag[sub] * mask[sub], mask[sub], wtpl[0][sub], labels[sub], coords, gre_affine,
        atlas.structures, iron_arr,
    )  # fmt: skip
    timings["qc"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all
    return AtlasRegistration(
        labels=labels,
        transforms=transforms,
        brain_dice=float(brain_dice),
        timings_s={k: round(v, 2) for k, v in timings.items()},
        parameters=parameters,
        warped_template=nib.Nifti1Image(wtpl[0], gre_affine),
        labels_img=nib.Nifti1Image(labels, gre_affine),
        qc=qc,
    )


def _base_parameters(
    atlas: Atlas, p: RegistrationParams, grid: float, seed: int, threads: int
) -> dict:
    import ants

    return {
        "Software": f"ANTs via antspyx {ants.__version__} (antsRegistration)",
        "Template": atlas.template_name,
        "Atlas": atlas.name,
        "RegistrationGridMM": grid,
        "RandomSeed": int(seed),
        "AntsRandomSeed": ants_seed(seed),  # the value given to ANTs (0 would mean: clock)
        "Threads": int(threads),
        "BitwiseReproducible": int(threads) == 1,  # ITK's thread pool sums in arrival order
        "Winsorize": list(p.winsorize),
        "LabelInterpolation": p.label_interpolation,
        "RegistrationParams": asdict(p),
    }


def _fixed_images(atlas: Atlas, grid: float, p: RegistrationParams, tmp: Path) -> dict:
    """The template (and its brain mask) on the registration grid, cropped to the brain +
    ``p.crop_margin_mm`` (at least 4 voxels); the metric mask is the brain mask dilated by 3
    voxels."""
    import ants

    tpl = nib_to_ants(atlas.template_img)
    tpl_mask = nib_to_ants(
        nib.Nifti1Image(atlas.template_mask().astype(np.float32), atlas.template_img.affine)
    )
    g = (grid, grid, grid)
    tpl_g = ants.resample_image(tpl, g, use_voxels=False, interp_type=0)
    tpl_mask_g = ants.resample_image(tpl_mask, g, use_voxels=False, interp_type=0)
    # crop the fixed grid to the brain + margin: SyN cost scales with its voxel count
    brain_g = ants.threshold_image(tpl_mask_g, 0.5, 2.0)
    # at least one voxel beyond the metric mask (the brain mask dilated by 3 voxels)
    margin = max(_MASK_DILATION_VOX + 1, int(round(p.crop_margin_mm / grid)))
    tpl_g = ants.crop_image(tpl_g, ants.iMath(brain_g, "MD", margin))
    tpl_mask_g = ants.resample_image_to_target(brain_g, tpl_g, interp_type="nearestNeighbor")
    fixed_path = tmp / "fixed.nii"
    ants.image_write(tpl_g, str(fixed_path))
    mask_path = tmp / "fixed_mask.nii"
    ants.image_write(ants.iMath(tpl_mask_g, "MD", _MASK_DILATION_VOX), str(mask_path))
    domain = {
        "CropMarginVox": margin,
        "MetricMaskDilationVox": _MASK_DILATION_VOX,
        "ShapeVox": [int(n) for n in tpl_g.shape],
    }
    return {
        "tpl": tpl,
        "tpl_mask": tpl_mask,
        "grid_img": tpl_g,
        "path": fixed_path,
        "mask_path": mask_path,
        "domain": domain,
    }


def _subject_image(
    mag: np.ndarray,
    mask: np.ndarray,
    gre_affine: np.ndarray,
    t1w: nib.Nifti1Image | None,
    tmp: Path,
    p: RegistrationParams,
    threads: int,
    seed: int,
    timings: dict[str, float],
    parameters: dict,
) -> tuple[Path, str]:
    """The moving image (masked GRE, or the T1w moved into the GRE world) and its SyN metric."""
    gre_brain = nib.Nifti1Image((mag * mask).astype(np.float32), gre_affine)
    if t1w is None:
        parameters["SubjectImage"] = "GRE magnitude (RSS over echoes) masked by brain mask"
        return save(gre_brain, tmp / "moving.nii"), p.gre_syn_metric
    gre_mask_img = nib.Nifti1Image(mask.astype(np.uint8), gre_affine)
    moving_path, _, rigid_info = t1w_to_gre_world(
        t1w, gre_brain, gre_mask_img, tmp, p, threads, seed, timings
    )
    parameters["SubjectImage"] = (
        "T1w, rigidly aligned to the GRE (Mattes MI) and masked by the dilated GRE brain mask"
    )
    parameters["T1wToGRE"] = rigid_info
    return moving_path, p.t1w_syn_metric


def _move_atomic_rigid(tmp: Path, out_dir: Path, prefix: str) -> None:
    move_atomic(tmp / "rigid_0GenericAffine.mat", out_dir / xfm_name(prefix, "T1w", "GRE", "mat"))


def _template_stage(
    atlas: Atlas,
    fixed: dict,
    moving_path: Path,
    syn_metric: str,
    mask: np.ndarray,
    gre_affine: np.ndarray,
    iron: nib.Nifti1Image | None,
    tmp: Path,
    out_dir: Path,
    prefix: str,
    p: RegistrationParams,
    grid: float,
    seed: int,
    threads: int,
    t1w: bool,
    parameters: dict,
) -> dict[str, Path]:
    """Template <- subject: rigid, affine, SyN (+ deep gray matter SyN); saved composites."""
    iron_paths = None
    if iron is not None:
        iron_paths = iron_images(atlas, iron, mask, fixed["grid_img"], tmp, p)
        if iron_paths is not None:
            parameters["IronChannel"] = iron_paths[2]
    # the deep gray matter stage runs at the template's resolution, but not finer than
    # the subject's voxels (a 3 mm GRE gains nothing from a 1 mm stage)
    dgm = None
    gre_vox = float(voxel_mm(gre_affine).min())
    if use_dgm_stage(p, gre_vox):
        dgm_grid = max(float(p.dgm_grid_mm), round(gre_vox, 3))
        dgm = dgm_images(atlas, fixed["tpl"], tmp, p, iron_paths, dgm_grid)
    parameters["DeepGrayMatterStage"] = dgm is not None
    outprefix = str(tmp / "reg_")
    args, stages = registration_args(
        fixed["path"], moving_path, fixed["mask_path"], syn_metric, p, seed, outprefix,
        iron_paths, dgm, t1w, grid_mm=grid,
    )  # fmt: skip
    run_ants(args, threads)
    parameters["TemplateToSubject"] = {"Initialization": "centres of mass", "Stages": stages}
    fwd = Path(outprefix + "Composite.h5")
    inv = Path(outprefix + "InverseComposite.h5")
    if not (fwd.is_file() and inv.is_file()):
        raise RuntimeError(f"antsRegistration wrote no composite transform in {tmp}")
    return {
        KEY_TO_TEMPLATE: move_atomic(
            fwd, out_dir / xfm_name(prefix, "GRE", atlas.template_name, "h5")
        ),
        KEY_FROM_TEMPLATE: move_atomic(
            inv, out_dir / xfm_name(prefix, atlas.template_name, "GRE", "h5")
        ),
    }


def _warp_to_gre(
    atlas: Atlas,
    transforms: dict[str, Path],
    mask: np.ndarray,
    gre_affine: np.ndarray,
    p: RegistrationParams,
    threads: int,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], np.ndarray, tuple]:
    """Labels, warped template (and its brain mask), template coordinates on the GRE grid.

    Only the brain mask's bounding box (+10 mm) is resampled. The template coordinates of
    every GRE voxel are computed once through the composite (three linear warps); labels
    (``genericLabel``: :func:`.antsutil.labels_at`, identical to ANTs' interpolator and
    independent of the number of labels), template and template mask (trilinear) are then
    sampled at them. Returns (labels, (template, template brain mask), template
    coordinates in the box, the box slices)."""
    sub, sub_affine = bbox(mask, gre_affine, margin_mm=10.0)
    gre_ref = nib_to_ants(nib.Nifti1Image(np.zeros(box_shape(sub), np.float32), sub_affine))
    xfm = [str(transforms[KEY_FROM_TEMPLATE])]
    with itk_threads(threads):
        coords, inside = template_coords(atlas, gre_ref, sub_affine, xfm)
    if p.label_interpolation != "genericLabel":
        raise ValueError(f"label_interpolation {p.label_interpolation!r}: only genericLabel")
    tpl_mask = nib.Nifti1Image(atlas.template_mask().astype(np.float32), atlas.template_img.affine)
    labels = np.zeros(mask.shape, np.int32)
    labels[sub] = labels_at(atlas.labels_img, coords, inside)
    wmask_full = np.zeros(mask.shape, bool)
    wmask_full[sub] = sample_linear(tpl_mask, coords, inside) > 0.5
    wtpl_full = np.zeros(mask.shape, np.float32)
    wtpl_full[sub] = sample_linear(atlas.template_img, coords, inside)
    return labels, (wtpl_full, wmask_full), coords, sub


def _transform_path(transforms: dict[str, Path] | Path | str) -> Path:
    if isinstance(transforms, dict):
        if KEY_TO_TEMPLATE not in transforms:
            raise InputDataError(f"transform dictionary lacks '{KEY_TO_TEMPLATE}'")
        path = Path(transforms[KEY_TO_TEMPLATE])
    else:
        path = Path(transforms)
    if not path.is_file():
        raise InputDataError("transform file not found", path=path)
    return path


def warp_to_template(
    img: nib.Nifti1Image,
    transforms: dict[str, Path] | Path,
    atlas: Atlas,
    interpolation: str = "linear",
) -> nib.Nifti1Image:
    """Resample a GRE-space image (3D or 4D) onto the atlas template grid.

    ``transforms`` is the dict of :class:`AtlasRegistration` or the path of the
    ``from-GRE_to-<template>_mode-image_xfm.h5`` file. ``interpolation`` is an ANTs
    interpolator: ``linear``, ``nearestNeighbor``, ``genericLabel``, ``bSpline``,
    ``lanczosWindowedSinc``. Values keep their units; voxels outside the GRE field of view
    are 0.
    """
    import ants

    path = _transform_path(transforms)
    data = np.asarray(img.dataobj)
    is_label = interpolation in ("nearestNeighbor", "genericLabel", "multiLabel")
    vols = [data] if data.ndim == 3 else [data[..., i] for i in range(data.shape[3])]
    ref = nib_to_ants(atlas.template_img)
    out = []
    for vol in vols:
        moving = nib_to_ants(nib.Nifti1Image(np.asarray(vol, dtype=np.float32), img.affine))
        w = ants.apply_transforms(
            fixed=ref, moving=moving, transformlist=[str(path)], interpolator=interpolation
        )
        out.append(w.numpy())
    arr = np.stack(out, axis=-1) if data.ndim == 4 else out[0]
    if is_label:
        arr = np.rint(arr).astype(np.int32)
    else:
        arr = arr.astype(np.float32)
    res = nib.Nifti1Image(arr, atlas.template_img.affine)
    res.set_qform(atlas.template_img.affine, code=4)
    res.set_sform(atlas.template_img.affine, code=4)
    return res


def labels_from_template(
    atlas: Atlas,
    transforms: dict[str, Path] | Path,
    reference: nib.Nifti1Image,
    interpolation: str = "genericLabel",
) -> np.ndarray:
    """Re-apply saved transforms: atlas labels onto ``reference``'s (GRE) grid (int32)."""
    import ants

    if isinstance(transforms, dict):
        path = Path(transforms[KEY_FROM_TEMPLATE])
    else:
        path = Path(transforms)
    if not path.is_file():
        raise InputDataError("transform file not found", path=path)
    ref = nib_to_ants(nib.Nifti1Image(np.zeros(reference.shape[:3], np.float32), reference.affine))
    lab = ants.apply_transforms(
        fixed=ref,
        moving=nib_to_ants(atlas.labels_img),
        transformlist=[str(path)],
        interpolator=interpolation,
    )
    return np.rint(lab.numpy()).astype(np.int32)

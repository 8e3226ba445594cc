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
  resampled to a coarse registration grid (default 2 mm: the SyN displacement field lives on
  it, which keeps the run time and the transform files small), multi-resolution shrink
  factors, winsorized intensities and a fixed random seed.
* Labels: the atlas labels (1 mm template grid) are carried to the GRE grid with the inverse
  composite and ``genericLabel`` interpolation (label-preserving, smooth boundaries).

Transform files (ITK composite HDF5 written by antsRegistration, each holding the affine and
the displacement field; ``mode-image`` as in fMRIPrep: the ``from-A_to-B`` file resamples an
image of space A onto space B)::

    {prefix}_from-GRE_to-{template}_mode-image_xfm.h5
    {prefix}_from-{template}_to-GRE_mode-image_xfm.h5
    {prefix}_from-T1w_to-GRE_mode-image_xfm.mat        (only with a T1w; already folded in)
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from bids_qsm.atlas.qc import dice, registration_qc
from bids_qsm.atlas.registry import Atlas
from bids_qsm.atlas.stages import (
    RegistrationParams,
    _stage,
    dgm_images,
    iron_images,
    registration_args,
)
from bids_qsm.atlas.transforms import (
    itk_affine_to_ras,
    itk_threads,
    nib_to_ants,
    xfm_name,
)
from bids_qsm.errors import InputDataError, OutputError

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


# --------------------------------------------------------------------------- helpers
def combine_magnitude(img: nib.Nifti1Image) -> np.ndarray:
    """Root-sum-of-squares over echoes (4D) or the 3D magnitude itself (float32)."""
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim == 4:
        data = np.sqrt((data**2).sum(axis=3))
    if data.ndim != 3:
        raise InputDataError(f"GRE magnitude must be 3D or 4D, got shape {data.shape}")
    return np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)


def _run_ants(args: list[str], threads: int) -> None:
    if os.environ.get("BIDS_QSM_ANTS_VERBOSE"):
        args = [*args, "--verbose", "1"]
    import ants

    with itk_threads(threads):
        ants.registration(fixed=args, moving=None)


def _save(img: nib.Nifti1Image, path: Path) -> Path:
    nib.save(img, path)
    return path


def _move_atomic(src: Path, dst: Path) -> Path:
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return dst


def _check_same_grid(a: nib.Nifti1Image, b: nib.Nifti1Image, what: str) -> None:
    if a.shape[:3] != b.shape[:3] or not np.allclose(a.affine, b.affine, atol=1e-3):
        raise InputDataError(f"{what}: brain mask and GRE magnitude are on different grids")


# --------------------------------------------------------------------------- main API
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
    import ants

    p = params or RegistrationParams()
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the transform directory ({exc})", path=out_dir) from exc
    _check_same_grid(gre_mag, gre_mask, prefix)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    mag = combine_magnitude(gre_mag)
    mask = np.asarray(gre_mask.dataobj) > 0
    if mask.sum() < 1000:
        raise InputDataError(f"{prefix}: brain mask has fewer than 1000 voxels")
    gre_affine = np.asarray(gre_mag.affine, dtype=float)
    gre_brain = nib.Nifti1Image((mag * mask).astype(np.float32), gre_affine)
    gre_mask_img = nib.Nifti1Image(mask.astype(np.uint8), gre_affine)

    parameters: dict = {
        "Software": f"ANTs via antspyx {ants.__version__} (antsRegistration)",
        "Template": atlas.template_name,
        "Atlas": atlas.name,
        "RegistrationGridMM": p.grid_mm,
        "RandomSeed": int(seed),
        "Threads": int(threads),
        "BitwiseReproducible": int(threads) == 1,  # ITK's thread pool sums in arrival order
        "Winsorize": list(p.winsorize),
        "LabelInterpolation": p.label_interpolation,
    }

    with tempfile.TemporaryDirectory(prefix=".atlasreg-", dir=out_dir) as tmpd:
        tmp = Path(tmpd)
        # -------- fixed image: the template on the registration grid
        t0 = time.perf_counter()
        tpl = nib_to_ants(atlas.template_img)
        tpl_mask = nib_to_ants(
            nib.Nifti1Image(atlas.template_mask().astype(np.float32), atlas.template_img.affine)
        )
        g = float(p.grid_mm)
        tpl_g = ants.resample_image(tpl, (g, g, g), use_voxels=False, interp_type=0)
        tpl_mask_g = ants.resample_image(tpl_mask, (g, g, g), use_voxels=False, interp_type=0)
        # crop the fixed grid to the brain + margin: SyN cost scales with its voxel count
        brain_g = ants.threshold_image(tpl_mask_g, 0.5, 2.0)
        margin = max(1, int(round(p.crop_margin_mm / g)))
        tpl_g = ants.crop_image(tpl_g, ants.iMath(brain_g, "MD", margin))
        tpl_mask_g = ants.resample_image_to_target(brain_g, tpl_g, interp_type="nearestNeighbor")
        fixed_path = tmp / "fixed.nii.gz"
        ants.image_write(tpl_g, str(fixed_path))
        fixed_mask = ants.iMath(tpl_mask_g, "MD", 3)
        fixed_mask_path = tmp / "fixed_mask.nii.gz"
        ants.image_write(fixed_mask, str(fixed_mask_path))

        # -------- subject image (GRE, or the T1w moved into the GRE world)
        if t1w is None:
            moving_path = _save(gre_brain, tmp / "moving.nii.gz")
            syn_metric = p.gre_syn_metric
            parameters["SubjectImage"] = "GRE magnitude (RSS over echoes) masked by brain mask"
        else:
            moving_path, rigid_path, rigid_info = _t1w_to_gre_world(
                t1w, gre_brain, gre_mask_img, tmp, p, threads, seed, timings
            )
            dst = out_dir / xfm_name(prefix, "T1w", "GRE", "mat")
            _move_atomic(rigid_path, dst)
            syn_metric = p.t1w_syn_metric
            parameters["SubjectImage"] = (
                "T1w, rigidly aligned to the GRE (Mattes MI) and masked by the dilated GRE "
                "brain mask"
            )
            parameters["T1wToGRE"] = rigid_info
        timings["prepare"] = time.perf_counter() - t0 - timings.get("rigid_T1w_to_GRE", 0.0)

        # -------- template <- subject: rigid, affine, SyN (+ deep gray matter SyN)
        t0 = time.perf_counter()
        iron_paths = None
        if iron is not None:
            if tuple(iron.shape[:3]) != mask.shape:
                raise InputDataError(f"{prefix}: iron map and GRE magnitude differ in shape")
            iron_paths = iron_images(atlas, iron, mask, tpl_g, tmp, p)
            if iron_paths is not None:
                parameters["IronChannel"] = iron_paths[2]
        # the deep gray matter stage runs at the template's resolution, but not finer than
        # the subject's voxels (a 3 mm GRE gains nothing from a 1 mm stage)
        gre_vox = float(np.sqrt((gre_affine[:3, :3] ** 2).sum(axis=0)).min())
        dgm_grid = max(float(p.dgm_grid_mm), round(gre_vox, 3))
        dgm = dgm_images(atlas, tpl, tmp, p, iron_paths, dgm_grid) if p.dgm_stage else None
        outprefix = str(tmp / "reg_")
        args, stages = registration_args(
            fixed_path, moving_path, fixed_mask_path, syn_metric, p, seed, outprefix,
            iron_paths, dgm, t1w is not None,
        )  # fmt: skip
        _run_ants(args, threads)
        timings["registration"] = time.perf_counter() - t0
        parameters["TemplateToSubject"] = {"Initialization": "centres of mass", "Stages": stages}
        fwd = Path(outprefix + "Composite.h5")
        inv = Path(outprefix + "InverseComposite.h5")
        if not (fwd.is_file() and inv.is_file()):
            raise RuntimeError(f"antsRegistration wrote no composite transform in {tmp}")
        transforms: dict[str, Path] = {
            KEY_TO_TEMPLATE: _move_atomic(
                fwd, out_dir / xfm_name(prefix, "GRE", atlas.template_name, "h5")
            ),
            KEY_FROM_TEMPLATE: _move_atomic(
                inv, out_dir / xfm_name(prefix, atlas.template_name, "GRE", "h5")
            ),
        }
        if t1w is not None:
            transforms[KEY_T1W_TO_GRE] = out_dir / xfm_name(prefix, "T1w", "GRE", "mat")

    # -------- labels, template and template mask onto the GRE grid
    t0 = time.perf_counter()
    # resample only inside the brain mask's bounding box (+10 mm): genericLabel costs about
    # one linear interpolation per label and output voxel
    sub, sub_affine = _bbox(mask, gre_affine, margin_mm=10.0)
    gre_ref = nib_to_ants(nib.Nifti1Image(np.zeros(_shape(sub), np.float32), sub_affine))
    xfm = [str(transforms[KEY_FROM_TEMPLATE])]
    with itk_threads(threads):
        lab = ants.apply_transforms(
            gre_ref, nib_to_ants(atlas.labels_img), xfm, interpolator=p.label_interpolation
        )
        wmask = ants.apply_transforms(gre_ref, tpl_mask, xfm, interpolator="linear")
        wtpl = ants.apply_transforms(gre_ref, tpl, xfm, interpolator="linear")
        coords = _template_coords(atlas, gre_ref, xfm)
    labels = np.zeros(mask.shape, np.int32)
    labels[sub] = np.rint(lab.numpy()).astype(np.int32)
    wmask_full = np.zeros(mask.shape, bool)
    wmask_full[sub] = wmask.numpy() > 0.5
    brain_dice = dice(wmask_full, mask)
    wtpl_full = np.zeros(mask.shape, np.float32)
    wtpl_full[sub] = wtpl.numpy()
    timings["warp_labels"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    iron_arr = None
    if iron is not None:
        iron_arr = np.nan_to_num(np.asarray(iron.dataobj, dtype=np.float32)[sub]) * mask[sub]
    qc = registration_qc(
        mag[sub] * mask[sub],
        mask[sub],
        wtpl_full[sub],
        labels[sub],
        coords,
        gre_affine,
        atlas.structures,
        iron_arr,
    )
    timings["qc"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all

    labels_img = nib.Nifti1Image(labels, gre_affine)
    warped = nib.Nifti1Image(wtpl_full, gre_affine)
    return AtlasRegistration(
        labels=labels,
        transforms=transforms,
        brain_dice=float(brain_dice),
        timings_s={k: round(v, 2) for k, v in timings.items()},
        parameters=parameters,
        warped_template=warped,
        labels_img=labels_img,
        qc=qc,
    )


def _template_coords(atlas: Atlas, gre_ref, xfm: list[str]) -> np.ndarray:
    """Template world coordinates (mm, (3, X, Y, Z)) of every voxel of ``gre_ref``.

    Linear interpolation of the template's coordinate images is exact (they are linear)."""
    import ants

    aff = atlas.template_img.affine
    shape = atlas.template_img.shape[:3]
    out = []
    for k in range(3):
        lin = [np.arange(n, dtype=np.float32) for n in shape]
        val = sum(
            np.float32(aff[k, j]) * np.reshape(lin[j], [-1 if i == j else 1 for i in range(3)])
            for j in range(3)
        ) + np.float32(aff[k, 3])
        img = nib_to_ants(nib.Nifti1Image(np.broadcast_to(val, shape).astype(np.float32), aff))
        out.append(ants.apply_transforms(gre_ref, img, xfm, interpolator="linear").numpy())
    return np.stack(out)


def _bbox(
    mask: np.ndarray, affine: np.ndarray, margin_mm: float
) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """Bounding box of ``mask`` grown by ``margin_mm`` (clipped), and the affine of that box."""
    vox = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    idx = np.argwhere(mask)
    pad = np.ceil(margin_mm / vox).astype(int)
    lo = np.maximum(idx.min(axis=0) - pad, 0)
    hi = np.minimum(idx.max(axis=0) + pad + 1, mask.shape)
    sub = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    sub_affine = affine.copy()
    sub_affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    return sub, sub_affine  # type: ignore[return-value]


def _shape(sub: tuple[slice, ...]) -> tuple[int, ...]:
    return tuple(s.stop - s.start for s in sub)


def _levels(
    targets_mm: tuple[float, ...], voxel_mm: float, iterations: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[float, ...]]:
    """Shrink factors reaching the target resolutions (mm) on a grid of ``voxel_mm``.

    Levels that collapse to the same shrink factor are merged. Returns (iterations, shrink
    factors, smoothing sigmas in voxels of the full-resolution grid).
    """
    its: list[int] = []
    shrinks: list[int] = []
    for t, n in zip(targets_mm, iterations, strict=True):
        f = max(1, int(round(t / voxel_mm)))
        if shrinks and shrinks[-1] == f:
            its[-1] = max(its[-1], n)
            continue
        shrinks.append(f)
        its.append(n)
    smooth = tuple(0.5 * (f - 1) for f in shrinks)
    return tuple(its), tuple(shrinks), smooth


def _t1w_to_gre_world(
    t1w: nib.Nifti1Image,
    gre_brain: nib.Nifti1Image,
    gre_mask_img: nib.Nifti1Image,
    tmp: Path,
    p: RegistrationParams,
    threads: int,
    seed: int,
    timings: dict[str, float],
) -> tuple[Path, Path, dict]:
    """Rigid T1w -> GRE, then the T1w header moved into the GRE world and brain-masked.

    The fixed image is the masked GRE (metric sampled in the GRE brain mask only, so the
    T1w may keep its skull), identity start (same scanner frame). Returns the path of the
    masked T1w (now in the GRE world), the rigid ``.mat`` (``from-T1w_to-GRE`` in
    ``mode-image`` terms) and the stage parameters.
    """
    import ants

    t0 = time.perf_counter()
    data = np.asarray(t1w.dataobj, dtype=np.float32)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputDataError(f"T1w must be a 3D image, got shape {data.shape}")
    t1 = nib.Nifti1Image(np.nan_to_num(data), t1w.affine)
    t1_path = _save(t1, tmp / "t1w.nii.gz")
    gre_path = _save(gre_brain, tmp / "gre_brain.nii.gz")
    gre_mask_path = _save(gre_mask_img, tmp / "gre_mask.nii.gz")
    gre_vox = float(np.sqrt((gre_brain.affine[:3, :3] ** 2).sum(axis=0)).min())
    its, shrink, smooth = _levels(p.rigid_t1w_levels_mm, gre_vox, p.rigid_t1w_iterations)
    f, m = str(gre_path), str(t1_path)
    outprefix = str(tmp / "rigid_")
    args = [
        "--dimensionality", "3",
        "--float", "1",
        "--collapse-output-transforms", "1",
        "--output", f"[{outprefix}]",
        "--interpolation", "Linear",
        "--winsorize-image-intensities", f"[{p.winsorize[0]},{p.winsorize[1]}]",
        "--use-histogram-matching", "0",
        "--random-seed", str(int(seed)),
    ]  # fmt: skip
    metric = f"MI[{f},{m},1,{p.mi_bins},Regular,{p.sampling_rate}]"
    args += _stage("Rigid[0.1]", metric, its, shrink, smooth, masks=str(gre_mask_path))
    _run_ants(args, threads)
    rigid = Path(outprefix + "0GenericAffine.mat")
    if not rigid.is_file():
        raise RuntimeError(f"antsRegistration wrote no rigid transform in {tmp}")
    # the rigid maps GRE points -> T1w points: move the T1w header into the GRE world
    r_ras = itk_affine_to_ras(rigid)
    t1_world = nib.Nifti1Image(t1.get_fdata(dtype=np.float32), np.linalg.inv(r_ras) @ t1.affine)
    # brain mask: GRE mask (in the GRE world) onto the moved T1w grid, dilated by ~3 mm
    with itk_threads(threads):
        m_t1 = ants.apply_transforms(
            fixed=nib_to_ants(t1_world),
            moving=nib_to_ants(gre_mask_img),
            transformlist=[],
            interpolator="linear",
        )
    vox = float(np.sqrt((t1.affine[:3, :3] ** 2).sum(axis=0)).mean())
    m_arr = ndimage.binary_dilation(m_t1.numpy() > 0.5, iterations=max(1, int(round(3.0 / vox))))
    brain = nib.Nifti1Image(t1_world.get_fdata(dtype=np.float32) * m_arr, t1_world.affine)
    moving_path = _save(brain, tmp / "t1w_brain_greworld.nii.gz")
    timings["rigid_T1w_to_GRE"] = time.perf_counter() - t0
    info = {
        "Transform": "Rigid[0.1]",
        "Fixed": "GRE magnitude masked by the brain mask (metric mask: brain mask)",
        "Metric": f"MI[bins={p.mi_bins},Regular,{p.sampling_rate}]",
        "Iterations": list(its),
        "ShrinkFactors": list(shrink),
        "SmoothingSigmasVox": list(smooth),
    }
    return moving_path, rigid, info


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

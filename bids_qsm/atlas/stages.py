"""antsRegistration stages of the template -> subject registration and their parameters.

Stages (all in one ``antsRegistration`` call, template = fixed, subject = moving):

1. Rigid and affine (Mattes MI, regular sampling) on the coarse registration grid.
2. Whole-brain SyN on the coarse grid (``grid_mm``), ANTs' inter-subject settings: gradient
   step ``syn_gradient_step``, flow sigma ``syn_flow_sigma``, total sigma
   ``syn_total_sigma`` (0: no elastic smoothing, so small nuclei can follow the anatomy).
   With an iron map (the subject's chi) the metric is multi-channel: magnitude (or T1w)
   against the template plus the iron map against the synthetic iron template
   (:mod:`.iron`), weights ``1 - iron_weight`` and ``iron_weight``.
3. Optional deep gray matter SyN (``dgm_stage``: ``False`` by default, ``True``, or ``None`` =
   automatic: used when the GRE's finest voxel edge is at most ``dgm_auto_max_voxel_mm``):
   the same metrics on a box around the basal ganglia, thalami, midbrain and mesial
   temporal structures (:data:`.iron.DGM_BOX_STRUCTURES`, grown by ``dgm_margin_mm``) at
   ``dgm_grid_mm`` (2 mm, never finer than the GRE voxels), levels 2x and 1x that grid; the
   metric mask leaves a ``dgm_margin_mm / 2`` rim so the field vanishes smoothly at the box
   edge. With ``dgm_replaces_finest`` the whole-brain SyN then stops one level earlier, so
   its finest level (about two thirds of the registration's time on 1 mm data) runs only in
   the box: less than half the work, but on the full preset (3 seeds) the GRE-only pallidum
   read 13-20 ppb low and the slope of the regional means fell to 0.87-0.89, so it stays
   off (docs/atlas.md "Accuracy and speed").

Determinism: the sampling of the linear stages is ``Regular`` (jittered by the fixed
``--random-seed``); the SyN metrics use every voxel. The same inputs, seed and ITK thread
count give identical transforms; a different thread count changes the order of the metric's
partial sums (floating point), so the transforms differ at the 1e-4 mm level and a few
boundary voxels of the labels may change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_qsm.atlas.iron import dgm_box_world, iron_moving, iron_template
from bids_qsm.atlas.registry import Atlas
from bids_qsm.atlas.transforms import ants_seed, nib_to_ants


@dataclass(frozen=True)
class RegistrationParams:
    """Registration settings (iterations per level, shrink factors, smoothing in voxels).

    ``grid_mm`` is the spacing (mm) of the template grid of the linear and whole-brain SyN
    stages; shrink factors are relative to it. With ``grid_at_least_voxel`` the grid is
    never finer than the subject's GRE voxels (a 3 mm GRE is registered on a 3 mm grid).
    ``*_convergence`` = (threshold, window) of ANTs' convergence test per level.
    ``syn_type`` is ``SyN`` or ``BSplineSyN`` (mesh ``bspline_mesh_mm``). Metrics: ``MI``
    (Mattes) or ``CC`` (radius ``cc_radius`` voxels). See the module docstring for the iron
    channel and the deep gray matter stage. ``quality`` names the preset ("default", or
    "sloppy": :data:`SLOPPY_PARAMS`, for demos and tests only).
    """

    quality: str = "default"
    grid_mm: float = 2.0
    grid_at_least_voxel: bool = True
    crop_margin_mm: float = 8.0
    rigid_iterations: tuple[int, ...] = (500, 250)
    affine_iterations: tuple[int, ...] = (500, 250)
    linear_shrink: tuple[int, ...] = (4, 2)
    linear_smooth_vox: tuple[float, ...] = (2, 1)
    linear_convergence: tuple[float, int] = (1e-6, 10)
    syn_iterations: tuple[int, ...] = (60, 40, 10)
    syn_shrink: tuple[int, ...] = (4, 2, 1)
    syn_smooth_vox: tuple[float, ...] = (2, 1, 0)
    syn_convergence: tuple[float, int] = (1e-6, 10)
    syn_gradient_step: float = 0.2
    syn_type: str = "SyN"
    bspline_mesh_mm: float = 26.0
    syn_fixed_mask: bool = True
    syn_flow_sigma: float = 3.0
    syn_total_sigma: float = 0.0
    mi_bins: int = 32
    sampling_rate: float = 0.3
    cc_radius: int = 1
    t1w_syn_metric: str = "MI"
    gre_syn_metric: str = "MI"
    iron_weight: float = 0.75
    iron_weight_t1w: float = 0.5
    iron_metric: str = "CC"
    dgm_stage: bool | None = False
    dgm_auto_max_voxel_mm: float = 1.5
    dgm_replaces_finest: bool = True
    dgm_grid_mm: float = 2.0
    dgm_margin_mm: float = 10.0
    dgm_iterations: tuple[int, ...] = (30, 15)
    dgm_shrink: tuple[int, ...] = (2, 1)
    dgm_smooth_vox: tuple[float, ...] = (1, 0)
    dgm_gradient_step: float = 0.2
    winsorize: tuple[float, float] = (0.005, 0.995)
    rigid_t1w_iterations: tuple[int, ...] = (300, 150, 50)
    rigid_t1w_levels_mm: tuple[float, ...] = (6.0, 3.0, 2.0)
    rigid_t1w_sampling_rate: float = 0.1
    label_interpolation: str = "genericLabel"


#: ``--sloppy`` (as fMRIPrep's): fewer linear and SyN iterations, above all at the finest level,
#: which dominates the cost (docs/atlas.md). About half the SyN work of the default, with lower
#: Dice of the small nuclei (pallidum, nigra, red nucleus): for demos and tests only.
SLOPPY_PARAMS = RegistrationParams(
    quality="sloppy",
    rigid_iterations=(200, 100),
    affine_iterations=(200, 100),
    syn_iterations=(40, 20, 5),
    dgm_iterations=(15, 5),
)


def use_dgm_stage(p: RegistrationParams, gre_voxel_mm: float) -> bool:
    """Whether the deep gray matter box stage runs: ``p.dgm_stage``, or when it is ``None``
    (automatic) for GRE voxels (finest edge, mm) of at most ``p.dgm_auto_max_voxel_mm``."""
    if p.dgm_stage is None:
        return float(gre_voxel_mm) <= float(p.dgm_auto_max_voxel_mm)
    return bool(p.dgm_stage)


def whole_brain_syn_levels(
    p: RegistrationParams, with_dgm: bool
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[float, ...]]:
    """(iterations, shrink factors, smoothing) of the whole-brain SyN: without its finest
    level when the box stage runs and ``p.dgm_replaces_finest`` (and it has several levels)."""
    its, shr, smo = p.syn_iterations, p.syn_shrink, p.syn_smooth_vox
    if with_dgm and p.dgm_replaces_finest and len(its) > 1:
        return its[:-1], shr[:-1], smo[:-1]
    return its, shr, smo


def registration_params(sloppy: bool = False) -> RegistrationParams:
    """The registration preset: :class:`RegistrationParams` defaults, or :data:`SLOPPY_PARAMS`."""
    return SLOPPY_PARAMS if sloppy else RegistrationParams()


def stage_args(
    transform: str,
    metric: str | list[str],
    iterations: tuple[int, ...],
    shrink: tuple[int, ...],
    smooth: tuple[float, ...],
    convergence: tuple[float, int],
    masks: str | None = None,
) -> list[str]:
    """antsRegistration arguments of one stage (several metrics = a multi-channel metric).

    ``convergence`` is (threshold, window): a level stops once the slope of the metric over
    the last ``window`` iterations falls below ``threshold`` (ANTs' convergence test)."""
    if not len(iterations) == len(shrink) == len(smooth):
        raise ValueError("iterations, shrink factors and smoothing sigmas differ in length")
    metrics = [metric] if isinstance(metric, str) else list(metric)
    args = ["--transform", transform]
    for m in metrics:
        args += ["--metric", m]
    args += [
        "--convergence",
        f"[{'x'.join(str(i) for i in iterations)},{convergence[0]:g},{int(convergence[1])}]",
        "--shrink-factors",
        "x".join(str(s) for s in shrink),
        "--smoothing-sigmas",
        "x".join(f"{s:g}" for s in smooth) + "vox",
    ]
    if masks:
        args += ["--masks", masks]
    return args


def iron_images(
    atlas: Atlas,
    iron: nib.Nifti1Image,
    mask: np.ndarray,
    fixed_grid,
    tmp: Path,
    p: RegistrationParams,
) -> tuple[Path, Path, dict] | None:
    """Iron template on the registration grid and the subject's iron map (paths, info)."""
    import ants

    tpl_iron = iron_template(atlas)
    if tpl_iron is None:
        return None
    fixed = ants.resample_image_to_target(nib_to_ants(tpl_iron), fixed_grid, interp_type="linear")
    fixed_path = tmp / "fixed_iron.nii"
    ants.image_write(fixed, str(fixed_path))
    moving_path = tmp / "moving_iron.nii"
    nib.save(iron_moving(iron, mask), moving_path)
    info = {
        "Subject": "susceptibility map (ppm) clipped to [-0.1, 0.3], 0 outside the brain mask",
        "Template": "synthetic iron template from the atlas labels (bids_qsm.atlas.iron)",
        "Metric": p.iron_metric,
        "Weight": {"GRE": p.iron_weight, "T1w": p.iron_weight_t1w},
    }
    return fixed_path, moving_path, info


def dgm_images(
    atlas: Atlas,
    tpl,
    tmp: Path,
    p: RegistrationParams,
    iron_paths: tuple | None,
    grid_mm: float | None = None,
) -> dict | None:
    """Fixed images and metric mask of the deep gray matter stage (on ``grid_mm``, default
    ``p.dgm_grid_mm``)."""
    import ants

    box = dgm_box_world(atlas, p.dgm_margin_mm)
    if box is None:
        return None
    aff = atlas.template_img.affine
    inv = np.linalg.inv(aff)
    corners = np.array([[box[i][0], box[j][1], box[k][2]] for i in (0, 1) for j in (0, 1)
                        for k in (0, 1)])  # fmt: skip
    vox = inv[:3, :3] @ corners.T + inv[:3, 3:4]
    shape = atlas.template_img.shape[:3]
    lo = np.clip(np.floor(vox.min(1)).astype(int), 0, shape)
    hi = np.clip(np.ceil(vox.max(1)).astype(int) + 1, 0, shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    sub_aff = aff.copy()
    sub_aff[:3, 3] = aff[:3, :3] @ lo + aff[:3, 3]
    g = float(grid_mm or p.dgm_grid_mm)

    def crop(img: nib.Nifti1Image, name: str) -> Path:
        data = np.asarray(img.dataobj, dtype=np.float32)[sl]
        a = nib_to_ants(nib.Nifti1Image(data, sub_aff))
        if not np.allclose(a.spacing, g):
            a = ants.resample_image(a, (g, g, g), use_voxels=False, interp_type=0)
        path = tmp / name
        ants.image_write(a, str(path))
        return path

    fixed = crop(atlas.template_img, "fixed_dgm.nii")
    inner = np.zeros(tuple(b.stop - b.start for b in sl), np.float32)
    rim = int(round(0.5 * p.dgm_margin_mm / float(np.abs(aff[0, 0]))))
    inner[rim : -rim or None, rim : -rim or None, rim : -rim or None] = 1.0
    full = np.zeros(shape, np.float32)
    full[sl] = inner
    mask = crop(nib.Nifti1Image(full, aff), "fixed_dgm_mask.nii")
    iron_fixed = None
    if iron_paths is not None:
        iron_fixed = crop(iron_template(atlas), "fixed_dgm_iron.nii")
    size_mm = [round(float(v), 1) for v in (box[1] - box[0])]
    return {"fixed": fixed, "mask": mask, "iron_fixed": iron_fixed, "size_mm": size_mm, "grid": g}


def _syn_metrics(
    fixed: Path, moving: Path, metric: str, iron_w: float, p: RegistrationParams, iron: tuple | None
) -> tuple[list[str], str]:
    w = 1.0 - iron_w if iron is not None else 1.0
    f, m = str(fixed), str(moving)
    if metric.upper() == "CC":
        out, desc = [f"CC[{f},{m},{w:g},{p.cc_radius}]"], f"CC[radius={p.cc_radius},w={w:g}]"
    else:
        out, desc = [f"MI[{f},{m},{w:g},{p.mi_bins}]"], f"MI[bins={p.mi_bins},w={w:g}]"
    if iron is not None:
        fi, mi = str(iron[0]), str(iron[1])
        wi = iron_w
        if p.iron_metric.upper() == "CC":
            out.append(f"CC[{fi},{mi},{wi:g},{p.cc_radius}]")
            desc += f" + iron CC[radius={p.cc_radius},w={wi:g}]"
        else:
            out.append(f"MI[{fi},{mi},{wi:g},{p.mi_bins}]")
            desc += f" + iron MI[bins={p.mi_bins},w={wi:g}]"
    return out, desc


def _stage_info(transform: str, metric: str, its, shrink, smooth, conv, grid: float) -> dict:
    return {
        "Transform": transform,
        "Metric": metric,
        "Iterations": list(its),
        "ShrinkFactors": list(shrink),
        "SmoothingSigmasVox": list(smooth),
        "Convergence": {"Threshold": conv[0], "WindowSize": conv[1]},
        "GridMM": grid,
    }


def registration_args(
    fixed: Path,
    moving: Path,
    fixed_mask: Path,
    syn_metric: str,
    p: RegistrationParams,
    seed: int,
    outprefix: str,
    iron: tuple | None,
    dgm: dict | None,
    t1w: bool = False,
    grid_mm: float | None = None,
) -> tuple[list[str], list[dict]]:
    """All antsRegistration arguments and the stage descriptions for the sidecar.

    ``grid_mm`` is the spacing of ``fixed`` (the registration grid, default ``p.grid_mm``).
    Masks: with ``p.syn_fixed_mask`` one ``--masks`` option (the dilated template brain
    mask) serves every stage; with the deep gray matter stage each stage gets its own mask
    (linear and whole-brain stages the same brain mask, the box stage its box mask).
    Masks are given as a single fixed-image path: ``[mask,NULL]`` made ANTs print
    "file NULL does not exist".
    """
    g = float(grid_mm if grid_mm is not None else p.grid_mm)
    iron_w = p.iron_weight_t1w if t1w else p.iron_weight
    f, m = str(fixed), str(moving)
    mi = f"MI[{f},{m},1,{p.mi_bins},Regular,{p.sampling_rate}]"
    args = [
        "--dimensionality", "3",
        "--float", "1",
        "--collapse-output-transforms", "0" if dgm is not None else "1",
        "--write-composite-transform", "1",
        "--output", f"[{outprefix}]",
        "--interpolation", "Linear",
        "--winsorize-image-intensities", f"[{p.winsorize[0]},{p.winsorize[1]}]",
        "--use-histogram-matching", "0",
        "--initial-moving-transform", f"[{f},{m},1]",
        "--random-seed", str(ants_seed(seed)),
    ]  # fmt: skip
    if dgm is not None and not p.syn_fixed_mask:
        raise ValueError("the deep gray matter stage needs syn_fixed_mask=True")
    per_stage = str(fixed_mask) if dgm is not None else None
    lin = f"MI[bins={p.mi_bins},Regular,{p.sampling_rate}]"
    stages: list[dict] = []
    for tr, its in (("Rigid[0.1]", p.rigid_iterations), ("Affine[0.1]", p.affine_iterations)):
        conv = p.linear_convergence
        args += stage_args(tr, mi, its, p.linear_shrink, p.linear_smooth_vox, conv, per_stage)
        stages.append(_stage_info(tr, lin, its, p.linear_shrink, p.linear_smooth_vox, conv, g))
    if p.syn_type == "BSplineSyN":
        syn = f"BSplineSyN[{p.syn_gradient_step},{p.bspline_mesh_mm:g},0,3]"
    else:
        syn = f"SyN[{p.syn_gradient_step},{p.syn_flow_sigma},{p.syn_total_sigma}]"
    metrics, desc = _syn_metrics(fixed, moving, syn_metric, iron_w, p, iron)
    masks = str(fixed_mask) if p.syn_fixed_mask else None
    its, shr, smo = whole_brain_syn_levels(p, dgm is not None)
    conv = p.syn_convergence
    args += stage_args(syn, metrics, its, shr, smo, conv, masks)
    info = _stage_info(syn, desc, its, shr, smo, conv, g)
    if p.syn_fixed_mask:
        info["FixedMask"] = "template brain mask dilated by 3 voxels (also for the linear stages)"
    stages.append(info)
    if dgm is not None:
        dsyn = f"SyN[{p.dgm_gradient_step},{p.syn_flow_sigma},{p.syn_total_sigma}]"
        d_iron = (dgm["iron_fixed"], iron[1]) if iron is not None else None
        metrics, desc = _syn_metrics(dgm["fixed"], moving, syn_metric, iron_w, p, d_iron)
        its, shr, smo = p.dgm_iterations, p.dgm_shrink, p.dgm_smooth_vox
        args += stage_args(dsyn, metrics, its, shr, smo, conv, str(dgm["mask"]))
        info = _stage_info(dsyn, desc, its, shr, smo, conv, dgm["grid"])
        info.update(Region="deep gray matter box", BoxSizeMM=dgm["size_mm"],
                    BoxMarginMM=p.dgm_margin_mm)  # fmt: skip
        stages.append(info)
    return args, stages

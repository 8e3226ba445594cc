"""Rigid T1w -> GRE alignment: the T1w is moved into the GRE world before the template stage.

Both images come from the same scanner frame, so the start is the identity; the fixed image
is the masked GRE magnitude and the metric is sampled inside the GRE brain mask only (the
T1w may keep its skull). The T1w header is then moved by the rigid (no resampling) and the
T1w is masked with the GRE brain mask dilated by about 3 mm.
"""

from __future__ import annotations

import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from bids_qsm.atlas.antsutil import levels, run_ants, save, voxel_mm
from bids_qsm.atlas.stages import RegistrationParams, stage_args
from bids_qsm.atlas.transforms import ants_seed, itk_affine_to_ras, itk_threads, nib_to_ants
from bids_qsm.errors import InputDataError


def t1w_to_gre_world(
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

    Returns the path of the masked T1w (now in the GRE world), the rigid ``.mat``
    (``from-T1w_to-GRE`` in ``mode-image`` terms) and the stage parameters; adds
    ``rigid_T1w_to_GRE`` (s) to ``timings``.
    """
    import ants

    t0 = time.perf_counter()
    data = np.asarray(t1w.dataobj, dtype=np.float32)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputDataError(f"T1w must be a 3D image, got shape {data.shape}")
    t1 = nib.Nifti1Image(np.nan_to_num(data), t1w.affine)
    t1_path = save(t1, tmp / "t1w.nii")
    gre_path = save(gre_brain, tmp / "gre_brain.nii")
    gre_mask_path = save(gre_mask_img, tmp / "gre_mask.nii")
    gre_vox = float(voxel_mm(gre_brain.affine).min())
    its, shrink, smooth = levels(p.rigid_t1w_levels_mm, gre_vox, p.rigid_t1w_iterations)
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
        "--random-seed", str(ants_seed(seed)),
    ]  # fmt: skip
    metric = f"MI[{f},{m},1,{p.mi_bins},Regular,{p.rigid_t1w_sampling_rate}]"
    args += stage_args(
        "Rigid[0.1]", metric, its, shrink, smooth, p.linear_convergence, str(gre_mask_path)
    )
    run_ants(args, threads)
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
    vox = float(voxel_mm(t1.affine).mean())
    m_arr = ndimage.binary_dilation(m_t1.numpy() > 0.5, iterations=max(1, int(round(3.0 / vox))))
    brain = nib.Nifti1Image(t1_world.get_fdata(dtype=np.float32) * m_arr, t1_world.affine)
    moving_path = save(brain, tmp / "t1w_brain_greworld.nii")
    timings["rigid_T1w_to_GRE"] = time.perf_counter() - t0
    info = {
        "Transform": "Rigid[0.1]",
        "Fixed": "GRE magnitude masked by the brain mask (metric mask: brain mask)",
        "Metric": f"MI[bins={p.mi_bins},Regular,{p.rigid_t1w_sampling_rate}]",
        "Iterations": list(its),
        "ShrinkFactors": list(shrink),
        "SmoothingSigmasVox": list(smooth),
        "Convergence": _conv(p.linear_convergence),
    }
    return moving_path, rigid, info


def _conv(c: tuple[float, int]) -> dict:
    return {"Threshold": c[0], "WindowSize": c[1]}

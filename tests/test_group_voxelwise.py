"""Voxelwise GLM on small synthetic template-space images with a known blob effect."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd

from bids_qsm.atlas.structures import StructureDef
from bids_qsm.stats.voxelwise import contrast_desc, deep_gm_mask, voxelwise_glm, write_voxelwise


def _cohort(effect: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    shape, aff = (20, 20, 20), np.eye(4)
    mask = np.zeros(shape, np.uint8)
    mask[2:18, 2:18, 2:18] = 1
    blob = np.zeros(shape, bool)
    blob[5:9, 5:9, 5:9] = True
    g = np.r_[np.zeros(8), np.ones(8)]
    age = rng.uniform(20, 60, 16)
    imgs = []
    for i in range(16):
        d = rng.normal(0, 0.01, shape) + 0.001 * age[i]  # ppm, with an age trend
        d[blob] += effect * g[i]
        imgs.append(nib.Nifti1Image(d.astype(np.float32), aff))
    X = pd.DataFrame({"Intercept": 1.0, "group[MS]": g, "age": age})
    return imgs, X, nib.Nifti1Image(mask, aff), blob, mask > 0


def test_blob_significant_there_not_elsewhere(tmp_path) -> None:
    imgs, X, mask_img, blob, inside = _cohort(effect=0.04)
    (res,) = voxelwise_glm(imgs, X, {"MS-HC": "group[MS]"}, mask_img, n_permutations=200)
    t = res.tstat.get_fdata()
    q = res.q.get_fdata()
    pfwe = res.pfwe.get_fdata()
    outside = inside & ~blob
    assert res.df == 13 and res.n == 16 and res.n_voxels == int(inside.sum())
    assert (q[blob] < 0.05).mean() > 0.95 and (t[blob] > 0).all()
    assert (q[outside] < 0.05).mean() < 0.01
    assert not (pfwe[outside] < 0.05).any() and (pfwe[blob] < 0.05).mean() > 0.5
    assert abs(res.effect.get_fdata()[blob].mean() - 0.04) < 0.005  # ppm
    assert (q[~inside] == 1).all() and (t[~inside] == 0).all()
    files = write_voxelwise([res], mask_img, tmp_path, "MNI152NLin6Asym")
    names = {f.name for f in files}
    assert "space-MNI152NLin6Asym_desc-MSvsHC_tstat.nii.gz" in names
    assert "space-MNI152NLin6Asym_desc-MSvsHC_q.nii.gz" in names
    assert "space-MNI152NLin6Asym_desc-MSvsHC_pfwe.nii.gz" in names
    assert not list(tmp_path.glob(".*tmp*"))


def test_null_no_fwe_significance() -> None:
    imgs, X, mask_img, _, inside = _cohort(effect=0.0, seed=3)
    (res,) = voxelwise_glm(imgs, X, {"MS-HC": "group[MS]"}, mask_img, n_permutations=100)
    assert not (res.pfwe.get_fdata()[inside] < 0.05).any()
    assert res.n_significant_q05 <= 2


def test_deep_gm_mask_and_desc() -> None:
    lab = np.zeros((5, 5, 5), np.int16)
    lab[1, 1, 1], lab[2, 2, 2], lab[3, 3, 3] = 77, 78, 5
    m = deep_gm_mask(
        nib.Nifti1Image(lab, np.eye(4)),
        [StructureDef("putamen", "L", (77,)), StructureDef("putamen", "R", (78,))],
    )
    assert int(np.asarray(m.dataobj).sum()) == 2
    assert contrast_desc("MS-HC") == "MSvsHC" and contrast_desc("RR_MS-HC") == "RRMSvsHC"

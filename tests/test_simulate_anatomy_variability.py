"""Anatomical variability (random affine + smooth deformation) and atrophy of the simulator."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from bids_qsm.simulate import simulate_subject
from bids_qsm.simulate.anatomy import build_head_model
from bids_qsm.simulate.bids_writer import write_bids_dataset
from bids_qsm.simulate.cohort import structure_atrophy
from bids_qsm.simulate.deformation import DeformationParams, random_deformation

CLEAN = {"snr": float("inf"), "between_subject_sd_ppm": 0.0}


def _row(sub, structure: str, hemi: str = "bilateral"):
    t = sub.regional_truth
    return t[(t.structure == structure) & (t.hemisphere == hemi)].iloc[0]


def test_deformation_amplitude_smoothness_and_invertibility() -> None:
    hm = build_head_model()
    p = DeformationParams()
    d = random_deformation(np.random.default_rng(3), hm.brain_mask, hm.affine, p)
    # non-linear part: the largest displacement in the brain is the documented maximum
    hm_pts = np.argwhere(hm.brain_mask)[::97].T.astype(float)
    pts = hm.affine[:3, :3] @ hm_pts + hm.affine[:3, 3:]
    affine_part = d.centre[:, None] + d.linear @ (pts - d.centre[:, None])
    u = np.sqrt(((d.template_mm(pts) - affine_part) ** 2).sum(0))
    assert u.max() == pytest.approx(p.max_displacement_mm, rel=0.1)
    assert 0.8 < d.info["MeanDisplacementInBrainMM"] < 3.5
    jmin, jmax = d.info["JacobianDeterminantRange"]
    assert 0.3 < jmin < 1.0 < jmax < 2.0  # invertible, no folding
    # smooth: neighbouring lattice points (4 mm) differ by far less than the amplitude
    step = np.abs(np.diff(d.field, axis=1)).max()
    assert step < 0.25 * p.max_displacement_mm
    # affine part within the documented ranges
    assert all(p.scale_range[0] <= s <= p.scale_range[1] for s in d.info["Scale"])
    # lattice truth = the deformation evaluated at the lattice points
    coords = d.template_coords_on_lattice()
    pts = d.lattice_affine[:3, :3] @ np.array([[10.0], [20.0], [5.0]]) + d.lattice_affine[:3, 3:]
    np.testing.assert_allclose(coords[10, 20, 5], d.template_mm(pts)[:, 0], atol=1e-3)


@pytest.mark.slow  # 30-41 s measured in the fast set (load 5-18, 2 cores)
def test_subjects_differ_in_anatomy_and_rigid_keeps_template() -> None:
    a = simulate_subject("tiny", 1, **CLEAN)
    b = simulate_subject("tiny", 2, **CLEAN)
    r1 = simulate_subject("tiny", 1, rigid_anatomy=True, **CLEAN)
    assert r1.deformation.is_identity and not a.deformation.is_identity
    # deformed heads differ from each other in structure volumes (several % somewhere)
    names = ["thalamus", "caudate", "putamen", "globus_pallidus", "hippocampus"]
    rel = [abs(_row(a, n)["volume_mm3"] / _row(b, n)["volume_mm3"] - 1.0) for n in names]
    assert max(rel) > 0.05
    diff = (a.labels != r1.labels) & ((a.labels > 0) | (r1.labels > 0))
    assert diff.sum() > 0.2 * (r1.labels > 0).sum()
    # tissue and labels move together: the pallidum of the deformed head is still iron-rich
    assert _row(a, "globus_pallidus")["chi_mean_ppm"] > 0.08
    assert a.labels.max() > 0 and a.brain_mask[a.labels > 0].all()


@pytest.mark.slow  # 38-41 s measured in the fast set (load 5-18, 2 cores)
def test_atrophy_volumes_follow_edss_and_keep_iron() -> None:
    kw = {**CLEAN, "group": "MS", "edss": 6.0, "disease_duration": 15.0, "null_effect": True}
    atro = simulate_subject("tiny", 4, atrophy=True, **kw)
    same = simulate_subject("tiny", 4, atrophy=False, **kw)
    loss = structure_atrophy("MS", 6.0, 15.0)
    assert atro.structure_loss == loss and loss["thalamus"] > loss["putamen"] > 0
    for name in ("thalamus", "caudate", "putamen"):
        v_a, v_0 = _row(atro, name)["volume_mm3"], _row(same, name)["volume_mm3"]
        assert v_a / v_0 == pytest.approx(1.0 - loss[name], abs=0.04), name
        # atrophy is not iron: the structure's mean chi stays within a few ppb
        assert abs(_row(atro, name)["chi_mean_ppm"] - _row(same, name)["chi_mean_ppm"]) < 0.004
        assert _row(atro, name)["atrophy_fraction"] == pytest.approx(loss[name])
    # unaffected structures keep their volume, the ventricles grow (more CSF)
    gp = _row(atro, "globus_pallidus")["volume_mm3"] / _row(same, "globus_pallidus")["volume_mm3"]
    assert gp == pytest.approx(1.0, abs=0.03)
    assert structure_atrophy("HC", 0.0, None) == {}


def test_truth_deformation_written(tmp_path) -> None:
    root = write_bids_dataset(tmp_path / "ds", preset="tiny", n_subjects=1, seed=2)
    anat = root / "derivatives" / "simulation" / "sub-01" / "anat"
    name = "sub-01_from-scanner_to-MNI152NLin6Asym_desc-truth_xfm"
    img = nib.load(anat / f"{name}.nii.gz")
    meta = json.loads((anat / f"{name}.json").read_text())
    assert img.shape[3] == 3 and meta["Units"] == "mm"
    assert meta["Deformation"]["SmoothSigmaMM"] == 19.0
    # the true labels of the GRE grid are the template labels at the written coordinates
    labels = np.asarray(nib.load(anat / "sub-01_seg-AAL3_dseg.nii.gz").dataobj)
    gre_aff = nib.load(anat / "sub-01_seg-AAL3_dseg.nii.gz").affine
    from scipy import ndimage

    from bids_qsm.simulate.templates import load_aal3

    aal, aal_aff = load_aal3()
    vox = np.argwhere(labels == 79)[:50].T.astype(float)  # left pallidum voxels
    scanner = gre_aff[:3, :3] @ vox + gre_aff[:3, 3:]
    lat = np.linalg.inv(img.affine)[:3, :3] @ scanner + np.linalg.inv(img.affine)[:3, 3:]
    data = np.asarray(img.dataobj, dtype=np.float64)
    mni = np.stack([ndimage.map_coordinates(data[..., k], lat, order=1) for k in range(3)])
    a_vox = np.rint(np.linalg.inv(aal_aff)[:3, :3] @ mni + np.linalg.inv(aal_aff)[:3, 3:]).astype(
        int
    )
    hits = aal[a_vox[0], a_vox[1], a_vox[2]] == 79
    assert hits.mean() > 0.9
    rigid = write_bids_dataset(tmp_path / "r", preset="tiny", n_subjects=1, rigid_anatomy=True)
    ranat = rigid / "derivatives" / "simulation" / "sub-01" / "anat"
    assert not (ranat / f"{name}.nii.gz").exists() and (ranat / f"{name}.json").is_file()


def test_cli_options() -> None:
    from bids_qsm.simulate.cli import build_parser

    args = build_parser().parse_args(["out", "--rigid-anatomy", "--atrophy", "--null-effect"])
    assert args.rigid_anatomy and args.atrophy and args.null_effect
    assert not build_parser().parse_args(["out"]).rigid_anatomy

"""Fast tests of the atlas registry, transforms helpers and QC (no registration)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_qsm.atlas.antsutil import levels as _levels
from bids_qsm.atlas.qc import dice, registration_figure, structure_dice
from bids_qsm.atlas.registry import (
    aal3_files,
    load_atlas,
    load_custom_atlas,
    resample_labels_to_grid,
)
from bids_qsm.atlas.structures import STRUCTURE_NAMES, StructureDef
from bids_qsm.atlas.transforms import ants_to_nib, itk_affine_to_ras, nib_to_ants, xfm_name
from bids_qsm.errors import ExitCode, InputDataError


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    import os

    os.environ["BIDS_QSM_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    return load_atlas()


def test_aal3_on_template_grid_keeps_world_positions(atlas) -> None:
    src = nib.load(aal3_files()[0])
    sdata = np.asarray(src.dataobj)
    lab = atlas.labels()
    assert lab.shape == atlas.template_img.shape == (182, 218, 182)
    assert np.allclose(atlas.labels_img.affine, atlas.template_img.affine)
    for value in (75, 79, 165, 166, 161, 143):
        a = np.argwhere(sdata == value)
        b = np.argwhere(lab == value)
        assert len(a) == len(b) > 100  # exact flip + shift: no voxel lost or gained
        ca = nib.affines.apply_affine(src.affine, a.mean(0))
        cb = nib.affines.apply_affine(atlas.labels_img.affine, b.mean(0))
        assert np.allclose(ca, cb, atol=1e-6)
    # left structures (odd labels) at negative x (RAS)
    caudate_l = nib.affines.apply_affine(atlas.labels_img.affine, np.argwhere(lab == 75).mean(0))
    assert caudate_l[0] < -5


def test_aal3_table_and_structures(atlas) -> None:
    t = atlas.table
    assert {"index", "name", "structure", "hemisphere"} <= set(t.columns)
    assert len(t) == 170
    row = t.set_index("index").loc[143]
    assert row["structure"] == "thalamus;pulvinar" and row["hemisphere"] == "L"
    assert t.set_index("index").loc[166, "hemisphere"] == "R"
    names = {(s.name, s.hemisphere) for s in atlas.structures}
    assert names == {(n, h) for n in STRUCTURE_NAMES for h in ("L", "R")}
    assert atlas.name == "AAL3" and atlas.template_name == "MNI152NLin6Asym"
    # every structure has voxels in the resampled atlas
    lab = atlas.labels()
    for s in atlas.structures:
        assert np.isin(lab, s.labels).sum() > 100, s


def test_atlas_cache_is_reused(atlas) -> None:
    again = load_atlas()
    assert again.labels_img.get_filename() == atlas.labels_img.get_filename()
    assert Path(atlas.labels_img.get_filename()).parent != Path(aal3_files()[0]).parent


def _write_custom(tmp_path: Path, atlas, table_rows: list[dict]) -> tuple[Path, Path, Path]:
    lab = atlas.labels()
    keep = np.isin(lab, [75, 76, 165]) * lab
    # a different (AAL3-like, +x) grid for the labels: must be resampled onto the template
    src = nib.load(aal3_files()[0])
    data = resample_labels_to_grid(
        nib.Nifti1Image(keep.astype(np.int16), atlas.labels_img.affine), src
    )
    labels = tmp_path / "atlas_dseg.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.int16), src.affine), labels)
    table = tmp_path / "atlas_dseg.tsv"
    pd.DataFrame(table_rows).to_csv(table, sep="\t", index=False)
    template = tmp_path / "template.nii.gz"
    nib.save(atlas.template_img, template)
    return labels, table, template


def test_custom_atlas_roundtrip(tmp_path: Path, atlas) -> None:
    rows = [
        {"index": 75, "name": "Caudate_L", "structure": "caudate", "hemisphere": "L"},
        {"index": 76, "name": "Caudate_R", "structure": "caudate", "hemisphere": "R"},
        {"index": 165, "name": "RN_left", "structure": "red_nucleus;midbrain", "hemisphere": "L"},
        {"index": 200, "name": "Unused", "structure": "n/a", "hemisphere": "bilateral"},
    ]
    labels, table, template = _write_custom(tmp_path, atlas, rows)
    custom = load_custom_atlas(labels, table, template, name="Mine")
    assert custom.name == "Mine"
    assert custom.labels_img.shape == atlas.template_img.shape
    assert (custom.labels() == 165).sum() == (atlas.labels() == 165).sum()
    groups = {(s.name, s.hemisphere): s.labels for s in custom.structures}
    assert groups[("caudate", "L")] == (75,)
    assert groups[("midbrain", "L")] == (165,)
    assert ("n/a", "bilateral") not in groups


def test_custom_atlas_without_structure_columns(tmp_path: Path, atlas) -> None:
    rows = [{"index": 75, "name": "Caudate_L"}, {"index": 76, "name": "Caudate_R"}]
    rows.append({"index": 165, "name": "Red_N_L"})
    labels, table, template = _write_custom(tmp_path, atlas, rows)
    custom = load_custom_atlas(labels, table, template, name="Mine")
    assert sorted((s.name, s.hemisphere) for s in custom.structures) == [
        ("Caudate_L", "L"),
        ("Caudate_R", "R"),
        ("Red_N_L", "L"),
    ]
    assert list(custom.table["hemisphere"]) == ["L", "R", "L"]


def test_custom_atlas_table_image_disagree(tmp_path: Path, atlas) -> None:
    rows = [{"index": 75, "name": "Caudate_L"}, {"index": 76, "name": "Caudate_R"}]
    labels, table, template = _write_custom(tmp_path, atlas, rows)
    with pytest.raises(InputDataError) as err:
        load_custom_atlas(labels, table, template, name="Mine")
    assert err.value.exit_code == ExitCode.DATA_ERROR == 65
    msg = str(err.value)
    assert "165" in msg and "atlas_dseg.nii.gz" in msg and "\n" not in msg


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("idx\tlabel\n75\tCaudate_L\n", "lacks column"),
        ("index\tname\n75\tA\n75\tB\n76\tC\n165\tD\n", "more than once"),
        ("index\tname\nx\tA\n", "non-numeric"),
    ],
)
def test_custom_atlas_bad_tables(tmp_path: Path, atlas, content: str, problem: str) -> None:
    labels, table, template = _write_custom(tmp_path, atlas, [{"index": 1, "name": "x"}])
    table.write_text(content)
    with pytest.raises(InputDataError, match=problem):
        load_custom_atlas(labels, table, template, name="Mine")


def test_custom_atlas_bad_name(tmp_path: Path, atlas) -> None:
    labels, table, template = _write_custom(tmp_path, atlas, [{"index": 75, "name": "x"}])
    with pytest.raises(InputDataError, match="alphanumeric"):
        load_custom_atlas(labels, table, template, name="my-atlas")


def test_nib_ants_roundtrip_oblique() -> None:
    rng = np.random.default_rng(0)
    aff = np.eye(4)
    c, s = np.cos(0.3), np.sin(0.3)
    aff[:3, :3] = np.array([[-1.5, 0, 0], [0, 2 * c, -2.5 * s], [0, 2 * s, 2.5 * c]])
    aff[:3, 3] = [90, -100, -40]
    img = nib.Nifti1Image(rng.random((5, 6, 7)).astype(np.float32), aff)
    a = nib_to_ants(img)
    # ANTs physical point of voxel (1,2,3) is the LPS version of the RAS point
    ras = nib.affines.apply_affine(aff, [1, 2, 3])
    import ants

    lps = ants.transform_index_to_physical_point(a, (1, 2, 3))
    assert np.allclose(lps, [-ras[0], -ras[1], ras[2]], atol=1e-4)
    back = ants_to_nib(a)
    assert np.allclose(back.affine, aff, atol=1e-5)
    assert np.array_equal(back.get_fdata(), img.get_fdata())


def test_itk_affine_to_ras(tmp_path: Path) -> None:
    import ants

    tx = ants.create_ants_transform(
        transform_type="AffineTransform",
        dimension=3,
        matrix=np.array([[1, 0, 0], [0, 0.9, -0.1], [0, 0.1, 0.9]]),
        translation=(2.0, -3.0, 4.0),
        center=(10.0, 20.0, 30.0),
    )
    path = tmp_path / "x.mat"
    ants.write_transform(tx, str(path))
    m = itk_affine_to_ras(path)
    p_ras = np.array([5.0, -7.0, 11.0])
    q_lps = np.asarray(tx.apply_to_point((-p_ras[0], -p_ras[1], p_ras[2])))
    q_ras = m[:3, :3] @ p_ras + m[:3, 3]
    assert np.allclose(q_ras, [-q_lps[0], -q_lps[1], q_lps[2]], atol=1e-5)


def test_names_levels_and_dice() -> None:
    assert xfm_name("sub-01_acq-a", "GRE", "MNI152NLin6Asym", "h5") == (
        "sub-01_acq-a_from-GRE_to-MNI152NLin6Asym_mode-image_xfm.h5"
    )
    assert _levels((6.0, 3.0, 2.0), 1.0, (3, 2, 1)) == ((3, 2, 1), (6, 3, 2), (2.5, 1.0, 0.5))
    assert _levels((6.0, 3.0, 2.0), 3.0, (3, 2, 1)) == ((3, 2), (2, 1), (0.5, 0.0))
    a = np.zeros((4, 4, 4), bool)
    b = a.copy()
    a[:2] = True
    b[1:3] = True
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0
    s = [StructureDef("x", "L", (1, 2))]
    est = np.array([1, 2, 0, 0])
    tru = np.array([1, 0, 2, 0])
    assert structure_dice(est, tru, s)["x_L"] == pytest.approx(0.5)


def test_registration_figure(tmp_path: Path, atlas) -> None:
    tpl = atlas.template_img
    sl = (slice(40, 140, 2), slice(40, 180, 2), slice(30, 150, 2))
    data = np.asarray(tpl.dataobj, dtype=np.float32)[sl]
    aff = tpl.affine @ np.diag([2, 2, 2, 1.0])
    aff[:3, 3] = nib.affines.apply_affine(tpl.affine, [40, 40, 30])
    mag = nib.Nifti1Image(np.sqrt(data), aff)
    lab = atlas.labels()[sl]
    out = registration_figure(
        mag,
        nib.Nifti1Image(data, aff),
        tmp_path / "figures" / "reg.png",
        labels=lab,
        structures=atlas.structures,
    )
    assert out.is_file() and out.stat().st_size > 20_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="differ in shape"):
        registration_figure(mag, nib.Nifti1Image(data[:-1], aff), tmp_path / "bad.png")


def test_labels_at_matches_ants_generic_label() -> None:
    """The numpy genericLabel sampler gives ANTs' genericLabel labels (and the per-label
    trilinear argmax it is defined by) on an oblique, shifted grid."""
    import ants

    from bids_qsm.atlas.antsutil import labels_at

    rng = np.random.default_rng(0)
    lab = np.zeros((24, 22, 20), np.int32)
    for k, c in enumerate(rng.uniform(4, 17, (6, 3)), start=1):
        idx = np.indices(lab.shape)
        lab[sum((idx[i] - c[i]) ** 2 for i in range(3)) < rng.uniform(9, 30)] = 3 * k + 2
    src = nib.Nifti1Image(lab, np.diag([1.5, 1.5, 1.5, 1.0]))
    rot = nib.eulerangles.euler2mat(0.3, -0.2, 0.1)
    ref_aff = np.eye(4)
    ref_aff[:3, :3] = rot * 1.1
    ref_aff[:3, 3] = [2.3, -1.7, 0.9]
    shape = (26, 24, 22)
    coords = nib.affines.apply_affine(ref_aff, np.indices(shape).reshape(3, -1).T).T
    ours = labels_at(src, coords.reshape(3, *shape))
    ref = nib_to_ants(nib.Nifti1Image(np.zeros(shape, np.float32), ref_aff))
    theirs = ants.apply_transforms(
        ref, nib_to_ants(src.__class__(lab.astype(np.float32), src.affine)), [],
        interpolator="genericLabel",
    ).numpy()  # fmt: skip
    assert (ours > 0).sum() > 500
    assert np.array_equal(ours, np.rint(theirs).astype(np.int32))
    # brute force: trilinear indicator of every label, argmax (ties -> smallest label)
    from scipy import ndimage

    ijk = np.linalg.inv(src.affine)[:3, :3] @ coords + np.linalg.inv(src.affine)[:3, 3:4]
    inside = np.all((ijk >= 0) & (ijk <= np.array(lab.shape)[:, None] - 1), axis=0)
    vals = [np.unique(lab)]
    ind = np.stack(
        [ndimage.map_coordinates((lab == v).astype(float), ijk, order=1) for v in vals[0]]
    )
    brute = np.where(inside, vals[0][np.argmax(ind, axis=0)], 0).reshape(shape)
    assert (brute != ours).sum() <= 0.002 * brute.size  # float ties only


def test_registration_grid_and_masks_without_null(tmp_path: Path) -> None:
    from bids_qsm.atlas.registration import RegistrationParams, registration_grid_mm
    from bids_qsm.atlas.stages import registration_args

    p = RegistrationParams()
    assert registration_grid_mm(p, np.diag([3.0, 3.0, 3.0, 1.0])) == 3.0
    assert registration_grid_mm(p, np.diag([1.0, 1.0, 1.2, 1.0])) == p.grid_mm
    off = RegistrationParams(grid_at_least_voxel=False)
    assert registration_grid_mm(off, np.diag([3.0, 3.0, 3.0, 1.0])) == off.grid_mm
    f, m, k = tmp_path / "f.nii.gz", tmp_path / "m.nii.gz", tmp_path / "k.nii.gz"
    args, stages = registration_args(f, m, k, "MI", p, 0, "out_", None, None, grid_mm=3.0)
    assert not any("NULL" in a for a in args)  # ANTs printed "file NULL does not exist"
    assert args.count("--masks") == 1 and args[args.index("--masks") + 1] == str(k)
    conv = args[args.index("--convergence") + 1]
    assert conv.endswith(f",{p.linear_convergence[0]:g},{p.linear_convergence[1]}]")
    assert stages[2]["GridMM"] == 3.0 and stages[2]["Convergence"]["WindowSize"] > 0
    dgm = {"fixed": f, "mask": k, "iron_fixed": None, "size_mm": [1, 1, 1], "grid": 1.0}
    args, _ = registration_args(f, m, k, "MI", p, 0, "out_", None, dgm)
    assert not any("NULL" in a for a in args) and args.count("--masks") == 4

"""Self-positive dipole ROIs, the phase-quality mask, lesion phase columns, group thresholds."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from bids_qsm.atlas.structures import StructureDef
from bids_qsm.stats import group_swi as S
from bids_qsm.stats.lesions import LESION_LABELS, lesion_table
from bids_qsm.stats.regional import Entities
from bids_qsm.swi import phase_quality_mask, self_positive_labels
from bids_qsm.swi.dipole_roi import _unit_field
from bids_qsm.swi.highpass import gaussian_highpass

SHAPE = (48, 48, 48)
VS = np.array([1.0, 1.0, 1.0])
B0 = (0.0, 0.0, 1.0)


def _grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    idx = np.indices(SHAPE).astype(np.float32)
    return tuple(idx[i] - (SHAPE[i] - 1) / 2 for i in range(3))  # type: ignore[return-value]


def test_prolate_kept_oblate_dropped_and_kept_voxels_rise_with_own_iron():
    x, y, z = _grid()
    labels = np.zeros(SHAPE, np.int32)
    labels[((x + 10) / 3.5) ** 2 + (y / 3.5) ** 2 + (z / 9) ** 2 <= 1] = 1  # along B0
    labels[((x - 10) / 8) ** 2 + (y / 8) ** 2 + (z / 2.5) ** 2 <= 1] = 2  # flat across B0
    structs = [StructureDef("prolate", "L", (1,)), StructureDef("oblate", "L", (2,))]
    roi = self_positive_labels(labels, structs, VS, B0, (2.0, 2.0, 0.0), dominance=0.0)
    kept = {k: (roi == k).sum() / (labels == k).sum() for k in (1, 2)}
    assert kept[1] > 0.9  # internal field of a prolate body along B0 is positive
    assert kept[2] < 0.5  # a disk across B0 is mostly negative inside
    assert np.all(roi[labels == 0] == 0) and set(np.unique(roi)) <= {0, 1, 2}
    # by construction the unit response is positive on the kept voxels, <= 0 on the others
    w = gaussian_highpass(
        _unit_field((labels == 2).astype(np.float32), VS, np.array(B0)),
        np.ones(SHAPE, bool),
        (2.0, 2.0, 0.0),
    )
    assert np.all(w[roi == 2] > 0) and np.all(w[(labels == 2) & (roi != 2)] <= 0)
    # the plain mean of the disk's filtered phase falls with its iron, the ROI mean rises
    assert w[labels == 2].mean() < 0 < w[roi == 2].mean()


def test_dominance_drops_voxels_next_to_an_iron_rich_neighbour():
    x, y, z = _grid()
    labels = np.zeros(SHAPE, np.int32)
    labels[((x + 5) / 4) ** 2 + (y / 4) ** 2 + (z / 7) ** 2 <= 1] = 1
    labels[((x - 5) / 4) ** 2 + (y / 4) ** 2 + (z / 7) ** 2 <= 1] = 2  # beside it, across B0
    structs = [StructureDef("a", "L", (1,)), StructureDef("b", "R", (2,))]
    loose = self_positive_labels(labels, structs, VS, B0, (2.0, 2.0, 0.0), dominance=0.0)
    strict = self_positive_labels(labels, structs, VS, B0, (2.0, 2.0, 0.0), dominance=2.0)
    assert (strict == 1).sum() < (loose == 1).sum()
    assert np.all(loose[strict == 1] == 1)  # stricter ROI is a subset
    # kept voxels lie farther from the neighbour (at x = +5) than the dropped ones
    dropped = (loose == 1) & (strict != 1)
    assert x[strict == 1].mean() < x[dropped].mean()


def test_shared_labels_later_structure_decides():
    x, y, z = _grid()
    labels = np.zeros(SHAPE, np.int32)
    labels[(x / 6) ** 2 + (y / 6) ** 2 + (z / 8) ** 2 <= 1] = 1
    labels[(labels == 1) & (x > 2)] = 2  # the "pulvinar" part of the "thalamus" (1, 2)
    structs = [StructureDef("thalamus", "L", (1, 2)), StructureDef("pulvinar", "L", (2,))]
    roi = self_positive_labels(labels, structs, VS, B0, (2.0, 2.0, 0.0))
    alone = self_positive_labels(labels, structs[1:], VS, B0, (2.0, 2.0, 0.0))
    np.testing.assert_array_equal(roi == 2, alone == 2)


def test_phase_quality_mask_criteria():
    x, y, z = _grid()
    mask = x**2 + y**2 + z**2 <= 20**2
    dist = ndimage.distance_transform_edt(mask, sampling=VS)
    r2 = np.where(x > 10, 150.0, 30.0)
    res = np.where(y > 12, 0.5, 0.01)
    q = phase_quality_mask(mask, VS, edge_mm=4.0, r2star_hz=r2, fit_residual=res)
    expected = mask & (dist > 4.0) & (r2 <= 80.0) & (res <= 0.3)
    np.testing.assert_array_equal(q, expected)
    np.testing.assert_array_equal(phase_quality_mask(mask, VS, edge_mm=0.0), mask)


def test_lesion_table_all_four_labels_rim_and_core_phase():
    x, y, z = _grid()
    mask = np.ones(SHAPE, bool)
    chi = np.zeros(SHAPE, np.float32)
    pi = np.zeros(SHAPE, np.float32)
    les = x**2 + y**2 + z**2 <= 4**2
    rim = ndimage.binary_dilation(les) & ~ndimage.binary_erosion(les)
    core = ndimage.binary_erosion(les)
    pi[rim], pi[core] = 0.08, 0.01
    pi[0, 0, 0] = np.nan  # excluded voxel far away: ignored
    masks = {name: les for name in LESION_LABELS}
    df = lesion_table(
        masks, chi, mask, 1.0, Entities("sub-01"), phase_iron_rad=pi, apt_threshold_rad=0.05
    )
    assert set(df["label"]) == {"T1lesion", "T2lesion", "SWIphaselesion", "SWImaglesion"}
    for _, r in df[df.lesion_id == "total"].iterrows():
        assert r["rim_phaseiron_mean_rad"] == pytest.approx(0.08)
        assert r["core_phaseiron_mean_rad"] == pytest.approx(0.01)
        assert r["rim_minus_core_phaseiron_rad"] == pytest.approx(0.07)
        n_ab = (les & rim).sum()
        assert r["apt_volume_mm3"] == pytest.approx(float(n_ab))
        assert r["mpapt_rad"] == pytest.approx(0.08)


def _write(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def test_group_thresholds_default_use_rois_and_control_mean(tmp_path: Path):
    x, y, z = _grid()
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    vs = np.array([2.0, 2.0, 2.0])
    labels = np.zeros(SHAPE, np.int16)
    labels[((x + 6) / 5) ** 2 + (y / 3) ** 2 + (z / 2) ** 2 <= 1] = 77  # putamen L, flattish
    labels[((x - 6) / 5) ** 2 + (y / 3) ** 2 + (z / 2) ** 2 <= 1] = 78
    mask = (x**2 + y**2 + z**2 <= 22**2).astype(np.uint8)
    structs = [StructureDef("putamen", "L", (77,)), StructureDef("putamen", "R", (78,))]
    rng = np.random.default_rng(0)
    controls = []
    for i in range(2):
        pi = rng.normal(0.01 * i, 0.02, SHAPE).astype(np.float32)
        d = tmp_path / f"c{i}"
        d.mkdir()
        controls.append(
            S.SwiInputs(
                _write(d / "pi.nii.gz", pi, aff),
                _write(d / "dseg.nii.gz", labels, aff),
                _write(d / "mask.nii.gz", mask, aff),
            )
        )
    pi_all = [np.asarray(nib.load(c.phase_iron).dataobj) for c in controls]
    # default: whole structure, control mean (n_sd = 0); whole brain: mean + 2 SD
    thr = S.control_thresholds(controls, structs).set_index(["structure", "hemisphere"])
    pooled = np.concatenate([p[(labels == 77) & (mask > 0)] for p in pi_all])
    row = thr.loc[("putamen", "L")]
    assert row["threshold_rad"] == pytest.approx(pooled.mean(), rel=1e-5)
    assert row["n_sd"] == 0.0 and row["n_voxels"] == pooled.size
    assert row["control_sd_rad"] == pytest.approx(pooled.std(), rel=1e-4)
    wb = np.concatenate([p[mask > 0] for p in pi_all])
    assert thr.loc[("whole_brain", "bilateral"), "threshold_rad"] == pytest.approx(
        wb.mean() + 2 * wb.std(), rel=1e-4
    )
    # optional: over the self-positive ROIs (B0 from the affine, sigma from the default)
    thr_roi = S.control_thresholds(controls, structs, dominance=2.0)
    thr_roi = thr_roi.set_index(["structure", "hemisphere"])
    roi = self_positive_labels(labels, structs, vs, (0, 0, 1), (2.0, 2.0, 0.0), mask > 0)
    assert 0 < (roi == 77).sum() < (labels == 77).sum()
    pooled = np.concatenate([p[(roi == 77) & (mask > 0)] for p in pi_all])
    assert thr_roi.loc[("putamen", "L"), "threshold_rad"] == pytest.approx(pooled.mean(), rel=1e-5)
    assert thr_roi.loc[("putamen", "L"), "n_voxels"] == pooled.size


def test_regional_table_mean_over_roi_mpapt_over_structure_nan_ignored():
    from bids_qsm.stats.regional import regional_table

    labels = np.zeros((6, 6, 6), np.int32)
    labels[1:5, 1:5, 1:5] = 77
    roi = labels.copy()
    roi[1:3] = 0  # half of the putamen is outside its ROI
    pi = np.full(labels.shape, 0.01, np.float32)
    pi[3:5] = 0.05
    pi[4, 4, 4] = np.nan  # excluded by the phase-quality mask
    chi = np.zeros(labels.shape, np.float32)
    mask = np.ones(labels.shape, bool)
    df = regional_table(
        chi, labels, mask, [StructureDef("putamen", "L", (77,))], 1.0, Entities("sub-01"),
        "AAL3", phase_iron_rad=pi, hp_phase_rad=-pi, apt_threshold_rad=0.02, phase_labels=roi,
    )  # fmt: skip
    r = df[(df.structure == "putamen") & (df.hemisphere == "L")].iloc[0]
    assert r["phaseiron_mean_rad"] == pytest.approx(0.05)  # ROI only, NaN ignored
    assert r["hpphase_mean_rad"] == pytest.approx(-0.05)
    assert r["apt_volume_mm3"] == 31  # whole structure: 32 voxels above 0.02, one NaN
    assert r["mpapt_rad"] == pytest.approx(0.05)
    assert r["nvox"] == 64


def test_participant_threshold_and_sidecar_rule():
    from bids_qsm.swi import SWIOptions, compute_swi
    from bids_qsm.swi.phase_iron import participant_threshold

    rng = np.random.default_rng(1)
    pi = rng.normal(0.01, 0.02, SHAPE).astype(np.float32)
    pi[0] = np.nan
    mask = np.ones(SHAPE, bool)
    v = pi[np.isfinite(pi)].astype(np.float64)
    assert participant_threshold(pi, mask) == pytest.approx(v.mean() + 2 * v.std(), rel=1e-6)
    x, y, z = _grid()
    brain = x**2 + y**2 + z**2 <= 20**2
    field = np.where(brain, rng.normal(0, 1.0, SHAPE), 0).astype(np.float32)
    mag = np.repeat(brain[..., None].astype(np.float32), 2, axis=-1)
    r = compute_swi(mag, None, (0.01, 0.02), VS, brain, field)
    got = r.parameters["AbnormalPhaseThreshold_rad"]
    assert got == pytest.approx(participant_threshold(r.phase_iron_rad, brain), rel=1e-6)
    assert r.parameters["AbnormalPhaseThresholdRule"].startswith("brain mean + 2 SD")
    fixed = compute_swi(
        mag, None, (0.01, 0.02), VS, brain, field, SWIOptions(apt_threshold_rad=0.1)
    )
    assert fixed.parameters["AbnormalPhaseThreshold_rad"] == 0.1

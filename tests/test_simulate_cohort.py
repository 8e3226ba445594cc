"""Cohort model and command-line parsing of the simulator (no image simulation: fast)."""

from __future__ import annotations

import numpy as np
import pytest

from bids_qsm.atlas.structures import BASAL_GANGLIA, STRUCTURE_NAMES
from bids_qsm.simulate.bids_writer import _draw_cohort_edss, _random_pose
from bids_qsm.simulate.cli import build_parser
from bids_qsm.simulate.cohort import (
    BASAL_GANGLIA_EFFECT_PPM,
    THALAMUS_EFFECT_PPM,
    atrophy_mm,
    disease_shift_ppm,
    draw_participant,
    edss_scale,
)


def test_disease_shift_matches_seed_study_at_reference_edss():
    shift = disease_shift_ppm("MS", 3.0)
    for name in BASAL_GANGLIA:
        assert shift[name] == pytest.approx(0.0072)  # 54.8 -> 62 ppb
    assert shift["thalamus"] == pytest.approx(-0.0064)  # -1.1 -> -7.5 ppb
    assert shift["pulvinar"] == pytest.approx(-0.0064)
    for name in ("hippocampus", "amygdala", "red_nucleus", "substantia_nigra"):
        assert shift[name] == 0.0
    assert set(shift) == set(STRUCTURE_NAMES)


def test_disease_shift_scales_and_vanishes():
    assert disease_shift_ppm("MS", 6.0)["caudate"] == pytest.approx(
        BASAL_GANGLIA_EFFECT_PPM * edss_scale(6.0)
    )
    assert edss_scale(6.0) == pytest.approx(1.5) and edss_scale(0.0) == pytest.approx(0.5)
    assert disease_shift_ppm("MS", 3.0, effect_scale=2.0)["thalamus"] == pytest.approx(
        2 * THALAMUS_EFFECT_PPM
    )
    assert all(v == 0.0 for v in disease_shift_ppm("HC", 0.0).values())
    assert all(v == 0.0 for v in disease_shift_ppm("MS", 6.5, null_effect=True).values())
    assert atrophy_mm("MS", 5.0) == pytest.approx(2.0)
    assert atrophy_mm("HC", 0.0) == 0.0


def test_participants_are_plausible_and_deterministic():
    rng = np.random.default_rng(1)
    ms = [draw_participant(rng, "MS") for _ in range(200)]
    assert all(1.0 <= p["EDSS"] <= 6.5 and p["EDSS"] * 2 == int(p["EDSS"] * 2) for p in ms)
    assert all(20 <= p["age"] <= 70 and p["sex"] in ("F", "M") for p in ms)
    dd = np.array([p["disease_duration"] for p in ms])
    edss = np.array([p["EDSS"] for p in ms])
    assert np.corrcoef(dd, edss)[0, 1] > 0.5
    hc = draw_participant(np.random.default_rng(2), "HC")
    assert hc["EDSS"] is None and hc["disease_duration"] is None
    a = draw_participant(np.random.default_rng(3), "MS")
    assert a == draw_participant(np.random.default_rng(3), "MS")
    with pytest.raises(ValueError):
        draw_participant(rng, "PD")


def test_cohort_edss_spread_and_poses():
    e = _draw_cohort_edss(np.random.default_rng(0), 8)
    assert len(e) == 8 and min(e) >= 1.5 and max(e) <= 6.5
    assert max(e) - min(e) >= 3.0  # stratified: the patients span the scale
    poses = [_random_pose(np.random.default_rng(i)) for i in range(50)]
    rot = np.array([p.rotation_deg for p in poses])
    assert np.abs(rot).max() <= 8 and 1.5 < rot.std() < 4.5
    assert all(0.92 <= p.scale <= 1.08 for p in poses)
    m = poses[0].matrix()
    r = m[:3, :3] / poses[0].scale
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)


def test_cli_parses_protocol_options():
    args = build_parser().parse_args(
        ["out", "--voxel-size", "1.5", "--fov", "200,220,160", "--te", "0.005,0.01"]
    )
    assert args.voxel_size == (1.5, 1.5, 1.5) and args.fov == (200.0, 220.0, 160.0)
    assert args.te == (0.005, 0.01)
    for bad in (["out", "--te", "5,10"], ["out", "--voxel-size", "1,2"], ["out", "--te", "x"]):
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args(bad)
        assert exc.value.code == 64

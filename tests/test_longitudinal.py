"""Longitudinal iron: simulator sessions, subject space, change tables and mixed models.

The planted-rate test fits the mixed models on a cohort's tables built by the fast path of
the simulator's cohort model (true structure means, between-subject offsets, disease shift,
planted rates) plus within-subject measurement noise of the size measured by the
participant-level test-retest (``benchmarks/bench_longitudinal.py``); it costs seconds.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage, stats

from bids_qsm.atlas.subject_space import build_subject_space, rigid_mean
from bids_qsm.simulate.cli import main as simulate_main
from bids_qsm.simulate.cohort import disease_shift_ppm, structure_offsets_ppm
from bids_qsm.simulate.sessions import (
    DEFAULT_RATES_PPM_PER_YEAR,
    parse_rates,
    planted_shift_ppm,
    session_plan,
)
from bids_qsm.simulate.tissues import STRUCTURE_TISSUES
from bids_qsm.stats.longitudinal import change_table, mixed_models, session_times

PLANTED = ("thalamus", "caudate", "putamen", "globus_pallidus")
NULL = ("hippocampus", "amygdala", "nucleus_accumbens", "substantia_nigra", "red_nucleus")


# ----------------------------------------------------------------------------- simulator
def test_rates_and_session_plan() -> None:
    assert parse_rates("default") == DEFAULT_RATES_PPM_PER_YEAR
    assert parse_rates("0")["putamen"] == 0.0
    r = parse_rates("2")
    assert r["caudate"] == pytest.approx(0.002) and r["thalamus"] == pytest.approx(-0.002)
    assert parse_rates("red_nucleus=4") == {"red_nucleus": pytest.approx(0.004)}
    with pytest.raises(ValueError):
        parse_rates("cortex=3")
    plans = session_plan(3, 2.0)
    assert [p.label for p in plans] == ["1", "2", "3"]
    assert [p.days for p in plans] == [0, 730, 1461]
    assert plans[1].acq_time == "2022-01-14T09:00:00"
    assert planted_shift_ppm("HC", 2.0, DEFAULT_RATES_PPM_PER_YEAR) == {}
    assert planted_shift_ppm("MS", 2.0, DEFAULT_RATES_PPM_PER_YEAR)["putamen"] == pytest.approx(
        0.003
    )


def test_simulator_cli_rejects_zero_sessions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        simulate_main(["/tmp/never-written", "--sessions", "0"])
    assert exc.value.code == 64


# ----------------------------------------------------------------------------- subject space
def _rigid(deg: float, shift: tuple[float, float, float]) -> np.ndarray:
    a = np.deg2rad(deg)
    m = np.eye(4)
    m[:3, :3] = [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
    m[:3, 3] = shift
    return m


def test_rigid_mean_of_two_is_the_midpoint() -> None:
    mid = rigid_mean([np.eye(4), _rigid(8.0, (4.0, -2.0, 6.0))])
    np.testing.assert_allclose(mid[:3, :3], _rigid(4.0, (0, 0, 0))[:3, :3], atol=1e-12)
    np.testing.assert_allclose(mid[:3, 3], [2.0, -1.0, 3.0])


def _blob_image(shift_mm: tuple[float, float, float], deg: float) -> nib.Nifti1Image:
    """A 3 mm image of an asymmetric head-like blob moved by a rigid map (RAS mm)."""
    shape = (40, 44, 36)
    aff = np.diag([3.0, 3.0, 3.0, 1.0])
    aff[:3, 3] = -np.array(shape) * 1.5
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    xyz = ijk @ aff[:3, :3].T + aff[:3, 3]
    # points of the moved image come from the original at inv(M) x
    inv = np.linalg.inv(_rigid(deg, shift_mm))
    p = xyz @ inv[:3, :3].T + inv[:3, 3]
    head = ((p[..., 0] / 45) ** 2 + (p[..., 1] / 55) ** 2 + (p[..., 2] / 40) ** 2) < 1
    blob = np.exp(-((p[..., 0] - 15) ** 2 + (p[..., 1] - 20) ** 2 + p[..., 2] ** 2) / 150)
    bar = (np.abs(p[..., 0] + 10) < 8) & (np.abs(p[..., 2] - 5) < 20) & (np.abs(p[..., 1]) < 30)
    # object-fixed smooth texture (moves with the head)
    noise = ndimage.gaussian_filter(np.random.default_rng(1).normal(size=(40, 40, 40)), 1.5)
    texture = ndimage.map_coordinates(noise, ((p + 60.0) / 3.0).reshape(-1, 3).T, order=1)
    texture = texture.reshape(shape) / noise.std()
    data = head * (100.0 + 300.0 * blob + 80.0 * bar + 30.0 * texture)
    return nib.Nifti1Image(data.astype(np.float32), aff)


def test_subject_space_recovers_the_motion_and_is_a_midpoint() -> None:
    """Session 2 = session 1 moved by 6 deg and 5 mm: the subject space is halfway."""
    moved = _rigid(6.0, (5.0, -3.0, 2.0))
    m1, m2 = _blob_image((0, 0, 0), 0.0), _blob_image((5.0, -3.0, 2.0), 6.0)
    masks = [nib.Nifti1Image((np.asarray(m.dataobj) > 0).astype(np.uint8), m.affine)
             for m in (m1, m2)]  # fmt: skip
    space = build_subject_space([m1, m2], masks, threads=1)
    est = space.to_session[1] @ np.linalg.inv(space.to_session[0])
    pts = np.array([[40, 0, 0, 1], [0, 50, 0, 1], [0, 0, 40, 1], [0, 0, 0, 1]], float).T
    assert np.abs(est @ pts - moved @ pts).max() < 1.0  # mm, a third of a voxel
    # midpoint: both sessions are moved by the same amount
    d0 = np.abs(space.to_session[0] @ pts - pts).max()
    d1 = np.abs(space.to_session[1] @ pts - pts).max()
    assert d0 == pytest.approx(d1, rel=0.15) and d0 > 2.0
    # resampled into subject space, the two sessions agree
    r = [space.resample(np.asarray(m.dataobj), k) for k, m in enumerate((m1, m2))]
    inside = space.resample_mask(np.asarray(masks[0].dataobj), 0)
    rel = np.abs(r[0] - r[1])[inside].mean() / r[0][inside].mean()
    assert rel < 0.05
    # labels carried back to a session land on the same anatomy
    lab = inside.astype(np.int32)
    back = space.labels_to_session(lab, 1).astype(bool)
    truth = np.asarray(masks[1].dataobj) > 0
    dice = 2 * (back & truth).sum() / (back.sum() + truth.sum())
    assert dice > 0.95  # two nearest-neighbour resamplings of a 3 mm ellipsoid


# ----------------------------------------------------------------------------- tables
def test_session_times_and_change_table() -> None:
    tsv = pd.DataFrame(
        {"session_id": ["ses-b", "ses-a"], "acq_time": ["2021-07-16T10:00:00", "2020-01-15"]}
    )
    times = session_times(tsv, ["a", "b", "c"])
    assert times["days_from_baseline"].iloc[0] == 0
    assert times["days_from_baseline"].iloc[1] == pytest.approx(548.4167, abs=1e-3)
    assert np.isnan(times["days_from_baseline"].iloc[2])  # no acq_time: no time
    assert times["acq_time"].iloc[2] == "n/a"
    per = {}
    for ses, t in (("ses-a", 0.0), ("ses-b", 548.4167 / 365.25)):
        per[ses] = pd.DataFrame({
            "participant_id": "sub-01", "session_id": ses, "acq": "n/a", "run": "n/a",
            "atlas": "AAL3", "structure": ["putamen", "putamen"], "hemisphere": ["L", "R"],
            "nvox": 10, "volume_mm3": 270.0, "chi_mean_ppm": [0.05 + 0.002 * t, 0.04],
            "r2star_mean_hz": 30.0, "phaseiron_mean_rad": 0.01,
        })  # fmt: skip
    table = change_table(per, times)
    assert list(table.session_id[:2]) == ["ses-a", "ses-b"]
    left = table[table.hemisphere == "L"]
    assert left["chi_change_ppm_per_year"].iloc[0] == pytest.approx(0.002, rel=1e-4)
    assert table[table.hemisphere == "R"]["chi_change_ppm_per_year"].iloc[0] == pytest.approx(0)


# ----------------------------------------------------------------------------- mixed models
#: Within-subject SD (ppm) of a regional mean between sessions: the test-retest differences
#: of bench_longitudinal.py (about 3 ppb mean absolute, i.e. SD about 2.7 ppb per session).
NOISE_PPM = 0.0027


def cohort_tables(n: int = 8, years: tuple[float, ...] = (0.0, 2.0, 4.0), seed: int = 0,
                  rates: dict[str, float] | None = None) -> pd.DataFrame:  # fmt: skip
    """Fast path of a simulated cohort's longitudinal tables (bilateral structures).

    True structure mean (tissue value + the subject's offset + the patients' disease
    shift, as :mod:`bids_qsm.simulate.cohort`) + the planted rate x years + measurement
    noise; every fifth participant misses the middle visit (unbalanced sessions).
    """
    rng = np.random.default_rng(seed)
    rates = DEFAULT_RATES_PPM_PER_YEAR if rates is None else rates
    rows = []
    for i in range(2 * n):
        group = "HC" if i < n else "MS"
        offsets = structure_offsets_ppm(rng, 0.01)
        shift = disease_shift_ppm(group, 3.0)
        visits = [t for k, t in enumerate(years) if not (i % 5 == 0 and k == 1)]
        for s in (*PLANTED, *NULL):
            base = STRUCTURE_TISSUES[s].chi_ppm + offsets[(s, "L")] + shift.get(s, 0.0)
            for k, t in enumerate(visits):
                planted = planted_shift_ppm(group, t, rates).get(s, 0.0)
                rows.append({
                    "participant_id": f"sub-{i + 1:02d}", "session_id": f"ses-{k + 1}",
                    "structure": s, "hemisphere": "bilateral", "years_from_baseline": t,
                    "group": group, "age": 40 + i % 7,
                    "chi_mean_ppm": base + planted + rng.normal(0, NOISE_PPM),
                })  # fmt: skip
    return pd.DataFrame(rows)


def test_mixed_models_recover_the_planted_rates() -> None:
    res = mixed_models(cohort_tables(), measures=["chi_mean_ppm"], covariates=["age"])
    diff = res[res.term == "rate_difference:MS-HC"].set_index("structure")
    for s in PLANTED:
        planted = DEFAULT_RATES_PPM_PER_YEAR[s]
        row = diff.loc[s]
        assert row.reason == ""
        assert np.sign(row.estimate) == np.sign(planted), s
        assert row.ci_low - 1e-4 < planted < row.ci_high + 1e-4, s
        assert abs(row.estimate - planted) < 0.0008, s  # ppm/year
    assert (diff.loc[list(NULL), "q"] >= 0.05).all()
    hc = res[res.term == "rate:HC"].set_index("structure")
    assert (hc.q >= 0.05).all() and (hc.estimate.abs() < 0.001).all()  # controls: no change
    assert (res.n_obs == 16 * 3 - 4).all()  # unbalanced: four participants miss a visit
    assert res.model.iloc[0] == "chi_mean_ppm ~ group * years + age + (1 | participant)"
    # t reference on participant-level df: 16 participants with >= 2 timed sessions - 2 groups
    assert (res.df == 14).all()
    tc = stats.t.ppf(0.975, 14)
    assert np.allclose(res.ci_high - res.estimate, tc * res.se)
    assert np.allclose(res.p, 2 * stats.t.sf((res.estimate / res.se).abs(), 14))
    assert np.allclose(res.t, res.estimate / res.se)


def test_mixed_models_guard_degenerate_fits() -> None:
    data = cohort_tables(n=8)
    data.loc[data.structure == "red_nucleus", "chi_mean_ppm"] = 0.07  # constant
    few = data[data.participant_id.isin(["sub-01", "sub-02", "sub-09"])]
    res = mixed_models(pd.concat([data[data.structure == "red_nucleus"], few[few.structure ==
                       "putamen"]]), measures=["chi_mean_ppm"])  # fmt: skip
    red = res[res.structure == "red_nucleus"]
    put = res[res.structure == "putamen"]
    assert red.reason.str.contains("constant|no within").all() and red.p.isna().all()
    assert put.reason.str.contains("fewer than 2 participants").all()
    assert res.q.isna().all()  # untested rows are not findings and not in the FDR


# ----------------------------------------------------------------------------- reports
def test_insert_section_replaces_an_earlier_one(tmp_path) -> None:
    from bids_qsm.reports.longitudinal import insert_section

    page = tmp_path / "p.html"
    page.write_text("<html><body><main><p>x</p></main></body></html>")
    insert_section(page, "longitudinal", "L", "<p>one</p>")
    insert_section(page, "longitudinal", "L", "<p>two</p>")
    text = page.read_text()
    assert text.count('id="longitudinal"') == 1 and "two" in text and "one" not in text
    assert text.index("two") < text.index("</main>")


def test_sessions_json_describes_the_columns() -> None:
    from bids_qsm.simulate.sessions import SESSIONS_JSON, sessions_table

    rows = sessions_table(session_plan(2, 1.0))
    assert set(rows[0]) == set(SESSIONS_JSON)
    json.dumps(SESSIONS_JSON)


def test_group_level_writes_rates_and_trajectories(tmp_path) -> None:
    """The group-level step on longitudinal tables (fast path): rates, sidecar, figure, page."""
    from types import SimpleNamespace

    from bids_qsm.reports.longitudinal import add_group_section
    from bids_qsm.stats.group import Design
    from bids_qsm.stats.longitudinal import CHANGE_COLUMNS, MIXED_COLUMNS
    from bids_qsm.workflows.longitudinal_group import run_longitudinal_group

    tables = cohort_tables().assign(
        atlas="AAL3", acq_time="n/a", days_from_baseline=lambda d: d.years_from_baseline * 365.25,
        nvox=100, volume_mm3=2700.0, r2star_mean_hz=30.0, phaseiron_mean_rad=0.01,
    )  # fmt: skip
    for col in ("chi_change_ppm_per_year", "r2star_change_hz_per_year",
                "phaseiron_change_rad_per_year", "volume_change_mm3_per_year"):  # fmt: skip
        tables[col] = 0.0
    for pid, t in tables.groupby("participant_id"):
        anat = tmp_path / pid / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        t[list(CHANGE_COLUMNS)].to_csv(anat / f"{pid}_desc-longitudinal_stats.tsv", sep="\t",
                                       index=False)  # fmt: skip
    participants = tables[["participant_id", "group", "age"]].drop_duplicates("participant_id")
    design = Design("group", "HC", ["MS"], ["age"], use_volume=True)
    settings = SimpleNamespace(output_dir=tmp_path, atlas="AAL3")
    result = run_longitudinal_group(settings, participants, design, {"sub-16": "excluded"})
    g = tmp_path / "group"
    rates = pd.read_csv(g / "desc-longitudinalrates_stats.tsv", sep="\t", na_values="n/a")
    sidecar = json.loads((g / "desc-longitudinalrates_stats.json").read_text())
    assert set(rates.columns) == set(MIXED_COLUMNS) and set(rates.columns) <= set(sidecar)
    assert (rates.n_subjects == 15).all()  # the exclusion is honoured
    put = rates[(rates.structure == "putamen") & (rates.term == "rate_difference:MS-HC")]
    assert put[put.measure == "chi_mean_ppm"].iloc[0].estimate > 0
    vol = rates[rates.measure == "volume_mm3"]
    assert vol.reason.str.contains("no within-participant change").all()
    assert (g / "figures" / "desc-trajectories_plot.png").is_file()
    page = g / "group.html"
    page.write_text("<html><body><main></main></body></html>")
    add_group_section(g, result)
    assert "Longitudinal: iron over time" in page.read_text()


@pytest.mark.slow  # two tiny simulations: about 25 s at load 3, 110 s at load 13
def test_simulated_sessions_same_head_planted_change() -> None:
    """Two sessions 2 years apart: same anatomy, new pose and noise, the planted change."""
    from bids_qsm.simulate.acquisition import HeadPose
    from bids_qsm.simulate.sessions import simulate_sessions

    plans = session_plan(2, 2.0)
    poses = [HeadPose((2.0, -1.0, 0.5), (1.0, 0.0, -2.0), 1.02),
             HeadPose((-1.5, 2.0, 0.0), (-2.0, 1.5, 1.0), 1.02)]  # fmt: skip
    rates = {"globus_pallidus": 0.010, "thalamus": -0.004}
    s1, s2 = simulate_sessions("tiny", 11, plans, poses, group="MS", edss=3.0, atrophy=True,
                               rates_ppm_per_year=rates, workers=1)  # fmt: skip
    assert s1.participant == s2.participant  # the baseline row (disease duration at baseline)
    assert s1.deformation.info == s2.deformation.info  # same head
    assert not np.allclose(s1.affine, s2.affine)  # new position in the scanner
    loss = s2.structure_loss["thalamus"] - s1.structure_loss["thalamus"]
    assert loss == pytest.approx(0.003 * plans[1].years)  # atrophy progression: 0.3 %/year
    t1 = s1.regional_truth.set_index(["structure", "hemisphere"])
    t2 = s2.regional_truth.set_index(["structure", "hemisphere"])
    change = (t2.chi_mean_ppm - t1.chi_mean_ppm).xs("bilateral", level="hemisphere") * 1000
    # 20 ppb planted in the pallidum, -8 in the thalamus; the truth on the 3 mm GRE grid (true
    # labels, nearest neighbour) mixes in the unchanged neighbours: about 60 % of it is seen
    assert 9.0 < change["globus_pallidus"] < 22.0, change.round(2).to_dict()
    assert -10.0 < change["thalamus"] < -3.0, change.round(2).to_dict()
    for name in ("red_nucleus", "hippocampus", "amygdala"):  # nothing planted: resampling only
        assert abs(change[name]) < 3.0, change.round(2).to_dict()

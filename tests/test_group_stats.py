"""Group level, regional statistics on fabricated cohorts with a known effect (fast)."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from bids_qsm.atlas.structures import BASAL_GANGLIA, aal3_structures
from bids_qsm.errors import InputDataError
from bids_qsm.simulate.group_fixtures import Cohort, fabricate_cohort
from bids_qsm.stats import group as G
from bids_qsm.stats import group_swi as S
from bids_qsm.stats.group_tables import region_rows


def _analysis(cohort: Cohort, covariates=("age", "sex")):
    p = G.read_participants(cohort.bids_dir)
    long = G.gather_tables(G.find_stats_tables(cohort.output_dir, "AAL3"), p)
    design = G.resolve_design(p, list(covariates))
    data = G.regional_analysis_data(long, design)
    return p, long, design, data


@pytest.fixture(scope="module")
def effect_cohort(tmp_path_factory) -> Cohort:
    return fabricate_cohort(tmp_path_factory.mktemp("effect"), seed=11, transforms=False)


@pytest.fixture(scope="module")
def clinical_cohort(tmp_path_factory) -> Cohort:
    """16 patients: the clinical models have >= 10 residual df (8 patients would not)."""
    return fabricate_cohort(
        tmp_path_factory.mktemp("clinical"), n_patients=16, seed=11, transforms=False
    )


@pytest.fixture(scope="module")
def null_cohort(tmp_path_factory) -> Cohort:
    return fabricate_cohort(
        tmp_path_factory.mktemp("null"), seed=12, null_effect=True, transforms=False
    )


def _row(df: pd.DataFrame, structure: str, measure: str = "chi_mean_ppm", **kw) -> pd.Series:
    sel = region_rows(df, structure, measure, **kw)
    assert sel.sum() == 1
    return df[sel].iloc[0]


def test_effects_detected_with_right_signs(effect_cohort: Cohort) -> None:
    _, _, design, data = _analysis(effect_cohort)
    gd = G.group_differences(data, design, ["chi_mean_ppm", "phaseiron_mean_rad", "r2star_mean_hz"])
    assert set(gd["contrast"]) == {"MS-HC"}
    for st in BASAL_GANGLIA:
        for m in ("chi_mean_ppm", "phaseiron_mean_rad", "r2star_mean_hz"):
            r = _row(gd, st, m)
            assert r["q"] < 0.05 and r["estimate"] > 0 and r["ci_low"] > 0, (st, m)
    r = _row(gd, "thalamus")
    assert r["q"] < 0.05 and r["estimate"] < 0 and r["ci_high"] < 0
    # true effect 0.015 ppm x EDSS/mean(EDSS): the estimate is in the right range
    assert 0.005 < _row(gd, "putamen")["estimate"] < 0.03
    # structures without an effect stay non-significant for chi
    for st in ("hippocampus", "amygdala", "red_nucleus"):
        assert _row(gd, st)["q"] > 0.05
    assert (gd["n"] == 16).all() and (gd["n_control"] == 8).all()


def test_edss_association_sign(clinical_cohort: Cohort) -> None:
    p, _, design, data = _analysis(clinical_cohort)
    variables = G.default_clinical_columns(p, design)
    assert variables == ["EDSS", "disease_duration"]
    cl = G.clinical_associations(data, design, ["chi_mean_ppm"], variables)
    assert (cl["n"] == 16).all() and set(cl["population"]) == {"MS"}
    assert (cl["df"] >= 10).all() and (cl["reason"] == "").all()
    assert _row(cl, "thalamus", variable="EDSS")["r"] < -0.5
    for st in BASAL_GANGLIA:
        assert _row(cl, st, variable="EDSS")["r"] > 0.3, st
    assert np.nanmin(cl["q"]) < 0.05


def test_null_effect_nothing_significant(null_cohort: Cohort) -> None:
    _, _, design, data = _analysis(null_cohort)
    gd = G.group_differences(data, design, G.present_measures(data))
    assert gd["p"].notna().sum() > 90
    assert not (gd["q"] < 0.05).any()


def test_partial_r_equals_residual_correlation(clinical_cohort: Cohort) -> None:
    _, _, design, data = _analysis(clinical_cohort)
    cl = G.clinical_associations(data, design, ["chi_mean_ppm"], ["EDSS"])
    r_tab = _row(cl, "putamen", variable="EDSS")["r"]
    d = data[
        (data["structure"] == "putamen")
        & (data["hemisphere"] == "bilateral")
        & (data["group"] == "MS")
    ]
    Z = sm.add_constant(pd.get_dummies(d[["age", "sex"]], drop_first=True).astype(float))
    ry = sm.OLS(d["chi_mean_ppm"], Z).fit().resid
    rx = sm.OLS(d["EDSS"], Z).fit().resid
    assert r_tab == pytest.approx(np.corrcoef(rx, ry)[0, 1], abs=1e-10)


def test_missing_covariate_skipped_with_warning(effect_cohort, caplog) -> None:
    p = G.read_participants(effect_cohort.bids_dir)
    with caplog.at_level(logging.WARNING, logger="bids_qsm.group"):
        design = G.resolve_design(p, ["age", "bmi", "sex"])
    assert design.covariates == ["age", "sex"] and design.skipped == ["bmi"]
    assert "bmi" in caplog.text
    assert design.formula("chi_mean_ppm") == "chi_mean_ppm ~ group + age + sex + volume"


def test_design_rejects_missing_control_label(effect_cohort) -> None:
    p = G.read_participants(effect_cohort.bids_dir)
    with pytest.raises(InputDataError) as err:
        G.resolve_design(p, ["age"], control_label="CTRL")
    assert err.value.exit_code == 65 and "CTRL" in str(err.value)


def test_several_patient_groups_give_one_contrast_each(effect_cohort) -> None:
    p, long, _, _ = _analysis(effect_cohort)
    p = p.copy()
    ms = p.index[p["group"] == "MS"]
    p.loc[ms[:4], "group"] = "RRMS"
    p.loc[ms[4:], "group"] = "SPMS"
    long = long.drop(columns=["group"]).merge(p[["participant_id", "group"]], on="participant_id")
    design = G.resolve_design(p, ["age", "sex"])
    assert design.contrasts == {"RRMS-HC": "group[RRMS]", "SPMS-HC": "group[SPMS]"}
    gd = G.group_differences(G.regional_analysis_data(long, design), design, ["chi_mean_ppm"])
    assert set(gd["contrast"]) == {"RRMS-HC", "SPMS-HC"}
    assert (gd.loc[gd["contrast"] == "SPMS-HC", "n_case"] == 4).all()


def test_zscores_leave_one_out() -> None:
    vals = [1.0, 2.0, 3.0, 4.0, 10.0]
    data = pd.DataFrame(
        {
            "participant_id": [f"sub-{i}" for i in range(5)],
            "session_id": "n/a",
            "group": ["HC", "HC", "HC", "HC", "MS"],
            "structure": "putamen",
            "hemisphere": "L",
            "chi_mean_ppm": vals,
        }
    )
    design = G.Design("group", "HC", ["MS"], [], False)
    z = G.normative_zscores(data, design, ["chi_mean_ppm"]).set_index("participant_id")
    assert z.loc["sub-4", "z"] == pytest.approx((10 - 2.5) / np.std([1, 2, 3, 4], ddof=1))
    assert z.loc["sub-0", "z"] == pytest.approx((1 - 3.0) / np.std([2, 3, 4], ddof=1))
    assert z.loc["sub-0", "n_control"] == 3


def test_wide_table(effect_cohort) -> None:
    p, long, _, _ = _analysis(effect_cohort)
    wide = G.wide_table(long, p)
    assert len(wide) == 16
    assert list(wide.columns[:6]) == ["participant_id", "session_id", "acq", "run", "group", "age"]
    row = wide.set_index("participant_id").loc["sub-03", "putamen_L_chi_mean_ppm"]
    sel = (
        (long["participant_id"] == "sub-03")
        & (long["structure"] == "putamen")
        & (long["hemisphere"] == "L")
    )
    assert row == pytest.approx(long.loc[sel, "chi_mean_ppm"].iloc[0])


def test_control_thresholds_and_mpapt_match_voxel_computation(effect_cohort) -> None:
    p, long, _, _ = _analysis(effect_cohort)
    paths = G.find_stats_tables(effect_cohort.output_dir, "AAL3")
    inputs = {
        (G.read_tsv(x)["participant_id"].iloc[0], "n/a", "n/a", "n/a"): S.find_swi_inputs(x, "AAL3")
        for x in paths
    }
    controls = [
        v for k, v in inputs.items() if k[0] in set(p.loc[p.group == "HC", "participant_id"])
    ]
    # plain labels and Buffalo's 2 SD here (exact voxel check); defaults: tests/test_swi_group.py
    thr = S.control_thresholds(controls, aal3_structures(), n_sd=2.0, dominance=None)
    # direct: pooled control voxels of putamen L (label 77) inside the brain mask
    pooled = []
    for inp in controls:
        ph = np.asarray(nib.load(inp.phase_iron).dataobj)
        lab = np.asarray(nib.load(inp.dseg).dataobj)
        m = np.asarray(nib.load(inp.mask).dataobj) > 0
        pooled.append(ph[(lab == 77) & m])
    pooled = np.concatenate(pooled)
    t_direct = pooled.mean() + 2 * pooled.std()
    t_tab = thr.set_index(["structure", "hemisphere"]).loc[("putamen", "L"), "threshold_rad"]
    assert t_tab == pytest.approx(t_direct, rel=1e-5)
    new = S.recompute_mpapt(long, inputs, thr, aal3_structures(), dominance=None)
    inp = inputs[("sub-12", "n/a", "n/a", "n/a")]
    ph = np.asarray(nib.load(inp.phase_iron).dataobj)
    lab = np.asarray(nib.load(inp.dseg).dataobj)
    v = ph[lab == 77]
    row = new[
        (new.participant_id == "sub-12") & (new.structure == "putamen") & (new.hemisphere == "L")
    ].iloc[0]
    assert row["apt_threshold_rad"] == pytest.approx(t_tab)
    assert row["mpapt_rad"] == pytest.approx(v[v > t_tab].mean(), rel=1e-5)
    assert row["apt_volume_mm3"] == pytest.approx((v > t_tab).sum() * 8.0)
    # patients have more abnormal-phase tissue in the putamen than controls
    put = new[(new.structure == "putamen") & (new.hemisphere == "bilateral")]
    assert (
        put.loc[put.group == "MS", "apt_volume_mm3"].mean()
        > put.loc[put.group == "HC", "apt_volume_mm3"].mean()
    )


def test_read_participants_errors(tmp_path: Path) -> None:
    (tmp_path / "participants.tsv").write_text("participant_id\tage\nsub-01\t30\n")
    with pytest.raises(InputDataError) as err:
        G.read_participants(tmp_path)
    msg = str(err.value)
    assert "participants.tsv" in msg and "'group'" in msg and "\n" not in msg


def _two_group_table(structure: str, n: int, **columns: object) -> pd.DataFrame:
    """A regional table of ``n`` participants (first half HC, second half MS), bilateral
    ``structure``, with the given measure / covariate columns."""
    return pd.DataFrame(
        {
            "participant_id": [f"sub-{i:02d}" for i in range(n)],
            "session_id": "n/a",
            "structure": structure,
            "hemisphere": "bilateral",
            "group": ["HC"] * (n // 2) + ["MS"] * (n - n // 2),
            **columns,
        }
    )


def test_constant_measure_not_tested() -> None:
    rng = np.random.default_rng(0)
    n = 16  # 4 parameters: 12 residual df (>= the minimum of 10)
    data = _two_group_table(
        "whole_brain",
        n,
        age=rng.uniform(20, 60, n),
        volume_mm3=rng.uniform(1.1e6, 1.3e6, n),
        # referenced to the whole brain: zero up to float32 rounding
        chi_mean_ppm=rng.normal(0, 1e-9, n),
        r2star_mean_hz=rng.normal(20, 1, n),
    )
    design = G.Design("group", "HC", ["MS"], ["age"], True)
    gd = G.group_differences(data, design, ["chi_mean_ppm", "r2star_mean_hz"]).set_index("measure")
    assert np.isnan(gd.loc["chi_mean_ppm", "p"]) and np.isnan(gd.loc["chi_mean_ppm", "q"])
    assert gd.loc["chi_mean_ppm", "reason"] == "constant measure"
    assert np.isfinite(gd.loc["r2star_mean_hz", "p"]) and gd.loc["r2star_mean_hz", "reason"] == ""
    assert gd.loc["r2star_mean_hz", "q"] == pytest.approx(gd.loc["r2star_mean_hz", "p"])
    assert gd.loc["r2star_mean_hz", "model"] == "r2star_mean_hz ~ group + age + volume"


def test_df_guard_small_patient_group_not_reported(effect_cohort: Cohort) -> None:
    """8 patients, EDSS + age + sex (+ volume): < 10 residual df, so no r, no p, no FDR."""
    p, _, design, data = _analysis(effect_cohort)
    cl = G.clinical_associations(data, design, ["chi_mean_ppm"], ["EDSS"])
    assert (cl["df"] < 10).all()
    assert cl["r"].isna().all() and cl["p"].isna().all() and cl["q"].isna().all()
    assert cl["reason"].str.contains("residual df").all()
    assert cl["reason"].str.contains("< 10").all()
    # only the variable in the model: 8 - 2 = 6 residual df, still below the minimum
    lean = G.Design("group", "HC", ["MS"], [], False)
    cl2 = G.clinical_associations(data, lean, ["chi_mean_ppm"], ["EDSS"])
    assert (cl2["df"] == 6).all() and cl2["r"].isna().all()
    gd = G.group_differences(data, design, ["chi_mean_ppm"])
    assert (gd["reason"] == "").all() and gd["q"].notna().all()  # 16 - 4 = 12 df: tested


def test_singular_design_has_reason() -> None:
    rng = np.random.default_rng(1)
    n = 20
    data = _two_group_table(
        "putamen", n, age=rng.uniform(20, 60, n), chi_mean_ppm=rng.normal(0.05, 0.01, n)
    )
    data["age2"] = 2 * data["age"]  # collinear covariate
    design = G.Design("group", "HC", ["MS"], ["age", "age2"], False)
    gd = G.group_differences(data, design, ["chi_mean_ppm"])
    assert gd["reason"].iloc[0].startswith("singular design") and np.isnan(gd["p"].iloc[0])


def test_effect_size_matches_textbook_cohens_d() -> None:
    """No covariate: d = (mean_case - mean_ctrl) / pooled SD; g = J(df) d; CI brackets g."""
    from bids_qsm.stats.effects import hedges_correction, standardized_difference

    rng = np.random.default_rng(2)
    hc, ms = rng.normal(0.10, 0.02, 12), rng.normal(0.13, 0.02, 10)
    n = hc.size + ms.size
    data = pd.DataFrame(
        {
            "participant_id": [f"sub-{i:02d}" for i in range(n)],
            "session_id": "n/a",
            "structure": "putamen",
            "hemisphere": "bilateral",
            "group": ["HC"] * hc.size + ["MS"] * ms.size,
            "chi_mean_ppm": np.r_[hc, ms],
        }
    )
    gd = G.group_differences(data, G.Design("group", "HC", ["MS"], [], False), ["chi_mean_ppm"])
    row = gd.iloc[0]
    pooled = np.sqrt(((hc.size - 1) * hc.var(ddof=1) + (ms.size - 1) * ms.var(ddof=1)) / (n - 2))
    d = (ms.mean() - hc.mean()) / pooled
    assert row["cohens_d"] == pytest.approx(d, rel=1e-9)
    assert row["hedges_g"] == pytest.approx(d * (1 - 3 / (4 * (n - 2) - 1)), rel=2e-3)
    assert row["g_ci_low"] < row["hedges_g"] < row["g_ci_high"]
    se = np.sqrt(1 / hc.size + 1 / ms.size + d * d / (2 * (n - 2)))
    j = hedges_correction(n - 2)
    assert row["g_ci_high"] - row["g_ci_low"] == pytest.approx(2 * 1.959964 * j * se, rel=1e-5)
    assert np.isnan(standardized_difference(1.0, 0.0, 5, 5, 8)[0])


def test_read_exclusions(tmp_path: Path) -> None:
    from bids_qsm.errors import InputMissingError
    from bids_qsm.stats.effects import read_exclusions

    tsv = tmp_path / "exclude.tsv"
    tsv.write_text("participant_id\treason\nsub-04\tmotion\n07\t\n")
    out = read_exclusions(["03", "sub-05", "exclude.tsv"], base=tmp_path)
    assert out == {
        "sub-03": "--exclude-participants",
        "sub-04": "motion",
        "sub-05": "--exclude-participants",
        "sub-07": "listed in exclude.tsv",
    }
    with pytest.raises(InputMissingError):
        read_exclusions(["missing.tsv"], base=tmp_path)
    bad = tmp_path / "bad.tsv"
    bad.write_text("subject\nsub-01\n")
    with pytest.raises(InputDataError):
        read_exclusions([str(bad)])

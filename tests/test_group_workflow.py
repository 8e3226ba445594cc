"""run_group_level end to end on a fabricated cohort (toy atlas, identity transforms)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_qsm.config import Config
from bids_qsm.errors import InputDataError, InputMissingError
from bids_qsm.simulate.group_fixtures import fabricate_cohort, label_volume, toy_atlas
from bids_qsm.workflows.group import GroupSettings, run_group_level


def _config(bids_dir: Path, output_dir: Path, work_dir: Path, **group) -> Config:
    cfg = Config()
    cfg.execution.bids_dir, cfg.execution.output_dir = bids_dir, output_dir
    cfg.execution.work_dir = work_dir
    for k, v in group.items():
        setattr(cfg.group, k, v)
    return cfg


def test_settings_from_config(tmp_path) -> None:
    cfg = _config(
        tmp_path,
        tmp_path / "out",
        tmp_path / "w",
        covariates=["age"],
        clinical_columns=["EDSS"],
        n_permutations=5,
    )
    s = GroupSettings.from_config(cfg)
    assert s.covariates == ["age"] and s.clinical_columns == ["EDSS"]
    assert s.n_permutations == 5 and s.atlas == "AAL3" and s.group_column == "group"
    assert GroupSettings.from_config(_config(tmp_path, tmp_path, tmp_path)).clinical_columns is None


def test_adjust_volume_config_key(tmp_path) -> None:
    """docs/group.md: `group.adjust_volume = false` in a --config-file drops the volume term."""
    from bids_qsm.cli.parser import parse_args
    from bids_qsm.stats.group import resolve_design

    toml = tmp_path / "group.toml"
    toml.write_text("[group]\nadjust_volume = false\n")
    cfg = parse_args([str(tmp_path), str(tmp_path / "out"), "group", "--config-file", str(toml)])
    s = cfg.group_settings()
    assert s.adjust_volume is False
    assert GroupSettings.from_config(_config(tmp_path, tmp_path, tmp_path)).adjust_volume
    parts = pd.DataFrame({"participant_id": ["sub-1", "sub-2"], "group": ["HC", "MS"]})
    design = resolve_design(parts, [], adjust_volume=s.adjust_volume)
    assert not design.use_volume and "volume" not in design.formula("chi_mean_ppm")
    assert resolve_design(parts, [], adjust_volume=True).use_volume


def test_no_participant_outputs_exit_66(tmp_path) -> None:
    bids = tmp_path / "bids"
    bids.mkdir()
    (bids / "participants.tsv").write_text("participant_id\tgroup\nsub-01\tHC\n")
    with pytest.raises(InputMissingError) as err:
        run_group_level(_config(bids, tmp_path / "out", tmp_path / "w"))
    assert err.value.exit_code == 66
    msg = str(err.value)
    assert "\n" not in msg and "participant level" in msg and "_stats.tsv" in msg


def test_missing_group_column_exit_65(tmp_path) -> None:
    c = fabricate_cohort(tmp_path, n_controls=3, n_patients=3, transforms=False)
    p = pd.read_csv(c.bids_dir / "participants.tsv", sep="\t").drop(columns=["group"])
    p.to_csv(c.bids_dir / "participants.tsv", sep="\t", index=False)
    with pytest.raises(InputDataError) as err:
        run_group_level(_config(c.bids_dir, c.output_dir, tmp_path / "w"))
    assert err.value.exit_code == 65
    msg = str(err.value)
    assert "\n" not in msg and "participants.tsv" in msg and "'group'" in msg
    assert not (c.output_dir / "group").exists()


@pytest.mark.slow
def test_group_level_end_to_end(tmp_path) -> None:
    c = fabricate_cohort(tmp_path, seed=5)
    cfg = _config(
        c.bids_dir,
        c.output_dir,
        tmp_path / "work",
        n_permutations=50,
        covariates=["age", "sex", "bmi"],
    )
    assert run_group_level(cfg, atlas=toy_atlas()) == 0
    g = c.output_dir / "group"
    tables = [
        "seg-AAL3_stats",
        "seg-AAL3_desc-wide_stats",
        "seg-AAL3_desc-groupdiff_stats",
        "seg-AAL3_desc-clinical_stats",
        "seg-AAL3_desc-zscores_stats",
        "seg-AAL3_desc-aptthresholds_stats",
        "desc-lesions_stats",
    ]
    for name in tables:
        df = pd.read_csv(g / f"{name}.tsv", sep="\t", na_values="n/a")
        sidecar = json.loads((g / f"{name}.json").read_text())
        assert set(df.columns) <= set(sidecar), name  # every column described
    gd = pd.read_csv(g / "seg-AAL3_desc-groupdiff_stats.tsv", sep="\t", na_values="n/a")
    for col in (
        "structure",
        "hemisphere",
        "measure",
        "contrast",
        "estimate",
        "ci_low",
        "ci_high",
        "t",
        "p",
        "q",
        "n",
    ):
        assert col in gd.columns
    put = gd[
        (gd.structure == "putamen")
        & (gd.hemisphere == "bilateral")
        & (gd.measure == "chi_mean_ppm")
    ].iloc[0]
    assert put["contrast"] == "MS-HC" and put["q"] < 0.05 and put["estimate"] > 0
    assert "mpapt_rad" in set(gd["measure"])  # recomputed with control thresholds
    long = pd.read_csv(g / "seg-AAL3_stats.tsv", sep="\t", na_values="n/a")
    assert {"group", "age", "EDSS"} <= set(long.columns) and long["participant_id"].nunique() == 16
    lesions = pd.read_csv(g / "desc-lesions_stats.tsv", sep="\t", na_values="n/a")
    assert set(lesions["group"]) == {"MS"}
    # voxelwise: significant increase in the putamen block, decrease in the thalamus block
    t = nib.load(g / "space-MNI152NLin6Asym_desc-MSvsHC_tstat.nii.gz").get_fdata()
    q = nib.load(g / "space-MNI152NLin6Asym_desc-MSvsHC_q.nii.gz").get_fdata()
    assert (g / "space-MNI152NLin6Asym_desc-MSvsHC_pfwe.nii.gz").is_file()
    lab = label_volume()
    bg = np.isin(lab, (75, 76, 77, 78, 79, 80))  # caudate, putamen, pallidum
    thal = np.isin(lab, (121, 122))
    assert np.median(t[bg]) > 0 and (q[bg] < 0.05).mean() > 0.2
    assert np.median(t[thal]) < 0 and (q[thal] < 0.05).mean() > 0.2
    assert ((q < 0.05) & (t < 0))[bg].sum() == 0 and ((q < 0.05) & (t > 0))[thal].sum() == 0
    assert (q[np.isin(lab, (41, 42))] < 0.05).mean() < 0.1  # hippocampus: no effect
    html = (g / "group.html").read_text()
    for needle in ("Methods", "Group differences", "Clinical associations", "Voxelwise", "bmi"):
        assert needle in html
    for src in [s.split('"')[0] for s in html.split('src="')[1:]]:
        assert (g / src).is_file()
    # idempotent re-run: identical tables
    before = (g / "seg-AAL3_desc-groupdiff_stats.tsv").read_bytes()
    assert run_group_level(cfg, atlas=toy_atlas()) == 0
    assert (g / "seg-AAL3_desc-groupdiff_stats.tsv").read_bytes() == before
    assert not [p for p in g.rglob(".*") if "tmp" in p.name]


def test_cli_exit_codes_and_one_line(tmp_path, capsys) -> None:
    from bids_qsm.cli.run import execute

    bids, out = tmp_path / "bids", tmp_path / "out"
    bids.mkdir()
    (bids / "participants.tsv").write_text("participant_id\tage\nsub-01\t30\n")
    assert execute([str(bids), str(out), "group"]) == 66
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(err) == 1 and "participant level" in err[0]
    c = fabricate_cohort(tmp_path / "c", n_controls=2, n_patients=2, transforms=False)
    (c.bids_dir / "participants.tsv").write_text("participant_id\tage\nsub-01\t30\n")
    assert execute([str(c.bids_dir), str(c.output_dir), "group"]) == 65
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(err) == 1 and "participants.tsv" in err[0] and "'group'" in err[0]


@pytest.mark.slow  # 20-49 s measured (load 5-10, 2 cores): two group-level runs
def test_exclusions_honoured_and_outputs_byte_identical_on_rerun(tmp_path) -> None:
    """--exclude-participants (label + TSV) leaves them out of every model; the tables, the
    report and its figures are byte-identical when the group level runs again."""
    c = fabricate_cohort(tmp_path, seed=5, transforms=False)
    excl = tmp_path / "exclude.tsv"
    excl.write_text("participant_id\treason\nsub-02\tmotion artefact\n")
    cfg = _config(
        c.bids_dir,
        c.output_dir,
        tmp_path / "work",
        voxelwise=False,
        clinical_columns=["EDSS"],  # one variable: half the clinical models (test time)
        exclude_participants=["10", str(excl)],
    )
    (c.output_dir / "sub-01.html").write_text("<html></html>")  # a subject report with 2 flags
    meta = {"prefix": "sub-01", "id": "sub-01", "n_flags": 2, "n_errors": 0, "parts": []}
    section = c.output_dir / "sub-01" / "figures" / "sub-01_desc-section_report.html"
    section.parent.mkdir(parents=True, exist_ok=True)
    section.write_text(f"<!-- bids-qsm-section {json.dumps(meta)} -->\n<div></div>\n")
    assert run_group_level(cfg, atlas=toy_atlas()) == 0
    g = c.output_dir / "group"
    gd = pd.read_csv(g / "seg-AAL3_desc-groupdiff_stats.tsv", sep="\t", na_values="n/a")
    chi = gd[gd["measure"] == "chi_mean_ppm"]
    assert (chi["n"] == 14).all() and (chi["n_control"] == 7).all() and (chi["n_case"] == 7).all()
    assert (gd["n"] <= 14).all()
    assert {"hedges_g", "g_ci_low", "g_ci_high", "reason"} <= set(gd.columns)
    z = pd.read_csv(g / "seg-AAL3_desc-zscores_stats.tsv", sep="\t", na_values="n/a")
    assert not {"sub-02", "sub-10"} & set(z["participant_id"])
    thr = pd.read_csv(g / "seg-AAL3_desc-aptthresholds_stats.tsv", sep="\t", na_values="n/a")
    assert len(thr)
    listed = pd.read_csv(g / "desc-excluded_participants.tsv", sep="\t", na_values="n/a")
    assert listed.to_dict("list") == {
        "participant_id": ["sub-02", "sub-10"],
        "reason": ["motion artefact", "--exclude-participants"],
    }
    html = (g / "group.html").read_text()
    for needle in (
        "Excluded participants (2)",
        "motion artefact",
        'href="../sub-01.html"',
        "2 QC flag(s)",
        "Hedges&#x27; g (95% CI)",
        "Cohort QC",
        "_forest.png",
        "desc-zscores_heatmap.png",
        "ppb",
    ):
        assert needle in html, needle
    for src in [s.split('"')[0] for s in html.split('src="')[1:]]:
        assert (g / src).is_file()
    files = sorted(
        p for p in g.rglob("*") if p.is_file() and p.suffix in {".tsv", ".json", ".html", ".png"}
    )
    before = {p: p.read_bytes() for p in files}
    assert run_group_level(cfg, atlas=toy_atlas()) == 0
    after = sorted(
        p for p in g.rglob("*") if p.is_file() and p.suffix in {".tsv", ".json", ".html", ".png"}
    )
    assert after == files
    changed = [p.name for p in files if p.read_bytes() != before[p]]
    assert not changed, changed

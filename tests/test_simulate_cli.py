"""bids-qsm-simulate: the written BIDS dataset, its validity, and cohort truths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import TINY_PAIR_ARGS
from scipy import stats

from bids_qsm.errors import ExitCode
from bids_qsm.simulate import write_bids_dataset
from bids_qsm.simulate.cli import main

VALIDATOR = Path(sys.executable).parent / "bids-validator-deno"


def _validate(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VALIDATOR), str(root), "--json"], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def tiny_ds(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "bids"
    argv = [
        str(out),
        *TINY_PAIR_ARGS,
        "--lesions",
        "--t1w",
        "--phase-units",
        "vendor",
        "--oblique-deg",
        "10",
        "--seed",
        "3",
    ]
    assert main(argv) == 0
    return out


def test_layout_and_sidecars(tiny_ds):
    anat = tiny_ds / "sub-02" / "anat"
    for e in range(1, 5):
        for part in ("mag", "phase"):
            assert (anat / f"sub-02_echo-{e}_part-{part}_MEGRE.nii.gz").is_file()
        side = json.loads((anat / f"sub-02_echo-{e}_part-phase_MEGRE.json").read_text())
        assert side["Units"] == "arbitrary" and side["MagneticFieldStrength"] == 3.0
        assert side["EchoTime"] == pytest.approx([0.004, 0.010, 0.016, 0.022][e - 1])
    phase = np.asarray(nib.load(anat / "sub-02_echo-2_part-phase_MEGRE.nii.gz").dataobj)
    assert phase.dtype == np.int16 and phase.min() == -4096 and phase.max() == 4095
    assert (anat / "sub-02_T1w.nii.gz").is_file()

    parts = pd.read_csv(tiny_ds / "participants.tsv", sep="\t")
    assert list(parts.participant_id) == ["sub-01", "sub-02"]
    assert list(parts.group) == ["HC", "MS"]
    assert np.isnan(parts.EDSS[0]) and 1.0 <= parts.EDSS[1] <= 6.5
    assert set(parts.columns) >= {"age", "sex", "EDSS", "disease_duration"}

    truth = tiny_ds / "derivatives" / "simulation"
    desc = json.loads((truth / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"
    t_anat = truth / "sub-01" / "anat"
    for name in (
        "desc-truth_Chimap",
        "seg-AAL3_dseg",
        "desc-brain_mask",
        "desc-totalfield_fieldmap",
        "desc-localfield_fieldmap",
        "desc-truth_R2starmap",
    ):
        img = nib.load(t_anat / f"sub-01_{name}.nii.gz")
        np.testing.assert_allclose(
            img.affine,
            nib.load(tiny_ds / "sub-01" / "anat" / "sub-01_echo-1_part-mag_MEGRE.nii.gz").affine,
        )
    meta = json.loads((t_anat / "sub-01_desc-totalfield_fieldmap.json").read_text())
    assert meta["Units"] == "ppm"
    reg = pd.read_csv(truth / "regional_truth.tsv", sep="\t")
    assert {"participant_id", "structure", "hemisphere", "chi_mean_ppm"} <= set(reg.columns)
    assert set(reg.participant_id) == {"sub-01", "sub-02"}
    les = pd.read_csv(truth / "lesion_truth.tsv", sep="\t")
    assert set(les.participant_id) == {"sub-02"}  # lesions only in patients
    lroot = tiny_ds / "derivatives" / "lesions"
    assert json.loads((lroot / "dataset_description.json").read_text())["DatasetType"] == (
        "derivative"
    )
    mask = nib.load(lroot / "sub-02" / "anat" / "sub-02_label-T2lesion_mask.nii.gz")
    assert np.asarray(mask.dataobj).sum() == les[les.label == "T2lesion"].nvox.sum()


def test_raw_dataset_passes_the_validator(tiny_ds):
    res = _validate(tiny_ds)
    report = json.loads(res.stdout)
    errors = [i for i in report["issues"]["issues"] if i.get("severity") == "error"]
    assert errors == [], errors[:3]


def test_usage_errors_exit_64(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "x"), "--preset", "huge"])
    assert exc.value.code == ExitCode.USAGE
    assert main([str(tmp_path / "x"), "--n-subjects", "0"]) == ExitCode.USAGE
    assert "nothing to simulate" in capsys.readouterr().err


@pytest.mark.slow
def test_cohort_truth_carries_the_group_effect(tmp_path):
    """4 HC + 4 MS: basal ganglia up, thalamus down (p < 0.01); none with --null-effect."""

    def group_diff(root: Path, structure: str) -> tuple[float, float]:
        reg = pd.read_csv(root / "derivatives" / "simulation" / "regional_truth.tsv", sep="\t")
        parts = pd.read_csv(root / "participants.tsv", sep="\t")
        reg = reg.merge(parts[["participant_id", "group"]], on="participant_id")
        r = reg[(reg.structure == structure) & (reg.hemisphere == "bilateral")]
        ms, hc = r[r.group == "MS"].chi_mean_ppm, r[r.group == "HC"].chi_mean_ppm
        return float(ms.mean() - hc.mean()), float(stats.ttest_ind(ms, hc).pvalue)

    effect = write_bids_dataset(tmp_path / "fx", preset="tiny", n_controls=4, n_patients=4)
    d_bg, p_bg = group_diff(effect, "basal_ganglia")
    d_th, p_th = group_diff(effect, "thalamus")
    assert d_bg > 0.004 and p_bg < 0.01
    assert d_th < -0.003 and p_th < 0.01
    null = write_bids_dataset(
        tmp_path / "null", preset="tiny", n_controls=3, n_patients=3, null_effect=True, seed=1
    )
    for s in ("basal_ganglia", "thalamus"):
        d, _ = group_diff(null, s)
        assert abs(d) < 0.003

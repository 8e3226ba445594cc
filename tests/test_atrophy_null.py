"""Atrophy is not iron: an atrophy-only patient cohort (no iron change) through QSM, atlas
registration (iron channel, deep gray matter stage), regional tables and the group model."""

from __future__ import annotations

import os
from dataclasses import replace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "2")

from bids_qsm.atlas.registration import register_atlas
from bids_qsm.atlas.registry import load_atlas
from bids_qsm.atlas.stages import SLOPPY_PARAMS
from bids_qsm.qsm.pipeline import reconstruct_qsm
from bids_qsm.simulate import simulate_subject
from bids_qsm.stats.group import group_differences, resolve_design
from bids_qsm.stats.regional import Entities, regional_table

DGM = ("thalamus", "caudate", "putamen", "globus_pallidus")
#: Tiny preset: 3 mm GRE, registered on the 3 mm grid with the --sloppy schedule (on the
#: 3 mm grid it matches the default's Dice, docs/atlas.md), which halves the test's cost.
FAST = replace(SLOPPY_PARAMS, grid_mm=3.0)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """3 controls and 3 atrophied patients (null iron effect): tables, truth, participants."""
    atlas = load_atlas()
    tmp = tmp_path_factory.mktemp("atrophy")
    tables, truth, parts = [], [], []
    for i, (group, edss) in enumerate([("HC", 0.0)] * 3 + [("MS", 4.0), ("MS", 5.5), ("MS", 6.5)]):
        sim = simulate_subject(
            "tiny", 100 + i, group=group, edss=edss, atrophy=True, null_effect=True,
            participant_label=f"{i + 1:02d}",
        )  # fmt: skip
        q = reconstruct_qsm(
            sim.mag, sim.phase, sim.te_s, sim.b0_tesla, sim.voxel_size, sim.b0_dir, threads=2
        )
        reg = register_atlas(
            nib.Nifti1Image(sim.mag, sim.affine),
            nib.Nifti1Image(q.brain_mask.astype(np.uint8), sim.affine),
            atlas, tmp / str(i), "s", threads=2, params=FAST,
            iron=nib.Nifti1Image(q.chi_ppm, sim.affine),
        )  # fmt: skip
        pid = sim.participant["participant_id"]
        tab = regional_table(
            q.chi_ppm, reg.labels, q.mask, atlas.structures, float(np.prod(sim.voxel_size)),
            Entities(pid), atlas.name,
        )  # fmt: skip
        tables.append(tab.assign(participant_id=pid))
        truth.append(sim.regional_truth.assign(participant_id=pid))
        parts.append(sim.participant)
    return pd.concat(tables), pd.concat(truth), pd.DataFrame(parts)


@pytest.mark.slow
def test_atrophy_without_iron_change_is_not_significant(cohort) -> None:
    tables, _, parts = cohort
    data = tables.merge(parts[["participant_id", "group", "age", "sex"]], on="participant_id")
    for adjust in (False, True):
        design = resolve_design(parts, [], adjust_volume=adjust)
        res = group_differences(data, design, ["chi_mean_ppm"])
        dgm = res[res["structure"].isin(DGM)]
        assert len(dgm) >= 4 * 3
        assert (dgm["q"].dropna() >= 0.05).all(), dgm[["structure", "hemisphere", "q"]]


@pytest.mark.slow
@pytest.mark.xfail(
    reason="issue 12 acceptance not met (blocked): on the tiny (3 mm) preset the registered "
    "labels do not follow the sub-voxel atrophy (bench_atrophy_volumes.py --preset tiny "
    "--sloppy: patients' bilateral volumes +8.0 % on average "
    "for a 10.1 % loss, up to +15.7 %; MS/HC ratios 0.06-0.13 above the truth), and no "
    "GRE-contrast estimator tried meets both parts (the boundary-shift fit of "
    "benchmarks/boundary_shift.py: controls up to 11.4 %), docs/atlas.md",
    strict=False,
)
def test_structure_volumes_follow_the_atrophy(cohort) -> None:
    tables, truth, parts = cohort
    key = ["participant_id", "structure", "hemisphere"]
    both = tables[key + ["volume_mm3"]].merge(
        truth[key + ["volume_mm3", "atrophy_fraction"]], on=key, suffixes=("", "_true")
    )
    sel = both[both["structure"].isin(("thalamus", "caudate", "putamen"))]
    sel = sel[sel["hemisphere"] == "bilateral"]
    rel = (sel["volume_mm3"] / sel["volume_mm3_true"] - 1.0).abs()
    assert rel.max() <= 0.10, sel.assign(rel=rel)
    # the patients' volume loss is seen: MS/HC volume ratio within 5 points of the truth
    ms = parts.loc[parts["group"] == "MS", "participant_id"]
    for name in ("thalamus", "caudate"):
        s = sel[sel["structure"] == name]
        ratio = (
            s[s.participant_id.isin(ms)].volume_mm3.mean()
            / s[~s.participant_id.isin(ms)].volume_mm3.mean()
        )
        ratio_true = (
            s[s.participant_id.isin(ms)].volume_mm3_true.mean()
            / s[~s.participant_id.isin(ms)].volume_mm3_true.mean()
        )
        assert ratio == pytest.approx(ratio_true, abs=0.05), name
    assert (sel[sel.participant_id.isin(ms)]["atrophy_fraction"] > 0.05).all()

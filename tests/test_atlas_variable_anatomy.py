"""Atlas registration on variable anatomy (issue 12): Dice and regional chi against truth.

One small-preset subject (2 mm GRE) under the simulator's default random affine + smooth
deformation, its QSM as the iron channel, default registration parameters.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "2")

from bids_qsm.atlas.qc import structure_dice
from bids_qsm.atlas.registration import register_atlas
from bids_qsm.atlas.registry import load_atlas
from bids_qsm.qsm.pipeline import reconstruct_qsm
from bids_qsm.simulate import simulate_subject

#: Dice per hemisphere on the 2 mm grid (issue 12 targets are for 1 mm).
DICE = {
    "thalamus": 0.85,
    "caudate": 0.80,
    "putamen": 0.80,
    "globus_pallidus": 0.70,
    "substantia_nigra": 0.65,
    "red_nucleus": 0.65,
    "hippocampus": 0.70,
}
#: Largest regional chi error (registered vs true labels, same map) in the listed structures.
CHI_ERROR_PPB = 15.0


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    sim = simulate_subject("small", 1)
    q = reconstruct_qsm(sim.mag, sim.phase, sim.te_s, sim.b0_tesla, sim.voxel_size, sim.b0_dir)
    reg = register_atlas(
        nib.Nifti1Image(sim.mag, sim.affine),
        nib.Nifti1Image(q.brain_mask.astype(np.uint8), sim.affine),
        load_atlas(),
        Path(tmp_path_factory.mktemp("reg")),
        "sub-01",
        threads=2,
        iron=nib.Nifti1Image(q.chi_ppm, sim.affine),
    )
    return sim, q, reg


@pytest.mark.slow
def test_variable_anatomy_dice_and_regional_chi(registered) -> None:
    sim, q, reg = registered
    atlas = load_atlas()
    d = structure_dice(reg.labels, sim.labels, atlas.structures)
    low = {k: round(v, 3) for k, v in d.items() if v < DICE.get(k.rsplit("_", 1)[0], 0.0)}
    assert not low, f"Dice below target: {low}"
    errors, tm, pm = {}, [], []
    for s in atlas.structures:
        a, b = np.isin(reg.labels, s.labels), np.isin(sim.labels, s.labels)
        tm.append(q.chi_ppm[b].mean())
        pm.append(q.chi_ppm[a].mean())
        if s.name in DICE:
            errors[f"{s.name}_{s.hemisphere}"] = 1000 * (pm[-1] - tm[-1])
    bad = {k: round(v, 1) for k, v in errors.items() if abs(v) > CHI_ERROR_PPB}
    assert not bad, f"regional chi error > {CHI_ERROR_PPB} ppb: {bad}"
    assert 0.9 <= np.polyfit(tm, pm, 1)[0] <= 1.1
    assert reg.qc["jacobian_folded_fraction"] <= 1e-4 and reg.qc["dgm_local_cc"] > 0.35

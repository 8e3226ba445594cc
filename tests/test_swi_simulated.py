"""SWI on the simulator's tiny preset (3 mm, 4 echoes, 3 T): signs and structure contrasts.

Physics reminders for reading the assertions: filtered phase reflects the *shape* of a source
relative to B0, not only its susceptibility. The simulator's intracerebral veins (internal
cerebral veins, vein of Galen, straight sinus) run roughly perpendicular to B0, and a cylinder
perpendicular to B0 has a *negative* internal field (-chi/6): on the phase-iron map their
lumen is negative, whatever the high-pass. Veins parallel to B0 come out positive (see the
analytic phantom in ``test_swi_pipeline.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from bids_qsm.atlas.structures import aal3_structures
from bids_qsm.qsm.geometry import ppm_to_hz
from bids_qsm.swi import SWIOptions, compute_swi, regional_phase_measures

pytestmark = pytest.mark.slow  # the tiny simulation alone takes ~20 s on a loaded machine

STRUCTS = {
    "globus_pallidus": [79, 80],
    "caudate": [75, 76],
    "putamen": [77, 78],
    "thalamus": list(range(121, 151)),
}


@pytest.fixture(scope="module")
def sim_results():
    from bids_qsm.simulate import simulate_subject

    sim = simulate_subject(preset="tiny", seed=0, workers=2)
    mask = sim.brain_mask
    field_hz = np.where(mask, ppm_to_hz(sim.total_field_ppm, sim.b0_tesla), 0).astype(np.float32)
    # CLEAR-SWI's [4, 4, 0] voxels assume ~1 mm voxels: keep its physical width (4 mm) here.
    gauss = compute_swi(
        sim.mag,
        sim.phase,
        sim.te_s,
        sim.voxel_size,
        mask,
        field_hz=field_hz,
        options=SWIOptions(gaussian_sigma_mm=(4.0, 4.0, 0.0)),
    )
    homod = compute_swi(
        sim.mag, sim.phase, sim.te_s, sim.voxel_size, mask, options=SWIOptions(highpass="homodyne")
    )
    deep = ndimage.distance_transform_edt(mask) > 6
    veins = mask & deep & (sim.chi_ppm > 0.25) & (sim.labels == 0)
    return sim, gauss, homod, veins


def _mean(img: np.ndarray, sel: np.ndarray) -> float:
    assert sel.sum() > 0
    return float(img[sel].mean())


def test_pallidum_positive_on_phase_iron_and_dark_on_swi(sim_results):
    sim, gauss, homod, _ = sim_results
    for res in (gauss, homod):
        for side in (79, 80):  # left and right pallidum separately
            assert _mean(res.phase_iron_rad, sim.labels == side) > 0.02
        gp = np.isin(sim.labels, [79, 80])
        shell = ndimage.binary_dilation(gp, iterations=2) & ~gp & sim.brain_mask
        shell &= sim.labels == 0
        assert _mean(res.swi, gp) < 0.9 * _mean(res.swi, shell)
        assert _mean(res.hp_phase_rad, gp) < 0  # SWI convention: paramagnetic negative


def test_homodyne_and_gaussian_agree_in_sign_and_rank(sim_results):
    sim, gauss, homod, veins = sim_results
    g = {k: _mean(gauss.phase_iron_rad, np.isin(sim.labels, v)) for k, v in STRUCTS.items()}
    h = {k: _mean(homod.phase_iron_rad, np.isin(sim.labels, v)) for k, v in STRUCTS.items()}
    for k in ("globus_pallidus", "caudate", "thalamus"):
        assert np.sign(g[k]) == np.sign(h[k])
    order = ["globus_pallidus", "caudate", "putamen", "thalamus"]
    assert sorted(g, key=g.get, reverse=True) == order
    assert sorted(h, key=h.get, reverse=True) == order
    # deep veins, perpendicular to B0: negative lumen on both (see module docstring)
    assert _mean(gauss.phase_iron_rad, veins) < -0.05
    assert _mean(homod.phase_iron_rad, veins) < 0


def test_regional_measures_on_simulated_subject(sim_results):
    sim, gauss, _, _ = sim_results
    vox = float(np.prod(sim.voxel_size))
    df = regional_phase_measures(
        gauss.phase_iron_rad, sim.labels, aal3_structures(), 0.1, vox, mask=sim.brain_mask
    )
    assert len(df) == 20
    gp = df[df["structure"] == "globus_pallidus"]
    truth = sim.regional_truth.set_index(["structure", "hemisphere"])
    for _, row in gp.iterrows():
        assert row["nvox"] == truth.loc[("globus_pallidus", row["hemisphere"]), "nvox"]
        assert row["phase_iron_mean_rad"] > 0
        assert 0 <= row["apt_nvox"] <= row["nvox"]
        if row["apt_nvox"]:
            assert row["mpapt_rad"] > 0.1
    # the pallidum holds more abnormal-phase tissue than the thalamus at a fixed threshold
    frac = df.groupby("structure")["apt_fraction"].mean()
    assert frac["globus_pallidus"] > frac["thalamus"]

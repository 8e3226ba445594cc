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

    # The template head itself (no anatomical deformation): these tests compare the high-pass
    # filters on one known anatomy; tests/test_swi_roi.py covers the default deformed heads.
    sim = simulate_subject(preset="tiny", seed=0, workers=2, rigid_anatomy=True)
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


# --- Issue 18: phase iron that follows iron (default chain: local field, 2 mm, ROIs) ---------

KEY = ("globus_pallidus", "putamen", "caudate", "substantia_nigra", "red_nucleus", "pulvinar")


def test_default_chain_positive_in_iron_rich_structures_and_small_abnormal_volume(sim_results):
    from bids_qsm.swi.validation import phase_iron_scan, structure_values

    sim = sim_results[0]
    structs = aal3_structures()
    scan = phase_iron_scan(
        sim.mag, sim.phase, sim.te_s, sim.voxel_size, sim.brain_mask, sim.labels,
        sim.b0_dir, sim.b0_tesla, structs,
    )  # fmt: skip
    pi = scan.result.phase_iron_rad
    roi = structure_values(pi, scan.roi_labels, sim.brain_mask, structs)
    for name in KEY:
        assert roi[name].size >= 5 and roi[name].mean() > 0, name
    # the plain-label mean of the substantia nigra is negative (its shape and the red nucleus
    # beside it): the self-positive ROI is what makes it follow iron
    plain = structure_values(pi, sim.labels, sim.brain_mask, structs)
    assert plain["substantia_nigra"].mean() < roi["substantia_nigra"].mean()
    # whole-brain abnormal-phase volume at the participant default threshold: < 5 % of brain
    default = scan.result.parameters["AbnormalPhaseThreshold_rad"]  # brain mean + 2 SD
    assert 0 < default < 0.2
    frac = np.count_nonzero(np.nan_to_num(pi[sim.brain_mask]) > default) / sim.brain_mask.sum()
    assert frac < 0.05
    assert scan.result.parameters["PhaseIronFieldSource"] == "local"
    assert 0 < scan.result.parameters["PhaseQualityMask"]["ExcludedFraction"] < 0.6


def _planted_cohort(sim, n: int, rng, shift: dict[str, float]) -> tuple[list, list]:
    """Subjects sharing the anatomy, with planted regional iron: field by the dipole model."""
    from bids_qsm.qsm.background import vsharp
    from bids_qsm.simulate.forward import forward_field_ppm
    from bids_qsm.swi import self_positive_labels
    from bids_qsm.swi.validation import structure_values

    structs = aal3_structures()
    vs, mask, lab, b0 = sim.voxel_size, sim.brain_mask, sim.labels, sim.b0_tesla
    background = sim.total_field_ppm - sim.local_field_ppm
    base = np.where(mask, sim.chi_ppm, 0).astype(np.float32)
    sd = {"globus_pallidus": 0.025, "substantia_nigra": 0.025, "red_nucleus": 0.02}
    roi = self_positive_labels(lab, structs, vs, sim.b0_dir, (2.0, 2.0, 0.0), mask)
    measured, truth = [], []
    for _ in range(n):
        chi = base.copy()
        for name in KEY:
            m = np.isin(lab, [v for s in structs if s.name == name for v in s.labels])
            chi[m] += rng.normal(shift.get(name, 0.0), sd.get(name, 0.015))
        local = forward_field_ppm(chi, vs, sim.b0_dir, pad_fraction=0.3, workers=1)
        total = ppm_to_hz(np.where(mask, local + background, 0), b0).astype(np.float32)
        total += rng.normal(0, 0.3, total.shape).astype(np.float32) * mask  # field noise, Hz
        loc, lm = vsharp(total, mask, vs, threads=1)
        res = compute_swi(
            sim.mag, None, sim.te_s, vs, mask, field_hz=total, b0_tesla=b0,
            local_field_ppm=loc / float(ppm_to_hz(np.float32(1.0), b0)), local_mask=lm,
        )  # fmt: skip
        measured.append(structure_values(res.phase_iron_rad, roi, mask, structs))
        truth.append(
            {k: float(v.mean()) for k, v in structure_values(chi, lab, mask, structs).items()}
        )
    return measured, truth


def test_phase_iron_and_mpapt_follow_planted_iron_and_ms_effect(sim_results):
    from bids_qsm.swi import phase_iron_threshold

    sim = sim_results[0]
    rng = np.random.default_rng(18)
    hc, truth = _planted_cohort(sim, 8, rng, {})
    ms, _ = _planted_cohort(
        sim, 6, rng, {n: 0.012 for n in ("caudate", "putamen", "globus_pallidus")}
    )
    for name in KEY:
        chi = [t[name] for t in truth]
        thr = phase_iron_threshold([s[name] for s in hc])  # control mean (DEFAULT_N_SD = 0)
        mean = [s[name].mean() for s in hc]
        assert np.corrcoef(chi, mean)[0, 1] >= 0.7, name
        # MP-APT needs enough ROI voxels: at 3 mm the pallidum, nigra and red nucleus ROIs
        # hold 6-33 voxels (the 2 mm cohort of benchmarks/bench_swi.py covers them)
        if hc[0][name].size >= 100:
            mpapt = [s[name][s[name] > thr].mean() for s in hc]
            assert np.corrcoef(chi, mpapt)[0, 1] >= 0.7, name
    for name in ("caudate", "putamen", "globus_pallidus"):
        thr = phase_iron_threshold([s[name] for s in hc])
        mp = [np.mean([s[name][s[name] > thr].mean() for s in g]) for g in (ms, hc)]
        assert mp[0] > mp[1], name  # patients' higher basal ganglia iron: higher MP-APT


def test_pulvinar_phase_sign_follows_its_contrast_to_the_thalamus(sim_results):
    """Filtered phase measures susceptibility *contrast* to the surroundings: a pulvinar set
    below the thalamus *and* the white matter around it (-30 ppb) has negative phase iron, one
    20 ppb above the thalamus positive, measured and noise-free alike; in between (10 ppb below
    the thalamus, about level with the mix of thalamus, white matter and CSF around it) the
    measure rises with the pulvinar's chi and still equals the noise-free oracle."""
    from bids_qsm.qsm.background import vsharp
    from bids_qsm.simulate.forward import forward_field_ppm
    from bids_qsm.swi import self_positive_labels
    from bids_qsm.swi.validation import PhaseIronScan, oracle_phase_iron, structure_values

    sim = sim_results[0]
    structs = aal3_structures()
    vs, mask, lab, b0 = sim.voxel_size, sim.brain_mask, sim.labels, sim.b0_tesla
    pulv = np.isin(lab, [143, 145, 147, 149])
    thal = np.isin(lab, STRUCTS["thalamus"]) & ~pulv
    roi = self_positive_labels(lab, structs, vs, sim.b0_dir, (2.0, 2.0, 0.0), mask)
    background = sim.total_field_ppm - sim.local_field_ppm
    hz_per_ppm = float(ppm_to_hz(np.float32(1.0), b0))
    means = {}
    for delta in (-0.030, -0.010, 0.020):  # pulvinar chi - thalamus chi (ppm)
        chi = np.where(mask, sim.chi_ppm, 0).astype(np.float32)
        chi[pulv] = float(chi[thal].mean()) + delta
        local = forward_field_ppm(chi, vs, sim.b0_dir, pad_fraction=0.3, workers=1)
        local = np.where(mask, local, 0)
        total = (hz_per_ppm * np.where(mask, local + background, 0)).astype(np.float32)
        loc, lm = vsharp(total, mask, vs, threads=1)
        res = compute_swi(
            sim.mag, None, sim.te_s, vs, mask, field_hz=total, b0_tesla=b0,
            local_field_ppm=loc / hz_per_ppm, local_mask=lm,
        )  # fmt: skip
        orc = oracle_phase_iron(PhaseIronScan(res, roi, lab, mask, lm & mask), local, vs, b0)
        means[delta] = [
            float(structure_values(img, roi, mask, structs)["pulvinar"].mean())
            for img in (res.phase_iron_rad, orc)
        ]
    assert max(means[-0.030]) < 0 < min(means[0.020]), means
    assert means[-0.030][0] < means[-0.010][0] < means[0.020][0], means
    for measured, oracle in means.values():  # V-SHARP vs the true local field, no noise
        assert measured == pytest.approx(oracle, rel=0.05), means

"""simulate_subject: physics consistency, determinism, cohort effects, lesions and T1w."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from bids_qsm.errors import UsageError
from bids_qsm.qsm.geometry import b0_direction_from_affine, ppm_to_hz
from bids_qsm.qsm.phase import rescale_to_radians, wrap_to_pi
from bids_qsm.simulate import forward_field_ppm, simulate_subject
from bids_qsm.simulate.bids_writer import vendor_phase
from bids_qsm.simulate.cohort import (
    BASAL_GANGLIA_EFFECT_PPM,
    THALAMUS_EFFECT_PPM,
    edss_scale,
)
from bids_qsm.simulate.tissues import CHI_AIR_PPM

CLEAN = {"snr": float("inf"), "between_subject_sd_ppm": 0.0, "oblique_deg": 20.0}


@pytest.fixture(scope="module")
def hc():
    return simulate_subject("tiny", 5, **CLEAN)


@pytest.fixture(scope="module")
def noisy():
    return simulate_subject("tiny", 7, lesions=True, t1w=True, group="MS", edss=4.0)


def _bilateral(sub, structure: str) -> float:
    t = sub.regional_truth
    row = t[(t.structure == structure) & (t.hemisphere == "bilateral")]
    return float(row.chi_mean_ppm.iloc[0])


def test_shapes_types_and_geometry(hc):
    x, y, z, e = hc.mag.shape
    assert e == len(hc.te_s) == 4 and hc.phase.shape == hc.mag.shape
    assert hc.mag.dtype == hc.phase.dtype == np.float32
    assert hc.phase.min() >= -np.pi and hc.phase.max() < np.pi
    np.testing.assert_allclose(hc.voxel_size, 3.0, atol=1e-6)
    np.testing.assert_allclose(hc.b0_dir, b0_direction_from_affine(hc.affine))
    # A 20 degree slab tilt about x puts B0 20 degrees off the slice axis.
    assert np.degrees(np.arccos(abs(hc.b0_dir[2]))) == pytest.approx(20.0, abs=1e-6)
    for a in (hc.chi_ppm, hc.labels, hc.brain_mask, hc.total_field_ppm, hc.r2star_hz):
        assert a.shape == (x, y, z)
    assert hc.labels.dtype == np.int16 and hc.brain_mask.dtype == bool
    # A whole brain (~1.5 l) on the 3 mm grid, with every reported structure present.
    vol_l = hc.brain_mask.sum() * 27e-6
    assert 1.2 < vol_l < 2.4  # template ~1.8 l, random per-axis scale 0.97-1.07
    assert (hc.regional_truth.nvox > 0).all()


def test_literature_susceptibilities_and_air(hc):
    assert 0.09 < _bilateral(hc, "globus_pallidus") < 0.14
    assert 0.07 < _bilateral(hc, "substantia_nigra") < 0.14
    assert 0.03 < _bilateral(hc, "basal_ganglia") < 0.06
    assert abs(_bilateral(hc, "thalamus")) < 0.006
    # Air around the head is ~9.4 ppm above CSF.
    assert hc.chi_ppm[0, 0, -1] == pytest.approx(CHI_AIR_PPM, abs=1e-4)


def test_phase_is_the_noiseless_signal_model(hc):
    """phase_e = wrap(2 pi f_Hz TE_e + phi0); paramagnetic field gives positive phase."""
    signal = hc.mag[..., 0] > 0.05 * hc.mag.max()
    for e, te in enumerate(hc.te_s):
        pred = 2 * np.pi * ppm_to_hz(hc.total_field_ppm, hc.b0_tesla) * te + hc.phase_offset_rad
        err = wrap_to_pi(hc.phase[..., e] - pred)
        assert np.abs(err[signal]).max() < 1e-3
    # Magnitude decays with R2*: echo 4 / echo 1 = exp(-R2* (TE4 - TE1)) in the brain.
    b = hc.brain_mask & signal
    ratio = hc.mag[..., 3][b] / hc.mag[..., 0][b]
    expected = np.exp(-hc.r2star_hz[b] * (hc.te_s[3] - hc.te_s[0]))
    np.testing.assert_allclose(ratio, expected, rtol=1e-3)


def test_local_field_is_the_field_of_brain_sources(hc):
    f = forward_field_ppm(np.where(hc.brain_mask, hc.chi_ppm, 0), hc.voxel_size, hc.b0_dir)
    core = ndimage.binary_erosion(hc.brain_mask, iterations=2)
    x, y = hc.local_field_ppm[core], f[core]
    assert np.corrcoef(x, y)[0, 1] > 0.95
    assert np.sqrt(np.mean((x - y) ** 2)) < 0.3 * np.sqrt(np.mean(x**2))
    # On the 20-degree oblique slab, assuming B0 along the slice axis fits clearly worse.
    f_z = forward_field_ppm(np.where(hc.brain_mask, hc.chi_ppm, 0), hc.voxel_size, (0, 0, 1))
    assert np.corrcoef(x, f_z[core])[0, 1] < np.corrcoef(x, y)[0, 1] - 0.05
    # The head's air-tissue interfaces give a background field much stronger than the local.
    background = (hc.total_field_ppm - hc.local_field_ppm)[hc.brain_mask]
    assert np.percentile(background, 99) - np.percentile(background, 1) > 0.5
    assert np.percentile(np.abs(hc.local_field_ppm[hc.brain_mask]), 99) < 0.1


def test_same_seed_gives_identical_output(noisy):
    again = simulate_subject("tiny", 7, lesions=True, t1w=True, group="MS", edss=4.0)
    for name in ("mag", "phase", "chi_ppm", "labels", "total_field_ppm", "local_field_ppm"):
        np.testing.assert_array_equal(getattr(noisy, name), getattr(again, name))
    np.testing.assert_array_equal(noisy.t1w[0], again.t1w[0])
    np.testing.assert_array_equal(noisy.lesion_masks["T2lesion"], again.lesion_masks["T2lesion"])
    assert noisy.participant == again.participant


def test_noise_level_matches_snr(noisy):
    """Magnitude of pure noise (air far from the head) is Rayleigh: mean = sigma sqrt(pi/2)."""
    air = noisy.chi_ppm > CHI_AIR_PPM - 1e-3
    air = ndimage.binary_erosion(air, iterations=3)
    assert air.sum() > 1000
    mean = noisy.mag[..., 0][air].mean()
    assert mean == pytest.approx(noisy.noise_sigma * np.sqrt(np.pi / 2), rel=0.05)
    brain = noisy.mag[..., 0][noisy.brain_mask].mean()
    assert brain / noisy.noise_sigma == pytest.approx(150.0, rel=0.05)  # tiny preset SNR


def test_patient_effects_scale_with_edss_and_vanish_with_null_effect(hc):
    ms3 = simulate_subject("tiny", 5, group="MS", edss=3.0, **CLEAN)
    ms6 = simulate_subject("tiny", 5, group="MS", edss=6.0, **CLEAN)
    null = simulate_subject("tiny", 5, group="MS", edss=6.0, null_effect=True, **CLEAN)
    for s in ("basal_ganglia", "thalamus", "globus_pallidus"):
        assert _bilateral(null, s) == pytest.approx(_bilateral(hc, s), abs=1e-9)
    # Partial volume with CSF on the 3 mm grid dilutes the 1 mm effect by 10-30 %.
    d_bg3 = _bilateral(ms3, "basal_ganglia") - _bilateral(hc, "basal_ganglia")
    d_th3 = _bilateral(ms3, "thalamus") - _bilateral(hc, "thalamus")
    assert 0.7 * BASAL_GANGLIA_EFFECT_PPM < d_bg3 < 1.0 * BASAL_GANGLIA_EFFECT_PPM
    assert 0.7 * THALAMUS_EFFECT_PPM > d_th3 > 1.0 * THALAMUS_EFFECT_PPM
    d_bg6 = _bilateral(ms6, "basal_ganglia") - _bilateral(hc, "basal_ganglia")
    assert d_bg6 / d_bg3 == pytest.approx(edss_scale(6.0) / edss_scale(3.0), rel=0.02)
    # Unaffected structures stay put (up to partial volume blur from their neighbours).
    for s in ("red_nucleus", "hippocampus", "amygdala"):
        assert _bilateral(ms6, s) == pytest.approx(_bilateral(hc, s), abs=0.0005)
    assert ms3.participant["group"] == "MS" and ms3.participant["EDSS"] == 3.0


def test_lesions_masks_and_truth(noisy):
    t2, t1 = noisy.lesion_masks["T2lesion"], noisy.lesion_masks["T1lesion"]
    assert t2.shape == noisy.brain_mask.shape and t2.any()
    assert not (t2 & ~noisy.brain_mask).any()
    assert not (t1 & ~t2).any()
    lt = noisy.lesion_truth
    assert set(lt.label) <= {"T2lesion", "T1lesion"}
    t2rows = lt[lt.label == "T2lesion"]
    assert t2rows.nvox.sum() == t2.sum()
    assert (t2rows.volume_mm3 == t2rows.nvox * 27.0).all()
    assert lt.is_prl.dtype == bool
    # Lesions are less diamagnetic than the white matter around them.
    wm_like = noisy.chi_ppm[noisy.brain_mask & (noisy.labels == 0)]
    assert t2rows.chi_mean_ppm.mean() > np.median(wm_like) - 0.02


def test_t1w_has_its_own_grid_and_contrast(noisy):
    data, aff = noisy.t1w
    assert nib.aff2axcodes(aff) == ("P", "I", "R")
    assert data.shape == (120, 120, 88)  # 2 mm, FOV 240 x 240 x 176 mm
    assert np.isfinite(data).all() and data.max() > 500


def test_vendor_phase_round_trip(noisy):
    ph = noisy.phase[..., 1]
    v = vendor_phase(ph)
    assert v.dtype == np.int16 and v.min() >= -4096 and v.max() <= 4095
    back = rescale_to_radians(v.astype(np.float32))
    assert np.abs(wrap_to_pi(back - ph)).max() < 2 * np.pi / 8192 * 1.5


def test_bad_arguments_raise_usage_errors():
    with pytest.raises(UsageError, match="preset"):
        simulate_subject("huge")
    with pytest.raises(UsageError, match="echo times"):
        simulate_subject("tiny", te_s=(0.01, 0.005))
    with pytest.raises(UsageError, match="group"):
        simulate_subject("tiny", group="PD")

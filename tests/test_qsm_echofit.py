"""MCPC-3D-S offset removal and the weighted field fit recover a known field."""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi

from bids_qsm.qsm.echofit import fit_field, gaussian_smooth_fft, weighted_field_fit, wrap_fast
from bids_qsm.qsm.geometry import ppm_to_hz
from bids_qsm.qsm.mask import erode_mask
from bids_qsm.qsm.phase import wrap_to_pi
from bids_qsm.simulate.phantom import gre_signal, sphere_phantom

TE = [0.004, 0.010, 0.016, 0.022]


def _offset(shape):
    g = np.indices(shape, dtype=np.float32)
    return (1.0 + 0.02 * (g[0] - shape[0] / 2) - 0.015 * (g[1] - shape[1] / 2)).astype(np.float32)


def test_multi_echo_fit_recovers_total_field():
    ph = sphere_phantom()
    po = _offset(ph.brain.shape)
    mag, phase = gre_signal(ph.total_field_ppm, ph.brain, TE, offset_rad=po, snr=100, seed=1)
    fit = fit_field(mag, phase, TE, ph.brain, ph.voxel_size, mcpc_sigma_vox=(4, 4, 4))
    truth_hz = ppm_to_hz(ph.total_field_ppm, 3.0)
    inner = erode_mask(ph.brain, ph.voxel_size, 2.0)
    err = (fit.field_hz - truth_hz)[inner]
    # The field spans about 85 Hz; noise and offset smoothing leave well under 1 Hz.
    assert np.ptp(truth_hz[inner]) > 50
    assert np.abs(np.median(err)) < 0.3
    assert np.percentile(np.abs(err - np.median(err)), 99) < 1.0
    # The offset is recovered (up to the smoothing) and the residual is small in tissue.
    po_err = wrap_to_pi(fit.phase_offset - po)[inner]
    assert np.percentile(np.abs(po_err - np.median(po_err)), 95) < 0.05
    assert np.median(fit.residual[inner]) < 0.05


def test_residual_flags_noise_only_voxels():
    ph = sphere_phantom(external=())
    mag, phase = gre_signal(ph.total_field_ppm, ph.brain, TE, snr=100, seed=2)
    everything = np.ones_like(ph.brain)
    noise_only = ~ndi.binary_dilation(ph.brain, iterations=2)
    _, res = weighted_field_fit(phase, mag, TE)  # wrapped input: residual is 2 pi invariant
    fit = fit_field(mag, phase, TE, everything, ph.voxel_size, downsample=1)
    assert np.median(fit.residual[noise_only]) > 0.4  # tissue: < 0.05, threshold 0.3
    assert np.median(fit.residual[erode_mask(ph.brain, ph.voxel_size, 2)]) < 0.05
    assert res.shape == ph.brain.shape


def test_single_echo_field():
    shape = (36, 40, 32)
    g = np.indices(shape, dtype=np.float32)
    field_hz = 2.0 * (g[0] - 18) + 0.05 * (g[1] - 20) ** 2  # about 70 Hz of smooth field
    brain = np.ones(shape, bool)
    mag = np.ones((*shape, 1), np.float32)
    phase = wrap_to_pi(2 * np.pi * field_hz * 0.02)[..., None]
    fit = fit_field(mag, phase, [0.02], brain, np.ones(3), downsample=1)
    cycles = (fit.field_hz - field_hz)[brain] * 0.02  # one global integer at most
    assert np.ptp(field_hz) * 0.02 > 1.2  # wrapped
    assert np.abs(cycles - np.round(cycles.mean())).max() < 1e-3
    assert np.all(fit.residual == 0)


def test_gaussian_smoothing_matches_scipy_inside():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 34, 28)).astype(np.float32)
    ours = gaussian_smooth_fft(x, (2.0, 2.0, 1.5), np.ones_like(x), threads=1)
    ref = ndi.gaussian_filter(x, (2.0, 2.0, 1.5), mode="constant", truncate=6)
    ref /= ndi.gaussian_filter(np.ones_like(x), (2.0, 2.0, 1.5), mode="constant", truncate=6)
    assert np.abs(ours - ref).max() < 1e-3
    # The downsampled path agrees with the full-resolution one for a wide kernel.
    lin = ndi.gaussian_filter(x, 3).astype(np.float32) * 10
    full = gaussian_smooth_fft(lin, (4.0, 4.0, 4.0), np.ones_like(lin))
    ds = gaussian_smooth_fft(lin, (4.0, 4.0, 4.0), np.ones_like(lin), downsample=2)
    assert np.abs(ds - full)[4:-4, 4:-4, 4:-4].max() < 0.1 * np.abs(full).max()


def test_wrap_fast_is_the_same_angle():
    x = np.linspace(-40, 40, 10001, dtype=np.float32)
    a, b = wrap_fast(x), wrap_to_pi(x)
    assert np.all(np.abs(a) <= np.float32(np.pi))
    assert np.abs(np.angle(np.exp(1j * (a - b)))).max() < 1e-4

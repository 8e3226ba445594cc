"""Exact unwrapping of wrapped smooth fields and of the real 3 T sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bids_qsm.qsm.echofit import fit_field
from bids_qsm.qsm.mask import brain_mask
from bids_qsm.qsm.phase import rescale_to_radians, wrap_to_pi
from bids_qsm.qsm.unwrap import unwrap_laplacian, unwrap_quality

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-gre-small"
if not REAL.exists():
    REAL = Path("/work/shared/data/real-gre-small")


def _smooth_phase(shape=(40, 44, 36), amplitude=30.0):
    """A smooth field with many wraps inside an ellipsoid (rad), and the ellipsoid."""
    g = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    x, y, z = np.meshgrid(*g, indexing="ij")
    phi = amplitude * (0.6 * x * x - 0.4 * y + 0.5 * np.exp(-((x - 0.2) ** 2 + y**2 + z**2) / 0.1))
    mask = (x / 0.9) ** 2 + (y / 0.95) ** 2 + (z / 0.85) ** 2 <= 1
    return phi.astype(np.float32), mask


def _assert_exact(unwrapped, truth, mask):
    diff = (unwrapped - truth)[mask]
    k = diff / (2 * np.pi)
    # One global 2 pi multiple, nothing else (float32 rounding only).
    assert np.abs(k - np.round(k)).max() < 1e-3
    assert np.ptp(np.round(k)) == 0


@pytest.mark.parametrize(("downsample", "amplitude"), [(1, 30.0), (2, 15.0), (2, 30.0)])
def test_quality_unwrap_is_exact_on_smooth_field(downsample, amplitude):
    # amplitude 30: gradients near pi per coarse voxel, the multi-resolution path must fall
    # back to full resolution and stay exact.
    phi, mask = _smooth_phase(amplitude=amplitude)
    wrapped = wrap_to_pi(phi)
    assert np.abs(wrapped - phi).max() > 10  # really wrapped many times
    out = unwrap_quality(wrapped, mask, np.ones_like(phi), downsample=downsample)
    _assert_exact(out, phi, mask)
    assert np.all(out[~mask] == 0)


def test_quality_unwrap_with_phase_exactly_zero_and_pi():
    # Quantise like a 12-bit vendor export: many voxels sit exactly on 0 and -pi.
    phi, mask = _smooth_phase(amplitude=20.0)
    step = 2 * np.pi / 4096
    wrapped = wrap_to_pi(np.round(wrap_to_pi(phi) / step) * step)
    exact = mask & ((wrapped == 0) | (np.abs(wrapped) == np.float32(np.pi)))
    assert exact.sum() > 5
    out = unwrap_quality(wrapped, mask, downsample=1)
    _assert_exact(out, np.round(phi / step) * step, mask)


def test_laplacian_unwrap_recovers_smooth_field_approximately():
    phi, mask = _smooth_phase(amplitude=10.0)
    out = unwrap_laplacian(wrap_to_pi(phi), np.ones(3), mask)
    ref = phi - phi[mask].mean()
    err = (out - ref)[mask]
    # Not exact (harmonic terms of the boundary are lost) but close to the smooth field.
    assert np.sqrt(np.mean(err**2)) < 0.1 * np.sqrt(np.mean(ref[mask] ** 2))


@pytest.mark.skipif(not REAL.exists(), reason="real sample not available")
@pytest.mark.parametrize("downsample", [1, 2])
def test_real_sample_unwrapping_is_exact_and_consistent(downsample):
    nib = pytest.importorskip("nibabel")
    mag = np.asarray(nib.load(REAL / "Mag.nii").dataobj, dtype=np.float32)
    raw = np.asarray(nib.load(REAL / "Phase.nii").dataobj, dtype=np.float32)
    phase = rescale_to_radians(raw)  # arbitrary units -> rad
    vs = np.array([0.46875, 0.46875, 1.0])
    te = [0.004, 0.008, 0.012]
    mask = brain_mask(mag, vs)
    assert mask.sum() > 1000
    fit = fit_field(mag, phase, te, mask, vs, downsample=downsample)
    un = fit.unwrapped
    for k in range(3):
        # Congruent with the offset-corrected wrapped phase: exact 2 pi multiples.
        wrapped = wrap_to_pi(phase[..., k] - fit.phase_offset)
        q = (un[..., k] - wrapped)[mask] / (2 * np.pi)
        assert np.abs(q - np.round(q)).max() < 1e-3
        # No 2 pi jumps between neighbours inside the mask.
        for ax in range(3):
            a = [slice(None)] * 3
            b = [slice(None)] * 3
            a[ax], b[ax] = slice(1, None), slice(None, -1)
            both = mask[tuple(a)] & mask[tuple(b)]
            d = (un[..., k][tuple(a)] - un[..., k][tuple(b)])[both]
            assert np.abs(d).max() < np.pi
    # The echoes agree with one linear field: small relative fit residual.
    assert np.median(fit.residual[mask]) < 0.06
    assert np.percentile(fit.residual[mask], 90) < 0.12

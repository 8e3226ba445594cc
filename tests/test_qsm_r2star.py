"""R2*/T2* from the multi-echo magnitude."""

from __future__ import annotations

import numpy as np
import pytest

from bids_qsm.qsm.r2star import fit_r2star

TE = np.array([0.004, 0.010, 0.016, 0.022])


def test_r2star_exact_without_noise():
    r2 = np.linspace(5, 80, 4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    mag = 1000 * np.exp(-r2[..., None] * TE)
    out, t2 = fit_r2star(mag, TE)
    assert np.abs(out - r2).max() < 1e-2
    assert np.allclose(t2, 1 / r2, rtol=1e-4)


def test_r2star_noisy_and_clipped():
    rng = np.random.default_rng(0)
    r2 = np.full((20, 20, 20), 25.0, np.float32)
    s = 1000 * np.exp(-r2[..., None] * TE)
    mag = np.abs(s + rng.normal(0, 10, s.shape) + 1j * rng.normal(0, 10, s.shape))
    out, _ = fit_r2star(mag.astype(np.float32), TE)
    assert abs(np.median(out) - 25.0) < 0.5  # SNR 100
    assert out.std() < 2.0
    flat = np.ones((2, 2, 2, 4), np.float32)
    grow = flat * np.exp(50 * TE)  # rising signal: R2* clipped at 0, T2* capped
    r, t = fit_r2star(grow, TE)
    assert np.all(r == 0) and np.all(t == 1.0)


def test_r2star_needs_two_echoes():
    with pytest.raises(ValueError):
        fit_r2star(np.ones((2, 2, 2, 1), np.float32), [0.01])

"""The benchmark's boundary-shift volume (benchmarks/boundary_shift.py) on an analytic
phantom: an ellipsoid of known volume in white matter, exact partial volume on 3 mm voxels,
two noisy channels. The registered ("template") label is the unshrunk ellipsoid; the fit must
recover the subject's shrunk or grown one, so the atrophy-cohort figures of docs/atlas.md
measure the method, not a bug."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from boundary_shift import BoundaryParams, fit_offset

from bids_qsm.simulate.subject import block_mean

VOX_MM, N, FACTOR = 3.0, 20, 3


def _ellipsoid(radius_mm: float, sub: int) -> np.ndarray:
    """Indicator of the ellipsoid (semi-axes r, r, r / 1.2 mm) on a grid ``sub`` times finer
    than the 3 mm grid."""
    c = (np.arange(N * sub) + 0.5) * VOX_MM / sub - N * VOX_MM / 2 + 0.3
    x, y, z = np.meshgrid(c, c, c, indexing="ij")
    return (x**2 + y**2 + (1.2 * z) ** 2) <= radius_mm**2


@pytest.mark.parametrize("radius_mm", [11.5, 12.0, 12.5])
def test_boundary_shift_recovers_the_volume(radius_mm: float) -> None:
    rng = np.random.default_rng(0)
    inside = _ellipsoid(12.0, FACTOR)  # the registered label
    parts = inside[None].astype(np.float32)
    zero = np.zeros(inside.shape, np.float32)
    classes = np.stack([zero, zero, (~inside).astype(np.float32)])  # CSF, GM, WM
    frac = block_mean(_ellipsoid(radius_mm, 9).astype(float), 9)  # exact partial volume
    chans = [
        0.1 + frac + rng.normal(0, 0.02, frac.shape),
        2.0 - 0.5 * frac + rng.normal(0, 0.02, frac.shape),
    ]
    valid = [np.ones(frac.shape, bool)] * 2
    shift, volume, alone = fit_offset(
        chans, valid, parts, classes, inside, BoundaryParams(), VOX_MM / FACTOR
    )
    true = 4.0 / 3.0 * np.pi * radius_mm**3 / 1.2
    assert volume == pytest.approx(true, rel=0.02)
    assert shift == pytest.approx(radius_mm - 12.0, abs=0.1)
    assert alone == pytest.approx((radius_mm - 12.0,) * 2, abs=0.01)

"""Default QSM pipeline against the simulator's ground truth (tiny preset, deformed anatomy).

Figures from ``benchmarks/bench_qsm.py --preset tiny --seeds 0 1 2`` (docs/methods_qsm.md; the
small-preset test below uses the 2 mm preset):
default (LBV + weighted TV) NRMSE 48-52 %, deep gray matter slope 0.92-0.97, error 2.8-4.2
ppb; the former default LBV + RTS NRMSE about 63 %, slope 0.88, error 6.9 ppb.
"""

from __future__ import annotations

import numpy as np
import pytest

from bids_qsm.qsm import metrics
from bids_qsm.qsm.pipeline import QSMOptions, reconstruct_qsm

sim = pytest.importorskip("bids_qsm.simulate")


@pytest.fixture(scope="module")
def subject():
    return sim.simulate_subject("tiny", seed=1, workers=1)


def _scores(s, options: QSMOptions, threads: int = 1) -> dict[str, float]:
    r = reconstruct_qsm(
        s.mag, s.phase, s.te_s, s.b0_tesla, s.voxel_size, s.b0_dir, options, threads=threads
    )
    truth = np.where(r.mask, s.chi_ppm - s.chi_ppm[r.mask].mean(), 0)
    ag = metrics.regional_agreement(
        r.chi_ppm, truth, s.labels, r.mask, metrics.deep_gray_matter_regions()
    )
    return {"nrmse": metrics.nrmse(r.chi_ppm, truth, r.mask), **ag}


def test_default_meets_the_deep_gray_matter_and_nrmse_tolerances(subject):
    new = _scores(subject, QSMOptions())
    # Measured (seed 1): NRMSE 52.2 %, slope 0.92, error 3.0 ppb.
    assert new["nrmse"] < 56, new
    assert 0.88 < new["slope"] < 1.05 and new["mae_ppb"] < 5, new
    old = _scores(subject, QSMOptions(inversion="rts"))
    # The weighted data term is what gains: RTS on the same LBV field is clearly worse.
    assert new["nrmse"] < old["nrmse"] - 5, (new, old)
    assert abs(new["slope"] - 1) < abs(old["slope"] - 1), (new, old)


@pytest.mark.slow  # the small simulation takes about 80 % of it (2 threads: FFTs, slabs)
def test_small_preset_edge_fixes_and_tolerances():
    # Small preset (2 mm), seed 1; measured: default NRMSE 44.8 %, slope 0.96, error 2.9 ppb,
    # rim-centre -7.8 ppb; without the repair of failed echo fits and the magnitude criterion
    # of the mask (the field fixes of issue 13 active at 2 mm) NRMSE 48.7 %. The simulation
    # and the reconstruction give the same arrays with 1 or 2 threads.
    s = sim.simulate_subject("small", seed=1, workers=2)
    r = reconstruct_qsm(
        s.mag, s.phase, s.te_s, s.b0_tesla, s.voxel_size, s.b0_dir, QSMOptions(), threads=2
    )
    truth = np.where(r.mask, s.chi_ppm - s.chi_ppm[r.mask].mean(), 0)
    ag = metrics.regional_agreement(
        r.chi_ppm, truth, s.labels, r.mask, metrics.deep_gray_matter_regions()
    )
    nrmse = metrics.nrmse(r.chi_ppm, truth, r.mask)
    rim = metrics.rim_centre_bias(r.chi_ppm, truth, r.mask, s.voxel_size)
    assert nrmse < 47 and 0.93 < ag["slope"] < 1.05 and ag["mae_ppb"] < 4, (nrmse, ag)
    assert abs(rim) < 9, rim
    old = _scores(s, QSMOptions(unwrap_repair=False, mask_magnitude_min=0.0), threads=2)
    assert nrmse < old["nrmse"] - 2, (nrmse, old)

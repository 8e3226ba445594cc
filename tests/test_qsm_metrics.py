"""Accuracy metrics agree with the QSM challenge definitions (qsm-ci's scorer)."""

from __future__ import annotations

import numpy as np
import pytest

from bids_qsm.qsm import metrics


@pytest.fixture(scope="module")
def maps():
    rng = np.random.default_rng(0)
    truth = np.zeros((30, 32, 28), np.float32)
    truth[8:20, 8:20, 8:20] = 0.1
    truth[12:16, 20:26, 10:18] = -0.05
    recon = (0.9 * truth + rng.normal(0, 0.01, truth.shape)).astype(np.float32)
    mask = np.zeros(truth.shape, bool)
    mask[3:-3, 3:-3, 3:-3] = True
    return recon, truth, mask


def test_metrics_match_qsm_ci(maps):
    qe = pytest.importorskip("qsm_ci.qsm_eval")
    recon, truth, mask = maps
    ref_nrmse = qe.nrmse_challenge(recon, truth, mask)[0]
    assert metrics.nrmse(recon, truth, mask) == pytest.approx(ref_nrmse, rel=1e-3)
    assert metrics.hfen(recon, truth, mask) == pytest.approx(qe.hfen(recon, truth, mask), rel=1e-3)
    assert metrics.xsim(recon, truth, mask) == pytest.approx(qe.xsim(recon, truth, mask), abs=0.02)


def test_metrics_perfect_and_bad(maps):
    _, truth, mask = maps
    assert metrics.nrmse(truth, truth, mask) == pytest.approx(0.0, abs=1e-6)
    assert metrics.xsim(truth, truth, mask) == pytest.approx(1.0, abs=1e-6)
    assert metrics.nrmse(np.zeros_like(truth), truth, mask) == pytest.approx(100.0, rel=1e-6)


def test_regional_agreement_slope_and_error():
    labels = np.zeros((10, 10, 10), np.int16)
    truth = np.zeros(labels.shape, np.float32)
    for i in range(1, 5):
        labels[2 * i : 2 * i + 2, 2:8, 2:8] = i
        truth[labels == i] = 0.05 * i
    recon = 0.9 * truth + 0.01
    ag = metrics.regional_agreement(
        recon, truth, labels, labels > 0, {"a": (1, 2), "b": (3,), "c": (4,)}
    )
    assert ag["slope"] == pytest.approx(0.9, abs=1e-5)
    assert ag["intercept_ppm"] == pytest.approx(0.01, abs=1e-6)
    assert ag["n_regions"] == 3
    assert set(metrics.deep_gray_matter_regions()) >= {"thalamus_L", "red_nucleus_R"}

"""Simulator option for planted between-subject regional iron variation (``--iron-sd-ppb``)."""

from __future__ import annotations

import numpy as np
import pytest

from bids_qsm.simulate.cli import build_parser
from bids_qsm.simulate.cohort import (
    BETWEEN_SUBJECT_SD_PPM,
    HEMISPHERE_CORRELATION,
    LITERATURE_IRON_SD_PPM,
    SHARED_IRON_CORRELATION,
    parse_iron_sd,
    structure_offsets_ppm,
)
from bids_qsm.simulate.tissues import STRUCTURE_TISSUES


def test_parse_iron_sd_forms():
    assert parse_iron_sd("literature") == LITERATURE_IRON_SD_PPM
    assert set(parse_iron_sd("12").values()) == {0.012}
    d = parse_iron_sd("putamen=30, globus_pallidus=5")
    assert d["putamen"] == pytest.approx(0.030) and d["globus_pallidus"] == pytest.approx(0.005)
    assert d["caudate"] == LITERATURE_IRON_SD_PPM["caudate"]
    for bad in ("pallidum=3", "putamen", "putamen=-1"):
        with pytest.raises(ValueError):
            parse_iron_sd(bad)
    args = build_parser().parse_args(["out", "--iron-sd-ppb", "literature"])
    assert args.iron_sd_ppb == LITERATURE_IRON_SD_PPM
    assert build_parser().parse_args(["out"]).iron_sd_ppb is None
    with pytest.raises(SystemExit) as err:
        build_parser().parse_args(["out", "--iron-sd-ppb", "nonsense=1"])
    assert err.value.code == 64


def test_offsets_have_the_planted_sd_and_hemisphere_correlation():
    rng = np.random.default_rng(0)
    draws = [structure_offsets_ppm(rng, LITERATURE_IRON_SD_PPM) for _ in range(4000)]
    for name, sd in LITERATURE_IRON_SD_PPM.items():
        left = np.array([d[(name, "L")] for d in draws])
        right = np.array([d[(name, "R")] for d in draws])
        assert left.std() == pytest.approx(sd, rel=0.06)
        assert abs(left.mean()) < 4 * sd / np.sqrt(len(draws))
        assert np.corrcoef(left, right)[0, 1] == pytest.approx(HEMISPHERE_CORRELATION, abs=0.04)


def test_scalar_sd_keeps_the_historical_draws():
    # one SD for all: independent draws in the same order as before the option existed
    a = structure_offsets_ppm(np.random.default_rng(5), BETWEEN_SUBJECT_SD_PPM)
    rng = np.random.default_rng(5)
    expected = [rng.normal(0.0, BETWEEN_SUBJECT_SD_PPM) for _ in range(len(a))]
    np.testing.assert_allclose(list(a.values()), expected)


def test_offsets_share_one_iron_factor_per_subject():
    """With ``shared_correlation`` different structures of one subject correlate: the pulvinar
    and the thalamus around it go up and down together, so their contrast varies less. The
    default (0) keeps the historical draws: independent structures."""
    assert SHARED_IRON_CORRELATION == 0.0
    a = 0.5
    rng = np.random.default_rng(1)
    draws = [structure_offsets_ppm(rng, LITERATURE_IRON_SD_PPM, a) for _ in range(4000)]
    pulv = np.array([d[("pulvinar", "L")] for d in draws])
    thal = np.array([d[("thalamus", "L")] for d in draws])
    gp = np.array([d[("globus_pallidus", "R")] for d in draws])
    for other in (thal, gp):
        assert np.corrcoef(pulv, other)[0, 1] == pytest.approx(a, abs=0.04)
    assert np.corrcoef(pulv, [d[("pulvinar", "R")] for d in draws])[0, 1] == pytest.approx(
        HEMISPHERE_CORRELATION, abs=0.04
    )
    sd_p, sd_t = LITERATURE_IRON_SD_PPM["pulvinar"], LITERATURE_IRON_SD_PPM["thalamus"]
    expected = np.sqrt(sd_p**2 + sd_t**2 - 2 * a * sd_p * sd_t)
    assert (pulv - thal).std() == pytest.approx(expected, rel=0.06)
    with pytest.raises(ValueError, match="shared iron correlation"):
        structure_offsets_ppm(rng, LITERATURE_IRON_SD_PPM, 0.9)


def test_pulvinar_is_more_paramagnetic_than_the_rest_of_the_thalamus():
    """Simulator tissue values: pulvinar 35 ppb above the other thalamic nuclei (in-vivo QSM,
    docs/methods_swi.md), the AAL3 thalamus (25 % pulvinar) near the seed study's -1.1 ppb."""
    p, t = STRUCTURE_TISSUES["pulvinar"].chi_ppm, STRUCTURE_TISSUES["thalamus"].chi_ppm
    assert p - t == pytest.approx(0.035)
    assert abs(0.25 * p + 0.75 * t) < 0.002

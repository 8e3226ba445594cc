"""Registration QC: it passes the true registration and flags a misregistered one."""

from __future__ import annotations

import numpy as np
import pytest

from bids_qsm.atlas.iron import iron_template, synthesise_iron_template
from bids_qsm.atlas.qc import (
    QC_LIMITS,
    iron_contrast_ppb,
    jacobian_stats,
    local_correlation,
    registration_qc,
)
from bids_qsm.atlas.registry import load_atlas
from bids_qsm.simulate import simulate_subject
from bids_qsm.simulate.deformation import sample_points


@pytest.fixture(scope="module")
def truth():
    """A deformed tiny subject and the template warped by its TRUE deformation."""
    sim = simulate_subject("tiny", 6, snr=float("inf"))
    atlas = load_atlas()
    gre_subject = np.linalg.solve(sim.pose.matrix(), sim.affine)
    tpl = np.asarray(atlas.template_img.dataobj, dtype=np.float32)
    warped = sample_points(
        tpl, atlas.template_img.affine, sim.labels.shape, gre_subject, sim.deformation, order=1
    )
    idx = np.indices(sim.labels.shape, dtype=np.float64).reshape(3, -1)
    pts = gre_subject[:3, :3] @ idx + gre_subject[:3, 3:]
    coords = sim.deformation.template_mm(pts).reshape(3, *sim.labels.shape)
    mag = np.sqrt((sim.mag**2).sum(-1)) * sim.brain_mask
    return sim, atlas, warped, coords, mag


def test_qc_ok_for_true_registration_check_for_shifted(truth) -> None:
    sim, atlas, warped, coords, mag = truth
    good = registration_qc(
        mag, sim.brain_mask, warped, sim.labels, coords, sim.affine, atlas.structures,
        sim.chi_ppm * sim.brain_mask,
    )  # fmt: skip
    assert good["status"]["dgm_local_cc"] == "ok", good
    assert good["status"]["iron_contrast_min_ppb"] == "ok", good
    assert good["status"]["jacobian_p01"] == good["status"]["jacobian_p99"] == "ok", good
    assert good["jacobian_folded_fraction"] == 0.0
    # labels and template shifted by 2 voxels (6 mm) along x and y: the QC sees it
    shift = (2, 2, 0)
    bad_labels = np.roll(sim.labels, shift, axis=(0, 1, 2))
    bad_tpl = np.roll(warped, shift, axis=(0, 1, 2))
    bad = registration_qc(
        mag, sim.brain_mask, bad_tpl, bad_labels, coords, sim.affine, atlas.structures,
        sim.chi_ppm * sim.brain_mask,
    )  # fmt: skip
    assert bad["status"]["iron_contrast_min_ppb"] == "check", bad
    assert bad["dgm_local_cc"] < good["dgm_local_cc"] - 0.05
    assert set(good["limits"]) == set(QC_LIMITS)


def test_jacobian_and_iron_contrast_units() -> None:
    # a uniform scaling by 1.1 along x of a 2 mm grid: det = 1.1 everywhere, no folding
    shape = (12, 10, 8)
    idx = np.indices(shape, dtype=float) * 2.0
    coords = np.stack([1.1 * idx[0], idx[1], idx[2]])
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    st = jacobian_stats(coords, aff, np.ones(shape, bool))
    assert st["jacobian_p01"] == pytest.approx(1.1) and st["jacobian_p99"] == pytest.approx(1.1)
    folded = coords.copy()
    folded[0] = -folded[0]
    assert jacobian_stats(folded, aff, np.ones(shape, bool))[
        "jacobian_folded_fraction"
    ] == pytest.approx(1.0)
    # a nucleus of 0.15 ppm in a -0.03 ppm surround: contrast 180 ppb
    atlas = load_atlas()
    gp = next(s for s in atlas.structures if s.name == "globus_pallidus")
    labels = np.zeros((20, 20, 20), np.int32)
    labels[8:12, 8:12, 8:12] = gp.labels[0]
    chi = np.full(labels.shape, -0.03, np.float32)
    chi[labels > 0] = 0.15
    c = iron_contrast_ppb(chi, labels, atlas.structures)
    assert c["globus_pallidus"] == pytest.approx(180.0, abs=1e-3)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((16, 16, 16))
    m = np.ones(a.shape, bool)
    assert local_correlation(a, -2 * a, m) == pytest.approx(1.0, abs=1e-6)
    assert local_correlation(a, rng.standard_normal(a.shape), m) < 0.4


def test_iron_template_cached_and_contrast() -> None:
    atlas = load_atlas()
    img = iron_template(atlas)
    again = iron_template(atlas)
    assert img.get_filename() == again.get_filename() and "desc-iron" in img.get_filename()
    data = np.asarray(img.dataobj)
    np.testing.assert_allclose(data, np.asarray(synthesise_iron_template(atlas).dataobj))
    labels = atlas.labels()

    def mean_of(name: str) -> float:
        vals = [v for s in atlas.structures if s.name == name for v in s.labels]
        return float(data[np.isin(labels, vals)].mean())

    assert mean_of("globus_pallidus") > mean_of("putamen") > mean_of("thalamus") > -0.01
    wm = data[(labels == 0) & (data < -0.02)]
    assert wm.size > 10000  # white matter is diamagnetic

"""Every dipole inversion recovers the susceptibility of spheres; oblique B0 is handled."""

from __future__ import annotations

import numpy as np
import pytest

from bids_qsm.qsm.inversion import lsmr_diagonal_filter, rts, tikhonov, tkd, tv_admm
from bids_qsm.simulate.phantom import sphere_phantom

# Recovered fraction of the true sphere value (centre 3.5 mm), measured: RTS 0.87-0.91 (0.81-0.87
# with 4 LSMR iterations over the whole kernel as step 1),
# TKD 0.86-0.92, TV 0.88-0.93, Tikhonov (gradient, lambda 0.01, CG tol 0.03) 0.69-0.80.
SOLVERS = {
    "rts": (rts, 0.84, 1.05),
    "tkd": (tkd, 0.80, 1.05),
    "tv": (tv_admm, 0.82, 1.05),
    "tikhonov": (tikhonov, 0.60, 1.0),
}


def _sphere_fractions(ph, chi):
    idx = np.indices(ph.brain.shape, dtype=np.float32)
    background = chi[ph.brain & (ph.chi_ppm == 0)].mean()
    out = []
    for centre, radius, value in ph.spheres:
        c = [
            (n - 1) / 2 + ci / d
            for n, ci, d in zip(ph.brain.shape, centre, ph.voxel_size, strict=True)
        ]
        sel = sum((idx[a] - c[a]) ** 2 for a in range(3)) <= (radius - 1.5) ** 2
        out.append((chi[sel].mean() - background) / value)
    return np.array(out)


@pytest.fixture(scope="module")
def axial():
    return sphere_phantom(external=())


@pytest.fixture(scope="module")
def oblique():
    b = np.array([0.0, np.sin(np.radians(25)), np.cos(np.radians(25))])
    return sphere_phantom(external=(), b0_dir=b)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_inversion_recovers_spheres(axial, name):
    fn, lo, hi = SOLVERS[name]
    chi = fn(axial.local_field_ppm * axial.brain, axial.brain, axial.voxel_size, axial.b0_dir)
    frac = _sphere_fractions(axial, chi)
    assert np.all(frac > lo), frac
    assert np.all(frac < hi), frac
    assert chi.dtype == np.float32
    assert np.all(chi[~axial.brain] == 0)


def test_oblique_b0_matches_axial(axial, oblique):
    f_ax = _sphere_fractions(axial, rts(axial.local_field_ppm, axial.brain, (1, 1, 1), (0, 0, 1)))
    assert np.all(f_ax > 0.74)
    chi_ob = rts(oblique.local_field_ppm, oblique.brain, (1, 1, 1), oblique.b0_dir)
    f_ob = _sphere_fractions(oblique, chi_ob)
    assert np.all(f_ob > 0.74), f_ob
    assert np.abs(f_ob - f_ax).max() < 0.12
    # Ignoring the obliquity (assuming B0 along k) is clearly worse.
    chi_wrong = rts(oblique.local_field_ppm, oblique.brain, (1, 1, 1), (0, 0, 1))
    wrong = _sphere_fractions(oblique, chi_wrong)
    assert np.mean(np.abs(1 - wrong)) > np.mean(np.abs(1 - f_ob)) + 0.1


def test_tkd_has_no_division_by_zero_on_the_cone(axial):
    chi = tkd(axial.local_field_ppm, axial.brain, axial.voxel_size, axial.b0_dir, threshold=0.0)
    assert np.isfinite(chi).all()


def test_lsmr_filter_matches_scipy_lsmr():
    from scipy.sparse.linalg import lsmr

    rng = np.random.default_rng(0)
    d = rng.uniform(-2 / 3, 1 / 3, 400).astype(np.float32)
    b = rng.standard_normal(400) + 1j * rng.standard_normal(400)
    for k in (1, 4):
        ref = lsmr(np.diag(d.astype(float)), b, atol=0, btol=0, maxiter=k)[0]
        ours = lsmr_diagonal_filter(d, b, k) * b
        assert np.abs(ours - ref).max() < 1e-4 * np.abs(ref).max()


def test_rts_exact_first_step_beats_four_lsmr_iterations(axial):
    """Four LSMR iterations of the full kernel leave the well-conditioned cone under-recovered."""
    args = (axial.local_field_ppm * axial.brain, axial.brain, axial.voxel_size, axial.b0_dir)
    exact = _sphere_fractions(axial, rts(*args))
    lsmr4 = _sphere_fractions(axial, rts(*args, lsmr_iter=4))
    assert np.all(exact > lsmr4 + 0.03), (exact, lsmr4)


def test_weighted_tv_does_not_take_the_outside_field_as_zero(axial):
    """The field is data only inside the mask: wtv recovers the spheres, RTS underestimates.

    RTS (like TKD and the unweighted TV) treats the zero padding outside the brain as a
    measured zero field; measured fractions RTS 0.87-0.91, wtv (20 iterations from RTS)
    0.99-1.00.
    """
    from bids_qsm.qsm.wtv import weighted_tv

    f = axial.local_field_ppm * axial.brain
    x0 = rts(f, axial.brain, axial.voxel_size, axial.b0_dir, threads=1)
    chi, n_iter = weighted_tv(
        f, axial.brain, axial.voxel_size, axial.b0_dir, x0=x0, lam=3e-4, mu2=0.03, threads=1
    )
    frac = _sphere_fractions(axial, chi)
    assert n_iter == 20
    assert np.all(frac > 0.96) and np.all(frac < 1.04), frac
    assert np.all(frac > _sphere_fractions(axial, x0) + 0.05)
    assert chi.dtype == np.float32 and np.all(chi[~axial.brain] == 0)

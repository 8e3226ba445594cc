"""Forward field model of the simulator against analytic solutions and rotation symmetry."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from bids_qsm.simulate.acquisition import rotation_matrix
from bids_qsm.simulate.forward import forward_field_ppm, sphere_field_ppm

N = 48


def _coords(n: int = N) -> np.ndarray:
    c = (n - 1) / 2.0
    return np.stack(np.meshgrid(*[np.arange(n) - c] * 3, indexing="ij"), -1)


def _supersampled(inside, n: int = N, ss: int = 3) -> np.ndarray:
    """Volume fraction of each voxel inside ``inside(points)`` (ss^3 subsamples)."""
    g = _coords(n)
    occ = np.zeros((n, n, n), np.float32)
    for off in np.stack(np.meshgrid(*[(np.arange(ss) + 0.5) / ss - 0.5] * 3), -1).reshape(-1, 3):
        occ += inside(g + off)
    return occ / ss**3


@pytest.mark.parametrize("b0", [(0.0, 0.0, 1.0), (0.3, -0.2, 0.93)])
def test_sphere_field_matches_analytic_inside_and_outside(b0):
    radius, chi = 7.0, 0.2
    occ = _supersampled(lambda p: np.linalg.norm(p, axis=-1) <= radius)
    field = forward_field_ppm(occ * chi, (1.0, 1.0, 1.0), b0, pad_fraction=1.0, workers=1)
    truth = sphere_field_ppm(_coords(), radius, chi, b0)
    r = np.linalg.norm(_coords(), axis=-1)
    inside, outside = r < radius - 1.5, (r > radius + 1.5) & (r < 20)
    # Inside a uniform sphere the field vanishes (no Lorentz term in the kernel); the
    # voxelised sphere and the truncated k-space leave ripples of a few % of chi.
    assert abs(field[inside].mean()) < 1e-3 * chi
    assert np.abs(field[inside]).mean() < 0.012 * chi
    assert np.abs(field[inside]).max() < 0.03 * chi
    err = np.abs(field[outside] - truth[outside])
    assert err.max() < 0.06 * np.abs(truth[outside]).max()
    assert np.sqrt(np.mean(err**2)) < 0.03 * np.sqrt(np.mean(truth[outside] ** 2)) + 1e-5
    # Along B0 the field outside is positive for paramagnetic chi (the sign convention).
    b = np.asarray(b0) / np.linalg.norm(b0)
    p = np.round((N - 1) / 2 + 10 * b).astype(int)
    assert field[tuple(p)] > 0


def test_field_is_linear_and_zero_mean_free():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 16, 16, 16)).astype(np.float32)
    fa, fb, fab = forward_field_ppm([a, b, 2 * a + b], (1.0, 1.0, 1.0), workers=1)
    np.testing.assert_allclose(fab, 2 * fa + fb, atol=1e-4)


def test_rotating_object_by_90_degrees_equals_rotating_b0():
    """chi'(i,j,k) = chi(k,j,i) with B0 along z  <=>  chi with B0 along x (exact)."""
    ell = _supersampled(
        lambda p: (
            ((p[..., 0] - 3) / 9) ** 2 + (p[..., 1] / 4) ** 2 + ((p[..., 2] + 2) / 6) ** 2 <= 1
        ),
        n=32,
        ss=2,
    )
    f_x = forward_field_ppm(ell, (1.0, 1.0, 1.0), (1.0, 0.0, 0.0), workers=1)
    f_rot = forward_field_ppm(ell.transpose(2, 1, 0), (1.0, 1.0, 1.0), (0.0, 0.0, 1.0), workers=1)
    np.testing.assert_allclose(f_rot, f_x.transpose(2, 1, 0), atol=1e-6)


def test_rotating_object_obliquely_equals_rotating_b0():
    """Object rotated by R in B0 = R b gives the field of the object in b, rotated by R.

    A smooth anisotropic Gaussian blob keeps interpolation errors negligible.
    """
    semi = np.array([6.0, 3.0, 4.5])
    rot = rotation_matrix((25.0, -15.0, 30.0))
    b = np.array([0.0, 0.0, 1.0])
    g = _coords()

    def blob(p):
        return np.exp(-((p / semi) ** 2).sum(-1)).astype(np.float32)

    f = forward_field_ppm(blob(g) * 0.1, (1.0, 1.0, 1.0), b, pad_fraction=1.0, workers=1)
    f_rot = forward_field_ppm(
        blob(g @ rot) * 0.1, (1.0, 1.0, 1.0), rot @ b, pad_fraction=1.0, workers=1
    )
    # f_rot(x) should equal f(R^T x): sample f at R^T x by cubic interpolation.
    src = g @ rot + (N - 1) / 2.0  # rows: R^T x, back to index coordinates
    f_pulled = ndimage.map_coordinates(f, src.reshape(-1, 3).T, order=3).reshape(g.shape[:3])
    region = np.linalg.norm(g, axis=-1) < 18
    err = np.sqrt(np.mean((f_rot[region] - f_pulled[region]) ** 2))
    scale = np.sqrt(np.mean(f_rot[region] ** 2))
    assert err < 0.02 * scale
    # A wrong B0 direction (not rotated) gives a clearly different field.
    f_wrong = forward_field_ppm(
        blob(g @ rot) * 0.1, (1.0, 1.0, 1.0), b, pad_fraction=1.0, workers=1
    )
    assert np.sqrt(np.mean((f_wrong[region] - f_pulled[region]) ** 2)) > 0.2 * scale

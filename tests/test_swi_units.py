"""Unit tests of the SWI building blocks with exact ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from bids_qsm.atlas.structures import StructureDef
from bids_qsm.errors import InputDataError
from bids_qsm.swi import (
    abnormal_phase_measures,
    combine_magnitude,
    gaussian_highpass,
    homodyne_highpass,
    laplacian_unwrap,
    minip,
    phase_iron_threshold,
    phase_mask,
    pooled_threshold,
    regional_phase_measures,
    slab_voxels,
    swi_image,
)
from bids_qsm.swi.highpass import hanning_lowpass_window


def test_phase_mask_values():
    phi = np.array([-4.0, -np.pi, -np.pi / 2, -np.pi / 4, 0.0, 0.5, 5.0], np.float32)
    np.testing.assert_allclose(phase_mask(phi), [0, 0, 0.5, 0.75, 1, 1, 1], atol=1e-6)
    np.testing.assert_allclose(phase_mask(phi, 4), [0, 0, 0.5**4, 0.75**4, 1, 1, 1], atol=1e-6)
    np.testing.assert_allclose(swi_image(np.full(7, 2.0), phi, 2)[2], 2 * 0.25, rtol=1e-6)


def test_combine_magnitude():
    mag = np.array([[[[3.0, 4.0]]]], np.float32)  # one voxel, two echoes
    assert combine_magnitude(mag)[0, 0, 0] == pytest.approx(5.0)  # root-sum-of-squares
    assert combine_magnitude(mag, weighting="mean")[0, 0, 0] == pytest.approx(3.5)
    # TE weighting: w = TE*M = (3, 8) -> (9 + 32) / sqrt(9 + 64)
    te_w = combine_magnitude(mag, [1.0, 2.0], "te")[0, 0, 0]
    assert te_w == pytest.approx(41 / np.sqrt(73), rel=1e-6)
    one = np.ones((2, 2, 2), np.float32)
    np.testing.assert_array_equal(combine_magnitude(one), one)
    with pytest.raises(InputDataError):
        combine_magnitude(mag, [1.0], "te")


def test_gaussian_highpass_removes_constant_and_keeps_local_bump():
    shape = (32, 32, 8)
    mask = np.zeros(shape, bool)
    mask[4:28, 6:26, 1:7] = True
    hp = gaussian_highpass(np.full(shape, 7.5, np.float32), mask, (4, 4, 0))
    assert np.abs(hp).max() < 1e-5  # normalised convolution: constants vanish even at edges
    f = np.zeros(shape, np.float32)
    f[16, 16, :] = 10.0  # a one-voxel in-plane "vein"
    hp = gaussian_highpass(f, mask, (2, 2, 0))
    # in-plane Gaussian, sigma 2: the kernel peak is 1/(2 pi sigma^2) of the voxel's value
    assert hp[16, 16, 3] == pytest.approx(10 * (1 - 1 / (2 * np.pi * 4)), rel=0.02)
    assert np.all(hp[~mask] == 0)
    # sigma 0 along z: a field varying only along z is removed entirely
    fz = np.broadcast_to(np.arange(8, dtype=np.float32), shape).copy()
    assert np.abs(gaussian_highpass(fz, mask, (4, 4, 0))).max() < 1e-5


def test_hanning_window_shape():
    h = hanning_lowpass_window((64, 32), 16)
    assert h[0, 0] == 1.0 and h.shape == (64, 32)
    assert np.count_nonzero(h[:, 0]) == 15  # |k| < 8, h(+-8) = 0
    assert h[4, 0] == pytest.approx(0.5)  # 0.5 (1 + cos(pi/2))
    assert np.count_nonzero(hanning_lowpass_window((8, 8), 64)[:, 0]) == 7  # clipped to matrix


def test_homodyne_removes_linear_phase_and_keeps_local():
    shape = (64, 64, 4)
    x = np.arange(64, dtype=np.float32)[:, None, None]
    ph = np.broadcast_to(0.05 * x, shape).astype(np.float32)  # 0.05 rad/voxel ramp
    ph = ph + 0.0
    ph[30:34, 30:34, :] += 1.0  # local positive phase
    mag = np.ones(shape, np.float32)
    hp = homodyne_highpass(mag, np.angle(np.exp(1j * ph)).astype(np.float32), 16)
    # the ramp is low-frequency: far from the bump the high-pass phase is ~0
    assert np.abs(hp[5:20, 5:20]).max() < 0.05
    assert hp[31, 31, 0] > 0.5  # local phase survives, same sign


def test_laplacian_unwrap_recovers_smooth_phase():
    idx = np.indices((40, 40, 20)).astype(np.float64)
    true = 0.04 * (idx[0] - 20) ** 2 / 2 + 0.3 * idx[1] + 0.2 * idx[2]  # many wraps
    wrapped = np.angle(np.exp(1j * true))
    un = laplacian_unwrap(wrapped, (1, 1, 1))
    err = un - true
    err -= err.mean()
    # inexact near the boundary (harmonic terms); interior recovered well below 2 pi
    assert np.abs(err[5:-5, 5:-5, 3:-3]).max() < 0.5


@pytest.mark.parametrize(("thickness", "n"), [(8.0, 4), (6.0, 3), (2.0, 1), (7.0, 4)])
def test_minip_single_dark_voxel_spreads_over_exactly_the_slab(thickness, n):
    img = np.ones((5, 6, 20), np.float32)
    img[2, 3, 10] = 0.0
    vs = np.array([1.0, 1.0, 2.0])
    assert slab_voxels(thickness, 2.0) == n
    out = minip(img, thickness, vs)
    assert out.shape == img.shape
    dark = np.argwhere(out == 0)
    assert np.all(dark[:, :2] == [2, 3])  # never spreads in-plane
    # slices k whose window k - n//2 .. k - n//2 + n - 1 contains slice 10
    expected = list(range(10 - (n - 1) + n // 2, 10 + n // 2 + 1))
    assert sorted(dark[:, 2].tolist()) == expected and len(expected) == n


def test_minip_slabs_mode_and_values():
    rng = np.random.default_rng(1)
    img = rng.random((3, 4, 10)).astype(np.float32)
    out = minip(img, 6.0, np.array([1.0, 1.0, 2.0]), mode="slabs")  # 3 slices per slab
    assert out.shape == (3, 4, 4)
    np.testing.assert_array_equal(out[..., 1], img[..., 3:6].min(axis=-1))
    np.testing.assert_array_equal(out[..., 3], img[..., 9])
    out0 = minip(img, 2.0, np.array([2.0, 1.0, 1.0]), axis=0)  # slab along axis 0 is 1 slice
    np.testing.assert_array_equal(out0, img)


def _region_phantom() -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((10, 10, 10), np.int16)
    labels[:5, :4] = 79  # left pallidum (200 voxels)
    labels[5:, :4] = 80  # right pallidum (200 voxels)
    labels[:, 6:] = 7  # a lesion label
    pi = np.zeros(labels.shape, np.float32)
    pi[labels == 79] = 0.05
    pi[labels == 80] = -0.02
    # 12 known abnormal voxels on the left: 6 at 0.3, 6 at 0.5
    left = np.argwhere(labels == 79)
    for i, (a, b, c) in enumerate(left[:12]):
        pi[a, b, c] = 0.3 if i < 6 else 0.5
    pi[labels == 7] = 0.2
    return pi, labels


def test_regional_measures_exact():
    pi, labels = _region_phantom()
    regions = [
        StructureDef("globus_pallidus", "L", (79,)),
        StructureDef("globus_pallidus", "R", (80,)),
    ]
    df = regional_phase_measures(pi, labels, regions, 0.1, voxel_volume_mm3=0.5)
    left = df.set_index("region").loc["globus_pallidus_L"]
    assert left["nvox"] == 200 and left["volume_mm3"] == 100.0
    assert left["apt_nvox"] == 12 and left["apt_volume_mm3"] == pytest.approx(6.0)
    assert left["mpapt_rad"] == pytest.approx(0.4)
    assert left["apt_fraction"] == pytest.approx(12 / 200)
    mean = (188 * 0.05 + 6 * 0.3 + 6 * 0.5) / 200
    assert left["phase_iron_mean_rad"] == pytest.approx(mean, rel=1e-6)
    right = df.set_index("region").loc["globus_pallidus_R"]
    assert right["apt_nvox"] == 0 and right["apt_volume_mm3"] == 0 and np.isnan(right["mpapt_rad"])
    assert list(df["hemisphere"]) == ["L", "R"]
    # a threshold between 0.3 and 0.5 keeps only the 6 strongest voxels
    per = {"globus_pallidus_L": 0.35, "globus_pallidus": 1.0}
    df2 = regional_phase_measures(pi, labels, regions, per, 0.5).set_index("region")
    assert df2.loc["globus_pallidus_L", "apt_nvox"] == 6
    assert df2.loc["globus_pallidus_L", "mpapt_rad"] == pytest.approx(0.5)
    assert df2.loc["globus_pallidus_R", "apt_threshold_rad"] == 1.0  # falls back to structure


def test_regional_measures_mapping_mask_and_errors():
    pi, labels = _region_phantom()
    mask = np.ones(labels.shape, bool)
    mask[:, 6:8] = False  # half of the lesion outside the brain mask
    df = regional_phase_measures(pi, labels, {"T2lesion": [7]}, 0.15, 1.0, mask=mask)
    row = df.iloc[0]
    assert row["region"] == "T2lesion" and row["hemisphere"] == ""
    assert row["nvox"] == 200 and row["apt_nvox"] == 200
    assert row["mpapt_rad"] == pytest.approx(0.2)
    with pytest.raises(InputDataError):
        regional_phase_measures(pi, labels, {"T2lesion": [7]}, {"other": 0.1}, 1.0)
    with pytest.raises(InputDataError):
        regional_phase_measures(pi[:5], labels, {"T2lesion": [7]}, 0.1, 1.0)


def test_abnormal_measures_strict_threshold_and_nan():
    v = np.array([0.1, 0.2, 0.2, np.nan, 0.4])
    out = abnormal_phase_measures(v, 0.2, 2.0)
    assert out["apt_nvox"] == 1 and out["apt_volume_mm3"] == 2.0 and out["mpapt_rad"] == 0.4
    assert out["apt_fraction"] == pytest.approx(0.25)


def test_control_thresholds_pooled_equals_voxelwise():
    rng = np.random.default_rng(3)
    controls = [rng.normal(0.05 + 0.01 * i, 0.02, size=50 + 10 * i) for i in range(5)]
    pooled = np.concatenate(controls)
    expected = pooled.mean() + 2 * pooled.std()
    assert phase_iron_threshold(controls, 2.0) == pytest.approx(expected, rel=1e-12)
    assert phase_iron_threshold(pooled, 2.0) == pytest.approx(expected, rel=1e-12)
    n = [c.size for c in controls]
    m = [c.mean() for c in controls]
    s = [c.std() for c in controls]
    assert pooled_threshold(n, m, s, 2.0) == pytest.approx(expected, rel=1e-9)
    # default: DEFAULT_N_SD (0) SDs above the control mean, the measured choice
    half = pooled.mean()
    assert phase_iron_threshold(controls) == pytest.approx(half, rel=1e-12)
    assert pooled_threshold(n, m, s) == pytest.approx(half, rel=1e-9)
    # Buffalo convention: filtered phase (iron negative) mean - 2 SD, sign-flipped
    assert -((-pooled).mean() - 2 * (-pooled).std()) == pytest.approx(expected)
    with pytest.raises(InputDataError):
        phase_iron_threshold(np.array([1.0]))


def test_homodyne_slice_axis_is_consistent_under_transpose():
    rng = np.random.default_rng(5)
    mag = rng.random((16, 20, 6)).astype(np.float32) + 0.5
    ph = (rng.random((16, 20, 6)).astype(np.float32) - 0.5) * 6
    a = homodyne_highpass(mag, ph, 8, slice_axis=2)
    b = homodyne_highpass(mag.transpose(2, 0, 1), ph.transpose(2, 0, 1), 8, slice_axis=0)
    np.testing.assert_allclose(b.transpose(1, 2, 0), a, atol=1e-5)

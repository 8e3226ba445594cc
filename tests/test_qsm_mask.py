"""Brain mask on a whole-head magnitude (brain, dark skull, bright scalp) without FSL."""

from __future__ import annotations

import numpy as np

from bids_qsm.qsm.mask import brain_mask, erode_mask, largest_component, refine_mask


def _head(shape=(72, 84, 68), seed=0):
    g = [np.arange(n, dtype=np.float32) - (n - 1) / 2 for n in shape]
    x, y, z = np.meshgrid(*g, indexing="ij")

    def ell(a, b, c):
        return (x / a) ** 2 + (y / b) ** 2 + (z / c) ** 2

    brain = ell(25, 31, 23) <= 1
    skull = (ell(30, 36, 28) <= 1) & ~brain  # 5 mm dark gap
    scalp = (ell(33, 39, 31) <= 1) & ~brain & ~skull
    rng = np.random.default_rng(seed)
    mag = np.where(brain, 1.0, 0.0) + np.where(scalp, 1.2, 0.0) + np.where(skull, 0.05, 0.0)
    mag[brain & (ell(6, 6, 6) <= 1)] = 0.3  # a dark (iron-rich) nucleus inside
    noise = rng.normal(0, 0.03, (2, *shape))
    mag = np.hypot(mag + noise[0], noise[1]).astype(np.float32)
    return mag, brain


def test_brain_mask_excludes_scalp_and_fills_holes():
    mag, brain = _head()
    m = brain_mask(mag, np.ones(3))
    dice = 2 * (m & brain).sum() / (m.sum() + brain.sum())
    assert dice > 0.95
    assert (m & ~brain).sum() < 0.03 * brain.sum()  # no scalp
    assert m[36, 42, 34]  # the dark nucleus is inside


def test_brain_mask_accepts_echoes_and_anisotropic_voxels():
    mag, brain = _head()
    mag4 = np.stack([mag, 0.7 * mag], axis=-1)
    m = brain_mask(mag4[:, :, ::2], np.array([1.0, 1.0, 2.0]))
    ref = brain[:, :, ::2]
    assert 2 * (m & ref).sum() / (m.sum() + ref.sum()) > 0.93


def test_refine_mask_drops_high_residual_voxels():
    mag, brain = _head()
    residual = np.zeros(brain.shape, np.float32)
    edge = brain & ~erode_mask(brain, np.ones(3), 3.0)
    residual[edge & (np.indices(brain.shape)[2] < 20)] = 1.0  # bad phase at the bottom edge
    residual[36, 42, 34] = 1.0  # one isolated bad voxel inside: filled back
    out = refine_mask(brain, residual, 0.3)
    assert not (out & (residual > 0.3) & edge).any()
    assert out[36, 42, 34]
    assert out.sum() < brain.sum()


def test_largest_component():
    a = np.zeros((10, 10, 10), bool)
    a[1:4, 1:4, 1:4] = True
    a[6:9, 6:9, 6:8] = True
    assert largest_component(a).sum() == 27

"""Tissue-fraction structure volumes (bids_qsm.stats.volumetry) on a partial-volume phantom.

A 1 mm phantom (white matter, a CSF slab, a gray-matter sphere that resembles the structure,
and a spherical structure touching both) is block-averaged to 3 mm, so the structure's
boundary voxels are mixtures, and noise is added. The label is the unatrophied structure
(as a registration that does not follow the atrophy gives): the volume must follow a
sub-voxel volume loss that the label cannot show.
"""

from __future__ import annotations

import numpy as np
import pytest

from bids_qsm.stats.volumetry import reference_classes, tissue_volumes

#: (magnitude a.u., chi ppm, R2* Hz) of the phantom's classes
WM = (700.0, -0.03, 21.0)
CSF = (1000.0, 0.0, 3.0)
GM = (820.0, 0.015, 17.0)
STRUCT = (790.0, 0.04, 27.0)
NOISE = np.array([5.0, 0.008, 0.7])
F, N = 3, 30  # block factor, coarse grid size (90 mm)


def _phantom(radius_mm: float, seed: int = 0, shift_vox: float = 0.0):
    """Coarse (3 mm) features, the structure's label (unatrophied, radius 12 mm) and the
    true volume (mm^3) of the structure of ``radius_mm`` on the 1 mm grid."""
    n = N * F
    x, y, z = np.meshgrid(*(np.arange(n) + 0.5,) * 3, indexing="ij")
    c = n / 2
    struct = (x - c) ** 2 + (y - c) ** 2 + (z - c) ** 2 <= radius_mm**2
    csf = (x > c + 11.0) & (x < c + 20.0) & (np.abs(y - c) < 15) & (np.abs(z - c) < 15)
    gm = (x - c + 16.0) ** 2 + (y - c) ** 2 + (z - c) ** 2 <= 6.0**2
    feats = np.empty((n, n, n, 3))
    feats[:] = WM
    feats[gm], feats[csf], feats[struct] = GM, CSF, STRUCT
    coarse = feats.reshape(N, F, N, F, N, F, 3).mean(axis=(1, 3, 5))
    rng = np.random.default_rng(seed)
    coarse += rng.normal(0.0, 1.0, coarse.shape) * NOISE
    cx = (np.arange(N) + 0.5) * F
    X, Y, Z = np.meshgrid(cx, cx, cx, indexing="ij")
    label = (X - c - shift_vox * F) ** 2 + (Y - c) ** 2 + (Z - c) ** 2 <= 12.0**2
    return coarse, label.astype(np.int16), float(struct.sum())


def _volume(coarse: np.ndarray, label: np.ndarray) -> float:
    mask = np.ones(label.shape, bool)
    vols = tissue_volumes(
        coarse[..., 0], coarse[..., 1], coarse[..., 2], label, {("s", "L"): [1]}, mask, 27.0
    )
    return vols[("s", "L")]


def test_reference_classes_found_in_the_data() -> None:
    coarse, _, _ = _phantom(12.0)
    ref = reference_classes(coarse, np.ones(coarse.shape[:3], bool))
    assert (np.abs(ref.wm - np.array(WM)) <= [3.0, 0.003, 0.3]).all(), ref.wm
    assert ref.csf is not None
    assert ref.csf[0] > 900.0 and ref.csf[2] < 6.0
    np.testing.assert_allclose(ref.noise_sd, NOISE, rtol=0.25)


@pytest.mark.parametrize(("radius", "shift"), [(12.0, 0.0), (11.5, 0.0), (11.0, 0.0), (12.0, 0.5)])
def test_volume_follows_sub_voxel_atrophy(radius: float, shift: float) -> None:
    coarse, label, true = _phantom(radius, shift_vox=shift)
    vol = _volume(coarse, label)
    label_vol = float(label.sum()) * 27.0
    assert vol == pytest.approx(true, rel=0.05), (vol, true, label_vol)
    if radius < 12.0:  # the label keeps the unatrophied size; the tissue volume does not
        assert abs(label_vol / true - 1.0) > 0.10

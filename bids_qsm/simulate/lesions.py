"""White matter lesions: ellipsoids in (mostly periventricular) white matter.

Every lesion is a T2 lesion. A fraction are T1 "black holes" (their core, more than 1 mm
inside the lesion edge, is the T1 lesion) and a fraction are paramagnetic rim lesions (PRL):
a thin (about 1.5 mm) shell of positive susceptibility at the lesion edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bids_qsm.simulate.anatomy import HeadModel, cropped_distance_mm

RIM_THICKNESS_MM = 1.5


@dataclass(frozen=True)
class LesionSet:
    """Lesions on the 1 mm phantom grid: id maps (0 = none, k = lesion k) and flags."""

    t2_ids: np.ndarray  # int16, whole lesions
    t1_ids: np.ndarray  # int16, T1-hypointense cores
    rim: np.ndarray  # bool, PRL rims
    is_prl: tuple[bool, ...]
    is_t1: tuple[bool, ...]


def place_lesions(
    hm: HeadModel,
    rng: np.random.Generator,
    n_lesions: int,
    *,
    prl_fraction: float = 0.3,
    t1_fraction: float = 0.4,
    forbidden: np.ndarray | None = None,
) -> LesionSet:
    """Place ``n_lesions`` non-overlapping ellipsoidal lesions (radii 2.5-6 mm) in white matter.

    Two thirds are periventricular (centre within 12 mm of a ventricle). ``forbidden`` marks
    voxels lesions must avoid (deep gray matter, veins) in addition to non-WM tissue.
    """
    shape = hm.shape
    wm = hm.brain_mask & (hm.frac_wm > 0.8)
    if forbidden is not None:
        wm &= ~forbidden
    wm_core = ndimage.binary_erosion(wm, iterations=3)
    near_vent = cropped_distance_mm(hm.ventricles, 12.0) <= 12.0
    pools = [np.argwhere(wm_core & near_vent), np.argwhere(wm_core & ~near_vent)]
    t2 = np.zeros(shape, np.int16)
    t1 = np.zeros(shape, np.int16)
    rim = np.zeros(shape, bool)
    is_prl: list[bool] = []
    is_t1: list[bool] = []
    attempts = 0
    while len(is_prl) < n_lesions and attempts < 50 * max(n_lesions, 1):
        attempts += 1
        pool = pools[0] if rng.random() < 2 / 3 or pools[1].size == 0 else pools[1]
        if pool.size == 0:
            break
        c = pool[rng.integers(len(pool))]
        semi = rng.uniform(2.5, 6.0, 3)
        r = int(np.ceil(semi.max())) + 1
        lo = np.maximum(c - r, 0)
        hi = np.minimum(c + r + 1, shape)
        sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        g = np.ogrid[sl]
        ell = sum(((gi - ci) / si) ** 2 for gi, ci, si in zip(g, c, semi, strict=True)) <= 1.0
        ell &= hm.brain_mask[sl] & (hm.frac_csf[sl] < 0.5)
        if forbidden is not None:
            ell &= ~forbidden[sl]
        grown = ndimage.binary_dilation(ell, iterations=2)
        if ell.sum() < 20 or np.any(t2[sl][grown] > 0):
            continue
        k = len(is_prl) + 1
        t2[sl][ell] = k
        depth = ndimage.distance_transform_edt(np.pad(ell, 1))[1:-1, 1:-1, 1:-1]
        prl = bool(rng.random() < prl_fraction)
        black = bool(rng.random() < t1_fraction)
        if prl:
            rim[sl] |= ell & (depth <= RIM_THICKNESS_MM)
        if black:
            t1[sl][ell & (depth > 1.0)] = k
        is_prl.append(prl)
        is_t1.append(black)
    return LesionSet(t2, t1, rim, tuple(is_prl), tuple(is_t1))

"""Tissue property maps of one simulated head on the 1 mm phantom grid.

Susceptibility (ppm vs CSF), R2* (Hz), proton density and T1w intensity from the head model's
tissue fractions, the reported structures (with the subject's offsets, disease shifts and a
smooth within-structure variation), white matter lesions and the non-brain regions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bids_qsm.atlas.structures import aal3_structures
from bids_qsm.simulate.anatomy import HeadModel, Region, cropped_distance_mm
from bids_qsm.simulate.atrophy import erode_structures
from bids_qsm.simulate.lesions import LesionSet
from bids_qsm.simulate.tissues import R2STAR_PER_CHI_HZ_PER_PPM, STRUCTURE_TISSUES, TISSUES

#: Relative amplitude (plus an absolute 3 ppb) of the smooth variation inside structures.
_WITHIN_STRUCTURE_VARIATION = 0.15

_REGION_TISSUE = {
    Region.AIR: "air",
    Region.EXTRA_CSF: "csf",
    Region.SKULL: "skull",
    Region.SCALP: "scalp",
    Region.NECK: "neck",
    Region.SINUS: "air",
    Region.VEIN: "vein",
}

# T1w intensity (fraction of white matter) of non-brain regions and lesions.
_T1W_REGION = {
    Region.AIR: 0.0,
    Region.EXTRA_CSF: 0.12,
    Region.SKULL: 0.06,
    Region.SCALP: 0.85,
    Region.NECK: 0.55,
    Region.SINUS: 0.0,
    Region.VEIN: 0.35,
}

#: T1w intensity of CSF (fraction of white matter).
_T1W_CSF = 3300.0 / 7400.0


@dataclass
class TissueMaps:
    """Property maps on the 1 mm phantom grid (float32) with the labels and brain mask."""

    chi: np.ndarray  # ppm vs CSF
    r2star: np.ndarray  # Hz
    m0: np.ndarray  # proton density (a.u.)
    t1w: np.ndarray  # fraction of white matter
    labels: np.ndarray
    brain: np.ndarray


def _fractions_after_atrophy(
    hm: HeadModel,
    atrophy: float,
    structure_loss: dict[str, float] | None,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CSF, GM, WM fractions, labels and T1w after ventricular growth (``atrophy`` mm) and
    the structures' volume loss (``structure_loss`` fractions)."""
    f_csf, f_gm, f_wm = hm.frac_csf.copy(), hm.frac_gm.copy(), hm.frac_wm.copy()
    labels = hm.labels.copy()
    t1 = hm.template_t1 / np.float32(7400.0)
    if atrophy > 0:
        grow = cropped_distance_mm(hm.ventricles, atrophy) <= atrophy
        # the ventricles grow into white matter; the reported structures lose volume only
        # through ``structure_loss`` (controlled, documented fractions)
        reported = np.isin(labels, [v for s in aal3_structures() for v in s.labels])
        eaten = grow & hm.brain_mask & ~hm.ventricles & ~reported
        f_csf[eaten], f_gm[eaten], f_wm[eaten] = 1.0, 0.0, 0.0
        labels[eaten] = 0
        t1[eaten] = _T1W_CSF
    if structure_loss:
        to_csf, to_wm = erode_structures(labels, hm.labels, hm.ventricles, structure_loss, rng)
        for m, (c, g, w) in ((to_csf, (1.0, 0.0, 0.0)), (to_wm, (0.0, 0.0, 1.0))):
            f_csf[m], f_gm[m], f_wm[m] = c, g, w
            labels[m] = 0
        t1[to_csf], t1[to_wm] = _T1W_CSF, 1.0
    return f_csf, f_gm, f_wm, labels, t1


def _fill_structures(
    chi: np.ndarray,
    r2: np.ndarray,
    m0: np.ndarray,
    labels: np.ndarray,
    f_csf: np.ndarray,
    rng: np.random.Generator,
    value_ppm: dict[tuple[str, str], float],
) -> None:
    """Reported structures (in place): their tissue with ``value_ppm`` mean chi (ppm) per
    (name, hemisphere), a smooth random variation and R2* following chi."""
    csf = TISSUES["csf"]
    step = 2
    coarse = tuple(int(np.ceil(n / step)) + 1 for n in labels.shape)
    variation = ndimage.gaussian_filter(rng.standard_normal(coarse, dtype=np.float32), 1.25)
    variation /= np.float32(variation.std() + 1e-12)
    lut = np.zeros(int(labels.max()) + 1, np.int16)
    structs = aal3_structures()
    for k, s in enumerate(structs, start=1):  # pulvinar comes after thalamus and overrides
        lut[[v for v in s.labels if v < lut.size]] = k
    struct_idx = lut[labels]
    slices = ndimage.find_objects(struct_idx, len(structs))
    for k, (s, sl) in enumerate(zip(structs, slices, strict=True), 1):
        if sl is None:
            continue
        m = struct_idx[sl] == k
        tis = STRUCTURE_TISSUES[s.name]
        value = value_ppm[(s.name, s.hemisphere)]
        amp = _WITHIN_STRUCTURE_VARIATION * abs(tis.chi_ppm) + 0.003
        idx = np.argwhere(m) + np.array([b.start for b in sl])
        v = ndimage.map_coordinates(variation, idx.T / step, order=1)
        fc = f_csf[sl][m]
        chi[sl][m] = (1.0 - fc) * (value + amp * (v - v.mean()))
        r2_t = tis.r2star_hz + R2STAR_PER_CHI_HZ_PER_PPM * (value - tis.chi_ppm)
        r2[sl][m] = (1.0 - fc) * r2_t + fc * csf.r2star_hz
        m0[sl][m] = (1.0 - fc) * tis.m0 + fc * csf.m0


def _fill_lesions_and_head(maps: TissueMaps, hm: HeadModel, lesions: LesionSet | None) -> None:
    """White matter lesions (and their T1w) and the non-brain regions, in place."""
    chi, r2, m0, t1 = maps.chi, maps.r2star, maps.m0, maps.t1w
    if lesions is not None:
        les = lesions.t2_ids > 0
        for name, mask in (("lesion", les & ~lesions.rim), ("lesion_rim", lesions.rim)):
            tis = TISSUES[name]
            chi[mask], r2[mask], m0[mask] = tis.chi_ppm, tis.r2star_hz, tis.m0
        t1[les] = 0.7
        t1[lesions.t1_ids > 0] = 0.35
    outside = ~hm.brain_mask
    for reg, name in _REGION_TISSUE.items():
        m = hm.region == reg
        if reg != Region.VEIN:
            m &= outside
        tis = TISSUES[name]
        chi[m], r2[m], m0[m] = tis.chi_ppm, tis.r2star_hz, tis.m0
        t1[m] = _T1W_REGION[reg]


def tissue_maps(
    hm: HeadModel,
    rng: np.random.Generator,
    *,
    b0_tesla: float,
    shifts: dict[str, float],
    offsets: dict[tuple[str, str], float],
    atrophy: float,
    lesions: LesionSet | None,
    structure_loss: dict[str, float] | None = None,
    atrophy_rng: np.random.Generator | None = None,
) -> TissueMaps:
    """Susceptibility (ppm vs CSF), R2* (Hz), proton density and T1w maps on the 1 mm grid.

    ``shifts`` (ppm per structure name) and ``offsets`` (ppm per (name, hemisphere)) move
    the structures' mean chi; ``atrophy`` (mm) grows the ventricles; ``structure_loss``
    (volume fractions) erodes the structures (random draws from ``atrophy_rng``).
    """
    f_csf, f_gm, f_wm, labels, t1 = _fractions_after_atrophy(
        hm, atrophy, structure_loss, atrophy_rng or rng
    )
    gm, wm, csf = TISSUES["gm"], TISSUES["wm"], TISSUES["csf"]
    d_gm, d_wm = rng.normal(0.0, 0.001, 2)
    chi = f_gm * np.float32(gm.chi_ppm + d_gm) + f_wm * np.float32(wm.chi_ppm + d_wm)
    r2 = f_csf * csf.r2star_hz + f_gm * gm.r2star_hz + f_wm * wm.r2star_hz
    m0 = f_csf * csf.m0 + f_gm * gm.m0 + f_wm * wm.m0
    # Slow white matter variation (+-2 ppb, ~6 mm correlation), sampled at WM voxels only.
    wm_idx = np.nonzero(f_wm > 0)
    wm_field = ndimage.gaussian_filter(
        rng.standard_normal(tuple(n // 3 + 2 for n in hm.shape), dtype=np.float32), 2.0
    )
    wm_field /= np.float32(wm_field.std() + 1e-12)
    wm_var = ndimage.map_coordinates(wm_field, np.stack(wm_idx) / np.float32(3.0), order=1)
    chi[wm_idx] += np.float32(0.002) * wm_var * f_wm[wm_idx]
    value_ppm = {
        (s.name, s.hemisphere): STRUCTURE_TISSUES[s.name].chi_ppm
        + offsets.get((s.name, s.hemisphere), 0.0)
        + shifts.get(s.name, 0.0)
        for s in aal3_structures()
    }
    _fill_structures(chi, r2, m0, labels, f_csf, rng, value_ppm)
    maps = TissueMaps(chi, r2, m0, t1, labels, hm.brain_mask)
    _fill_lesions_and_head(maps, hm, lesions)
    maps.r2star = maps.r2star * np.float32(b0_tesla / 3.0)
    for name in ("chi", "r2star", "m0", "t1w"):
        setattr(maps, name, getattr(maps, name).astype(np.float32))
    return maps

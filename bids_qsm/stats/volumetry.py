"""Structure volumes from the subject's own contrasts (partial-volume tissue fractions).

The registered atlas labels keep roughly the template's size, so their volume does not follow
a structure's atrophy when it is thinner than a voxel (docs/atlas.md). As atlas-ROI
volumetry does (CAT12 sums the subject's gray-matter fraction inside a registered ROI), the
volume here is the sum, over the registered label and a one-voxel ring around it, of each
voxel's fraction of the structure's tissue, estimated from the subject's images:

1. Features per voxel: GRE magnitude (arbitrary units), susceptibility (ppm) and R2* (Hz),
   each divided by its noise SD (robust SD over white matter).
2. Class means from the subject's data (no fixed tissue values): white matter = the darkest
   tissue mode of the magnitude (lowest histogram peak among voxels with tissue R2*);
   CSF = the voxels whose R2* is below ``csf_r2star_ratio`` of white matter's (CSF's T2* is
   long); the structure = the median of its label's deepest ``deep_fraction`` voxels.
3. Each voxel of the label and its ring (ring voxels of other reported structures excluded)
   is unmixed by least squares into structure, white matter and CSF fractions.
4. Neighbouring gray matter resembles the structure in these contrasts, so the structure
   fraction is taken relative to the local background: ``b`` = median structure fraction of
   a second ring outside the first (the surroundings' apparent fraction), and each voxel
   contributes ``clip((f - b) / (p - b), 0, 1)`` with ``p`` the fraction of the deep voxels.

The volume (mm^3) is the sum of the contributions times the voxel volume.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: CSF: R2* below this fraction of white matter's (CSF R2* is a few 1/s, tissue 15-30 1/s).
CSF_R2STAR_RATIO = 0.35
#: Tissue (for the white matter mode): R2* above this fraction of the brain median.
TISSUE_R2STAR_RATIO = 0.5
#: White matter voxels: magnitude within this relative distance of the white matter mode.
WM_MODE_WIDTH = 0.02


@dataclass(frozen=True)
class ReferenceClasses:
    """Subject-specific white matter and CSF class means and the feature noise SDs.

    Features are (magnitude a.u., chi ppm, R2* Hz); ``csf`` is None without CSF voxels.
    """

    wm: np.ndarray
    csf: np.ndarray | None
    noise_sd: np.ndarray


def _lowest_mode(values: np.ndarray) -> float:
    """The lowest histogram peak holding at least 30 % of the highest peak's count."""
    lo, hi = np.percentile(values, [1, 99])
    counts, edges = np.histogram(values, bins=np.linspace(lo, hi, 81))
    h = ndimage.gaussian_filter1d(counts.astype(float), 1.5)
    peaks = [i for i in range(1, len(h) - 1) if h[i] >= h[i - 1] and h[i] >= h[i + 1]]
    peaks = [i for i in peaks if h[i] >= 0.3 * h.max()] or [int(np.argmax(h))]
    return float(0.5 * (edges[peaks[0]] + edges[peaks[0] + 1]))


def reference_classes(features: np.ndarray, mask: np.ndarray) -> ReferenceClasses:
    """White matter and CSF means and the noise SDs of ``features`` (X, Y, Z, 3) in ``mask``.

    White matter is the darkest tissue on GRE magnitude (lowest proton density), found as the
    lowest mode of the magnitude among voxels with tissue R2*; CSF has the lowest R2*.
    """
    mag, r2 = features[..., 0], features[..., 2]
    tissue = mask & (r2 > TISSUE_R2STAR_RATIO * np.median(r2[mask]))
    mode = _lowest_mode(mag[tissue])
    wm_sel = tissue & (np.abs(mag - mode) < WM_MODE_WIDTH * mode)
    wm = np.median(features[wm_sel], axis=0)
    sd = 1.4826 * np.median(np.abs(features[wm_sel] - wm), axis=0)
    sd = np.maximum(sd, 1e-6 * np.maximum(np.abs(wm), 1.0))
    csf_sel = mask & (r2 < CSF_R2STAR_RATIO * wm[2])
    csf = np.median(features[csf_sel], axis=0) if csf_sel.sum() >= 20 else None
    return ReferenceClasses(wm, csf, sd)


def structure_fraction_volume(
    features: np.ndarray,
    label: np.ndarray,
    others: np.ndarray,
    mask: np.ndarray,
    ref: ReferenceClasses,
    voxel_volume_mm3: float,
    deep_fraction: float = 0.2,
) -> float:
    """Volume (mm^3) of one structure from its tissue fractions around its registered label.

    ``label``: the structure's registered label (bool); ``others``: voxels of the other
    reported structures (excluded from the rings); ``mask``: where the features are valid.
    Returns NaN for an empty label.
    """
    label = label & mask
    n = int(label.sum())
    if n == 0:
        return float("nan")
    idx = np.argwhere(label)
    lo, hi = np.maximum(idx.min(0) - 3, 0), np.minimum(idx.max(0) + 4, label.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    features, label, others, mask = features[box], label[box], others[box], mask[box]
    depth = ndimage.distance_transform_edt(label)[label]
    deep = np.argsort(-depth, kind="stable")[: max(5, int(deep_fraction * n))]
    mu_s = np.median(features[label][deep], axis=0)
    ends = [mu_s - ref.wm] + ([ref.csf - ref.wm] if ref.csf is not None else [])
    design = np.stack(ends, axis=1) / ref.noise_sd[:, None]

    def frac(sel: np.ndarray) -> np.ndarray:
        z = (features[sel] - ref.wm) / ref.noise_sd
        return np.linalg.lstsq(design, z.T, rcond=None)[0][0]

    free = mask & ~others
    ring1 = ndimage.binary_dilation(label) & free
    region = ring1 | label
    ring2 = ndimage.binary_dilation(region) & free & ~region
    b = float(np.median(frac(ring2))) if ring2.any() else 0.0
    p = float(np.median(frac(label)[deep]))
    if p - b <= 1e-6:
        return float("nan")
    contrib = np.clip((frac(region) - b) / (p - b), 0.0, 1.0)
    return float(contrib.sum()) * voxel_volume_mm3


def tissue_volumes(
    magnitude: np.ndarray,
    chi_ppm: np.ndarray,
    r2star_hz: np.ndarray,
    labels: np.ndarray,
    groups: Mapping[tuple[str, str], Sequence[int]],
    mask: np.ndarray,
    voxel_volume_mm3: float,
) -> dict[tuple[str, str], float]:
    """Structure volumes (mm^3) from tissue fractions, one per ``groups`` key.

    ``magnitude`` (GRE magnitude, a.u.), ``chi_ppm`` and ``r2star_hz`` on the label grid;
    ``groups`` maps (structure, hemisphere) to label values (a bilateral group unites both
    sides); ``mask``: voxels where the three maps are valid (e.g. the QSM mask).
    """
    feats = np.stack([magnitude, chi_ppm, r2star_hz], axis=-1).astype(np.float64)
    valid = np.asarray(mask, bool) & np.isfinite(feats).all(axis=-1)
    feats[~valid] = 0.0
    ref = reference_classes(feats, valid)
    all_labels = sorted({v for vals in groups.values() for v in vals})
    reported = np.isin(labels, all_labels)
    out: dict[tuple[str, str], float] = {}
    for key, vals in groups.items():
        lab = np.isin(labels, sorted(vals))
        out[key] = structure_fraction_volume(
            feats, lab, reported & ~lab, valid, ref, voxel_volume_mm3
        )
    return out

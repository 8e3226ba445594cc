"""Structure volumes from a partial-volume (mixel) model at the registered label's boundary.

EXPERIMENTAL, not used by the regional tables: on the simulated atrophy cohort it is not
within 10 % of the true volume on every preset (docs/atlas.md, "Structure volumes and
atrophy"); ``benchmarks/bench_atrophy_volumes.py --pve`` measures it.

A registered atlas label follows only part of a structure's atrophy (its boundary moves with
the template deformation, not with the subject's contrast). This module re-estimates a
structure's volume from the subject's own maps (susceptibility, R2*, echo-combined
magnitude), guided by the registered labels:

* voxels deeper than ``band_mm`` inside the label count fully, voxels farther than
  ``band_mm`` outside it not at all;
* each voxel of the band in between is a mixture of two pure classes among: the structure,
  white matter, CSF (near CSF only), the nearest other atlas label (its structure) and the
  unlabelled tissue around the structure (a shell beyond the band: in general a
  partial-volume mix of gray and white matter, not pure white matter). Per pair the
  fraction is the noise-weighted least-squares projection onto the line between the two
  local class means; pairs with the structure have a Gaussian prior (precision
  ``prior_weight``) toward the registered label blurred by ``prior_sigma_vox``, pairs
  without it give fraction 0 at the prior's cost. The pair of smallest -2 log posterior
  (Mahalanobis residual + log det of the noise covariance + prior term) wins;
* volume = deep voxels + sum of the band's fractions (bounded to [-``fraction_bound``,
  1 + ``fraction_bound``]: clipping to [0, 1] biases the pure voxels of the band), times
  the voxel volume.

Class means are local (Gaussian-weighted means of each class's confident voxels, winsorised
at 3 robust SD, shrunk toward the class median where the class has few voxels nearby);
noise covariances are the covariances of the confident voxels around their local means.
Pure numpy / scipy.ndimage; arrays on the GRE grid, distances in mm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi

from bids_qsm.qsm.grid import bounding_box


@dataclass(frozen=True)
class PVEParams:
    """Parameters of :func:`structure_volumes` (mm unless stated)."""

    band_mm: float = 5.0  # half-width of the modelled band around the label boundary
    core_mm: float = 3.0  # confident voxels: deeper than this inside their class
    sigma_mm: float = 5.0  # Gaussian width of the structure's local means
    tissue_sigma_mm: float = 15.0  # Gaussian width of the white matter / CSF local means
    prior_weight: float = 4.0  # precision of the prior fraction (the blurred label)
    fraction_bound: float = 0.5  # fractions bounded to [-b, 1 + b]
    ring_mm: float = 4.0  # width of the shell beyond the band: the surrounding tissue class
    prior_sigma_vox: float = 0.75  # voxels: partial-volume blur of the prior label
    gray_matter: bool = False  # the cortical labels' gray matter as a neighbour class
    min_voxels: int = 8  # fewer confident voxels: fall back to the class's outer layer

    def as_dict(self) -> dict[str, float]:
        """Parameters for a JSON sidecar."""
        return {k: float(v) for k, v in asdict(self).items()}


@dataclass
class _Class:
    """A pure class: its confident voxels, robust median (C,) and noise covariance (C, C)."""

    mask: np.ndarray
    median: np.ndarray
    cov: np.ndarray


def _robust_center(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median (C,) and 1.4826 MAD (C,) of samples ``x`` (C, N) ignoring NaN."""
    med = np.nanmedian(x, axis=1)
    mad = 1.4826 * np.nanmedian(np.abs(x - med[:, None]), axis=1)
    return med, np.maximum(mad, 1e-6 * (np.abs(med) + 1.0))


def _winsor(x: np.ndarray, med: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """``x`` (C, N) clipped to median +- 3 robust SD per channel."""
    return np.clip(x, (med - 3 * sd)[:, None], (med + 3 * sd)[:, None])


def local_means(
    channels: np.ndarray,
    sel: np.ndarray,
    median: np.ndarray,
    mad: np.ndarray,
    sigma_vox: np.ndarray,
) -> np.ndarray:
    """Gaussian-weighted local means (C, *shape) of the voxels ``sel`` of ``channels``.

    Values are winsorised at 3 robust SD (NaN = undefined, left out); the local weight is
    augmented by a small constant (5 % of one voxel at the kernel centre) of the class
    median, so a voxel far from any confident voxel gets the median.
    """
    w0 = 0.05 / float(np.prod(np.sqrt(2 * np.pi) * np.maximum(sigma_vox, 1e-3)))
    out = np.empty(channels.shape, np.float64)
    for c in range(channels.shape[0]):
        ok = sel & np.isfinite(channels[c])
        w = ndi.gaussian_filter(ok.astype(np.float64), sigma_vox, mode="constant")
        lo, hi = median[c] - 3 * mad[c], median[c] + 3 * mad[c]
        v = np.where(ok, np.clip(np.nan_to_num(channels[c]), lo, hi), 0.0)
        num = ndi.gaussian_filter(v, sigma_vox, mode="constant")
        out[c] = (num + w0 * median[c]) / (w + w0)
    return out


def _make_class(
    channels: np.ndarray, mask: np.ndarray, sigma_vox: np.ndarray
) -> tuple[_Class, np.ndarray]:
    """The class of confident voxels ``mask`` and its local means (C, *shape)."""
    x = channels[:, mask]
    med, mad = _robust_center(x)
    loc = local_means(channels, mask, med, mad, sigma_vox)
    res = _winsor(x, med, mad) - loc[:, mask]
    ok = np.all(np.isfinite(res), axis=0)
    cov = np.cov(res[:, ok]) if ok.sum() > channels.shape[0] + 1 else np.diag(mad**2)
    cov = np.atleast_2d(cov) + np.diag((0.05 * mad) ** 2)  # keep it well conditioned
    return _Class(mask, med, cov), loc


def _confident(region: np.ndarray, core_mm: float, voxel_mm: np.ndarray, n_min: int) -> np.ndarray:
    """Voxels of ``region`` deeper than ``core_mm`` (its outer layer removed at least); the
    whole region when that leaves fewer than ``n_min`` voxels."""
    depth = ndi.distance_transform_edt(region, sampling=voxel_mm)
    deep = region & (depth > max(core_mm, float(voxel_mm.max()) + 1e-6))
    return deep if deep.sum() >= n_min else region


def tissue_classes(
    channels: np.ndarray,
    labels: np.ndarray,
    brain: np.ndarray,
    voxel_mm: np.ndarray,
    params: PVEParams,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confident white matter, confident CSF and all-CSF masks among the unlabelled brain
    voxels: two-means on the robust-standardised R2* and magnitude, initialised at the
    unlabelled median (white matter) and the brightest, shortest-R2* voxels (CSF).
    Channel order of ``channels``: chi, R2*, magnitude."""
    unl = brain & (labels == 0)
    unl &= ndi.distance_transform_edt(~(labels > 0), sampling=voxel_mm) > params.core_mm
    x = channels[1:, unl]  # R2*, magnitude: defined everywhere in the brain
    med, mad = _robust_center(x)
    z = (x - med[:, None]) / mad[:, None]
    score = z[1] - z[0]  # CSF: long T2*, high proton density
    centers = np.stack([np.zeros(2), np.median(z[:, score > np.percentile(score, 97)], axis=1)])
    for _ in range(10):
        d = ((z[None] - centers[:, :, None]) ** 2).sum(axis=1)
        is_csf = d[1] < d[0]
        centers = np.stack([np.median(z[:, ~is_csf], axis=1), np.median(z[:, is_csf], axis=1)])
    wm, csf = np.zeros(labels.shape, bool), np.zeros(labels.shape, bool)
    wm[unl], csf[unl] = ~is_csf, is_csf
    # confident white matter: one voxel away from CSF, within 2.5 robust SD of its centre
    wm &= ndi.distance_transform_edt(~csf, sampling=voxel_mm) > float(voxel_mm.max()) + 1e-6
    zw = (channels[1:, wm] - med[:, None]) / mad[:, None]
    idx = np.flatnonzero(wm)
    wm.flat[idx[np.any(np.abs(zw - centers[0][:, None]) > 2.5, axis=0)]] = False
    # the purer half of the CSF cluster (partial-volume voxels pull its median to WM)
    proj = score[is_csf]
    pure = np.zeros(labels.shape, bool)
    idx = np.flatnonzero(unl)[is_csf]
    pure.flat[idx[proj >= np.median(proj)]] = True
    return wm, pure, csf


def gray_matter(
    channels: np.ndarray,
    cortex: np.ndarray,
    csf: np.ndarray,
    voxel_mm: np.ndarray,
    params: PVEParams,
) -> np.ndarray:
    """Confident gray matter: voxels of the other (cortical) atlas labels ``cortex`` deeper
    than ``core_mm``, not CSF, within 2 robust SD of their median in every channel."""
    conf = _confident(cortex, params.core_mm, voxel_mm, params.min_voxels) & ~csf
    x = channels[:, conf]
    med, mad = _robust_center(x)
    z = np.abs(x - med[:, None]) / mad[:, None]
    idx = np.flatnonzero(conf)
    conf.flat[idx[np.any(np.nan_to_num(z) > 2.0, axis=0)]] = False
    return conf


def _weights(cov_a: np.ndarray, cov_b: np.ndarray) -> tuple[np.ndarray, ...]:
    """Noise precision of a two-class mixture (mean of the two covariances) and its log
    determinant, with all channels and without the first (susceptibility undefined outside
    the QSM mask): (full, partial, logdet full, logdet partial)."""
    cov = 0.5 * (cov_a + cov_b)
    full = np.linalg.inv(cov)
    part = np.zeros_like(cov)
    part[1:, 1:] = np.linalg.inv(cov[1:, 1:])
    return full, part, np.linalg.slogdet(cov)[1], np.linalg.slogdet(cov[1:, 1:])[1]


def _project(
    x: np.ndarray,
    mu_a: np.ndarray,
    mu_b: np.ndarray,
    w: np.ndarray,
    prior: np.ndarray | None,
    prior_weight: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of class a (N,) of voxels ``x`` (C, N) mixing class means ``mu_a`` and
    ``mu_b`` (C, N) with per-voxel precision ``w`` (N, C, C), and the objective (N,):
    Mahalanobis residual plus ``prior_weight`` (f - prior)^2. With ``prior`` the fraction
    is the MAP estimate under that Gaussian prior, without it the least-squares fraction
    clipped to [0, 1] (no prior term)."""
    d = mu_a - mu_b
    r = x - mu_b
    wd = np.einsum("nij,jn->in", w, d)
    num, den = (wd * r).sum(0), (wd * d).sum(0)
    if prior is None:
        f = np.clip(num / np.maximum(den, 1e-12), 0.0, 1.0)
        penalty = 0.0
    else:
        f = (num + prior_weight * prior) / (den + prior_weight)
        penalty = prior_weight * (f - prior) ** 2
    e = r - f * d
    return f, np.einsum("in,nij,jn->n", e, w, e) + penalty


def _label_class(
    channels: np.ndarray, region: np.ndarray, voxel_mm: np.ndarray, params: PVEParams
) -> _Class:
    """A neighbouring atlas label as a class (its median and covariance, no local means)."""
    conf = _confident(region, params.core_mm, voxel_mm, params.min_voxels)
    x = channels[:, conf]
    med, mad = _robust_center(x)
    res = _winsor(x, med, mad) - med[:, None]
    ok = np.all(np.isfinite(res), axis=0)
    if ok.sum() > x.shape[0] + 1:
        cov = np.atleast_2d(np.cov(res[:, ok]))
    else:
        cov = np.diag(np.nan_to_num(mad, nan=1.0) ** 2)
    return _Class(conf, np.nan_to_num(med), cov + np.diag((0.05 * np.nan_to_num(mad)) ** 2))


def _neighbour_classes(
    x: np.ndarray,
    lab: np.ndarray,
    region: np.ndarray,
    band: np.ndarray,
    ids: Sequence[int],
    neighbours: Sequence[Sequence[int]],
    voxel_mm: np.ndarray,
    params: PVEParams,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Other atlas labels as classes of the band: (means (C, N), covariance, allowed (N,)),
    allowed where the label (or its structure, ``neighbours``) is the nearest other label
    within ``band_mm``."""
    other = (lab > 0) & ~region
    if not other.any():
        return []
    dist, ind = ndi.distance_transform_edt(~other, sampling=voxel_mm, return_indices=True)
    nearest = lab[tuple(ind)][band]
    near_ok = dist[band] <= params.band_mm
    out, done = [], set()
    for lid in np.unique(nearest[near_ok]):
        if int(lid) in done:
            continue
        group = next((set(g) for g in neighbours if int(lid) in g), {int(lid)}) - set(ids)
        done |= group
        cls = _label_class(x, np.isin(lab, sorted(group)), voxel_mm, params)
        mu = np.broadcast_to(cls.median[:, None], (x.shape[0], int(band.sum())))
        out.append((mu, cls.cov, near_ok & np.isin(nearest, sorted(group))))
    return out


def structure_volume(
    channels: np.ndarray,
    labels: np.ndarray,
    ids: Sequence[int],
    tissue: Mapping[str, tuple[_Class, np.ndarray]],
    near_csf: np.ndarray,
    csf_all: np.ndarray,
    voxel_mm: np.ndarray,
    params: PVEParams,
    neighbours: Sequence[Sequence[int]] = (),
) -> float:
    """Volume (mm3) of the structure made of atlas labels ``ids`` (see the module doc).

    ``channels`` (3, *shape): susceptibility (NaN where undefined), R2*, magnitude;
    ``tissue``: the white matter and CSF classes with their local means (3, *shape);
    ``near_csf``: voxels where CSF is a candidate neighbour class (``csf_all``: the CSF
    voxels); ``neighbours``: label
    sets that form one neighbour class (other structures), other labels are classes alone.
    """
    voxel_mm = np.asarray(voxel_mm, float)
    vox_mm3 = float(np.prod(voxel_mm))
    region_all = np.isin(labels, list(ids))
    if not region_all.any():
        return 0.0
    margin = np.ceil((params.band_mm + 3 * params.sigma_mm) / voxel_mm).astype(int)
    box = bounding_box(region_all, tuple(int(m) for m in margin))
    lab, region, x = labels[box], region_all[box], channels[(slice(None), *box)]
    inside = ndi.distance_transform_edt(region, sampling=voxel_mm)
    outside = ndi.distance_transform_edt(~region, sampling=voxel_mm)
    deep = region & (inside > params.band_mm)
    band = (region & ~deep) | (~region & (outside <= params.band_mm))
    sigma_vox = params.sigma_mm / voxel_mm
    s_cls, s_loc = _make_class(
        x, _confident(region, params.core_mm, voxel_mm, params.min_voxels), sigma_vox
    )
    xb = x[:, band]
    chi_ok = np.isfinite(xb[0])
    xb = np.nan_to_num(xb)
    mu_s = s_loc[:, band]
    # prior fraction: the label blurred by a voxel-sized partial-volume kernel (a label edge
    # between voxel centres leaves on average 3/4 of the structure in the inner layer)
    prior = ndi.gaussian_filter(region.astype(np.float64), params.prior_sigma_vox)[band]
    # pure classes of the band: (local means (C, N), covariance, where allowed (N,))
    n = int(band.sum())
    classes = [(mu_s, s_cls.cov, np.ones(n, bool))]
    for name, (cls, loc) in tissue.items():
        allowed = near_csf[box][band] if name == "csf" else np.ones(n, bool)
        classes.append((loc[(slice(None), *box)][:, band], cls.cov, allowed))
    classes += _neighbour_classes(x, lab, region, band, ids, neighbours, voxel_mm, params)
    # the unlabelled tissue around the structure (a partial-volume mix of GM and WM in
    # general, not the pure white matter): local means of the unlabelled, non-CSF voxels
    # of a shell just beyond the band
    ring = (lab == 0) & ~csf_all[box] & (outside > params.band_mm)
    ring &= (outside <= params.band_mm + params.ring_mm) & np.isfinite(x[1])
    if ring.sum() >= params.min_voxels:
        r_cls, r_loc = _make_class(x, ring, sigma_vox)
        classes.append((r_loc[:, band], r_cls.cov, np.ones(n, bool)))
    best_f = prior.copy()
    best_r = np.full(n, np.inf)
    # every pair of classes: the structure's fraction for pairs with the structure (first
    # class), 0 for mixtures of two other classes (prior term: prior_weight * prior^2); the
    # pair of the smallest -2 log posterior wins
    for i, (mu_a, cov_a, ok_a) in enumerate(classes):
        for mu_b, cov_b, ok_b in classes[i + 1 :]:
            allowed = ok_a & ok_b
            if not allowed.any():
                continue
            w_full, w_part, ld_full, ld_part = _weights(cov_a, cov_b)
            w = np.where(chi_ok[:, None, None], w_full, w_part)
            ma, mb = np.array(mu_a, np.float64), np.array(mu_b, np.float64)
            ma[0, ~chi_ok], mb[0, ~chi_ok] = 0.0, 0.0
            f, r = _project(xb, ma, mb, w, prior if i == 0 else None, params.prior_weight)
            if i:
                f, r = np.zeros(n), r + params.prior_weight * prior**2
            r = r + np.where(chi_ok, ld_full, ld_part)
            take = allowed & (r < best_r)
            best_f[take], best_r[take] = f[take], r[take]
    b = params.fraction_bound
    return (float(deep.sum()) + float(np.clip(best_f, -b, 1 + b).sum())) * vox_mm3


def structure_volumes(
    chi_ppm: np.ndarray,
    r2star_hz: np.ndarray,
    magnitude: np.ndarray,
    labels: np.ndarray,
    brain_mask: np.ndarray,
    groups: Mapping[tuple[str, str], Sequence[int]],
    voxel_mm: Sequence[float],
    *,
    chi_mask: np.ndarray | None = None,
    params: PVEParams = PVEParams(),
) -> dict[tuple[str, str], float]:
    """Partial-volume volumes (mm3) of the label groups ``groups`` ((name, hemisphere) ->
    atlas label values); ``bilateral`` keys are the sum of the L and R estimates when both
    exist. Maps on the GRE grid: susceptibility (ppm, valid in ``chi_mask``), R2* (Hz),
    echo-combined magnitude (a.u.)."""
    voxel_mm = np.asarray(voxel_mm, float)
    labels = np.asarray(labels)
    brain = np.asarray(brain_mask, bool)
    chi = np.where(brain if chi_mask is None else np.asarray(chi_mask, bool), chi_ppm, np.nan)
    channels = np.stack([chi, r2star_hz, magnitude]).astype(np.float64)
    wm, csf, csf_all = tissue_classes(channels, labels, brain, voxel_mm, params)
    sigma_vox = params.tissue_sigma_mm / voxel_mm
    tissue = {
        "wm": _make_class(channels, wm, sigma_vox),
        "csf": _make_class(channels, csf, sigma_vox),
    }
    if params.gray_matter:
        reported = np.isin(labels, sorted({int(i) for v in groups.values() for i in v}))
        gm = gray_matter(channels, (labels > 0) & ~reported & brain, csf_all, voxel_mm, params)
        if gm.sum() >= params.min_voxels:
            tissue["gm"] = _make_class(channels, gm, sigma_vox)
    near_csf = ndi.distance_transform_edt(~csf_all, sampling=voxel_mm) <= params.band_mm
    neighbours = [tuple(v) for k, v in groups.items() if k[1] != "bilateral"]
    out: dict[tuple[str, str], float] = {}
    for key, ids in groups.items():
        if key[1] != "bilateral":
            out[key] = structure_volume(
                channels, labels, ids, tissue, near_csf, csf_all, voxel_mm, params, neighbours
            )
    for name, hemi in groups:
        if hemi == "bilateral" and (name, "L") in out and (name, "R") in out:
            out[(name, hemi)] = out[(name, "L")] + out[(name, "R")]
    return out

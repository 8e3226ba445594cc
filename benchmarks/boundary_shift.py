"""Experimental template-relative boundary-shift volumes (benchmark only, not in any table).

Used by ``bench_atrophy_volumes.py --boundary``. Per structure and hemisphere, the registered
template predicts every GRE voxel around the structure as a mixture of classes: the
structure (for the thalamus: pulvinar and the rest), every other reported structure, and
the template's CSF, gray and white matter fractions (linear mixing of the template T1
intensity, as in :mod:`bids_qsm.atlas.iron`). All are sampled through the registration on
a grid ``factor`` times finer than the GRE grid. The structure's boundary is then moved by
a uniform offset ``delta`` (mm, signed distance on the fine grid): a shrinking structure
hands its tissue to the tissue just outside its boundary (the template's class fractions of
the nearest outside fine voxel); a growing one takes over unlabelled tissue. For each
offset, the fine fractions are averaged onto the GRE voxels, blurred by a Gaussian point
spread (SD chosen per channel from ``sigmas_vox``, GRE voxels), and fitted to each channel
(chi, combined magnitude, R2*) by least squares with free class means and a linear trend.
The offset minimising the summed ``n log RSS`` of the channels (the profile likelihood with
one unknown noise level per channel) gives the volume: the shifted fine label's volume, CSF
inside the label included (as the label-count truth counts it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class BoundaryParams:
    """Settings of the boundary-shift fit (mm unless stated)."""

    factor: int = 3  # fine grid = GRE voxel / factor
    max_shift_mm: float = 3.0
    step_mm: float = 0.25
    window_mm: float = 6.0  # GRE voxels within this distance of the boundary are fitted
    sigmas_vox: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)  # point-spread SDs tried (voxels)
    channels: tuple[str, ...] = ("chi_ppm", "combined_mag", "r2star_hz")


def stack_block_mean(a: np.ndarray, k: int) -> np.ndarray:
    """:func:`bids_qsm.simulate.subject.block_mean` of every map of a stack (C, X, Y, Z)."""
    from bids_qsm.simulate.subject import block_mean

    return np.stack([block_mean(x, k) for x in a])


def shifted_fractions(
    delta_mm: float,
    inside: np.ndarray,
    sdf_mm: np.ndarray,
    fine_mm: float,
    s_parts: np.ndarray,
    classes: np.ndarray,
    near_out: np.ndarray,
    near_in: np.ndarray,
    free: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fine class fractions with the boundary moved by ``delta_mm`` (negative shrinks).

    Returns (structure parts, other classes, soft inside indicator); ``near_out`` holds the
    class fractions of the nearest outside voxel, ``near_in`` the structure-part mix of the
    nearest inside voxel, ``free`` the fraction that growth may take (not another structure).
    """
    soft = np.clip(0.5 - (sdf_mm - delta_mm) / fine_mm, 0.0, 1.0)
    ins = inside.astype(np.float32)
    removed = np.clip(ins - soft, 0.0, 1.0)
    grown = np.clip(soft - ins, 0.0, 1.0) * free
    parts = s_parts * (1.0 - removed) + near_in * grown
    other = classes * (1.0 - grown) + near_out * (removed * s_parts.sum(0))
    return parts, other, soft


def channel_rss(
    design: np.ndarray,
    chans: list[np.ndarray],
    valid: list[np.ndarray],
    sigmas_vox: tuple[float, ...],
) -> list[float]:
    """Least-squares residual sum of squares of each channel against the class columns
    ``design`` (C, X, Y, Z) plus a linear trend, the best over the point-spread SDs."""
    grid = np.indices(design.shape[1:]).reshape(3, -1).astype(float)
    grid = (grid - grid.mean(1, keepdims=True)) / (grid.std(1, keepdims=True) + 1e-9)
    best = [np.inf] * len(chans)
    for sd in sigmas_vox:
        cols = (
            design
            if sd == 0
            else np.stack([ndimage.gaussian_filter(c, sd, mode="nearest") for c in design])
        )
        cols = cols.reshape(design.shape[0], -1)
        for q, (y, ok) in enumerate(zip(chans, valid, strict=True)):
            m = ok.reshape(-1)
            a = np.concatenate([cols[:, m].T, grid[:, m].T], axis=1)
            a = a[:, np.abs(a).sum(0) > 1e-6]
            yy = y.reshape(-1)[m]
            coef, *_ = np.linalg.lstsq(a, yy, rcond=None)
            r = yy - a @ coef
            best[q] = min(best[q], float(r @ r))
    return best


def fit_offset(
    chans: list[np.ndarray],
    valid: list[np.ndarray],
    s_parts: np.ndarray,
    classes: np.ndarray,
    inside: np.ndarray,
    params: BoundaryParams,
    fine_mm: float,
) -> tuple[float, float, tuple[float, ...]]:
    """Best boundary offset (mm) of one structure, its volume (mm3) on the fine grid and the
    offset each channel alone would choose (mm, grid step; a diagnosis of disagreement)."""
    k = params.factor
    d_out, i_out = ndimage.distance_transform_edt(inside, sampling=fine_mm, return_indices=True)
    d_in, i_in = ndimage.distance_transform_edt(~inside, sampling=fine_mm, return_indices=True)
    sdf = np.where(inside, 0.5 * fine_mm - d_out, d_in - 0.5 * fine_mm)
    near_out = classes[:, i_out[0], i_out[1], i_out[2]]
    near = s_parts[:, i_in[0], i_in[1], i_in[2]]
    near_in = near / np.maximum(near.sum(0), 1e-6)
    free = (1.0 - classes[:-3].sum(0)) * ~inside
    band = (
        stack_block_mean(((d_out <= params.window_mm) & (d_in <= params.window_mm))[None] * 1.0, k)[
            0
        ]
        > 0
    )
    valid = [v & band for v in valid]
    n = np.array([v.sum() for v in valid], float)
    m = params.max_shift_mm
    deltas = np.arange(-m, m + 1e-9, params.step_mm)
    loglik, vols, rss_all = [], [], []
    for d in deltas:
        parts, other, soft = shifted_fractions(
            float(d), inside, sdf, fine_mm, s_parts, classes, near_out, near_in, free
        )
        design = np.concatenate([stack_block_mean(parts, k), stack_block_mean(other, k)])
        rss = channel_rss(design, chans, valid, params.sigmas_vox)
        loglik.append(float((n * np.log(np.maximum(rss, 1e-30))).sum()))
        rss_all.append(rss)
        vols.append(float(soft.sum()) * fine_mm**3)
    j = int(np.argmin(loglik))
    best = float(deltas[j])
    if 0 < j < len(deltas) - 1:  # parabola through the minimum and its neighbours
        a, b, c = loglik[j - 1], loglik[j], loglik[j + 1]
        if a - 2 * b + c > 0:
            best += 0.5 * (a - c) / (a - 2 * b + c) * params.step_mm
    alone = tuple(float(deltas[q]) for q in np.argmin(np.asarray(rss_all), axis=0))
    return best, float(np.interp(best, deltas, vols)), alone


def template_fraction_images(atlas) -> tuple:
    """The template's CSF and white matter fractions and brain mask (NIfTI images), from
    :func:`bids_qsm.atlas.iron.template_tissue_fractions` (as the iron template)."""
    import nibabel as nib

    from bids_qsm.atlas.iron import template_tissue_fractions

    f_csf, _, f_wm = template_tissue_fractions(atlas)
    aff = atlas.template_img.affine
    return tuple(
        nib.Nifti1Image(np.asarray(f, np.float32), aff)
        for f in (f_csf, f_wm, atlas.template_mask() * 1.0)
    )


def fine_affine(box_affine: np.ndarray, k: int) -> np.ndarray:
    """Voxel -> world affine of a grid ``k`` times finer than ``box_affine``'s, aligned so
    that fine voxels ``k j .. k j + k - 1`` tile coarse voxel ``j``."""
    fine = np.array(box_affine, dtype=float)
    fine[:3, :3] = box_affine[:3, :3] / k
    fine[:3, 3] = box_affine[:3, 3] - box_affine[:3, :3] @ np.full(3, (k - 1) / (2 * k))
    return fine


def fine_samples(atlas, xfm: str, sub: tuple[slice, ...], affine: np.ndarray, k: int) -> dict:
    """Template labels and CSF / WM / brain fractions sampled through ``xfm`` (template ->
    GRE) on a grid ``k`` times finer than the GRE box ``sub`` (fine voxel j lies in GRE
    voxel j // k)."""
    import nibabel as nib

    from bids_qsm.atlas.antsutil import labels_at, sample_linear, template_coords
    from bids_qsm.atlas.transforms import nib_to_ants

    start = np.array([s.start for s in sub], float)
    saff = affine.copy()
    saff[:3, 3] = affine[:3, :3] @ start + affine[:3, 3]
    fine = fine_affine(saff, k)
    shape = tuple((s.stop - s.start) * k for s in sub)
    ref = nib_to_ants(nib.Nifti1Image(np.zeros(shape, np.float32), fine))
    coords, inside = template_coords(atlas, ref, fine, [xfm])
    csf, wm, brain = (sample_linear(f, coords, inside) for f in template_fraction_images(atlas))
    return {
        "labels": labels_at(atlas.labels_img, coords, inside),
        "csf": csf,
        "wm": wm,
        "brain": brain,
    }


def structure_classes(fs: dict, lut: np.ndarray, ids: list[int], part_ids: list[int]):
    """(structure parts, other classes: other structures then CSF, GM, WM, inside) on a
    fine box: reported structures hold (1 - CSF fraction) of their own tissue."""
    cls = lut[fs["labels"]]
    inside = np.isin(fs["labels"], ids)
    labelled = cls > 0
    csf = np.clip(fs["csf"], 0, 1)
    wm = np.where(labelled, 0, np.clip(fs["wm"], 0, 1))
    gm = np.where(labelled, 0, np.clip(fs["brain"] - csf - wm, 0, 1))
    tissue = np.where(labelled, np.clip(fs["brain"] - csf, 0, 1), 0)
    pulv = np.isin(fs["labels"], part_ids)
    parts = [tissue * (inside & ~pulv)] + ([tissue * (inside & pulv)] if pulv.any() else [])
    own = set(np.unique(cls[inside]).tolist())
    others = [tissue * (cls == c) for c in np.unique(cls[labelled & ~inside]) if c not in own]
    return (
        np.stack(parts).astype(np.float32),
        np.stack(others + [csf, gm, wm]).astype(np.float32),
        inside,
    )


def label_lut(atlas) -> np.ndarray:
    """Atlas label -> class index per (structure, hemisphere), later structures overriding
    (the pulvinar nuclei, also thalamus labels, are their own class as in the simulator)."""
    labels = np.asarray(atlas.labels_img.dataobj)
    lut = np.zeros(int(labels.max()) + 1, np.int32)
    order: list[tuple[str, str]] = []
    for s in atlas.structures:
        if (s.name, s.hemisphere) not in order:
            order.append((s.name, s.hemisphere))
        lut[[v for v in s.labels if v < lut.size]] = order.index((s.name, s.hemisphere)) + 1
    return lut


def boundary_volumes(
    d: dict, atlas, xfm: str, names: tuple[str, ...], params: BoundaryParams
) -> dict[tuple[str, str], tuple]:
    """(structure, hemisphere) -> (offset mm, volume mm3, per-channel offsets mm) of one
    cached subject ``d`` (the arrays of ``bench_atrophy_volumes.registered_subject``), L and
    R only."""
    from bids_qsm.stats.regional import structure_groups

    groups, _ = structure_groups(atlas.structures)
    lut, k = label_lut(atlas), params.factor
    vox_mm = float(d["voxel_size"][0])
    pad = int(np.ceil((params.window_mm + params.max_shift_mm) / vox_mm)) + 2
    ids_all = sorted(set().union(*(groups[(n, "bilateral")] for n in names)))
    idx = np.argwhere(np.isin(d["reg_labels"], ids_all))
    lo = np.maximum(idx.min(0) - pad, 0)
    hi = np.minimum(idx.max(0) + pad + 1, d["reg_labels"].shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    fs = fine_samples(atlas, xfm, box, d["affine"], k)
    chans = [np.asarray(d[c][box], np.float64) for c in params.channels]
    masks = [d["qsm_mask" if c == "chi_ppm" else "brain_mask"][box] for c in params.channels]
    out = {}
    for name in names:
        for hemi in ("L", "R"):
            ids = sorted(groups[(name, hemi)])
            part_ids = sorted(groups.get(("pulvinar", hemi), ())) if name == "thalamus" else []
            where = np.argwhere(np.isin(fs["labels"], ids))
            g_lo = np.maximum(where.min(0) // k - pad, 0)
            g_hi = np.minimum(where.max(0) // k + pad + 1, chans[0].shape)
            gsl = tuple(slice(int(a), int(b)) for a, b in zip(g_lo, g_hi, strict=True))
            fsl = tuple(slice(s.start * k, s.stop * k) for s in gsl)
            parts, classes, inside = structure_classes(
                {key: v[fsl] for key, v in fs.items()}, lut, ids, part_ids
            )
            out[(name, hemi)] = fit_offset(
                [c[gsl] for c in chans],
                [m[gsl] for m in masks],
                parts,
                classes,
                inside,
                params,
                vox_mm / k,
            )
    return out

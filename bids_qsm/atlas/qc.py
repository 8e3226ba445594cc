"""Registration quality control: Dice overlaps and the registration figure."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from bids_qsm.atlas.structures import StructureDef

if TYPE_CHECKING:  # pragma: no cover
    from bids_qsm.atlas.registration import AtlasRegistration


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient 2|A&B|/(|A|+|B|) of two boolean masks (1.0 when both are empty)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    denom = int(a.sum()) + int(b.sum())
    if denom == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / denom


def structure_dice(
    estimate: np.ndarray, truth: np.ndarray, structures: Iterable[StructureDef]
) -> dict[str, float]:
    """Dice per structure (``name_hemisphere`` keys), each the union of its label values."""
    out: dict[str, float] = {}
    for s in structures:
        labs = np.asarray(s.labels)
        out[f"{s.name}_{s.hemisphere}"] = dice(np.isin(estimate, labs), np.isin(truth, labs))
    return out


def _slices(mask: np.ndarray) -> list[tuple[int, int]]:
    """(axis, index) pairs: 3 slices along the last axis, 2 along each other, inside the mask."""
    idx = np.argwhere(mask)
    lo, hi = idx.min(axis=0), idx.max(axis=0)
    out: list[tuple[int, int]] = []
    for axis, fracs in ((2, (0.35, 0.5, 0.65)), (1, (0.4, 0.6)), (0, (0.4, 0.55))):
        for fr in fracs:
            out.append((axis, int(round(lo[axis] + fr * (hi[axis] - lo[axis])))))
    return out


def _take(arr: np.ndarray, axis: int, index: int) -> np.ndarray:
    return np.rot90(np.take(arr, index, axis=axis))


_ZOOM_COLOURS = {
    "putamen": "#ffff40",
    "globus_pallidus": "#ff40ff",
    "thalamus": "#40ffff",
    "caudate": "#ffa040",
    "substantia_nigra": "#ff4040",
    "red_nucleus": "#40ff40",
}


def _zoom_panels(labels: np.ndarray | None, structures) -> list[tuple[int, int, tuple]]:
    """(axis, index within the crop, crop box) of the deep gray matter zoom panels: axial
    through the pallidum, axial through the red nucleus, coronal through the thalamus."""
    if labels is None or structures is None:
        return []
    structs = list(structures)
    labels = np.asarray(labels)
    box = dgm_box(labels, structs, 3)
    out = []
    for name, axis in (("globus_pallidus", 2), ("red_nucleus", 2), ("thalamus", 1)):
        vals = [v for s in structs if s.name == name for v in s.labels]
        idx = np.argwhere(np.isin(labels[box], vals))
        if idx.size:
            out.append((axis, int(round(idx[:, axis].mean())), box))
    return out


def registration_figure(
    gre_mag_img: nib.Nifti1Image,
    atlas_reg_or_warped_template: AtlasRegistration | nib.Nifti1Image,
    out_png: Path,
    labels: np.ndarray | None = None,
    title: str | None = None,
    structures: Iterable[StructureDef] | None = None,
) -> Path:
    """PNG of the subject GRE magnitude with the warped template's edges (and label outlines).

    Seven slices (three along the third voxel axis, two along each of the others) in the
    acquisition grid. Edges are iso-contours of the warped template at its 35th and 70th
    intensity percentiles (about the brain and the gray/white boundaries). With
    ``structures`` (and labels, given or from the registration result) the outlines of those
    structures are drawn in blue. Written atomically; returns ``out_png``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    if isinstance(atlas_reg_or_warped_template, nib.Nifti1Image):
        warped = atlas_reg_or_warped_template
    else:
        warped = atlas_reg_or_warped_template.warped_template
        if labels is None:
            labels = atlas_reg_or_warped_template.labels
        if warped is None:
            raise ValueError("the registration result carries no warped template")
    mag = np.asarray(gre_mag_img.dataobj, dtype=np.float32)
    if mag.ndim == 4:
        mag = np.sqrt((mag**2).sum(axis=3))
    tpl = np.asarray(warped.dataobj, dtype=np.float32)
    if tpl.shape != mag.shape:
        raise ValueError(f"warped template {tpl.shape} and magnitude {mag.shape} differ in shape")
    inside = tpl > 0
    if not inside.any():
        inside = mag > 0
    levels = np.percentile(tpl[tpl > 0], [35, 70]) if (tpl > 0).any() else [0.5]
    vmax = np.percentile(mag[mag > 0], 99.5) if (mag > 0).any() else 1.0
    zoom = np.sqrt((gre_mag_img.affine[:3, :3] ** 2).sum(axis=0))

    sel = None
    if labels is not None and structures is not None:
        wanted = sorted({v for s in structures for v in s.labels})
        sel = np.isin(np.asarray(labels), wanted).astype(np.float32)
    zoomed = _zoom_panels(labels, structures) if sel is not None else []
    rows = 2 if zoomed else 1
    fig = Figure(figsize=(14, 3.2 * rows), dpi=100)
    fig.patch.set_facecolor("black")
    slices = _slices(inside)
    for k, (axis, index) in enumerate(slices):
        ax = fig.add_subplot(rows, len(slices), k + 1)
        other = [a for a in range(3) if a != axis]
        aspect = zoom[other[1]] / zoom[other[0]]
        ax.imshow(_take(mag, axis, index), cmap="gray", vmin=0, vmax=vmax, aspect=aspect)
        ax.contour(_take(tpl, axis, index), levels=sorted(levels), colors=["#ff4040", "#40ff40"],
                   linewidths=0.6)  # fmt: skip
        if sel is not None:
            lab = _take(sel, axis, index)
            if lab.any():
                ax.contour(lab, levels=[0.5], colors=["#40c0ff"], linewidths=0.5)
        ax.set_axis_off()
    for k, (axis, index, box) in enumerate(zoomed):
        ax = fig.add_subplot(rows, len(zoomed), len(zoomed) + k + 1)
        other = [a for a in range(3) if a != axis]
        aspect = zoom[other[1]] / zoom[other[0]]
        crop = tuple(box[a] if a != axis else slice(None) for a in range(3))
        ax.imshow(_take(mag[crop], axis, index), cmap="gray", vmin=0, vmax=vmax, aspect=aspect)
        lab = np.asarray(labels)[crop]
        for s_name, colour in _ZOOM_COLOURS.items():
            vals = [v for s in structures or () if s.name == s_name for v in s.labels]
            m = _take(np.isin(lab, vals).astype(np.float32), axis, index)
            if m.any():
                ax.contour(m, levels=[0.5], colors=[colour], linewidths=0.8)
        ax.set_axis_off()
    fig.suptitle(
        title
        or "template edges (red/green) over the subject GRE; bottom: deep gray matter zoom "
        "(putamen yellow, pallidum magenta, thalamus cyan, caudate orange, SN red, RN green)",
        color="w",
        fontsize=9,
    )
    fig.subplots_adjust(left=0, right=1, bottom=0, top=0.92 if rows == 2 else 0.9, wspace=0.02)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, facecolor="black", format="png")
    os.replace(tmp, out_png)
    return out_png


# --------------------------------------------------------------------------- registration QC
#: Limits of the registration QC (see :func:`registration_qc`); values outside -> CHECK.
QC_LIMITS: dict[str, tuple[float | None, float | None]] = {
    "dgm_local_cc": (0.35, None),
    "jacobian_p01": (0.4, None),
    "jacobian_p99": (None, 2.5),
    "jacobian_folded_fraction": (None, 1e-4),
    "iron_contrast_min_ppb": (25.0, None),
}
#: Structures whose iron contrast (inside minus a 2-voxel shell) is checked.
IRON_QC_STRUCTURES: tuple[str, ...] = ("globus_pallidus", "substantia_nigra", "red_nucleus")


def local_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray, radius_vox: int = 2) -> float:
    """Mean absolute local Pearson correlation of ``a`` and ``b`` in (2r+1)^3 windows, over
    the ``mask`` voxels (windows with no variance count as 0). Modality independent up to
    the sign, like ANTs' neighbourhood CC."""
    from scipy import ndimage

    size = 2 * int(radius_vox) + 1
    m = mask.astype(np.float64)
    a = np.asarray(a, np.float64) * m
    b = np.asarray(b, np.float64) * m

    def mean(x: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(x, size, mode="constant")

    ma, mb = mean(a), mean(b)
    cov = mean(a * b) - ma * mb
    va = np.maximum(mean(a * a) - ma**2, 0.0)
    vb = np.maximum(mean(b * b) - mb**2, 0.0)
    den = np.sqrt(va * vb)
    r = np.where(den > 1e-12 * (den.max() + 1e-30), np.abs(cov) / np.maximum(den, 1e-30), 0.0)
    return float(np.clip(r[mask], 0, 1).mean()) if mask.any() else float("nan")


def jacobian_stats(coords_mm: np.ndarray, affine: np.ndarray, mask: np.ndarray) -> dict:
    """Jacobian determinant of the subject -> template map from the template coordinates
    (``coords_mm``: (3, X, Y, Z), mm) of every voxel of a grid (``affine``: voxel -> mm);
    1st and 99th percentiles, extremes and the folded fraction (det <= 0) inside ``mask``.
    A value above 1 means the subject's region is smaller than the template's (atrophy)."""
    g = np.stack([np.stack(np.gradient(coords_mm[k]), 0) for k in range(3)])
    jac = np.moveaxis(g[:, :, mask], -1, 0)  # (N, 3, 3): d template mm / d voxel index
    det = np.linalg.det(jac) / float(np.linalg.det(np.asarray(affine)[:3, :3]))
    return {
        "jacobian_p01": float(np.percentile(det, 1)),
        "jacobian_p99": float(np.percentile(det, 99)),
        "jacobian_min": float(det.min()),
        "jacobian_max": float(det.max()),
        "jacobian_folded_fraction": float(np.mean(det <= 0)),
    }


def iron_contrast_ppb(
    chi: np.ndarray, labels: np.ndarray, structures: Iterable[StructureDef]
) -> dict[str, float]:
    """Per iron-rich structure (both hemispheres): mean chi inside its warped label minus the
    mean in a 2-voxel shell around it that belongs to no reported structure (ppb)."""
    from scipy import ndimage

    structs = list(structures)
    every = np.isin(labels, [v for s in structs for v in s.labels])
    out: dict[str, float] = {}
    for name in IRON_QC_STRUCTURES:
        labs = [v for s in structs if s.name == name for v in s.labels]
        m = np.isin(labels, labs)
        if not labs or m.sum() < 2:
            continue
        shell = ndimage.binary_dilation(m, iterations=2) & ~every & (chi != 0)
        if shell.sum() < 2:
            continue
        out[name] = 1000.0 * float(chi[m].mean() - chi[shell].mean())
    return out


def dgm_box(labels: np.ndarray, structures: Iterable[StructureDef], margin_vox: int) -> tuple:
    """Bounding box (slices) of the warped deep gray matter labels grown by ``margin_vox``."""
    from bids_qsm.atlas.iron import DGM_BOX_STRUCTURES

    wanted = [v for s in structures if s.name in DGM_BOX_STRUCTURES for v in s.labels]
    idx = np.argwhere(np.isin(labels, wanted))
    if idx.size == 0:
        return tuple(slice(0, n) for n in labels.shape)
    lo = np.maximum(idx.min(0) - margin_vox, 0)
    hi = np.minimum(idx.max(0) + margin_vox + 1, labels.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def qc_status(values: dict[str, float]) -> dict[str, str]:
    """``ok`` / ``check`` (or ``n/a``) per QC value against :data:`QC_LIMITS`."""
    out: dict[str, str] = {}
    for key, (lo, hi) in QC_LIMITS.items():
        v = values.get(key)
        if v is None or not np.isfinite(v):
            out[key] = "n/a"
        elif (lo is not None and v < lo) or (hi is not None and v > hi):
            out[key] = "check"
        else:
            out[key] = "ok"
    return out


def registration_qc(
    mag: np.ndarray,
    mask: np.ndarray,
    warped_template: np.ndarray,
    labels: np.ndarray,
    coords_mm: np.ndarray | None,
    affine: np.ndarray,
    structures: Iterable[StructureDef],
    iron: np.ndarray | None = None,
) -> dict:
    """QC values of one registration (on the GRE grid) and their ``ok``/``check`` status.

    * ``dgm_local_cc``: mean absolute local correlation (radius 2 voxels) of the GRE
      magnitude and the warped template in the deep gray matter box (warped labels + 5 mm).
    * ``jacobian_*``: Jacobian determinant of the subject -> template map in the brain mask.
    * ``iron_contrast_*_ppb`` (with an iron map): mean chi inside the warped globus pallidus,
      substantia nigra and red nucleus minus a 2-voxel shell around each; a label that
      misses its nucleus loses this contrast. ``iron_contrast_min_ppb`` is the smallest.
    """
    structs = list(structures)
    voxel_mm = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    margin = max(1, int(round(5.0 / float(np.min(voxel_mm)))))
    box = dgm_box(labels, structs, margin)
    out: dict = {
        "dgm_local_cc": local_correlation(mag[box], warped_template[box], mask[box], 2),
    }
    if coords_mm is not None:
        out.update(jacobian_stats(coords_mm, affine, mask))
    if iron is not None:
        contrast = iron_contrast_ppb(iron, labels, structs)
        out.update({f"iron_contrast_{k}_ppb": v for k, v in contrast.items()})
        if contrast:
            out["iron_contrast_min_ppb"] = min(contrast.values())
    out = {k: round(float(v), 6) for k, v in out.items()}
    out["status"] = qc_status(out)
    out["limits"] = {k: list(v) for k, v in QC_LIMITS.items()}
    return out

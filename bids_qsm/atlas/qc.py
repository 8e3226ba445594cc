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
    fig = Figure(figsize=(14, 3.2), dpi=100)
    fig.patch.set_facecolor("black")
    slices = _slices(inside)
    for k, (axis, index) in enumerate(slices):
        ax = fig.add_subplot(1, len(slices), k + 1)
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
    fig.suptitle(title or "template edges (red/green) over the subject GRE", color="w", fontsize=9)
    fig.subplots_adjust(left=0, right=1, bottom=0, top=0.9, wspace=0.02)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, facecolor="black", format="png")
    os.replace(tmp, out_png)
    return out_png

"""Static report figures (matplotlib, Agg backend): mosaics of axial slices plus orthogonal views.

Conventions shared by every figure
----------------------------------
* Arrays are in the acquisition (GRE) voxel grid, possibly anisotropic: each tile is drawn
  with its physical aspect ratio from ``voxel_size`` (mm).
* With ``affine`` given, volumes are reoriented to the closest canonical (RAS) voxel axes
  (:func:`nibabel.orientations.io_orientation`; obliquity is not resampled away) and shown in
  **neurological** convention (subject's left on the left of the image) unless
  ``radiological=True``; tiles carry L/R and A/P letters. Without ``affine`` the voxel axes are
  shown as stored (first axis horizontal, second vertical, slices along the third) and the
  caption says that the orientation is not determined.
* Display windows are fixed (not rescaled per subject) for the quantitative maps, so reports
  of different subjects can be compared by eye: chi -0.15..0.15 ppm, R2* 0..50 Hz, phase-iron
  -0.2..0.2 rad. Magnitude-like images (magnitude, minIP) use a robust 0.5-99.5 percentile
  window inside the mask.
* Axial slices are evenly spaced through the deep gray matter when a segmentation is given
  (``labels``: its label extent along the slice axis, widened by 6 mm), else through the
  central 70 % of the mask.
* Files are PNG or SVG according to the suffix of ``out``; writes are atomic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import nibabel.orientations as nio
import numpy as np
from matplotlib import colors as mcolors
from matplotlib.colorbar import ColorbarBase
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from bids_qsm.reports._atomic import atomic_write_with

__all__ = [
    "CHI_WINDOW_PPM",
    "PHASE_IRON_WINDOW_RAD",
    "R2STAR_WINDOW_HZ",
    "atlas_overlay",
    "chimap_mosaic",
    "choose_slices",
    "mask_outline",
    "minip_figure",
    "orientation_note",
    "phase_iron_figure",
    "r2star_figure",
    "structure_label_map",
    "structure_labels_from_table",
]

#: Default fixed display windows.
CHI_WINDOW_PPM: tuple[float, float] = (-0.15, 0.15)
R2STAR_WINDOW_HZ: tuple[float, float] = (0.0, 50.0)
PHASE_IRON_WINDOW_RAD: tuple[float, float] = (-0.2, 0.2)

_FIG_WIDTH_IN = 12.0
_DPI = 100
_N_COLS = 6
_GAP_IN = 0.06
_BG = "black"
_FG = "white"


# --------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------


@dataclass
class _View:
    """Volumes and metadata after optional reorientation to closest-canonical axes."""

    vols: list[np.ndarray | None]
    voxel_size: np.ndarray
    oriented: bool
    radiological: bool
    affine: np.ndarray | None = None  # of the reoriented grid (voxel -> scanner mm)

    def slice_label(self, view: str, idx: int, center: Sequence[int]) -> str:
        """Tile caption: scanner coordinate (mm) when oriented, else the voxel index."""
        axis = {"axial": 2, "coronal": 1, "sagittal": 0}[view]
        if self.affine is None:
            return f"{'ijk'[axis]}={idx}"
        vox = np.array([*center, 1.0], dtype=float)
        vox[axis] = idx
        mm = float((self.affine @ vox)[axis])
        return f"{'xyz'[axis]}={mm:+.0f} mm"


def _as3d(a: np.ndarray | None, name: str) -> np.ndarray | None:
    if a is None:
        return None
    a = np.asarray(a)
    if a.ndim == 4 and a.shape[3] == 1:
        a = a[..., 0]
    if a.ndim != 3:
        raise ValueError(f"{name} must be a 3D array, got shape {a.shape}")
    return a


def _prepare(
    vols: Sequence[np.ndarray | None],
    voxel_size: Sequence[float],
    affine: np.ndarray | None,
    radiological: bool,
) -> _View:
    """Reorient every volume to closest RAS voxel axes when ``affine`` is known."""
    vs = np.asarray(voxel_size, dtype=float).reshape(-1)[:3]
    if vs.size != 3 or not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise ValueError(f"voxel_size must be three positive numbers, got {voxel_size!r}")
    shapes = {v.shape for v in vols if v is not None}
    if len(shapes) > 1:
        raise ValueError(f"arrays have different shapes: {sorted(shapes)}")
    if affine is None:
        return _View(list(vols), vs, False, radiological)
    affine = np.asarray(affine, dtype=float)
    ornt = nio.io_orientation(affine)
    out = [None if v is None else nio.apply_orientation(v, ornt) for v in vols]
    new_vs = np.empty(3)
    for i in range(3):
        new_vs[int(ornt[i, 0])] = vs[i]
    shape = next(iter(shapes)) if shapes else (1, 1, 1)
    new_aff = affine @ nio.inv_ornt_aff(ornt, shape)
    return _View(out, new_vs, True, radiological, new_aff)


def _profiles(mask: np.ndarray) -> list[np.ndarray]:
    """Voxel counts of ``mask`` along each axis (projections; much faster than nonzero)."""
    m = np.asarray(mask, dtype=bool)
    return [np.count_nonzero(m, axis=tuple(a for a in range(3) if a != ax)) for ax in range(3)]


def _bbox(mask: np.ndarray, margin: int = 3) -> tuple[slice, slice, slice]:
    """Bounding box of ``mask`` with a margin; the whole volume if the mask is empty."""
    out = []
    for prof, n in zip(_profiles(mask), mask.shape, strict=True):
        idx = np.flatnonzero(prof)
        if idx.size == 0:
            return tuple(slice(0, k) for k in mask.shape)  # type: ignore[return-value]
        out.append(slice(max(int(idx[0]) - margin, 0), min(int(idx[-1]) + margin + 1, n)))
    return tuple(out)  # type: ignore[return-value]


def choose_slices(
    mask: np.ndarray,
    voxel_size: Sequence[float],
    n: int = 12,
    labels: np.ndarray | None = None,
    margin_mm: float = 6.0,
) -> list[int]:
    """Evenly spaced slice indices along the third axis.

    With ``labels`` (a deep-gray-matter segmentation) the slices span the labelled extent
    widened by ``margin_mm`` on both sides; otherwise the central 70 % of the mask extent.
    Indices are unique and sorted (fewer than ``n`` if the volume is thin).
    """
    nz = mask.shape[2]
    dz = float(np.asarray(voxel_size, float).reshape(-1)[2])
    lo = hi = None
    if labels is not None and np.any(labels > 0):
        zs = np.nonzero(np.any(labels > 0, axis=(0, 1)))[0]
        pad = int(round(margin_mm / dz))
        lo, hi = int(zs.min()) - pad, int(zs.max()) + pad
    elif np.any(mask):
        zs = np.nonzero(np.any(mask, axis=(0, 1)))[0]
        z0, z1 = int(zs.min()), int(zs.max())
        span = z1 - z0
        lo, hi = z0 + int(round(0.15 * span)), z1 - int(round(0.15 * span))
    if lo is None or hi is None:
        lo, hi = 0, nz - 1
    lo, hi = max(lo, 0), min(hi, nz - 1)
    if hi < lo:
        lo, hi = 0, nz - 1
    return sorted({int(round(v)) for v in np.linspace(lo, hi, num=max(n, 1))})


def _center(mask: np.ndarray, labels: np.ndarray | None) -> tuple[int, int, int]:
    """Centre for the orthogonal views: label centroid, else mask centroid, else the middle."""
    for m in (labels if labels is not None else None, mask):
        if m is None:
            continue
        profs = _profiles(m > 0)
        if profs[0].sum() == 0:
            continue
        c = [int(round(float(np.average(np.arange(p.size), weights=p)))) for p in profs]
        if m is labels:
            # Sagittal view through the most labelled column (deep nuclei are lateral).
            c[0] = int(np.argmax(profs[0]))
        return tuple(c)  # type: ignore[return-value]
    return tuple(n // 2 for n in mask.shape)  # type: ignore[return-value]


def orientation_note(affine_given: bool, radiological: bool = False) -> str:
    """One sentence describing the display orientation, for figure captions."""
    if not affine_given:
        return (
            "Slices are shown in the stored voxel axes (first axis horizontal, second vertical, "
            "slices along the third); the anatomical orientation is not determined."
        )
    conv = (
        "radiological (subject's left on the right)"
        if radiological
        else ("neurological (subject's left on the left)")
    )
    return (
        f"Voxel axes reoriented to the closest canonical (RAS) orientation without resampling "
        f"(oblique acquisitions keep their tilt); {conv} convention."
    )


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------


@dataclass
class _Layers:
    """What to draw in every tile."""

    base: np.ndarray
    cmap: str
    window: tuple[float, float]
    show_mask: np.ndarray | None = None  # voxels outside are drawn black
    contour: np.ndarray | None = None
    contour_color: str = "#ff3b30"
    labels: np.ndarray | None = None
    label_lut: dict[int, tuple[float, float, float]] | None = None


def _plane(a: np.ndarray, view: str, idx: int, radiological: bool) -> np.ndarray:
    """2D slice ready for ``imshow(origin='lower')`` (rows = vertical axis)."""
    if view == "axial":
        s = a[:, :, idx].T
    elif view == "coronal":
        s = a[:, idx, :].T
    else:  # sagittal
        s = a[idx, :, :].T
    if radiological and view in ("axial", "coronal"):
        s = s[:, ::-1]
    return s


def _aspect(view: str, vs: np.ndarray) -> float:
    """Height/width of one pixel for ``imshow``."""
    if view == "axial":
        return float(vs[1] / vs[0])
    if view == "coronal":
        return float(vs[2] / vs[0])
    return float(vs[2] / vs[1])


def _draw_tile(
    ax: plt.Axes, layers: _Layers, view: str, idx: int, v: _View, text: str, letters: bool
) -> None:
    rad = v.radiological
    base = _plane(layers.base, view, idx, rad).astype(np.float32)
    if layers.show_mask is not None:
        show = _plane(layers.show_mask, view, idx, rad) > 0
        base = np.ma.masked_where(~show, base)
    cmap = plt.get_cmap(layers.cmap).with_extremes(bad=_BG)
    aspect = _aspect(view, v.voxel_size)
    ax.imshow(
        base,
        cmap=cmap,
        vmin=layers.window[0],
        vmax=layers.window[1],
        origin="lower",
        aspect=aspect,
        interpolation="nearest",
    )
    if layers.labels is not None and layers.label_lut:
        lab = _plane(layers.labels, view, idx, rad)
        rgba = np.zeros((*lab.shape, 4), dtype=np.float32)
        for value, rgb in layers.label_lut.items():
            sel = lab == value
            if np.any(sel):
                rgba[sel, :3] = rgb
                rgba[sel, 3] = 0.55
        ax.imshow(rgba, origin="lower", aspect=aspect, interpolation="nearest")
    if layers.contour is not None:
        c = _plane(layers.contour, view, idx, rad) > 0
        if np.any(c) and not np.all(c):
            ax.contour(
                c.astype(np.float32), levels=[0.5], colors=[layers.contour_color], linewidths=0.9
            )
    ax.set_axis_off()
    ax.text(
        0.02,
        0.02,
        text,
        color=_FG,
        fontsize=8,
        transform=ax.transAxes,
        va="bottom",
        ha="left",
        bbox={"facecolor": _BG, "alpha": 0.6, "pad": 1.5, "edgecolor": "none"},
    )
    if letters and v.oriented:
        left, right = ("R", "L") if v.radiological else ("L", "R")
        if view == "sagittal":
            left, right = "P", "A"
        kw = {"color": "#ffd60a", "fontsize": 10, "fontweight": "bold", "transform": ax.transAxes}
        ax.text(0.02, 0.5, left, va="center", ha="left", **kw)
        ax.text(0.98, 0.5, right, va="center", ha="right", **kw)


def _render(
    layers: _Layers,
    v: _View,
    out: Path,
    *,
    slices: Sequence[int],
    center: tuple[int, int, int],
    crop: tuple[slice, slice, slice],
    title: str,
    cbar_label: str | None,
    legend: list[tuple[str, tuple[float, float, float]]] | None = None,
    ortho: bool = True,
) -> Path:
    """Lay out an axial mosaic plus coronal/sagittal views and save atomically."""

    # Crop every layer to the region of interest.
    def c(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a[crop]

    layers = _Layers(
        base=np.nan_to_num(np.asarray(c(layers.base), dtype=np.float32)),
        cmap=layers.cmap,
        window=layers.window,
        show_mask=c(layers.show_mask),
        contour=c(layers.contour),
        contour_color=layers.contour_color,
        labels=c(layers.labels),
        label_lut=layers.label_lut,
    )
    z0 = crop[2].start
    full_center = tuple(int(x) for x in center)
    slices = [s - z0 for s in slices if crop[2].start <= s < crop[2].stop]
    center = tuple(
        min(max(ci - sl.start, 0), sl.stop - sl.start - 1)
        for ci, sl in zip(center, crop, strict=True)
    )
    nx, ny, nz = layers.base.shape
    vs = v.voxel_size
    n_cols = min(_N_COLS, max(len(slices), 1))
    n_rows = int(np.ceil(len(slices) / n_cols)) if slices else 0
    tile_w = _FIG_WIDTH_IN / n_cols
    tile_h = tile_w * (ny * vs[1]) / (nx * vs[0])
    tile_h = float(np.clip(tile_h, 0.6, 2.5 * tile_w))
    scale = min(_FIG_WIDTH_IN / 3.0 / (nx * vs[0]), _FIG_WIDTH_IN / 3.0 / (ny * vs[1]))
    ortho_h = float(np.clip(nz * vs[2] * scale, 0.8, 4.0)) if ortho and nz > 1 else 0.0
    title_h = 0.4
    cbar_h = 0.75 if cbar_label else 0.0
    legend_rows = int(np.ceil(len(legend) / 5)) if legend else 0
    legend_h = 0.25 * legend_rows + (0.15 if legend else 0.0)
    height = title_h + n_rows * tile_h + ortho_h + cbar_h + legend_h + 0.1

    fig = Figure(figsize=(_FIG_WIDTH_IN, height), dpi=_DPI, facecolor=_BG)
    fig.text(0.01, 1 - 0.2 / height, title, color=_FG, fontsize=12, va="center", ha="left")
    y = height - title_h  # top of the next block, inches from the bottom
    for i, k in enumerate(slices):
        r, col = divmod(i, n_cols)
        ax = fig.add_axes(
            (  # a small gutter (_GAP_IN) between tiles
                (col * tile_w + _GAP_IN / 2) / _FIG_WIDTH_IN,
                (y - (r + 1) * tile_h + _GAP_IN / 2) / height,
                (tile_w - _GAP_IN) / _FIG_WIDTH_IN,
                (tile_h - _GAP_IN) / height,
            )
        )
        ax.set_facecolor(_BG)
        text = v.slice_label("axial", k + z0, full_center)
        _draw_tile(ax, layers, "axial", k, v, text, letters=(i == 0))
    y -= n_rows * tile_h
    if ortho_h > 0:
        w_cor = nx * vs[0] * scale
        w_sag = ny * vs[1] * scale
        gap = (_FIG_WIDTH_IN - w_cor - w_sag) / 3
        for j, (view, w, idx, x0) in enumerate(
            (
                ("coronal", w_cor, center[1], gap),
                ("sagittal", w_sag, center[0], 2 * gap + w_cor),
            )
        ):
            ax = fig.add_axes(
                (x0 / _FIG_WIDTH_IN, (y - ortho_h) / height, w / _FIG_WIDTH_IN, ortho_h / height)
            )
            ax.set_facecolor(_BG)
            offset = crop[1].start if view == "coronal" else crop[0].start
            text = f"{view} " + v.slice_label(view, idx + offset, full_center)
            _draw_tile(ax, layers, view, idx, v, text, letters=True)
            del j
        y -= ortho_h
    if cbar_label:
        cax = fig.add_axes((0.3, (y - 0.32) / height, 0.4, 0.16 / height))
        cb = ColorbarBase(
            cax,
            cmap=plt.get_cmap(layers.cmap),
            norm=mcolors.Normalize(*layers.window),
            orientation="horizontal",
        )
        cb.set_label(cbar_label, color=_FG, fontsize=10)
        cb.ax.tick_params(colors=_FG, labelsize=9)
        cb.outline.set_edgecolor(_FG)
        y -= cbar_h
    if legend:
        handles = [Patch(facecolor=col, edgecolor="none", label=name) for name, col in legend]
        fig.legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=(0.5, y / height),
            ncol=5,
            frameon=False,
            fontsize=9,
            labelcolor=_FG,
            handlelength=1.2,
        )
    out = Path(out)
    fmt = "svg" if out.suffix.lower() == ".svg" else "png"
    atomic_write_with(out, lambda tmp: fig.savefig(tmp, format=fmt, facecolor=_BG, dpi=_DPI))
    return out


def _robust_window(a: np.ndarray, mask: np.ndarray | None) -> tuple[float, float]:
    # Every second voxel along each axis: the same percentiles, 8 times less work.
    a = a[::2, ::2, ::2]
    mask = None if mask is None else mask[::2, ::2, ::2]
    vals = a[mask > 0] if mask is not None and np.any(mask) else a[np.isfinite(a) & (a != 0)]
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(vals, [0.5, 99.5])
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def _scalar_figure(
    base: np.ndarray,
    mask: np.ndarray | None,
    voxel_size: Sequence[float],
    out: Path,
    *,
    cmap: str,
    window: tuple[float, float],
    title: str,
    cbar_label: str | None,
    affine: np.ndarray | None,
    radiological: bool,
    labels: np.ndarray | None,
    n_slices: int,
    show_inside_mask_only: bool,
    contour: bool = False,
) -> Path:
    base = _as3d(base, "image")
    mask = _as3d(mask, "mask")
    labels = _as3d(labels, "labels")
    v = _prepare([base, mask, labels], voxel_size, affine, radiological)
    b, m, lab = v.vols
    roi = m > 0 if m is not None else (np.nan_to_num(b) != 0)
    slices = choose_slices(roi, v.voxel_size, n_slices, labels=lab)
    layers = _Layers(
        base=b,
        cmap=cmap,
        window=window,
        show_mask=m if (show_inside_mask_only and m is not None) else None,
        contour=m if contour else None,
    )
    return _render(
        layers,
        v,
        out,
        slices=slices,
        center=_center(roi, lab),
        crop=_bbox(roi),
        title=title,
        cbar_label=cbar_label,
    )


# --------------------------------------------------------------------------------------------
# Public figures
# --------------------------------------------------------------------------------------------


def chimap_mosaic(
    chi_ppm: np.ndarray,
    mask: np.ndarray,
    voxel_size: Sequence[float],
    out: Path,
    window: tuple[float, float] = CHI_WINDOW_PPM,
    *,
    affine: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    radiological: bool = False,
    n_slices: int = 12,
) -> Path:
    """Susceptibility map (ppm) at a fixed gray-scale window, inside the brain mask.

    ``labels`` (optional deep-gray-matter segmentation in the same grid) centres the slices on
    the deep gray matter.
    """
    return _scalar_figure(
        chi_ppm,
        mask,
        voxel_size,
        out,
        cmap="gray",
        window=window,
        title="Susceptibility (\u03c7) map",
        cbar_label="\u03c7 (ppm)",
        affine=affine,
        radiological=radiological,
        labels=labels,
        n_slices=n_slices,
        show_inside_mask_only=True,
    )


def mask_outline(
    mag: np.ndarray,
    mask: np.ndarray,
    voxel_size: Sequence[float],
    out: Path,
    *,
    affine: np.ndarray | None = None,
    radiological: bool = False,
    n_slices: int = 12,
) -> Path:
    """First-echo magnitude (robust window) with the brain-mask outline in red."""
    mag = _as3d(mag, "mag")
    mask = _as3d(mask, "mask")
    v = _prepare([mag, mask], voxel_size, affine, radiological)
    b, m = v.vols
    m = np.asarray(m) > 0
    # Whole-head window from the magnitude (mask may be wrong, that is what we check).
    sub = np.nan_to_num(np.asarray(b[::2, ::2, ::2], dtype=np.float32))
    head = b > np.percentile(sub, 60) if np.any(sub) else np.nan_to_num(b) != 0
    win = _robust_window(b, head)
    # The whole mask extent: the top and bottom slices are where masks usually fail.
    zs = np.flatnonzero(_profiles(m)[2]) if np.any(m) else np.array([0, b.shape[2] - 1])
    slices = sorted({int(s) for s in np.linspace(zs.min(), zs.max(), n_slices).round()})
    layers = _Layers(base=b, cmap="gray", window=win, contour=m)
    return _render(
        layers,
        v,
        out,
        slices=slices,
        center=_center(m, None),
        crop=_bbox(m | head, margin=4) if np.any(m | head) else _bbox(m),
        title="Brain mask (red outline) on the first-echo magnitude",
        cbar_label=None,
    )


def _label_lut(values: Sequence[int]) -> dict[int, tuple[float, float, float]]:
    palette = list(plt.get_cmap("tab20").colors) + list(plt.get_cmap("tab20b").colors)
    return {int(v): tuple(palette[i % len(palette)][:3]) for i, v in enumerate(values)}


def atlas_overlay(
    chi_ppm: np.ndarray,
    labels: np.ndarray,
    voxel_size: Sequence[float],
    out: Path,
    label_names: Mapping[int, str] | None = None,
    *,
    mask: np.ndarray | None = None,
    window: tuple[float, float] = CHI_WINDOW_PPM,
    affine: np.ndarray | None = None,
    radiological: bool = False,
    n_slices: int = 12,
    max_legend: int = 40,
) -> Path:
    """Atlas labels (semi-transparent colours, legend with names) over the chi map.

    For a whole-brain atlas pass the reported structures only (see
    :func:`structure_label_map`); the legend lists at most ``max_legend`` entries.
    """
    chi_ppm = _as3d(chi_ppm, "chi_ppm")
    labels = _as3d(labels, "labels")
    mask = _as3d(mask, "mask")
    v = _prepare([chi_ppm, labels, mask], voxel_size, affine, radiological)
    b, lab, m = v.vols
    lab = np.asarray(lab)
    if lab.dtype.kind not in "iu":
        lab = np.rint(np.nan_to_num(lab)).astype(np.int32)
    pos = lab[lab > 0]
    values = [int(x) for x in np.flatnonzero(np.bincount(pos.ravel()))] if pos.size else []
    lut = _label_lut(values)
    roi = m > 0 if m is not None else (np.nan_to_num(b) != 0) | (lab > 0)
    slices = choose_slices(roi, v.voxel_size, n_slices, labels=lab)
    names = dict(label_names or {})
    legend = [(names.get(val, f"label {val}"), lut[val]) for val in values]
    if len(legend) > max_legend:
        # Whole-brain atlases: use structure_label_map() first for a readable figure.
        extra = len(legend) - (max_legend - 1)
        legend = [*legend[: max_legend - 1], (f"+{extra} more labels", (0.3, 0.3, 0.3))]
    layers = _Layers(base=b, cmap="gray", window=window, show_mask=m, labels=lab, label_lut=lut)
    return _render(
        layers,
        v,
        out,
        slices=slices,
        center=_center(roi, lab),
        crop=_bbox(roi),
        title="Atlas labels in GRE space over the \u03c7 map",
        cbar_label="\u03c7 (ppm)",
        legend=legend,
    )


def minip_figure(
    minip: np.ndarray,
    voxel_size: Sequence[float],
    out: Path,
    *,
    mask: np.ndarray | None = None,
    affine: np.ndarray | None = None,
    radiological: bool = False,
    n_slices: int = 12,
) -> Path:
    """SWI minimum-intensity projection (robust gray window; veins dark)."""
    minip = _as3d(minip, "minip")
    prep = np.nan_to_num(np.asarray(minip, dtype=np.float32))
    m = _as3d(mask, "mask")
    win_mask = m if m is not None else None
    win = _robust_window(prep, win_mask)
    return _scalar_figure(
        prep,
        m,
        voxel_size,
        out,
        cmap="gray",
        window=win,
        title="SWI minimum-intensity projection (minIP)",
        cbar_label=None,
        affine=affine,
        radiological=radiological,
        labels=None,
        n_slices=n_slices,
        show_inside_mask_only=False,
    )


def r2star_figure(
    r2star_hz: np.ndarray,
    mask: np.ndarray,
    voxel_size: Sequence[float],
    out: Path,
    window: tuple[float, float] = R2STAR_WINDOW_HZ,
    *,
    affine: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    radiological: bool = False,
    n_slices: int = 12,
) -> Path:
    """R2* map (Hz) at a fixed window (inferno colour map), inside the brain mask."""
    return _scalar_figure(
        r2star_hz,
        mask,
        voxel_size,
        out,
        cmap="inferno",
        window=window,
        title="R2* map",
        cbar_label="R2* (s\u207b\u00b9)",
        affine=affine,
        radiological=radiological,
        labels=labels,
        n_slices=n_slices,
        show_inside_mask_only=True,
    )


def phase_iron_figure(
    phase_iron_rad: np.ndarray,
    mask: np.ndarray,
    voxel_size: Sequence[float],
    out: Path,
    window: tuple[float, float] = PHASE_IRON_WINDOW_RAD,
    *,
    affine: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    radiological: bool = False,
    n_slices: int = 12,
) -> Path:
    """High-pass filtered phase-iron map (rad; iron positive) at a fixed diverging window."""
    return _scalar_figure(
        phase_iron_rad,
        mask,
        voxel_size,
        out,
        cmap="RdBu_r",
        window=window,
        title="SWI phase-iron map (high-pass filtered phase, iron positive)",
        cbar_label="phase (rad)",
        affine=affine,
        radiological=radiological,
        labels=labels,
        n_slices=n_slices,
        show_inside_mask_only=True,
    )


def structure_label_map(
    labels: np.ndarray, structures: Sequence[Any]
) -> tuple[np.ndarray, dict[int, str]]:
    """Group atlas labels into the reported structures for :func:`atlas_overlay`.

    ``structures`` are :class:`bids_qsm.atlas.structures.StructureDef`-like objects (``name``,
    ``hemisphere``, ``labels``). Returns an int16 map with one value per structure and
    hemisphere (later structures override earlier ones, so pulvinar shows inside thalamus) and
    the value -> "name L/R" mapping. Atlas labels outside every structure become 0.
    """
    labels = np.asarray(labels)
    out = np.zeros(labels.shape, dtype=np.int16)
    names: dict[int, str] = {}
    for value, s in enumerate(structures, start=1):
        sel = np.isin(labels, list(s.labels))
        if np.any(sel):
            out[sel] = value
            names[value] = f"{str(s.name).replace('_', ' ')} {s.hemisphere}"
    return out, names


def structure_labels_from_table(
    labels: np.ndarray, table: Any
) -> tuple[np.ndarray, dict[int, str]]:
    """Like :func:`structure_label_map`, from a ``dseg.tsv`` table.

    ``table`` is a DataFrame with ``index``, ``structure`` (``n/a`` for unreported labels,
    several structures joined by ``;``, e.g. ``thalamus;pulvinar``) and ``hemisphere``
    columns, as written next to ``<src>_seg-<atlas>_dseg.nii.gz``. Without a ``structure``
    column the labels are returned unchanged with the table's names.
    """
    from bids_qsm.atlas.structures import STRUCTURE_NAMES, StructureDef

    cols = set(getattr(table, "columns", []))
    if "structure" not in cols or "index" not in cols:
        names = (
            dict(zip(table["index"].astype(int), table["name"].astype(str), strict=False))
            if {"index", "name"} <= cols
            else {}
        )
        return np.asarray(labels), names
    groups: dict[tuple[str, str], list[int]] = {}
    for _, row in table.iterrows():
        hemi = str(row.get("hemisphere", "")) if "hemisphere" in cols else ""
        for name in str(row["structure"]).split(";"):
            name = name.strip()
            if name and name.lower() not in ("n/a", "nan", "none"):
                groups.setdefault((name, hemi), []).append(int(row["index"]))
    rank = {n: i for i, n in enumerate(STRUCTURE_NAMES)}
    ordered = sorted(groups, key=lambda k: (rank.get(k[0], len(rank)), k[0], k[1]))
    structs = [StructureDef(n, h, tuple(groups[(n, h)])) for n, h in ordered]
    return structure_label_map(labels, structs)

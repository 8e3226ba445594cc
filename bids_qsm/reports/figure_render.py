"""Drawing of the report figures: tiles, the axial mosaic with orthogonal views, colour bar.

:func:`_render` lays out one figure (inches, ``_DPI`` dots per inch) and writes it atomically
as PNG or SVG; :func:`_scalar_figure` is the common path of the single-map figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colors as mcolors
from matplotlib.colorbar import ColorbarBase
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from bids_qsm.reports._atomic import atomic_write_with
from bids_qsm.reports.figure_geometry import (
    _as3d,
    _bbox,
    _center,
    _prepare,
    _View,
    choose_slices,
)

_FIG_WIDTH_IN = 12.0
_DPI = 100
_N_COLS = 6
_GAP_IN = 0.06
_BG = "black"
_FG = "white"


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


def _crop_layers(layers: _Layers, crop: tuple[slice, slice, slice]) -> _Layers:
    """Every layer cropped to the region of interest (the base as finite float32)."""

    def c(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a[crop]

    return _Layers(
        base=np.nan_to_num(np.asarray(c(layers.base), dtype=np.float32)),
        cmap=layers.cmap,
        window=layers.window,
        show_mask=c(layers.show_mask),
        contour=c(layers.contour),
        contour_color=layers.contour_color,
        labels=c(layers.labels),
        label_lut=layers.label_lut,
    )


def _colorbar_and_legend(
    fig: Figure,
    layers: _Layers,
    y: float,
    height: float,
    cbar_label: str | None,
    cbar_h: float,
    legend: list[tuple[str, tuple[float, float, float]]] | None,
) -> None:
    """Colour bar (when ``cbar_label``) then label legend below ``y`` (inches from the bottom)."""
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
    layers = _crop_layers(layers, crop)
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
    _colorbar_and_legend(fig, layers, y, height, cbar_label, cbar_h, legend)
    out = Path(out)
    fmt = "svg" if out.suffix.lower() == ".svg" else "png"
    atomic_write_with(out, lambda tmp: fig.savefig(tmp, format=fmt, facecolor=_BG, dpi=_DPI))
    return out


def _render_roi(
    layers: _Layers,
    v: _View,
    out: Path,
    roi: np.ndarray,
    labels: np.ndarray | None,
    n_slices: int,
    **kwargs,
) -> Path:
    """:func:`_render` of the ``n_slices`` axial slices chosen in ``roi`` (and ``labels``),
    centred on them and cropped to the bounding box of ``roi``; ``kwargs`` go to _render."""
    slices = choose_slices(roi, v.voxel_size, n_slices, labels=labels)
    return _render(
        layers, v, out, slices=slices, center=_center(roi, labels), crop=_bbox(roi), **kwargs
    )


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
    layers = _Layers(
        base=b,
        cmap=cmap,
        window=window,
        show_mask=m if (show_inside_mask_only and m is not None) else None,
        contour=m if contour else None,
    )
    return _render_roi(layers, v, out, roi, lab, n_slices, title=title, cbar_label=cbar_label)

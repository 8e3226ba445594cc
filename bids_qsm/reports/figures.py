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
import numpy as np

from bids_qsm.reports.figure_geometry import (
    _as3d,
    _bbox,
    _center,
    _prepare,
    _profiles,
    choose_slices,
    orientation_note,
)
from bids_qsm.reports.figure_render import (
    _Layers,
    _render,
    _render_roi,
    _robust_window,
    _scalar_figure,
)

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


@dataclass(frozen=True)
class FigureStyle:
    """Colour map, title and colour-bar label of a single-map figure."""

    cmap: str
    title: str
    cbar_label: str | None
    inside_mask_only: bool = True  # voxels outside the brain mask drawn black


#: The single-map figures: one style each (the public functions differ only by their style
#: and default window).
FIGURE_STYLES: dict[str, FigureStyle] = {
    "chimap": FigureStyle("gray", "Susceptibility (\u03c7) map", "\u03c7 (ppm)"),
    "minip": FigureStyle("gray", "SWI minimum-intensity projection (minIP)", None, False),
    "r2star": FigureStyle("inferno", "R2* map", "R2* (s\u207b\u00b9)"),
    "phaseiron": FigureStyle(
        "RdBu_r", "SWI phase-iron map (high-pass filtered phase, iron positive)", "phase (rad)"
    ),
}


def _styled(
    style: str,
    base: np.ndarray,
    mask: np.ndarray | None,
    voxel_size: Sequence[float],
    out: Path,
    window: tuple[float, float],
    *,
    affine: np.ndarray | None,
    labels: np.ndarray | None,
    radiological: bool,
    n_slices: int,
) -> Path:
    """A single-map figure drawn with ``FIGURE_STYLES[style]``."""
    st = FIGURE_STYLES[style]
    kwargs = {"affine": affine, "radiological": radiological, "labels": labels}
    return _scalar_figure(
        base, mask, voxel_size, out, cmap=st.cmap, window=window, title=st.title,
        cbar_label=st.cbar_label, n_slices=n_slices, show_inside_mask_only=st.inside_mask_only,
        **kwargs,
    )  # fmt: skip


def _single_map_figure(style: str, default_window: tuple[float, float], doc: str):
    """A public single-map figure function: ``FIGURE_STYLES[style]`` at ``default_window``."""

    def figure(
        image: np.ndarray,
        mask: np.ndarray,
        voxel_size: Sequence[float],
        out: Path,
        window: tuple[float, float] = default_window,
        *,
        affine: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        radiological: bool = False,
        n_slices: int = 12,
    ) -> Path:
        return _styled(
            style,
            image,
            mask,
            voxel_size,
            out,
            window,
            affine=affine,
            labels=labels,
            radiological=radiological,
            n_slices=n_slices,
        )

    figure.__doc__ = doc
    return figure


chimap_mosaic = _single_map_figure(
    "chimap",
    CHI_WINDOW_PPM,
    """Susceptibility map (ppm) at a fixed gray-scale window, inside the brain mask.

    ``labels`` (optional deep-gray-matter segmentation in the same grid) centres the slices on
    the deep gray matter.
    """,
)
r2star_figure = _single_map_figure(
    "r2star",
    R2STAR_WINDOW_HZ,
    """R2* map (Hz) at a fixed window (inferno colour map), inside the brain mask.""",
)
phase_iron_figure = _single_map_figure(
    "phaseiron",
    PHASE_IRON_WINDOW_RAD,
    """High-pass filtered phase-iron map (rad; iron positive) at a fixed diverging window.""",
)
chimap_mosaic.__name__ = "chimap_mosaic"
r2star_figure.__name__ = "r2star_figure"
phase_iron_figure.__name__ = "phase_iron_figure"


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
    names = dict(label_names or {})
    legend = [(names.get(val, f"label {val}"), lut[val]) for val in values]
    if len(legend) > max_legend:
        # Whole-brain atlases: use structure_label_map() first for a readable figure.
        extra = len(legend) - (max_legend - 1)
        legend = [*legend[: max_legend - 1], (f"+{extra} more labels", (0.3, 0.3, 0.3))]
    layers = _Layers(base=b, cmap="gray", window=window, show_mask=m, labels=lab, label_lut=lut)
    return _render_roi(
        layers,
        v,
        out,
        roi,
        lab,
        n_slices,
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
    return _styled(
        "minip",
        prep,
        m,
        voxel_size,
        out,
        win,
        affine=affine,
        labels=None,
        radiological=radiological,
        n_slices=n_slices,
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
    names: dict[int, str] = {}
    small = labels.size and np.issubdtype(labels.dtype, np.integer)
    if small and 0 <= labels.min() and labels.max() < 2**20:
        # one lookup table (atlas label -> structure value), later structures overriding
        # earlier ones: the same map as the masks below, in one pass over the voxels
        present = np.bincount(labels.ravel()) > 0
        lut = np.zeros(present.size, dtype=np.int16)
        for value, s in enumerate(structures, start=1):
            ids = [i for i in s.labels if 0 <= int(i) < present.size and present[int(i)]]
            if ids:
                lut[ids] = value
                names[value] = f"{str(s.name).replace('_', ' ')} {s.hemisphere}"
        return np.ascontiguousarray(lut[labels]), names
    out = np.zeros(labels.shape, dtype=np.int16)
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

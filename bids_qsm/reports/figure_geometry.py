"""Geometry of the report figures: reorientation, crop boxes, slice choice, orientation note.

Arrays are in the acquisition voxel grid; with an affine the volumes are reoriented to the
closest canonical (RAS) axes without resampling (see :mod:`bids_qsm.reports.figures`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import nibabel.orientations as nio
import numpy as np

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

"""Small helpers of the atlas registration: running antsRegistration, files, boxes, grids.

Everything here is independent of the registration's parameters; the stage construction is
in :mod:`.stages`, the T1w alignment in :mod:`.t1w` and the driver in :mod:`.registration`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_qsm.atlas.registry import Atlas
from bids_qsm.atlas.transforms import itk_threads
from bids_qsm.errors import InputDataError


def combine_magnitude(img: nib.Nifti1Image) -> np.ndarray:
    """Root-sum-of-squares over echoes (4D) or the 3D magnitude itself (float32)."""
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim == 4:
        data = np.sqrt((data**2).sum(axis=3))
    if data.ndim != 3:
        raise InputDataError(f"GRE magnitude must be 3D or 4D, got shape {data.shape}")
    return np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)


def run_ants(args: list[str], threads: int) -> None:
    """Run ``antsRegistration`` (in-process, antspyx) with ``threads`` ITK threads.

    ``BIDS_QSM_ANTS_VERBOSE=1`` in the environment adds ``--verbose 1`` (per-iteration
    metric values and times on stdout: how the stage timings in docs/atlas.md were taken).
    """
    if os.environ.get("BIDS_QSM_ANTS_VERBOSE"):
        args = [*args, "--verbose", "1"]
    import ants

    with itk_threads(threads):
        ants.registration(fixed=args, moving=None)


def save(img: nib.Nifti1Image, path: Path) -> Path:
    """Write ``img`` to ``path`` and return the path."""
    nib.save(img, path)
    return path


def move_atomic(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` through a temporary name (readers never see a partial file)."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return dst


def check_same_grid(a: nib.Nifti1Image, b: nib.Nifti1Image, what: str) -> None:
    """InputDataError unless ``a`` and ``b`` share shape and affine (1e-3 mm)."""
    if a.shape[:3] != b.shape[:3] or not np.allclose(a.affine, b.affine, atol=1e-3):
        raise InputDataError(f"{what}: brain mask and GRE magnitude are on different grids")


def voxel_mm(affine: np.ndarray) -> np.ndarray:
    """Voxel edge lengths (mm) of an affine."""
    return np.sqrt((np.asarray(affine, dtype=float)[:3, :3] ** 2).sum(axis=0))


def bbox(
    mask: np.ndarray, affine: np.ndarray, margin_mm: float
) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """Bounding box of ``mask`` grown by ``margin_mm`` (clipped), and the affine of that box."""
    idx = np.argwhere(mask)
    pad = np.ceil(margin_mm / voxel_mm(affine)).astype(int)
    lo = np.maximum(idx.min(axis=0) - pad, 0)
    hi = np.minimum(idx.max(axis=0) + pad + 1, mask.shape)
    sub = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    sub_affine = affine.copy()
    sub_affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    return sub, sub_affine  # type: ignore[return-value]


def box_shape(sub: tuple[slice, ...]) -> tuple[int, ...]:
    """Shape of the array a tuple of slices cuts out."""
    return tuple(s.stop - s.start for s in sub)


def levels(
    targets_mm: tuple[float, ...], voxel: float, iterations: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[float, ...]]:
    """Shrink factors reaching the target resolutions (mm) on a grid of ``voxel`` mm.

    Levels that collapse to the same shrink factor are merged. Returns (iterations, shrink
    factors, smoothing sigmas in voxels of the full-resolution grid).
    """
    its: list[int] = []
    shrinks: list[int] = []
    for t, n in zip(targets_mm, iterations, strict=True):
        f = max(1, int(round(t / voxel)))
        if shrinks and shrinks[-1] == f:
            its[-1] = max(its[-1], n)
            continue
        shrinks.append(f)
        its.append(n)
    smooth = tuple(0.5 * (f - 1) for f in shrinks)
    return tuple(its), tuple(shrinks), smooth


def template_coords(
    atlas: Atlas, gre_ref, ref_affine: np.ndarray, xfm: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Template world coordinates (mm, RAS, (3, X, Y, Z)) of every voxel of ``gre_ref`` (an
    ANTs image whose voxel -> RAS affine is ``ref_affine``).

    One ``antsApplyTransforms`` call composes ``xfm`` into a displacement field on the
    ``gre_ref`` grid (``--output [field,1]``, written uncompressed): each voxel's template
    point is its own position plus that displacement, exactly the point at which ANTs would
    sample a template image. Returns (coordinates, inside): ``inside`` is False where the
    point falls outside the template grid (ITK's buffer: half a voxel beyond the edge
    voxel centres), and the coordinates are 0 there."""
    import ants
    from ants.internal import get_lib_fn, process_arguments

    with tempfile.TemporaryDirectory(prefix=".coords-") as tmpd:
        field_path = str(Path(tmpd) / "field.nii")
        args = ["-d", 3, "-i", gre_ref, "-o", f"[{field_path},1]", "-r", gre_ref]
        for x in xfm:
            args += ["-t", str(x)]
        args += ["-v", 0, "--float", 1]
        if get_lib_fn("antsApplyTransforms")(process_arguments(args)) != 0:
            raise RuntimeError("antsApplyTransforms could not compose the transforms")
        disp = ants.image_read(field_path).numpy()  # (X, Y, Z, 3), mm, ITK's LPS axes
    shape = tuple(gre_ref.shape)
    aff = np.asarray(ref_affine, dtype=float)
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    coords = (aff[:3, :3].astype(np.float32) @ ijk).reshape(3, *shape)
    lps = np.array([-1.0, -1.0, 1.0], np.float32)
    for k in range(3):
        coords[k] += np.float32(aff[k, 3]) + lps[k] * disp[..., k]
    del disp
    inv = np.linalg.inv(np.asarray(atlas.template_img.affine, dtype=float))
    t_ijk = inv[:3, :3] @ coords.reshape(3, -1) + inv[:3, 3:4]
    n_vox = np.asarray(atlas.template_img.shape[:3])[:, None]
    inside = _in_buffer(t_ijk, n_vox).reshape(shape)
    coords[:, ~inside] = 0.0
    return coords, inside


def labels_at(
    labels_img: nib.Nifti1Image,
    coords: np.ndarray,
    inside: np.ndarray | None = None,
    chunk: int = 1 << 20,
) -> np.ndarray:
    """Label image sampled at world points (mm, RAS, shape (3, ...)), ``genericLabel`` style.

    Each label's indicator is interpolated trilinearly and the label with the largest value
    wins (ties: the smallest label), as ANTs' ``genericLabel`` (linear) interpolator does;
    points outside the label grid (or not ``inside``) get 0. Working on the 8 corner labels
    of each point, the cost does not grow with the number of labels (ANTs' interpolator
    loops over all ~170 AAL3 labels per voxel).
    """
    lab = np.asarray(labels_img.dataobj).astype(np.int32)
    flat = lab.ravel()
    stride = np.asarray([lab.shape[1] * lab.shape[2], lab.shape[2], 1], dtype=np.int64)
    inv = np.linalg.inv(np.asarray(labels_img.affine, dtype=float))
    pts = np.asarray(coords, dtype=np.float64).reshape(3, -1)
    keep = np.ones(pts.shape[1], bool) if inside is None else np.asarray(inside).reshape(-1)
    out = np.zeros(pts.shape[1], np.int32)
    n_vox = np.asarray(lab.shape, dtype=np.int64)[:, None]
    corners = [(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)]
    for s in range(0, pts.shape[1], chunk):
        ijk = inv[:3, :3] @ pts[:, s : s + chunk] + inv[:3, 3:4]
        ok = _in_buffer(ijk, n_vox) & keep[s : s + chunk]
        ijk = ijk[:, ok]
        base = np.floor(ijk).astype(np.int64)
        # flat offsets of the two neighbours per axis; ITK's linear interpolator repeats the
        # edge voxel for neighbours beyond the edge
        off = [
            [np.clip(base[d] + o, 0, n_vox[d, 0] - 1) * stride[d] for o in (0, 1)] for d in range(3)
        ]
        cl = np.empty((8, ijk.shape[1]), np.int32)
        for k, (a, b, c) in enumerate(corners):
            cl[k] = flat[off[0][a] + off[1][b] + off[2][c]]
        pick = cl[0].copy()
        # only points whose 8 corners differ need the weights (most are inside one label)
        mixed = np.flatnonzero((cl != cl[0]).any(axis=0))
        if mixed.size:
            pick[mixed] = _vote(cl[:, mixed], ijk[:, mixed] - base[:, mixed], corners)
        res = np.zeros(pts[:, s : s + chunk].shape[1], np.int32)
        res[ok] = pick
        out[s : s + chunk] = res
    return out.reshape(np.asarray(coords).shape[1:])


def _vote(cl: np.ndarray, frac: np.ndarray, corners: list[tuple[int, int, int]]) -> np.ndarray:
    """Label with the largest summed trilinear weight among the 8 corner labels ``cl``
    (8, N) at fractional offsets ``frac`` (3, N); ties -> the smallest label."""
    cw = np.empty(cl.shape, np.float64)
    for k, (a, b, c) in enumerate(corners):
        cw[k] = (
            (frac[0] if a else 1.0 - frac[0])
            * (frac[1] if b else 1.0 - frac[1])
            * (frac[2] if c else 1.0 - frac[2])
        )
    score = np.zeros_like(cw)
    for k in range(8):
        score[k] = (cw * (cl == cl[k])).sum(axis=0)
    score -= 1e-9 * cl  # ties -> smallest label
    pick = np.argmax(score, axis=0)
    return np.take_along_axis(cl, pick[None], axis=0)[0]


def _in_buffer(ijk: np.ndarray, n_vox: np.ndarray) -> np.ndarray:
    """Continuous indices inside ITK's buffer (half a voxel beyond the edge voxel centres)."""
    return np.all((ijk >= -0.5) & (ijk <= n_vox - 0.5), axis=0)


def sample_linear(img: nib.Nifti1Image, coords: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Trilinear samples (float32) of ``img`` at world points (mm, RAS, (3, ...)); 0 outside
    the image or where ``inside`` is False."""
    from scipy import ndimage

    inv = np.linalg.inv(np.asarray(img.affine, dtype=float))
    pts = np.asarray(coords, dtype=np.float64).reshape(3, -1)
    ijk = inv[:3, :3] @ pts + inv[:3, 3:4]
    data = np.asarray(img.dataobj, dtype=np.float32)
    val = ndimage.map_coordinates(data, ijk, order=1, mode="nearest")
    val[~(np.asarray(inside).reshape(-1) & _in_buffer(ijk, np.asarray(data.shape)[:, None]))] = 0

    return val.astype(np.float32).reshape(np.asarray(coords).shape[1:])

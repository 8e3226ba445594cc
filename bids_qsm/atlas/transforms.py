"""Bridges between nibabel (RAS+ world) and ANTs (LPS world), and transform file names.

Conventions
-----------
* NIfTI affines map voxel indices to RAS+ millimetres; ITK/ANTs images and transforms work
  in LPS millimetres. ``_FLIP = diag(-1, -1, 1)`` converts between the two.
* ANTs transforms are *point* maps from the fixed to the moving space. A transform written as
  ``from-A_to-B_mode-image_xfm`` resamples an image in space A onto space B, i.e. it maps the
  points of B to the points of A (BIDS / fMRIPrep convention).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np

_FLIP = np.diag([-1.0, -1.0, 1.0])


def nib_to_ants(img: nib.Nifti1Image, dtype: type = np.float32):  # -> ants.ANTsImage
    """Convert a 3D nibabel image to an ANTs image without resampling.

    The voxel array is kept as is; the RAS+ affine becomes an LPS origin, spacing (mm) and
    direction cosine matrix. Oblique affines are supported (shears are not).
    """
    import ants

    data = np.asarray(img.dataobj, dtype=dtype)
    if data.ndim != 3:
        raise ValueError(f"expected a 3D image, got shape {data.shape}")
    aff = np.asarray(img.affine, dtype=float)
    spacing = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    direction = _FLIP @ (aff[:3, :3] / spacing)
    origin = _FLIP @ aff[:3, 3]
    return ants.from_numpy(
        np.ascontiguousarray(data),
        origin=tuple(float(v) for v in origin),
        spacing=tuple(float(v) for v in spacing),
        direction=direction,
    )


def ants_to_nib(aimg, dtype: type | None = None) -> nib.Nifti1Image:  # aimg: ants.ANTsImage
    """Convert a 3D ANTs image to nibabel (RAS+ affine), keeping the voxel array."""
    data = aimg.numpy()
    if dtype is not None:
        data = data.astype(dtype)
    spacing = np.asarray(aimg.spacing, dtype=float)
    direction = np.asarray(aimg.direction, dtype=float).reshape(3, 3)
    aff = np.eye(4)
    aff[:3, :3] = _FLIP @ direction * spacing[None, :]
    aff[:3, 3] = _FLIP @ np.asarray(aimg.origin, dtype=float)
    out = nib.Nifti1Image(data, aff)
    out.set_qform(aff, code=1)
    out.set_sform(aff, code=1)
    return out


def itk_affine_to_ras(path: Path) -> np.ndarray:
    """Read an ITK/ANTs affine (``.mat``) and return its 4x4 RAS+ *point* map (mm)."""
    import ants

    tx = ants.read_transform(str(path))
    p = np.asarray(tx.parameters, dtype=float)
    c = np.asarray(tx.fixed_parameters, dtype=float)
    a = p[:9].reshape(3, 3)
    t = p[9:12]
    m_lps = np.eye(4)
    m_lps[:3, :3] = a
    m_lps[:3, 3] = t + c - a @ c
    f4 = np.eye(4)
    f4[:3, :3] = _FLIP
    return f4 @ m_lps @ f4


def xfm_name(prefix: str, source: str, target: str, ext: str) -> str:
    """BIDS-style name ``{prefix}_from-{source}_to-{target}_mode-image_xfm.{ext}``."""
    return f"{prefix}_from-{source}_to-{target}_mode-image_xfm.{ext.lstrip('.')}"


#: ANTs seeds its random sampling from the clock when ``--random-seed`` is 0 ("the fixed seed
#: can be any nonzero int"), so seed 0 is passed as this value instead (the largest int32).
ANTS_SEED_FOR_ZERO = 2**31 - 1


def ants_seed(seed: int) -> int:
    """The ``--random-seed`` value that gives ANTs the fixed seed ``seed``.

    ANTs reads 0 as "seed from the system clock" (not repeatable); every other value is a
    fixed seed. bids-qsm's default seed is 0, so 0 is mapped to :data:`ANTS_SEED_FOR_ZERO`.
    """
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"random seed must be >= 0, got {seed}")
    return ANTS_SEED_FOR_ZERO if seed == 0 else seed


@contextmanager
def itk_threads(threads: int) -> Iterator[None]:
    """Temporarily set ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` (restored on exit)."""
    key = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"
    old = os.environ.get(key)
    os.environ[key] = str(max(1, int(threads)))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old

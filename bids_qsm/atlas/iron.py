"""Iron-contrast template and deep gray matter box for the atlas registration.

Pallidum, substantia nigra and red nucleus are the brightest structures of a susceptibility
(or R2*) map and nearly invisible on a GRE magnitude or a T1w; registering the subject's
iron map to a template of the same contrast pins them down. No QSM template ships offline,
so one is synthesised from the atlas: the template's tissue classes (CSF, gray and white
matter fractions by linear mixing of its intensity between the class modes: CSF = 2nd
percentile, white matter = 90th percentile of the brain, gray matter 61 % of the way) get
``TISSUE_PPM`` and every reported structure a literature susceptibility at 3 T (ppm relative
to CSF), smoothed with a Gaussian of ``IRON_TEMPLATE_SMOOTH_MM``. Values are rounded means
of healthy adults (Lim et al. 2013 NeuroImage 82:449; Deistung et al. 2013 NeuroImage
65:299; Li et al. 2014 NeuroImage 94:137): they set the contrast only (the registration
metric is not sensitive to their scale).

The template is written once per atlas to the user cache
(``{atlas}_space-{template}_desc-iron{version}_chimap.nii.gz``).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from bids_qsm.atlas.registry import Atlas, cache_dir

LOGGER = logging.getLogger("bids_qsm.registration")

#: Susceptibility (ppm vs CSF, 3 T) of the reported structures in the iron template.
IRON_TEMPLATE_PPM: dict[str, float] = {
    "globus_pallidus": 0.16,
    "substantia_nigra": 0.14,
    "red_nucleus": 0.11,
    "putamen": 0.06,
    "caudate": 0.06,
    "nucleus_accumbens": 0.03,
    "pulvinar": 0.01,
    "thalamus": 0.0,
    "amygdala": 0.0,
    "hippocampus": 0.0,
}
#: Susceptibility (ppm vs CSF) of CSF, cortical gray and white matter in the iron template.
TISSUE_PPM: dict[str, float] = {"csf": 0.0, "gm": 0.01, "wm": -0.03}
#: Gaussian smoothing (SD, mm) of the iron template: about a 2 mm voxel's partial volume.
IRON_TEMPLATE_SMOOTH_MM: float = 1.0
_VERSION = "v2"

#: Structures whose bounding box (plus a margin) is the deep gray matter box.
DGM_BOX_STRUCTURES: tuple[str, ...] = (
    "thalamus",
    "caudate",
    "putamen",
    "globus_pallidus",
    "nucleus_accumbens",
    "substantia_nigra",
    "red_nucleus",
    "amygdala",
    "hippocampus",
)


def iron_values(atlas: Atlas) -> dict[int, float]:
    """Atlas label value -> template susceptibility (ppm); later structures override."""
    out: dict[int, float] = {}
    for s in atlas.structures:
        if s.name in IRON_TEMPLATE_PPM:
            for v in s.labels:
                out[int(v)] = IRON_TEMPLATE_PPM[s.name]
    if "pulvinar" in {s.name for s in atlas.structures}:  # pulvinar nuclei are in the thalamus
        for s in atlas.structures:
            if s.name == "pulvinar":
                for v in s.labels:
                    out[int(v)] = IRON_TEMPLATE_PPM["pulvinar"]
    return out


def template_tissue_fractions(atlas: Atlas) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """CSF, gray and white matter fractions (float64, 0 outside the brain) of the atlas
    template, by linear mixing of its T1 intensity between the class modes (CSF = 2nd
    percentile, white matter = 90th percentile of the brain, gray matter 61 % of the way);
    None without a brain mask."""
    t1 = np.asarray(atlas.template_img.dataobj, dtype=np.float32)
    brain = atlas.template_mask()
    if not brain.any():
        return None
    i_csf, i_wm = np.percentile(t1[brain], [2, 90])
    i_gm = i_csf + 0.61 * (i_wm - i_csf)
    f_wm = np.clip((t1 - i_gm) / max(i_wm - i_gm, 1e-6), 0, 1)
    f_csf = np.clip((i_gm - t1) / max(i_gm - i_csf, 1e-6), 0, 1)
    f_gm = 1.0 - f_wm - f_csf
    return f_csf * brain, f_gm * brain, f_wm * brain


def synthesise_iron_template(atlas: Atlas) -> nib.Nifti1Image:
    """The iron template (ppm, float32) on the atlas template grid (not cached)."""
    labels = atlas.labels()
    values = iron_values(atlas)
    lut = np.zeros(int(labels.max()) + 1, np.float32)
    for v, chi in values.items():
        if v < lut.size:
            lut[v] = chi
    chi = np.zeros(labels.shape, np.float32)
    fractions = template_tissue_fractions(atlas)
    if fractions is not None:
        f_csf, f_gm, f_wm = fractions
        chi = f_gm * TISSUE_PPM["gm"] + f_wm * TISSUE_PPM["wm"] + f_csf * TISSUE_PPM["csf"]
    structure = np.isin(labels, list(values))
    chi[structure] = lut[labels[structure]]
    chi = chi.astype(np.float32)
    vox = np.sqrt((atlas.template_img.affine[:3, :3] ** 2).sum(axis=0))
    chi = ndimage.gaussian_filter(chi, IRON_TEMPLATE_SMOOTH_MM / vox).astype(np.float32)
    img = nib.Nifti1Image(chi, atlas.template_img.affine)
    img.header["descrip"] = b"bids-qsm synthetic iron template (ppm)"
    return img


def iron_template(atlas: Atlas) -> nib.Nifti1Image | None:
    """The cached iron template of ``atlas`` (built on first use); None without iron labels."""
    values = iron_values(atlas)
    if not any(v > 0 for v in values.values()):
        return None
    key = hashlib.sha1(
        repr(
            (
                sorted(values.items()),
                sorted(TISSUE_PPM.items()),
                IRON_TEMPLATE_SMOOTH_MM,
                atlas.labels_img.shape,
                float(np.asarray(atlas.template_img.dataobj).sum()),
            )
        ).encode()
        + np.asarray(atlas.labels_img.affine).tobytes()
    ).hexdigest()[:12]
    name = f"{atlas.name}_space-{atlas.template_name}_desc-iron{_VERSION}{key}_chimap.nii.gz"
    path = Path(cache_dir()) / name
    if path.is_file():
        try:
            img = nib.load(path)
            np.asarray(img.dataobj)
            return img
        except Exception:  # corrupted: rebuild
            path.unlink(missing_ok=True)
    img = synthesise_iron_template(atlas)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.nii.gz")
    nib.save(img, tmp)
    os.replace(tmp, path)
    LOGGER.info("cached the iron template: %s", path)
    return nib.load(path)


def dgm_box_world(atlas: Atlas, margin_mm: float) -> tuple[np.ndarray, np.ndarray] | None:
    """World (template mm) corners (lo, hi) of the deep gray matter box grown by ``margin_mm``."""
    wanted = [v for s in atlas.structures if s.name in DGM_BOX_STRUCTURES for v in s.labels]
    if not wanted:
        return None
    m = np.isin(atlas.labels(), wanted)
    if not m.any():
        return None
    idx = np.argwhere(m)
    aff = atlas.labels_img.affine
    corners = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    lo_hi = np.stack([idx.min(0), idx.max(0)])
    pts = np.array([[lo_hi[c[k], k] for k in range(3)] for c in corners], float)
    world = aff[:3, :3] @ pts.T + aff[:3, 3:4]
    return world.min(axis=1) - margin_mm, world.max(axis=1) + margin_mm


def iron_moving(
    iron_img: nib.Nifti1Image, mask: np.ndarray, clip_ppm: tuple[float, float] = (-0.1, 0.3)
) -> nib.Nifti1Image:
    """The subject's iron map (chi ppm) for the metric: NaN-free, clipped, 0 outside ``mask``."""
    data = np.asarray(iron_img.dataobj, dtype=np.float32)
    if data.ndim == 4:
        data = data[..., 0]
    data = np.clip(np.nan_to_num(data), *clip_ppm) * mask
    return nib.Nifti1Image(data.astype(np.float32), iron_img.affine)

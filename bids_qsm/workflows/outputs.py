"""Write one acquisition's derivatives under their BIDS names, with provenance sidecars.

Everything is written atomically (temporary name, then rename) through
:mod:`bids_qsm.bids.writers`, so a killed run never leaves a truncated file under a final name
and parallel participant jobs can share one OUTPUT_DIR.

Output names (``<src>`` keeps the source entities sub, ses, acq, run):

==============================================  =============================================
``<src>_Chimap.nii.gz``                          susceptibility (ppm, paramagnetic positive)
``<src>_desc-brain_mask.nii.gz``                 mask in which the susceptibility is defined
``<src>_desc-mag_T2starw.nii.gz``                SNR-weighted combined magnitude
``<src>_R2starmap.nii.gz`` / ``_T2starmap``      R2* (Hz) / T2* (s), multi-echo only
``<src>_desc-swi_T2starw.nii.gz``                susceptibility-weighted image
``<src>_desc-minip_T2starw.nii.gz``              minimum-intensity projection of the SWI
``<src>_desc-hpphase_T2starw.nii.gz``            high-pass filtered phase (rad, paramagnetic < 0)
``<src>_desc-phaseiron_T2starw.nii.gz``          phase-iron map (rad, iron > 0)
``<src>_seg-<atlas>_dseg.nii.gz`` + ``.tsv``     atlas labels in GRE space
``<src>_from-<tpl>_to-GRE_..._xfm.*``            registration transforms (both directions)
``<src>_seg-<atlas>_stats.tsv`` + ``.json``      regional iron table
``<src>_desc-lesions_stats.tsv`` + ``.json``     lesion-wise table (with --lesion-masks)
==============================================  =============================================
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from bids_qsm import __version__
from bids_qsm.bids.writers import (
    atomic_copy,
    atomic_path,
    atomic_save_nifti,
    atomic_write_json,
    derivative_path,
)
from bids_qsm.stats.lesions import LESION_COLUMN_DESCRIPTIONS
from bids_qsm.stats.regional import COLUMN_DESCRIPTIONS

#: (key, suffix, entities, description, units) of the image derivatives.
IMAGE_OUTPUTS: tuple[tuple[str, str, dict[str, str], str, str | None], ...] = (
    ("chi", "Chimap", {}, "Magnetic susceptibility, paramagnetic positive", "ppm"),
    ("mask", "mask", {"desc": "brain"}, "Mask in which the susceptibility is defined", None),
    ("mag", "T2starw", {"desc": "mag"}, "SNR-weighted combined GRE magnitude", "arbitrary"),
    ("r2star", "R2starmap", {}, "R2* from a weighted log-linear fit over echoes", "Hz"),
    ("t2star", "T2starmap", {}, "T2* = 1/R2*", "s"),
    ("swi", "T2starw", {"desc": "swi"}, "Susceptibility-weighted image (SWI)", "arbitrary"),
    ("minip", "T2starw", {"desc": "minip"}, "Minimum-intensity projection of the SWI", "arbitrary"),
    (
        "hpphase",
        "T2starw",
        {"desc": "hpphase"},
        "High-pass filtered phase (SWI convention: paramagnetic negative)",
        "rad",
    ),
    (
        "phaseiron",
        "T2starw",
        {"desc": "phaseiron"},
        "Phase-iron map: negated high-pass filtered phase, iron positive",
        "rad",
    ),
)


def _load(path: str | Path) -> nib.Nifti1Image:
    return nib.load(str(path))


def _compressed(img: nib.Nifti1Image, dtype: type) -> nib.Nifti1Image:
    data = np.asanyarray(img.dataobj)
    if dtype is np.uint8:
        data = (data > 0).astype(np.uint8)
    else:
        data = data.astype(dtype, copy=False)
    out = nib.Nifti1Image(data, img.affine)
    out.set_sform(img.affine, code=1)
    out.set_qform(img.affine, code=1)
    out.header.set_xyzt_units("mm", "sec")
    return out


def bids_uris(files: list[str | Path], bids_dir: Path) -> list[str]:
    """``bids:raw:<relative path>`` URIs of source files (``DatasetLinks`` names ``raw``)."""
    out = []
    for f in files:
        try:
            rel = Path(f).resolve().relative_to(Path(bids_dir).resolve())
            out.append(f"bids:raw:{rel.as_posix()}")
        except ValueError:
            out.append(Path(f).resolve().as_uri())
    return out


def _software_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"bids-qsm": __version__}
    for pkg in ("numpy", "scipy", "scikit-image", "nibabel", "nipype", "pybids", "antspyx"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def write_acquisition_derivatives(
    *,
    output_dir: Path,
    source_prefix: str,
    sources: list[str],
    files: dict[str, str | None],
    qsm_params: dict[str, Any],
    swi_params: dict[str, Any] | None,
    registration: dict[str, Any] | None,
    transforms: dict[str, str],
    meta: dict[str, Any],
    atlas_name: str,
    atlas_table: pd.DataFrame | None,
    regional_tsv: str | None,
    lesion_tsv: str | None,
) -> dict[str, str]:
    """Copy the node outputs to their final names with sidecars; return key -> final path."""
    written: dict[str, str] = {}
    mask_img = _load(files["mask"]) if files.get("mask") else None
    mask = np.asanyarray(mask_img.dataobj) > 0 if mask_img is not None else None
    acquisition = {
        "EchoTime": meta["echo_times_s"],
        "MagneticFieldStrength": meta["b0_tesla"],
        "B0DirectionVoxelAxes": meta["b0_direction_voxel_axes"],
        "PhaseUnitsDetected": meta["phase_units_detected"],
    }
    software = _software_versions()
    for key, suffix, ents, description, units in IMAGE_OUTPUTS:
        src = files.get(key)
        if not src:
            continue
        dtype = np.uint8 if key == "mask" else np.float32
        img = _compressed(_load(src), dtype)
        path = derivative_path(output_dir, source_prefix, suffix, **ents)
        atomic_save_nifti(img, path)
        sidecar: dict[str, Any] = {"Description": description, "Sources": sources}
        if key == "mask":
            sidecar["Type"] = "Brain"
        else:
            data = np.asanyarray(img.dataobj)
            sidecar["SkullStripped"] = bool(mask is not None and not np.any(data[~mask]))
            if units:
                sidecar["Units"] = units
        sidecar.update(acquisition)
        if key in ("chi", "mask", "r2star", "t2star"):
            sidecar["QSMPipeline"] = qsm_params["parameters"]
        if key == "chi":
            sidecar["ReferenceRegion"] = qsm_params["reference_region"]
            sidecar["ReferenceValue"] = qsm_params["reference_value_ppm"]
            sidecar["ReferenceValueUnits"] = "ppm"
            sidecar["SusceptibilitySign"] = "paramagnetic positive"
            sidecar["AtlasRegistration"] = _without_timings(registration)
        if key in ("swi", "minip", "hpphase", "phaseiron") and swi_params:
            sidecar["SWIPipeline"] = swi_params["parameters"]
        sidecar["ProcessingSoftware"] = software
        atomic_write_json(path.with_name(path.name.replace(".nii.gz", ".json")), sidecar)
        written[key] = str(path)

    if files.get("dseg"):
        path = derivative_path(output_dir, source_prefix, "dseg", seg=atlas_name)
        atomic_save_nifti(_compressed(_load(files["dseg"]), np.int16), path)
        side = {
            "Description": f"{atlas_name} atlas labels registered to the GRE space",
            "Sources": sources,
            "Atlas": atlas_name,
            "Registration": _without_timings(registration),
            "ProcessingSoftware": software,
        }
        atomic_write_json(path.with_name(path.name.replace(".nii.gz", ".json")), side)
        if atlas_table is not None:
            tsv = path.with_name(path.name.replace(".nii.gz", ".tsv"))
            with atomic_path(tsv) as tmp:
                atlas_table.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
        written["dseg"] = str(path)

    anat_dir = derivative_path(output_dir, source_prefix, "x").parent
    if files.get("registration_figure"):
        fig_dir = Path(output_dir) / source_prefix.split("_")[0] / "figures"
        dst = fig_dir / f"{source_prefix}_desc-registration_qc.png"
        atomic_copy(Path(files["registration_figure"]), dst)
        written["registration_figure"] = str(dst)
    for name, src in sorted(transforms.items()):
        dst = anat_dir / Path(src).name
        atomic_copy(Path(src), dst)
        written[f"xfm:{name}"] = str(dst)

    for key, tsv_src, ents, descriptions in (
        ("stats", regional_tsv, {"seg": atlas_name}, COLUMN_DESCRIPTIONS),
        ("lesions", lesion_tsv, {"desc": "lesions"}, LESION_COLUMN_DESCRIPTIONS),
    ):
        if not tsv_src:
            continue
        path = derivative_path(output_dir, source_prefix, "stats", ".tsv", **ents)
        atomic_copy(Path(tsv_src), path)
        header = Path(tsv_src).read_text().splitlines()[0].split("\t")
        cols = {
            c: descriptions.get(c, COLUMN_DESCRIPTIONS.get(c, {"Description": c})) for c in header
        }
        atomic_write_json(path.with_suffix(".json"), cols)
        written[key] = str(path)
    return written


def _without_timings(params: dict[str, Any] | None) -> dict[str, Any]:
    """``params`` without run-dependent timings (kept in the log folder instead)."""
    return {k: v for k, v in (params or {}).items() if k != "timings_s"}


def clean_stale_temporaries(folder: Path) -> int:
    """Remove temporary files (``.<name>.*.tmp*``) a killed run left in ``folder``.

    Temporaries of writers still running (parallel jobs into the same folder) are kept; see
    :func:`bids_qsm.bids.writers.is_stale_temporary`. Returns the number removed.
    """
    from bids_qsm.bids.writers import is_stale_temporary

    n = 0
    for tmp in Path(folder).rglob(".*.tmp*"):
        if "log" in tmp.relative_to(folder).parts[:-1] or not is_stale_temporary(tmp):
            continue
        if tmp.is_file() or tmp.is_symlink():
            tmp.unlink(missing_ok=True)
            n += 1
        elif tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
    return n


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The JSON sidecar of a ``.nii.gz`` or ``.tsv`` derivative ({} if absent)."""
    p = Path(path)
    side = p.with_name(p.name.replace(".nii.gz", ".json").replace(".tsv", ".json"))
    return json.loads(side.read_text()) if side.is_file() else {}

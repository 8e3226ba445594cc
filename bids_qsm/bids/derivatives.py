"""The derivatives of one acquisition: one table of outputs, its writer and its reader.

:data:`OUTPUTS` lists every derivative (key, suffix, entities, units, dtype); the writer
(:func:`write_acquisition_derivatives`) and the reader (:class:`Derivatives`,
:func:`find_tables`) both name files from it, so readers never re-spell a name.

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
    build_name,
    derivative_path,
)
from bids_qsm.stats.lesions import LESION_COLUMN_DESCRIPTIONS
from bids_qsm.stats.regional import COLUMN_DESCRIPTIONS


@dataclass(frozen=True)
class OutputSpec:
    """One derivative of an acquisition: ``<src>_<entities>_<suffix><extension>`` in ``anat/``.

    Entity values may contain ``{atlas}`` (filled by :class:`Derivatives`). ``dtype`` is the
    numpy type of the stored image (``"tsv"`` for tables); ``units`` goes to the sidecar.
    """

    key: str
    suffix: str
    entities: tuple[tuple[str, str], ...]
    description: str
    units: str | None
    dtype: str
    extension: str = ".nii.gz"


_NO: tuple[tuple[str, str], ...] = ()

#: Every derivative of one acquisition (images first, in the order they are written).
OUTPUTS: dict[str, OutputSpec] = {
    o.key: o
    for o in (
        OutputSpec("chi", "Chimap", _NO, "Magnetic susceptibility, paramagnetic positive",
                   "ppm", "float32"),
        OutputSpec("mask", "mask", (("desc", "brain"),),
                   "Mask in which the susceptibility is defined", None, "uint8"),
        OutputSpec("mag", "T2starw", (("desc", "mag"),), "SNR-weighted combined GRE magnitude",
                   "arbitrary", "float32"),
        OutputSpec("r2star", "R2starmap", _NO,
                   "R2* from a weighted log-linear fit over echoes", "Hz", "float32"),
        OutputSpec("t2star", "T2starmap", _NO, "T2* = 1/R2*", "s", "float32"),
        OutputSpec("swi", "T2starw", (("desc", "swi"),), "Susceptibility-weighted image (SWI)",
                   "arbitrary", "float32"),
        OutputSpec("minip", "T2starw", (("desc", "minip"),),
                   "Minimum-intensity projection of the SWI", "arbitrary", "float32"),
        OutputSpec("hpphase", "T2starw", (("desc", "hpphase"),),
                   "High-pass filtered phase (SWI convention: paramagnetic negative)", "rad",
                   "float32"),
        OutputSpec("phaseiron", "T2starw", (("desc", "phaseiron"),),
                   "Phase-iron map: negated high-pass filtered phase, iron positive", "rad",
                   "float32"),
        OutputSpec("dseg", "dseg", (("seg", "{atlas}"),),
                   "{atlas} atlas labels registered to the GRE space", None, "int16"),
        OutputSpec("dseg_table", "dseg", (("seg", "{atlas}"),), "Labels of the dseg image",
                   None, "tsv", ".tsv"),
        OutputSpec("stats", "stats", (("seg", "{atlas}"),), "Regional iron table", None, "tsv",
                   ".tsv"),
        OutputSpec("lesions", "stats", (("desc", "lesions"),), "Lesion-wise table", None, "tsv",
                   ".tsv"),
    )
}  # fmt: skip

#: The image derivatives written from the QSM and SWI node outputs.
IMAGE_KEYS: tuple[str, ...] = (
    "chi", "mask", "mag", "r2star", "t2star", "swi", "minip", "hpphase", "phaseiron",
)  # fmt: skip

#: (key, suffix, entities, description, units) of the image derivatives (historical form).
IMAGE_OUTPUTS: tuple[tuple[str, str, dict[str, str], str, str | None], ...] = tuple(
    (o.key, o.suffix, dict(o.entities), o.description, o.units)
    for o in (OUTPUTS[k] for k in IMAGE_KEYS)
)


class Derivatives:
    """Where the derivatives of one acquisition are: ``Derivatives(out, src).path("chi")``.

    ``source_prefix`` is the acquisition's BIDS prefix (e.g. ``sub-01_ses-1_acq-iso``),
    ``atlas`` fills the ``seg-`` entity of the atlas outputs.
    """

    def __init__(self, output_dir: Path, source_prefix: str, atlas: str = "AAL3") -> None:
        self.output_dir = Path(output_dir)
        self.source_prefix = str(source_prefix)
        self.atlas = str(atlas)

    @classmethod
    def from_table(cls, table: Path, atlas: str = "AAL3", key: str = "stats") -> Derivatives:
        """The acquisition of a derivative file found on disk (e.g. a ``_stats.tsv``)."""
        table = Path(table)
        spec = OUTPUTS[key]
        tail = "_" + build_name(cls._entities(spec, atlas), spec.suffix, spec.extension)
        if not table.name.endswith(tail):
            raise ValueError(f"{table.name} is not a {key!r} derivative (*{tail})")
        folder = table.parent.parent  # .../sub-<label>[/ses-<label>]/anat
        if folder.name.startswith("ses-"):
            folder = folder.parent
        return cls(folder.parent, table.name[: -len(tail)], atlas)

    @staticmethod
    def _entities(spec: OutputSpec, atlas: str) -> dict[str, str]:
        return {k: v.format(atlas=atlas) for k, v in spec.entities}

    def path(self, key: str) -> Path:
        """The file of derivative ``key`` (a key of :data:`OUTPUTS`)."""
        spec = OUTPUTS[key]
        return derivative_path(
            self.output_dir,
            self.source_prefix,
            spec.suffix,
            spec.extension,
            **self._entities(spec, self.atlas),
        )

    def sidecar(self, key: str) -> Path:
        """The JSON sidecar of derivative ``key``."""
        p = self.path(key)
        return p.with_name(p.name.replace(".nii.gz", ".json").replace(".tsv", ".json"))

    def xfm(self, source: str, target: str, ext: str = "h5") -> Path:
        """The registration transform ``<src>_from-<source>_to-<target>_mode-image_xfm.<ext>``
        (names written by :func:`bids_qsm.atlas.transforms.xfm_name`)."""
        name = f"{self.source_prefix}_from-{source}_to-{target}_mode-image_xfm.{ext.lstrip('.')}"
        return self.path("chi").parent / name


def find_tables(output_dir: Path, key: str = "stats", atlas: str = "AAL3") -> list[Path]:
    """Every participant derivative ``key`` (default the regional ``_stats.tsv`` of ``atlas``)
    under ``output_dir``, with or without a session level (sorted)."""
    spec = OUTPUTS[key]
    name = "*_" + build_name(Derivatives._entities(spec, atlas), spec.suffix, spec.extension)
    output_dir = Path(output_dir)
    pats = (f"sub-*/anat/{name}", f"sub-*/ses-*/anat/{name}")
    return sorted({p for pat in pats for p in output_dir.glob(pat)})


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


def _write_images(
    where: Derivatives,
    files: dict[str, str | None],
    sources: list[str],
    acquisition: dict[str, Any],
    software: dict[str, str],
    qsm_params: dict[str, Any],
    swi_params: dict[str, Any] | None,
    registration: dict[str, Any] | None,
    threads: int = 1,
) -> dict[str, str]:
    """The image derivatives (:data:`IMAGE_KEYS`) with their sidecars; key -> final path.

    ``threads`` images are compressed at once (zlib releases the GIL); each file is written
    the same way whatever the number, so the bytes do not depend on it.
    """
    mask_img = _load(files["mask"]) if files.get("mask") else None
    mask = np.asanyarray(mask_img.dataobj) > 0 if mask_img is not None else None
    keys = [key for key in IMAGE_KEYS if files.get(key)]

    def write(key: str) -> str:
        src = files[key]
        assert src is not None
        description, units = OUTPUTS[key].description, OUTPUTS[key].units
        img = _compressed(_load(src), getattr(np, OUTPUTS[key].dtype))
        path = where.path(key)
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
        return str(path)

    if threads <= 1:
        return {key: write(key) for key in keys}
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return dict(zip(keys, pool.map(write, keys), strict=True))


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
    threads: int = 1,
) -> dict[str, str]:
    """Copy the node outputs to their final names with sidecars; return key -> final path
    (``threads``: images compressed at once)."""
    written: dict[str, str] = {}
    acquisition = {
        "EchoTime": meta["echo_times_s"],
        "MagneticFieldStrength": meta["b0_tesla"],
        "B0DirectionVoxelAxes": meta["b0_direction_voxel_axes"],
        "PhaseUnitsDetected": meta["phase_units_detected"],
    }
    software = _software_versions()
    where = Derivatives(output_dir, source_prefix, atlas_name)
    written.update(
        _write_images(
            where,
            files,
            sources,
            acquisition,
            software,
            qsm_params,
            swi_params,
            registration,
            threads,
        )
    )
    if files.get("dseg"):
        path = where.path("dseg")
        atomic_save_nifti(
            _compressed(_load(files["dseg"]), getattr(np, OUTPUTS["dseg"].dtype)), path
        )
        side = {
            "Description": OUTPUTS["dseg"].description.format(atlas=atlas_name),
            "Sources": sources,
            "Atlas": atlas_name,
            "Registration": _without_timings(registration),
            "ProcessingSoftware": software,
        }
        atomic_write_json(path.with_name(path.name.replace(".nii.gz", ".json")), side)
        if atlas_table is not None:
            tsv = where.path("dseg_table")
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

    for key, tsv_src, descriptions in (
        ("stats", regional_tsv, COLUMN_DESCRIPTIONS),
        ("lesions", lesion_tsv, LESION_COLUMN_DESCRIPTIONS),
    ):
        if not tsv_src:
            continue
        path = where.path(key)
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

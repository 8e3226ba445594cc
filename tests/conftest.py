"""Shared pytest fixtures: tiny synthetic BIDS GRE datasets and the real sample wrapped in BIDS.

Fixtures for every test module of bids-qsm:

``bids_factory``
    a :class:`BidsFactory` writing a BIDS dataset under ``tmp_path / "bids"``; add GRE
    acquisitions (per-echo 3D files, one 4D file, real/imag parts, T2starw), T1w images,
    lesion masks and participants.tsv rows with chosen entities. Files are tiny (8x8x6 by
    default) and the dataset passes ``bids-validator-deno``.
``bids_dataset``
    a ready dataset: two subjects, 3-echo MEGRE (3D files, phase in radians), T1w, 3 T.
``real_gre_dir``
    the folder of the real 3 T sample ``real-gre-small`` (skips the test if absent).
``real_gre_bids``
    a factory ``real_gre_bids(units="arbitrary", four_d=False) -> Path`` wrapping that sample
    into a BIDS dataset (``units=None`` leaves ``Units`` out of the phase sidecar, so that
    the units must be detected).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from bids_qsm.qsm.phase import wrap_to_pi

GAMMA_HZ_PER_T = 42.577478e6
DEFAULT_TE_S = (0.004, 0.008, 0.012, 0.016, 0.020)
#: ``bids-qsm-simulate`` arguments of the smallest cohort: tiny preset, one control, one patient.
TINY_PAIR_ARGS = ("--preset", "tiny", "--n-controls", "1", "--n-patients", "1")


def _entities_prefix(subject: str, session: str | None, **entities: str | None) -> str:
    parts = [f"sub-{subject}"]
    if session:
        parts.append(f"ses-{session}")
    for key in ("acq", "rec", "run"):
        if entities.get(key):
            parts.append(f"{key}-{entities[key]}")
    return "_".join(parts)


def synthetic_gre(
    shape: Sequence[int] = (8, 8, 6),
    te_s: Sequence[float] = DEFAULT_TE_S[:3],
    b0_tesla: float = 3.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude and phase (rad, wrapped), each (X, Y, Z, E) float32, of a smooth phantom.

    An ellipsoid of tissue (T2* 30 ms) in noise, with a linear field of a few Hz per voxel
    so that the phase of late echoes wraps.
    """
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    inside = sum(g**2 for g in grid) < 0.8
    field_hz = 15.0 * grid[0] + 8.0 * grid[1] + 5.0 * grid[2]
    mags, phases = [], []
    for te in te_s:
        m = np.where(inside, 1000.0 * np.exp(-te / 0.03), 20.0) + rng.normal(0, 5, shape)
        mags.append(np.abs(m))
        phases.append(wrap_to_pi(2 * np.pi * field_hz * te + rng.normal(0, 0.01, shape)))
    return np.stack(mags, -1).astype(np.float32), np.stack(phases, -1).astype(np.float32)


class BidsFactory:
    """Writes a small BIDS dataset with chosen entities (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.participants: dict[str, dict[str, Any]] = {}
        self.write_json(
            self.root / "dataset_description.json",
            {
                "Name": "bids-qsm test dataset",
                "BIDSVersion": "1.10.0",
                "DatasetType": "raw",
                "License": "CC0",
                "Authors": ["bids-qsm tests"],
            },
        )
        (self.root / "README").write_text("Synthetic GRE data written by the bids-qsm tests.\n")

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def write_json(path: Path, data: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2))

    @staticmethod
    def save_nifti(
        path: Path, data: np.ndarray, affine: np.ndarray | None = None, dtype: Any = None
    ) -> Path:
        """Save ``data`` as NIfTI (mm, s units set) and return the path."""
        path.parent.mkdir(parents=True, exist_ok=True)
        arr = np.asarray(data, dtype=dtype or data.dtype)
        img = nib.Nifti1Image(arr, np.eye(4) if affine is None else affine)
        img.header.set_xyzt_units("mm", "sec")
        nib.save(img, str(path))
        return path

    def anat_dir(self, subject: str, session: str | None = None) -> Path:
        """``sub-<subject>[/ses-<session>]/anat`` (created)."""
        folder = self.root / f"sub-{subject}"
        if session:
            folder = folder / f"ses-{session}"
        folder = folder / "anat"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def add_participant(self, subject: str, **columns: Any) -> None:
        """Add or update a participants.tsv row (columns such as age, sex, group)."""
        self.participants.setdefault(subject, {}).update(columns)
        cols: list[str] = []
        for row in self.participants.values():
            cols.extend(c for c in row if c not in cols)
        lines = ["\t".join(["participant_id", *cols])]
        for sub, row in sorted(self.participants.items()):
            lines.append("\t".join([f"sub-{sub}", *(str(row.get(c, "n/a")) for c in cols)]))
        (self.root / "participants.tsv").write_text("\n".join(lines) + "\n")

    # ------------------------------------------------------------------ GRE
    def add_gre(
        self,
        subject: str = "01",
        session: str | None = None,
        *,
        acq: str | None = None,
        run: str | None = None,
        rec: str | None = None,
        suffix: str = "MEGRE",
        n_echoes: int = 3,
        four_d: bool = False,
        complex_parts: bool = False,
        shape: Sequence[int] = (8, 8, 6),
        te_s: Sequence[float] | None = None,
        b0_tesla: float | None = 3.0,
        phase_units: str | None = "rad",
        phase_scale: float | None = None,
        affine: np.ndarray | None = None,
        extra_sidecar: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> dict[str, list[Path]]:
        """Write one GRE acquisition; returns ``{"mag"|"phase"|"real"|"imag": [paths]}``.

        ``four_d`` writes all echoes in one file per part (``EchoTime`` list). ``phase_units``
        goes into the phase sidecar's ``Units`` (None: left out); ``phase_scale`` stores the
        phase as ``round(phase / pi * phase_scale)`` integers-as-float (arbitrary units, e.g.
        4096). ``suffix="T2starw"`` forces one echo and no ``echo-`` entity.
        """
        if suffix == "T2starw":
            n_echoes = 1
        te = list(te_s if te_s is not None else DEFAULT_TE_S[:n_echoes])
        mag, phase = synthetic_gre(shape, te, b0_tesla or 3.0, seed=seed)
        if phase_scale is not None:
            phase = np.round(phase / np.pi * phase_scale).astype(np.float32)
        folder = self.anat_dir(subject, session)
        prefix = _entities_prefix(subject, session, acq=acq, rec=rec, run=run)
        if complex_parts:
            cplx = mag * np.exp(1j * phase)
            parts = {"real": cplx.real.astype(np.float32), "imag": cplx.imag.astype(np.float32)}
        else:
            parts = {"mag": mag, "phase": phase}
        written: dict[str, list[Path]] = {}
        base_meta: dict[str, Any] = {}
        if b0_tesla is not None:
            base_meta["MagneticFieldStrength"] = b0_tesla
        base_meta.update(extra_sidecar or {})
        for part, data in parts.items():
            meta = dict(base_meta)
            if part == "phase" and phase_units is not None:
                meta["Units"] = phase_units
            if four_d or suffix == "T2starw":
                name = f"{prefix}_part-{part}_{suffix}"
                vol = data if n_echoes > 1 or four_d else data[..., 0]
                path = self.save_nifti(folder / f"{name}.nii.gz", vol, affine)
                self.write_json(
                    folder / f"{name}.json",
                    {**meta, "EchoTime": te if n_echoes > 1 or four_d else te[0]},
                )
                written[part] = [path]
            else:
                written[part] = []
                for e in range(n_echoes):
                    name = f"{prefix}_echo-{e + 1}_part-{part}_{suffix}"
                    path = self.save_nifti(folder / f"{name}.nii.gz", data[..., e], affine)
                    self.write_json(folder / f"{name}.json", {**meta, "EchoTime": te[e]})
                    written[part].append(path)
        if subject not in self.participants:
            self.add_participant(subject)
        return written

    def add_t1w(
        self,
        subject: str = "01",
        session: str | None = None,
        *,
        acq: str | None = None,
        shape: Sequence[int] = (8, 8, 6),
    ) -> Path:
        """Write a tiny T1w image (+ sidecar) and return its path."""
        folder = self.anat_dir(subject, session)
        name = _entities_prefix(subject, session, acq=acq) + "_T1w"
        grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
        data = np.where(sum(g**2 for g in grid) < 0.8, 800.0, 10.0).astype(np.float32)
        self.write_json(folder / f"{name}.json", {"MagneticFieldStrength": 3})
        return self.save_nifti(folder / f"{name}.nii.gz", data)

    def add_lesion_mask(
        self,
        masks_dir: Path,
        subject: str = "01",
        session: str | None = None,
        label: str = "T2lesion",
        shape: Sequence[int] = (8, 8, 6),
    ) -> Path:
        """Write ``sub-<s>[_ses-<s>]_label-<label>_mask.nii.gz`` into a derivatives folder."""
        folder = Path(masks_dir) / f"sub-{subject}"
        if session:
            folder = folder / f"ses-{session}"
        folder = folder / "anat"
        data = np.zeros(shape, dtype=np.uint8)
        data[3:5, 3:5, 2:4] = 1
        name = _entities_prefix(subject, session) + f"_label-{label}_mask.nii.gz"
        if not (Path(masks_dir) / "dataset_description.json").exists():
            self.write_json(
                Path(masks_dir) / "dataset_description.json",
                {"Name": "lesions", "BIDSVersion": "1.10.0", "DatasetType": "derivative"},
            )
        return self.save_nifti(folder / name, data)


@pytest.fixture
def bids_factory(tmp_path: Path) -> BidsFactory:
    """An empty BIDS dataset at ``tmp_path / "bids"`` to fill with :class:`BidsFactory`."""
    return BidsFactory(tmp_path / "bids")


@pytest.fixture
def bids_dataset(bids_factory: BidsFactory) -> Path:
    """Two subjects (01, 02), 3-echo MEGRE as 3D files with phase in rad, T1w, 3 T."""
    for sub in ("01", "02"):
        bids_factory.add_gre(sub, seed=int(sub))
        bids_factory.add_t1w(sub)
        bids_factory.add_participant(sub, age=30 + int(sub), sex="F", group="HC")
    return bids_factory.root


def _find_real_gre_dir() -> Path | None:
    env = os.environ.get("BIDS_QSM_REAL_GRE_DIR")
    candidates = [Path(env)] if env else []
    repo = Path(__file__).resolve().parents[1]
    candidates += [
        repo.parent / "shared" / "data" / "real-gre-small",
        Path("/work/shared/data/real-gre-small"),
    ]
    for folder in candidates:
        if (folder / "Mag.nii").is_file() and (folder / "Phase.nii").is_file():
            return folder
    return None


@pytest.fixture(scope="session")
def real_gre_dir() -> Path:
    """The real 3 T sample (Mag.nii, Phase.nii; 3 echoes at 4, 8, 12 ms); skips if absent.

    Looked up in ``$BIDS_QSM_REAL_GRE_DIR``, then ``<repo>/../shared/data/real-gre-small``.
    """
    folder = _find_real_gre_dir()
    if folder is None:
        pytest.skip(
            "real sample real-gre-small not found (set BIDS_QSM_REAL_GRE_DIR or place it in "
            "../shared/data/real-gre-small)"
        )
    return folder


REAL_GRE_TE_S = (0.004, 0.008, 0.012)


def wrap_real_sample(
    factory: BidsFactory,
    real_dir: Path,
    subjects: tuple[str, ...] = ("01",),
    units: str | None = "arbitrary",
    four_d: bool = False,
) -> Path:
    """Write the real sample as ``sub-<l>/anat/..._MEGRE`` for each subject label (3 T).

    ``units`` goes into the phase sidecars (``None`` leaves it out, so the app must detect
    the arbitrary units); ``four_d=True`` keeps all echoes in one file per part.
    """
    for sub in subjects:
        folder = factory.anat_dir(sub)
        for part, src in (("mag", "Mag.nii"), ("phase", "Phase.nii")):
            img = nib.load(str(real_dir / src))
            data = np.asarray(img.dataobj, dtype=np.float32)
            meta: dict[str, Any] = {"MagneticFieldStrength": 3.0}
            if part == "phase" and units is not None:
                meta["Units"] = units
            if four_d:
                stem = f"sub-{sub}_part-{part}_MEGRE"
                factory.save_nifti(folder / f"{stem}.nii.gz", data, img.affine)
                factory.write_json(
                    folder / f"{stem}.json", {**meta, "EchoTime": list(REAL_GRE_TE_S)}
                )
                continue
            for e, te in enumerate(REAL_GRE_TE_S):
                stem = f"sub-{sub}_echo-{e + 1}_part-{part}_MEGRE"
                factory.save_nifti(folder / f"{stem}.nii.gz", data[..., e], img.affine)
                factory.write_json(folder / f"{stem}.json", {**meta, "EchoTime": te})
        factory.add_participant(sub, age=40, sex="F", group="HC")
    return factory.root


@pytest.fixture
def real_gre_bids(real_gre_dir: Path, tmp_path: Path) -> Callable[..., Path]:
    """Factory wrapping the real sample into BIDS: ``real_gre_bids(units, four_d) -> root``.

    ``units="arbitrary"`` (default) writes ``Units`` in the phase sidecars (valid BIDS);
    ``units=None`` leaves it out (the app must detect the arbitrary units). ``four_d=True``
    keeps all echoes in one file per part. The subject is ``sub-01``, field strength 3 T.
    """

    def make(units: str | None = "arbitrary", four_d: bool = False, name: str = "real") -> Path:
        factory = BidsFactory(tmp_path / f"bids_{name}")
        return wrap_real_sample(factory, real_gre_dir, ("01",), units=units, four_d=four_d)

    return make

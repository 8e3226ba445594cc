"""Fabricated participant outputs for testing and demonstrating the group level.

:func:`fabricate_cohort` writes, for a cohort of controls and patients with a known group
effect, what the participant level leaves in OUTPUT_DIR (small images on a toy 24^3 grid of
AAL3 label blocks, and the regional stats tables computed from them by the real
:func:`bids_qsm.stats.regional.regional_table`), plus ``participants.tsv`` in a BIDS folder.

Truth (ppm): patients have higher susceptibility in the basal ganglia (caudate, putamen,
globus pallidus, +``effect_ppm``) and lower in the thalamus and pulvinar (-``effect_ppm``),
scaled per patient by EDSS / mean EDSS so that the effects grow with disability (seed
study: Zivadinov 2018). Phase iron (rad) and R2* (Hz) follow susceptibility linearly.
``null_effect=True`` removes every group and EDSS effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from bids_qsm.atlas.structures import BASAL_GANGLIA, aal3_structures
from bids_qsm.bids.writers import atomic_path, atomic_save_nifti
from bids_qsm.stats.regional import Entities, regional_table

#: Baseline susceptibility per structure (ppm), roughly as in adult controls.
BASE_CHI_PPM: dict[str, float] = {
    "thalamus": 0.0,
    "pulvinar": 0.02,
    "caudate": 0.05,
    "putamen": 0.04,
    "globus_pallidus": 0.12,
    "hippocampus": -0.005,
    "amygdala": 0.0,
    "nucleus_accumbens": 0.03,
    "substantia_nigra": 0.12,
    "red_nucleus": 0.09,
}
#: Sign of the patient effect per structure (0: no effect).
EFFECT_SIGN: dict[str, float] = {
    **dict.fromkeys(BASE_CHI_PPM, 0.0),
    **dict.fromkeys(BASAL_GANGLIA, 1.0),
    "thalamus": -1.0,
    "pulvinar": -1.0,
}
GRID = (24, 24, 24)
TEMPLATE_NAME = "MNI152NLin6Asym"
VOXEL_MM = 2.0
PHASE_PER_PPM = 0.5  # rad of phase iron per ppm (toy linear relation)
R2STAR_PER_PPM = 150.0  # Hz per ppm
R2STAR_BASE_HZ = 18.0


@dataclass
class Cohort:
    """Where the fabricated cohort lives."""

    bids_dir: Path
    output_dir: Path
    participants: pd.DataFrame


def label_volume() -> np.ndarray:
    """Toy GRE-space label image: one 4x4x4 block per AAL3 structure side.

    The thalamus block carries label 121 (a thalamic nucleus) and the pulvinar block 143,
    so that, as in AAL3, the thalamus is the union of both.
    """
    lab = np.zeros(GRID, np.int16)
    slots = [(x, y) for y in range(2, 22, 5) for x in range(2, 22, 5)]
    names = list(dict.fromkeys(s.name for s in aal3_structures()))
    slot_of = dict(zip(names, slots, strict=False))
    for s in aal3_structures():
        x, y = slot_of[s.name]
        label = s.labels[1] if s.name == "thalamus" else s.labels[0]  # 121/122; others first
        z = 6 if s.hemisphere == "L" else 14
        lab[x : x + 4, y : y + 4, z : z + 4] = label
    return lab


def grid_affine() -> np.ndarray:
    """Affine (mm) of the toy grid, centred on the origin."""
    affine = np.diag([VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0])
    affine[:3, 3] = -np.array(GRID) * VOXEL_MM / 2
    return affine


def toy_atlas():  # -> bids_qsm.atlas.registry.Atlas
    """An AAL3-labelled atlas whose template grid is the toy GRE grid (identity transforms)."""
    from bids_qsm.atlas.registry import Atlas

    lab = label_volume()
    template = nib.Nifti1Image(np.where(lab > 0, 2.0, 1.0).astype(np.float32), grid_affine())
    table = pd.DataFrame({"index": sorted({int(v) for v in np.unique(lab) if v})})
    table["name"] = table["index"].astype(str)
    return Atlas(
        "AAL3",
        nib.Nifti1Image(lab, grid_affine()),
        table,
        template,
        TEMPLATE_NAME,
        aal3_structures(),
    )


def _identity_transform(path: Path) -> None:
    import ants

    tx = ants.create_ants_transform(transform_type="AffineTransform", dimension=3)
    with atomic_path(path) as tmp:
        ants.write_transform(tx, str(tmp))


def _write_tsv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, na_rep="n/a")


def fabricate_cohort(
    root: Path,
    n_controls: int = 8,
    n_patients: int = 8,
    seed: int = 0,
    null_effect: bool = False,
    effect_ppm: float = 0.015,
    subject_sd_ppm: float = 0.004,
    voxel_sd_ppm: float = 0.006,
    atlas: str = "AAL3",
    transforms: bool = True,
) -> Cohort:
    """Write ``root/bids/participants.tsv`` and participant outputs in ``root/derivatives``.

    Each participant gets ``sub-XX_Chimap.nii.gz`` (ppm), ``sub-XX_R2starmap.nii.gz`` (Hz),
    ``sub-XX_desc-phaseiron_T2starw.nii.gz`` (rad, iron positive),
    ``sub-XX_desc-brain_mask.nii.gz``, ``sub-XX_seg-<atlas>_dseg.nii.gz`` and
    ``sub-XX_seg-<atlas>_stats.tsv``; patients also ``sub-XX_desc-lesions_stats.tsv``.
    With ``transforms``, an identity ``sub-XX_from-GRE_to-MNI152NLin6Asym_mode-image_xfm.h5``
    (the toy GRE grid *is* the template grid of :func:`toy_atlas`).
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    bids_dir, out_dir = root / "bids", root / "derivatives"
    n = n_controls + n_patients
    groups = ["HC"] * n_controls + ["MS"] * n_patients
    edss = np.where(np.arange(n) >= n_controls, rng.uniform(1.0, 6.5, n).round(1), np.nan)
    duration = np.where(np.isfinite(edss), (edss * 2 + rng.uniform(0, 4, n)).round(1), np.nan)
    participants = pd.DataFrame(
        {
            "participant_id": [f"sub-{i + 1:02d}" for i in range(n)],
            "group": groups,
            "age": rng.uniform(25, 55, n).round(0),
            "sex": rng.permutation(np.array(["F", "M"] * (n // 2 + 1))[:n]),
            "EDSS": edss,
            "disease_duration": duration,
        }
    )
    bids_dir.mkdir(parents=True, exist_ok=True)
    _write_tsv(participants, bids_dir / "participants.tsv")

    labels = label_volume()
    affine = grid_affine()
    mask = np.zeros(GRID, bool)
    mask[1:-1, 1:-1, 2:-2] = True
    structures = aal3_structures()
    mean_edss = float(np.nanmean(edss)) if n_patients else 1.0
    for row in participants.itertuples():
        scale = 0.0 if null_effect or row.group == "HC" else row.EDSS / mean_edss
        chi, r2s, phase = _participant_maps(
            rng, labels, structures, (effect_ppm, scale), row.age, subject_sd_ppm, voxel_sd_ppm
        )
        chi *= mask
        anat = out_dir / row.participant_id / "anat"
        src = anat / row.participant_id
        for suffix, data in (
            ("_Chimap", chi),
            ("_R2starmap", r2s),
            ("_desc-phaseiron_T2starw", phase),
            ("_desc-brain_mask", mask.astype(np.uint8)),
            (f"_seg-{atlas}_dseg", labels),
        ):
            atomic_save_nifti(nib.Nifti1Image(data, affine), Path(f"{src}{suffix}.nii.gz"))
        if transforms:
            _identity_transform(Path(f"{src}_from-GRE_to-{TEMPLATE_NAME}_mode-image_xfm.h5"))
        table = regional_table(
            chi,
            labels,
            mask,
            structures,
            VOXEL_MM**3,
            Entities(row.participant_id),
            atlas,
            r2star_hz=r2s,
            hp_phase_rad=-phase,
            phase_iron_rad=phase,
            apt_threshold_rad=0.1,
            reference_region="brain",
            reference_value_ppm=0.0,
        )
        _write_tsv(table, Path(f"{src}_seg-{atlas}_stats.tsv"))
        if row.group != "HC":
            les = _lesion_table(rng, row.participant_id)
            _write_tsv(les, Path(f"{src}_desc-lesions_stats.tsv"))
    return Cohort(bids_dir, out_dir, participants)


def _participant_maps(
    rng: np.random.Generator, labels: np.ndarray, structures: list,
    effect: tuple[float, float], age: float, subject_sd_ppm: float, voxel_sd_ppm: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """One participant's chi (ppm, before masking), R2* (Hz) and phase-iron (rad) maps:
    voxel noise, per-structure values (base + signed effect (ppm) x scale + subject offset
    + age); ``effect`` = (effect_ppm, scale)."""
    effect_ppm, scale = effect
    chi = rng.normal(0.0, voxel_sd_ppm, GRID).astype(np.float32)
    for s in structures:
        sel = np.isin(labels, s.labels)
        if s.name == "thalamus":  # the pulvinar block keeps its own value
            sel &= ~np.isin(labels, (143, 144))
        value = (
            BASE_CHI_PPM[s.name]
            + EFFECT_SIGN[s.name] * effect_ppm * scale
            + rng.normal(0.0, subject_sd_ppm)
            + 0.0002 * (age - 40)
        )
        chi[sel] += value
    phase = (PHASE_PER_PPM * chi + rng.normal(0, 0.005, GRID)).astype(np.float32)
    r2s = (R2STAR_BASE_HZ + R2STAR_PER_PPM * chi + rng.normal(0, 1.0, GRID)).astype(np.float32)
    return chi, r2s, phase


def _lesion_table(rng: np.random.Generator, participant_id: str) -> pd.DataFrame:
    """A patient's fabricated lesion table: 2-4 T2 lesions (mm^3, ppm) and the total row."""
    k = int(rng.integers(2, 5))
    vols = rng.uniform(20, 400, k).round(0)
    return pd.DataFrame(
        {
            "participant_id": participant_id,
            "session_id": "n/a",
            "label": "T2lesion",
            "lesion_id": [str(i + 1) for i in range(k)] + ["total"],
            "volume_mm3": [*vols, vols.sum()],
            "chi_mean_ppm": [*rng.normal(0.01, 0.01, k).round(4), np.nan],
            "rim_chi_mean_ppm": [*rng.normal(0.03, 0.01, k).round(4), np.nan],
        }
    )

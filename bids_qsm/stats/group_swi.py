"""Group level, SWI part: abnormal-phase thresholds from the controls and MP-APT recomputed.

Buffalo SWI-phase iron (Hagemeier 2012, Habib 2012): within each structure, abnormal-phase
tissue is the voxels whose phase iron (iron positive, rad) exceeds the healthy-control
``mean + n_sd SD`` of that structure (the "control mean - n SD" of the SWI filtered phase, whose
sign is opposite). ``n_sd`` defaults to :data:`bids_qsm.swi.phase_iron.DEFAULT_N_SD` (0: the
control mean, chosen by measurement against the simulator's truth; Buffalo used 2, which does
not follow iron there) and to 2 SD for the whole-brain row (an artefact/quality measure).
Structures are measured whole (the threshold selects the voxels), or over their self-positive
ROIs (``dominance``; :func:`bids_qsm.swi.dipole_roi.self_positive_labels`, rebuilt from the
label image, the voxel size, the B0 direction of the affine and the Gaussian width of the
phase-iron sidecar). The threshold pools the voxels of the
structure (per hemisphere, and L+R for the bilateral rows) over all controls; MP-APT (mean phase
of abnormal-phase tissue) and the abnormal-phase volume are then recomputed for every participant
from the participant's
``<src>_desc-phaseiron_T2starw.nii.gz`` and ``<src>_seg-<atlas>_dseg.nii.gz`` (GRE space),
restricted to ``<src>_desc-brain_mask.nii.gz`` when present. The per-voxel work is done by
:func:`bids_qsm.swi.phase_iron.regional_phase_measures`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from bids_qsm.atlas.structures import StructureDef
from bids_qsm.bids.derivatives import Derivatives
from bids_qsm.qsm.geometry import b0_direction_from_affine
from bids_qsm.stats.columns import column_descriptions
from bids_qsm.swi.dipole_roi import self_positive_labels
from bids_qsm.swi.phase_iron import (
    DEFAULT_N_SD,
    WHOLE_BRAIN_N_SD,
    pooled_threshold,
    regional_phase_measures,
)
from bids_qsm.swi.pipeline import SWIOptions

LOGGER = logging.getLogger("bids_qsm.group")

#: Columns of ``group/seg-<atlas>_desc-aptthresholds_stats.tsv``.
THRESHOLD_COLUMNS: dict[str, dict[str, str]] = column_descriptions("aptthresholds")


@dataclass(frozen=True)
class SwiInputs:
    """GRE-space images of one acquisition needed to recompute MP-APT."""

    phase_iron: Path
    dseg: Path
    mask: Path | None


def source_prefix(stats_path: Path, atlas: str) -> str:
    """``<src>`` of ``<src>_seg-<atlas>_stats.tsv`` (full path without the suffix)."""
    d = Derivatives.from_table(stats_path, atlas)
    return str(Path(stats_path).parent / d.source_prefix)


def find_swi_inputs(stats_path: Path, atlas: str) -> SwiInputs | None:
    """The phase-iron map, label image and brain mask beside a stats table, or None."""
    d = Derivatives.from_table(stats_path, atlas)
    phase = d.path("phaseiron")
    if not phase.is_file():
        alts = sorted(phase.parent.glob(f"{d.source_prefix}_desc-phaseiron*.nii*"))
        phase = alts[0] if alts else phase
    dseg = d.path("dseg")
    mask = d.path("mask")
    if not (phase.is_file() and dseg.is_file()):
        return None
    return SwiInputs(phase, dseg, mask if mask.is_file() else None)


def regions_with_bilateral(structures: Sequence[StructureDef]) -> list[StructureDef]:
    """L/R structures plus one ``bilateral`` StructureDef per name (union of its labels)."""
    out: list[StructureDef] = []
    union: dict[str, set[int]] = {}
    for s in structures:
        out.append(s)
        union.setdefault(s.name, set()).update(s.labels)
    out += [StructureDef(name, "bilateral", tuple(sorted(labs))) for name, labs in union.items()]
    return out


def _sigma_mm(phase_iron: Path) -> tuple[float, float, float]:
    """Gaussian width (mm) recorded in the phase-iron sidecar, else the SWI default."""
    side = Path(str(phase_iron).replace(".nii.gz", ".json").replace(".nii", ".json"))
    try:
        sig = json.loads(side.read_text())["SWIPipeline"]["GaussianSigma_mm"]
        return (float(sig[0]), float(sig[1]), float(sig[2]))
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return tuple(SWIOptions().gaussian_sigma_mm)  # type: ignore[return-value]


def _measures(
    inputs: SwiInputs,
    regions: list[StructureDef],
    threshold: float | Mapping[str, float],
    dominance: float | None = None,
) -> pd.DataFrame:
    """Regional phase measures (structures over their ROIs, and whole brain) of one input."""
    pimg = nib.load(inputs.phase_iron)
    zooms = tuple(float(z) for z in pimg.header.get_zooms()[:3])
    voxvol = float(np.prod(zooms))
    phase = np.asarray(pimg.dataobj, dtype=np.float32)
    labels = np.asarray(nib.load(inputs.dseg).dataobj).astype(np.int32)
    mask = (np.asarray(nib.load(inputs.mask).dataobj) > 0) if inputs.mask else np.isfinite(phase)
    wanted = np.isin(labels, sorted({v for r in regions for v in r.labels}))
    idx = np.nonzero(wanted)
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx) if idx[0].size else None
    if box is None:
        table = regional_phase_measures(
            phase[:1, :1, :1], labels[:1, :1, :1] * 0, regions, threshold, voxvol
        )
    else:
        if dominance is not None:
            sides = [r for r in regions if r.hemisphere != "bilateral"]
            labels = self_positive_labels(
                labels,
                sides,
                zooms,
                b0_direction_from_affine(pimg.affine),
                _sigma_mm(inputs.phase_iron),
                mask,
                dominance=dominance,
            )
        table = regional_phase_measures(
            phase[box], labels[box], regions, threshold, voxvol, mask=mask[box]
        )
    wb_thr = (
        threshold.get("whole_brain_bilateral", np.inf)
        if isinstance(threshold, Mapping)
        else threshold
    )
    whole = regional_phase_measures(
        phase, mask.astype(np.int8), {"whole_brain_bilateral": [1]}, wb_thr, voxvol
    )
    whole["structure"], whole["hemisphere"] = "whole_brain", "bilateral"
    return pd.concat([table, whole], ignore_index=True)


def pooled_sd(g: pd.DataFrame) -> float:
    """Pooled SD (ddof=0) of the control voxels from per-subject rows."""
    mean = pooled_threshold(g["nvox"], g["phase_iron_mean_rad"], g["phase_iron_sd_rad"], 0.0)
    return pooled_threshold(g["nvox"], g["phase_iron_mean_rad"], g["phase_iron_sd_rad"], 1.0) - mean


def control_thresholds(
    control_inputs: Sequence[SwiInputs],
    structures: Sequence[StructureDef],
    n_sd: float = DEFAULT_N_SD,
    whole_brain_n_sd: float = WHOLE_BRAIN_N_SD,
    dominance: float | None = None,
) -> pd.DataFrame:
    """Per structure/hemisphere threshold = mean + ``n_sd`` SD of the pooled control voxels.

    The whole-brain row uses ``whole_brain_n_sd``. ``dominance``: measure over the
    self-positive ROIs with this criterion (default None: the whole structure, as MP-APT is
    defined and as measured best); pass the same value to :func:`recompute_mpapt`.
    """
    regions = regions_with_bilateral(structures)
    parts = [_measures(inp, regions, np.inf, dominance) for inp in control_inputs]
    if not parts:
        return pd.DataFrame(columns=list(THRESHOLD_COLUMNS))
    allc = pd.concat(parts, ignore_index=True)
    rows = []
    for (structure, hemi), g in allc.groupby(["structure", "hemisphere"], sort=False):
        g = g[g["nvox"] > 0]
        if g["nvox"].sum() < 2:
            continue
        k = whole_brain_n_sd if structure == "whole_brain" else n_sd
        thr = pooled_threshold(g["nvox"], g["phase_iron_mean_rad"], g["phase_iron_sd_rad"], k)
        mean = pooled_threshold(g["nvox"], g["phase_iron_mean_rad"], g["phase_iron_sd_rad"], 0.0)
        rows.append(
            {
                "structure": structure,
                "hemisphere": hemi,
                "threshold_rad": thr,
                "control_mean_rad": mean,
                "control_sd_rad": (thr - mean) / k if k else pooled_sd(g),
                "n_sd": float(k),
                "n_control": int(len(g)),
                "n_voxels": int(g["nvox"].sum()),
            }
        )
    return pd.DataFrame(rows, columns=list(THRESHOLD_COLUMNS))


def recompute_mpapt(
    long: pd.DataFrame,
    inputs: Mapping[tuple[str, str, str, str], SwiInputs],
    thresholds: pd.DataFrame,
    structures: Sequence[StructureDef],
    dominance: float | None = None,
) -> pd.DataFrame:
    """Replace ``mpapt_rad``, ``apt_volume_mm3`` and ``apt_threshold_rad`` in ``long``.

    ``inputs`` maps (participant_id, session_id, acq, run) to the acquisition's images.
    Acquisitions without images and regions without a control threshold get n/a (logged),
    so that every MP-APT value in the group tables uses the control-derived threshold.
    """
    thr = {f"{r.structure}_{r.hemisphere}": float(r.threshold_rad) for r in thresholds.itertuples()}
    regions = [r for r in regions_with_bilateral(structures) if f"{r.name}_{r.hemisphere}" in thr]
    out = long.copy()
    for col in ("mpapt_rad", "apt_volume_mm3", "apt_threshold_rad"):
        out[col] = np.nan
    keys = list(zip(out["participant_id"], out["session_id"], out["acq"], out["run"], strict=True))
    missing = sorted({k[0] for k in keys if k not in inputs})
    if missing:
        LOGGER.warning("no phase-iron map / dseg for %s: MP-APT left n/a", ", ".join(missing))
    index = pd.Series(
        range(len(out)),
        index=pd.MultiIndex.from_tuples(
            [(*k, s, h) for k, s, h in zip(keys, out["structure"], out["hemisphere"], strict=True)]
        ),
    )
    for key, inp in inputs.items():
        table = _measures(
            inp,
            regions,
            {**thr, "whole_brain_bilateral": thr.get("whole_brain_bilateral", np.inf)},
            dominance,
        )
        for r in table.itertuples():
            pos = index.get((*key, r.structure, r.hemisphere))
            if pos is None or f"{r.structure}_{r.hemisphere}" not in thr:
                continue
            out.iloc[pos, out.columns.get_loc("mpapt_rad")] = r.mpapt_rad
            out.iloc[pos, out.columns.get_loc("apt_volume_mm3")] = r.apt_volume_mm3
            out.iloc[pos, out.columns.get_loc("apt_threshold_rad")] = r.apt_threshold_rad
    return out

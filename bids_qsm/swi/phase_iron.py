"""Buffalo-style regional SWI-phase iron measures: mean phase iron, MP-APT, abnormal-phase volume.

Sign convention
---------------
Everything here is in **phase-iron units**: ``phase_iron_rad = -hp_phase_rad``, radians at the
reference echo time, **iron (paramagnetic) positive**. The Buffalo papers (Hagemeier 2012,
Habib 2012) work on the SWI filtered phase, where iron is negative, and call a voxel abnormal
when its phase is *below* ``control mean - 2 SD``. With the sign flipped this is exactly:

    abnormal  <=>  phase_iron > threshold,   threshold = control mean + 2 SD (of phase iron)

so a control-derived threshold is ``phase_iron_threshold(control_voxels)`` (pooled voxels of the
structure over the controls) or, from the per-subject summary rows of the stats tables,
``pooled_threshold(nvox, mean, sd)``. Both give the same number (population SD, ddof=0).

Measured choice of the number of SDs (``benchmarks/bench_swi.py``, ``docs/methods_swi.md``):
with Buffalo's 2 SD of the pooled control voxels only a few, mostly noise-selected voxels of a
structure pass and MP-APT does not follow iron across subjects (r = -0.2 to 0.64 in the six
iron-rich structures on the simulator); the correlation rises as the threshold falls, and is
best at :data:`DEFAULT_N_SD` = 0, the control mean (r = 0.79 to 0.99): abnormal-phase tissue is
then the tissue whose phase iron exceeds the controls' average for that structure. The
whole-brain row keeps :data:`WHOLE_BRAIN_N_SD` = 2 SD: it is a quality measure of
background/interface artefact, not an iron measure.

MP-APT (mean phase of abnormal-phase tissue) is the mean phase iron of the abnormal voxels
(positive, rad); it *cannot* be recomputed from summary statistics for a new threshold, so the
group level either re-reads the phase-iron map and the label image and calls
:func:`regional_phase_measures` with a per-structure threshold mapping, or calls
:func:`abnormal_phase_measures` on the voxel values of a region.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from bids_qsm.atlas.structures import StructureDef
from bids_qsm.errors import InputDataError

__all__ = [
    "DEFAULT_N_SD",
    "PARTICIPANT_N_SD",
    "participant_threshold",
    "MEASURE_COLUMNS",
    "WHOLE_BRAIN_N_SD",
    "abnormal_phase_measures",
    "phase_iron_threshold",
    "pooled_threshold",
    "regional_phase_measures",
]

#: SDs above the control mean defining abnormal phase in a structure (group level).
DEFAULT_N_SD: float = 0.0
#: SDs above the control mean defining abnormal phase over the whole brain (group level).
WHOLE_BRAIN_N_SD: float = 2.0

#: Participant-level default threshold: the run's own brain mean + this many SD.
PARTICIPANT_N_SD: float = 2.0

#: Column | description | unit, one per line (parsed into :data:`MEASURE_COLUMNS`).
_MEASURE_TABLE = """
region | Region key: '<structure>_<hemisphere>' or the label-mapping key |
structure | Structure name |
hemisphere | L, R, or empty when the region is not lateralised |
nvox | Number of voxels of the region inside the brain mask | voxels
volume_mm3 | Region volume (report beside iron measures: atrophy shifts phase) | mm3
phase_iron_mean_rad | Mean phase iron (= minus the mean SWI filtered phase) | rad
phase_iron_sd_rad | Standard deviation of phase iron over the region (ddof=0) | rad
apt_threshold_rad | Abnormal-phase threshold; voxels with phase iron above it | rad
apt_nvox | Number of abnormal-phase voxels | voxels
apt_volume_mm3 | Abnormal-phase tissue volume | mm3
apt_fraction | Abnormal-phase voxels / region voxels | 1
mpapt_rad | MP-APT: mean phase iron of the abnormal-phase voxels (NaN if none) | rad
"""
#: Column -> (description, unit) for the stats sidecar JSON.
MEASURE_COLUMNS: dict[str, tuple[str, str]] = {
    key: (desc, unit)
    for key, desc, unit in (
        (c.strip() for c in line.split("|")) for line in _MEASURE_TABLE.strip().splitlines()
    )
}


def abnormal_phase_measures(
    values: np.ndarray, threshold_rad: float, voxel_volume_mm3: float
) -> dict[str, float]:
    """MP-APT and abnormal-phase volume from the phase-iron values (rad) of one region.

    A voxel is abnormal when ``value > threshold_rad`` (strict; phase-iron units, iron
    positive). Returns ``apt_nvox``, ``apt_volume_mm3`` (= apt_nvox x voxel volume),
    ``apt_fraction`` and ``mpapt_rad`` (mean of the abnormal values; NaN when there are none).
    Non-finite values are ignored.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    ab = v[v > float(threshold_rad)]
    n = int(ab.size)
    return {
        "apt_threshold_rad": float(threshold_rad),
        "apt_nvox": n,
        "apt_volume_mm3": n * float(voxel_volume_mm3),
        "apt_fraction": n / v.size if v.size else float("nan"),
        "mpapt_rad": float(ab.mean()) if n else float("nan"),
    }


def phase_iron_threshold(
    control_values: np.ndarray | Sequence[np.ndarray], n_sd: float = DEFAULT_N_SD
) -> float:
    """Control-derived threshold (rad): mean + ``n_sd`` SD of the pooled control phase iron.

    ``control_values``: the phase-iron voxel values of one structure, pooled over the control
    subjects (one array, or one array per subject). Equivalent to the Buffalo "control mean
    - 2 SD" of the SWI filtered phase (iron negative) once the sign is flipped.
    """
    if not isinstance(control_values, np.ndarray):
        control_values = np.concatenate([np.ravel(np.asarray(c, float)) for c in control_values])
    v = np.asarray(control_values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size < 2:
        raise InputDataError("a control-derived threshold needs at least two control voxels")
    return float(v.mean() + n_sd * v.std())


def participant_threshold(
    phase_iron_rad: np.ndarray, mask: np.ndarray | None = None, n_sd: float = PARTICIPANT_N_SD
) -> float:
    """Participant-level default abnormal-phase threshold (rad): brain mean + ``n_sd`` SD.

    Over the finite phase-iron voxels of ``mask`` (the brain; NaN = excluded by the
    phase-quality mask). Unlike a fixed value in rad it follows B0 x TE and the noise of the
    run, so about 2-3 % of a control's brain lies above it (measured: <= 5 % on the simulator's
    2 mm and 1 mm presets, ``docs/methods_swi.md``). Group analyses should prefer the
    control-derived per-structure thresholds. NaN when fewer than two voxels are finite (e.g. a
    small field of view lying wholly within the excluded brain edge): no abnormal-phase
    measures can then be made at participant level.
    """
    v = np.asarray(phase_iron_rad)
    if mask is not None:
        v = v[np.asarray(mask, bool)]
    v = v[np.isfinite(v)].astype(np.float64)
    if v.size < 2:
        return float("nan")
    return float(v.mean() + n_sd * v.std())


def pooled_threshold(
    nvox: Sequence[float], mean: Sequence[float], sd: Sequence[float], n_sd: float = DEFAULT_N_SD
) -> float:
    """The same threshold as :func:`phase_iron_threshold` from per-subject summary rows.

    Uses the ``nvox``, ``phase_iron_mean_rad`` and ``phase_iron_sd_rad`` (ddof=0) columns of the
    controls' stats tables: pooled mean ``sum n_i m_i / N`` and pooled variance
    ``sum n_i (s_i^2 + m_i^2) / N - mean^2``. Rows with nvox = 0 are ignored.
    """
    n = np.asarray(nvox, float)
    m = np.asarray(mean, float)
    s = np.asarray(sd, float)
    ok = (n > 0) & np.isfinite(m) & np.isfinite(s)
    n, m, s = n[ok], m[ok], s[ok]
    if n.sum() < 2:
        raise InputDataError("a control-derived threshold needs at least two control voxels")
    mu = float((n * m).sum() / n.sum())
    var = float((n * (s * s + m * m)).sum() / n.sum() - mu * mu)
    return mu + n_sd * float(np.sqrt(max(var, 0.0)))


def _region_list(
    regions: Mapping[str, Sequence[int]] | Sequence[StructureDef],
) -> list[tuple[str, str, str, tuple[int, ...]]]:
    """(region key, structure, hemisphere, labels) for either form of ``regions``."""
    if isinstance(regions, Mapping):
        return [
            (str(k), str(k), "", tuple(int(x) for x in np.atleast_1d(v)))
            for k, v in regions.items()
        ]
    out = []
    for r in regions:
        if not isinstance(r, StructureDef):
            raise TypeError("regions must be a mapping name -> labels or StructureDef objects")
        key = f"{r.name}_{r.hemisphere}" if r.hemisphere else r.name
        out.append((key, r.name, r.hemisphere, tuple(int(x) for x in r.labels)))
    return out


def _threshold_for(threshold: float | Mapping[str, float], key: str, structure: str) -> float:
    if not isinstance(threshold, Mapping):
        return float(threshold)
    for k in (key, structure):
        if k in threshold:
            return float(threshold[k])
    raise InputDataError(f"no abnormal-phase threshold given for region {key!r}")


def regional_phase_measures(
    phase_iron_rad: np.ndarray,
    labels: np.ndarray,
    regions: Mapping[str, Sequence[int]] | Sequence[StructureDef],
    threshold_rad: float | Mapping[str, float],
    voxel_volume_mm3: float,
    mask: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per-region SWI phase-iron measures (one row per region, columns :data:`MEASURE_COLUMNS`).

    Parameters
    ----------
    phase_iron_rad : (X, Y, Z) phase-iron map, rad at the reference TE, iron positive.
    labels : (X, Y, Z) integer label image in the same space (e.g. the warped AAL3 dseg).
    regions : ``{name: [label values]}`` (e.g. lesions), or :class:`StructureDef` objects
        (e.g. :func:`bids_qsm.atlas.structures.aal3_structures`); a region is the union of
        its label values (label 0 is background and never part of a region).
    threshold_rad : abnormal-phase threshold in phase-iron units: one value for every region
        (the fixed per-run ``SWIOptions.apt_threshold_rad``) or a mapping keyed by region key
        (``"globus_pallidus_L"``) or structure name (``"globus_pallidus"``, both sides), e.g.
        control mean + 2 SD per structure (see the module docstring).
    voxel_volume_mm3 : volume of one voxel (mm3).
    mask : optional brain mask; voxels outside it are excluded.
    """
    pi = np.asarray(phase_iron_rad)
    lab = np.asarray(labels)
    if pi.shape != lab.shape:
        raise InputDataError(f"phase-iron map {pi.shape} and label image {lab.shape} differ")
    valid = np.isfinite(pi)
    if mask is not None:
        valid &= np.asarray(mask, bool)
    # Work on the labelled voxels only (deep gray matter is a small part of the volume).
    valid &= lab != 0
    lab_v = lab[valid]
    pi_v = pi[valid].astype(np.float64)
    rows = []
    for key, structure, hemi, labs in _region_list(regions):
        v = pi_v[np.isin(lab_v, labs)]
        n = int(v.size)
        row: dict[str, object] = {
            "region": key,
            "structure": structure,
            "hemisphere": hemi,
            "nvox": n,
            "volume_mm3": n * float(voxel_volume_mm3),
            "phase_iron_mean_rad": float(v.mean()) if n else float("nan"),
            "phase_iron_sd_rad": float(v.std()) if n else float("nan"),
        }
        row.update(
            abnormal_phase_measures(
                v, _threshold_for(threshold_rad, key, structure), voxel_volume_mm3
            )
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=list(MEASURE_COLUMNS))

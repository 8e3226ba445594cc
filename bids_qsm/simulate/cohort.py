"""Cohort model: participant demographics and the disease effect on deep gray matter iron.

Patients (group ``MS``) get higher basal ganglia (caudate, putamen, globus pallidus) and lower
thalamus (incl. pulvinar) susceptibility, at the magnitudes of Zivadinov et al. 2018
(Radiology 289:487; 600 MS vs 250 controls): basal ganglia 54.8 -> 62 ppb (+7.2 ppb) and
thalamus -1.1 -> -7.5 ppb (-6.4 ppb) at that cohort's typical EDSS (about 3), scaled with
each patient's EDSS. Every subject also gets a random offset per structure and hemisphere
(between-subject variation) and random gray/white matter offsets.

Planted between-subject iron variation (``--iron-sd-ppb``): the offsets can have a SD per
structure (:data:`LITERATURE_IRON_SD_PPM`, or any mapping), so that regional iron measures
can be validated by their correlation with the true susceptibility across subjects. With a
mapping, each structure's offset is shared by both hemispheres to a degree
(:data:`HEMISPHERE_CORRELATION`), as iron is in real cohorts. Optionally
(``shared_correlation``, off by default) one per-subject iron factor also correlates the
offsets of different structures: deep gray matter iron rises together with age within a
person (Li W 2014, Hum Brain Mapp 35:2698; Treit 2021, Hum Brain Mapp 42:4597), but we have
no published value of that correlation, and because filtered phase sees a structure's
*contrast* to its neighbours it lowers how well phase follows absolute iron
(``docs/methods_swi.md``, sensitivity run): a sensitivity option, not the default.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from bids_qsm.atlas.structures import BASAL_GANGLIA, STRUCTURE_NAMES

#: Mean patient-control difference (ppm) at the reference EDSS.
BASAL_GANGLIA_EFFECT_PPM: float = 0.0072
THALAMUS_EFFECT_PPM: float = -0.0064
EDSS_REFERENCE: float = 3.0
#: Default between-subject SD of each structure's mean susceptibility (ppm).
BETWEEN_SUBJECT_SD_PPM: float = 0.002
#: Between-subject SD (ppm) of deep gray matter susceptibility in healthy adults, of the order
#: reported by adult QSM cohorts (e.g. Persson 2015, NeuroImage 122:385; Li 2014, NeuroImage
#: 87:298): largest in the iron-rich pallidum, nigra, red nucleus and putamen.
LITERATURE_IRON_SD_PPM: dict[str, float] = {
    "globus_pallidus": 0.025,
    "substantia_nigra": 0.025,
    "red_nucleus": 0.020,
    "putamen": 0.020,
    "caudate": 0.015,
    "pulvinar": 0.010,
    "nucleus_accumbens": 0.010,
    "thalamus": 0.006,
    "amygdala": 0.006,
    "hippocampus": 0.005,
}
#: Correlation of a structure's offset between the two hemispheres (mapping mode only).
HEMISPHERE_CORRELATION: float = 0.8
#: Default correlation between the offsets of two different structures of one subject
#: (mapping mode only; the share of the variance carried by one per-subject iron factor).
#: 0: independent structures (no published value to plant; see the module docstring).
SHARED_IRON_CORRELATION: float = 0.0


def edss_scale(edss: float) -> float:
    """Effect multiplier for a patient: 0.5 + 0.5 EDSS/3 (1 at EDSS 3, 0.5 at EDSS 0)."""
    return 0.5 + 0.5 * float(edss) / EDSS_REFERENCE


def disease_shift_ppm(
    group: str, edss: float, null_effect: bool = False, effect_scale: float = 1.0
) -> dict[str, float]:
    """Susceptibility shift (ppm) per structure for one subject (zero for controls).

    ``effect_scale`` multiplies the seed-study effect (1 = the published magnitudes).
    """
    shifts = dict.fromkeys(STRUCTURE_NAMES, 0.0)
    if group != "MS" or null_effect:
        return shifts
    s = edss_scale(edss) * float(effect_scale)
    for name in BASAL_GANGLIA:
        shifts[name] = BASAL_GANGLIA_EFFECT_PPM * s
    for name in ("thalamus", "pulvinar"):
        shifts[name] = THALAMUS_EFFECT_PPM * s
    return shifts


def atrophy_mm(group: str, edss: float) -> float:
    """Ventricular enlargement (mm of dilation) for a patient: up to ~2.5 mm at EDSS 6.5.

    Atrophy is independent of the iron effect: ``null_effect`` cohorts keep it.
    """
    if group != "MS":
        return 0.0
    return 0.5 + 0.3 * float(edss)


#: Deep gray matter volume loss of patients (fraction of the template volume) per EDSS point
#: and per year of disease duration. Thalamus about 7 % at EDSS 3 / 9 years, 14 % at EDSS
#: 6.5 / 16 years (Houtchens 2007: -17 % thalamus in MS; Eshaghi 2018: deep gray matter loses
#: about 1 %/year); caudate and putamen less.
ATROPHY_PER_EDSS: dict[str, float] = {"thalamus": 0.015, "caudate": 0.012, "putamen": 0.010}
ATROPHY_PER_YEAR: dict[str, float] = {"thalamus": 0.003, "caudate": 0.002, "putamen": 0.002}
#: Largest volume loss of a structure (fraction).
ATROPHY_MAX: float = 0.3


def structure_atrophy(group: str, edss: float, disease_duration: float | None) -> dict[str, float]:
    """Volume loss (fraction, 0..ATROPHY_MAX) of thalamus, caudate and putamen for a patient.

    ``ATROPHY_PER_EDSS * EDSS + ATROPHY_PER_YEAR * duration`` (years); zero for controls.
    """
    if group != "MS":
        return {}
    dur = float(disease_duration or 0.0)
    return {
        name: float(min(ATROPHY_MAX, ATROPHY_PER_EDSS[name] * float(edss) + per_year * dur))
        for name, per_year in ATROPHY_PER_YEAR.items()
    }


def draw_participant(
    rng: np.random.Generator,
    group: str,
    *,
    edss: float | None = None,
    age: int | None = None,
    sex: str | None = None,
    disease_duration: float | None = None,
) -> dict:
    """Demographics for one participant; unspecified values are drawn from ``rng``.

    Controls: EDSS and disease duration are ``None`` (written as n/a). Patients: EDSS in
    1.0-6.5 (steps of 0.5), disease duration (years) growing with EDSS.
    """
    if group not in ("HC", "MS"):
        raise ValueError(f"group must be 'HC' or 'MS', not {group!r}")
    if age is None:
        age = int(np.clip(np.round(rng.normal(43.0 if group == "MS" else 41.0, 9.0)), 20, 70))
    if sex is None:
        sex = "F" if rng.random() < (0.7 if group == "MS" else 0.6) else "M"
    if group == "MS":
        if edss is None:
            edss = float(rng.integers(2, 14)) / 2.0  # 1.0 .. 6.5
        if disease_duration is None:
            disease_duration = float(np.round(max(0.5, 2.0 + 2.2 * edss + rng.normal(0, 2)), 1))
    else:
        edss = None if edss in (None, 0.0) else float(edss)
        disease_duration = None
    return {
        "group": group,
        "age": age,
        "sex": sex,
        "EDSS": edss,
        "disease_duration": disease_duration,
    }


def structure_offsets_ppm(
    rng: np.random.Generator,
    sd_ppm: float | Mapping[str, float] = BETWEEN_SUBJECT_SD_PPM,
    shared_correlation: float | None = None,
) -> dict[tuple[str, str], float]:
    """Random per-subject offsets (ppm) of each structure's mean, per hemisphere.

    ``sd_ppm``: one SD for every structure and hemisphere (independent draws), or a mapping
    structure name -> SD (ppm; missing structures use :data:`BETWEEN_SUBJECT_SD_PPM`) whose
    left and right offsets correlate with :data:`HEMISPHERE_CORRELATION` and offsets of
    different structures with ``shared_correlation`` (default
    :data:`SHARED_IRON_CORRELATION`, 0 .. HEMISPHERE_CORRELATION): unit normal scores
    ``z = sqrt(a) g + sqrt(rho - a) c_structure + sqrt(1 - rho) e_structure,side``, ``g``
    common to the subject, scaled by each structure's SD. With ``a = 0`` no ``g`` is drawn
    (the draws of earlier versions).
    """
    if not isinstance(sd_ppm, Mapping):
        return {(n, h): float(rng.normal(0.0, sd_ppm)) for n in STRUCTURE_NAMES for h in ("L", "R")}
    rho = HEMISPHERE_CORRELATION
    a = SHARED_IRON_CORRELATION if shared_correlation is None else float(shared_correlation)
    if not 0.0 <= a <= rho:
        raise ValueError(f"shared iron correlation must be in [0, {rho}], not {a}")
    subject = rng.normal() if a > 0 else 0.0
    out = {}
    for n in STRUCTURE_NAMES:
        sd = float(sd_ppm.get(n, BETWEEN_SUBJECT_SD_PPM))
        common = np.sqrt(a) * subject + np.sqrt(rho - a) * rng.normal()
        for h in ("L", "R"):
            z = common + np.sqrt(1.0 - rho) * rng.normal()
            out[(n, h)] = float(sd * z)
    return out


def parse_iron_sd(text: str) -> dict[str, float]:
    """``--iron-sd-ppb`` value -> per-structure SD mapping (ppm).

    ``literature`` (:data:`LITERATURE_IRON_SD_PPM`), one number in ppb (every structure), or
    ``name=ppb,...`` (others keep the literature value), e.g. ``globus_pallidus=30,putamen=15``.
    """
    text = text.strip()
    if text == "literature":
        return dict(LITERATURE_IRON_SD_PPM)
    try:
        return dict.fromkeys(STRUCTURE_NAMES, float(text) / 1000.0)
    except ValueError:
        pass
    out = dict(LITERATURE_IRON_SD_PPM)
    for item in text.split(","):
        name, sep, val = item.partition("=")
        name = name.strip()
        if not sep or name not in STRUCTURE_NAMES:
            raise ValueError(f"expected 'literature', a number or name=ppb,..., got {item!r}")
        out[name] = float(val) / 1000.0
    if any(v < 0 for v in out.values()):
        raise ValueError("iron SDs must not be negative")
    return out

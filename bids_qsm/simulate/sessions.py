"""Longitudinal simulation: several sessions of one subject with planted rates of iron change.

Session ``k`` (``k = 1..N``) is scanned ``t_k = (k - 1) * interval_years`` after the baseline.
Every session of a subject shares its anatomy (same template deformation, same per-structure
offsets, same lesions): it is the same head. What changes between sessions:

* **iron**: patients' structure means drift linearly, ``chi(t) = chi(0) + rate * t``
  (:data:`DEFAULT_RATES_PPM_PER_YEAR`: basal ganglia +1.5 ppb/year, thalamus and pulvinar
  -1 ppb/year; configurable, controls never change);
* **atrophy progression** (with ``atrophy``): the disease duration grows by ``t``, so the
  deep gray matter volume loss of :func:`.cohort.structure_atrophy` grows by
  ``ATROPHY_PER_YEAR * t`` (thalamus 0.3 %/year, caudate and putamen 0.2 %/year);
* **acquisition**: a new head position in the scanner (random pose per session), a new
  noise realisation, a new phase offset, a new shim residual and a new T1w noise.

The baseline session uses exactly the single-session streams, so ``ses-1`` of a
longitudinal dataset equals the single-session subject with the same seed and pose.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bids_qsm.atlas.structures import BASAL_GANGLIA, STRUCTURE_NAMES
from bids_qsm.simulate.acquisition import HeadPose
from bids_qsm.simulate.subject import SimulatedSubject, simulate_subject

#: Planted rate of change of patients' mean susceptibility (ppm/year) per structure.
DEFAULT_RATES_PPM_PER_YEAR: dict[str, float] = {
    **dict.fromkeys(BASAL_GANGLIA, 0.0015),
    "thalamus": -0.001,
    "pulvinar": -0.001,
}
#: Date and time of every subject's baseline scan (acq_time of ses-1).
BASELINE_TIME = dt.datetime(2020, 1, 15, 9, 0, 0)
DAYS_PER_YEAR = 365.25


def parse_rates(text: str) -> dict[str, float]:
    """``--iron-rate-ppb-per-year`` value -> rates (ppm/year) per structure.

    ``default`` (:data:`DEFAULT_RATES_PPM_PER_YEAR`), one number in ppb/year (``0``: no
    change anywhere; another number: that rate in the basal ganglia and minus it in the
    thalamus and pulvinar) or ``name=ppb,...`` (structures not named do not change).
    """
    text = text.strip()
    if text == "default":
        return dict(DEFAULT_RATES_PPM_PER_YEAR)
    try:
        v = float(text) / 1000.0
    except ValueError:
        pass
    else:
        return {n: v if n in BASAL_GANGLIA else -v for n in DEFAULT_RATES_PPM_PER_YEAR}
    out: dict[str, float] = {}
    for item in text.split(","):
        name, sep, val = item.partition("=")
        name = name.strip()
        if not sep or name not in STRUCTURE_NAMES:
            raise ValueError(f"expected 'default', a number or name=ppb,..., got {item!r}")
        try:
            out[name] = float(val) / 1000.0
        except ValueError:
            raise ValueError(f"not a rate in ppb/year: {item!r}") from None
    return out


@dataclass(frozen=True)
class SessionPlan:
    """When a session is acquired: label, years from baseline, acquisition date-time."""

    label: str
    years: float
    acq_time: str  # ISO 8601, as in BIDS sessions.tsv

    @property
    def days(self) -> int:
        """Days from the baseline scan."""
        return int(round(self.years * DAYS_PER_YEAR))


def session_plan(n_sessions: int, interval_years: float) -> list[SessionPlan]:
    """Labels ``1..N``, times ``(k-1) * interval_years`` and acquisition times (whole days)."""
    if n_sessions < 1:
        raise ValueError(f"need at least one session, got {n_sessions}")
    if interval_years <= 0:
        raise ValueError(f"the interval between sessions must be positive, got {interval_years}")
    plans = []
    for k in range(n_sessions):
        days = int(round(k * interval_years * DAYS_PER_YEAR))
        when = BASELINE_TIME + dt.timedelta(days=days)
        plans.append(SessionPlan(str(k + 1), days / DAYS_PER_YEAR, when.isoformat()))
    return plans


def planted_shift_ppm(group: str, years: float, rates: Mapping[str, float]) -> dict[str, float]:
    """Change of each structure's mean chi (ppm) after ``years``: rate * t for patients."""
    if group != "MS" or years == 0:
        return {}
    return {name: float(rate) * float(years) for name, rate in rates.items()}


def iter_sessions(
    preset: str,
    seed: int,
    plans: Sequence[SessionPlan],
    poses: Sequence[HeadPose],
    *,
    rates_ppm_per_year: Mapping[str, float] | None = None,
    progress: Callable[[str], None] | None = None,
    **subject_kwargs: Any,
) -> Iterator[SimulatedSubject]:
    """Simulate the sessions of one subject one by one (same seed = same head).

    ``subject_kwargs`` go to :func:`.simulate_subject` (group, EDSS, atrophy, lesions, ...);
    one head pose per session. Every session's participant row is the baseline one
    (disease duration at baseline).
    """
    if len(poses) != len(plans):
        raise ValueError("one head pose per session is needed")
    rates = DEFAULT_RATES_PPM_PER_YEAR if rates_ppm_per_year is None else rates_ppm_per_year
    group = str(subject_kwargs.get("group", "HC"))
    baseline: dict | None = None
    for k, (plan, pose) in enumerate(zip(plans, poses, strict=True)):
        if progress:
            progress(f"  ses-{plan.label} (t = {plan.years:.2f} years)")
        kwargs = dict(subject_kwargs)
        if baseline is not None and baseline.get("disease_duration") is not None:
            kwargs["disease_duration"] = float(baseline["disease_duration"]) + plan.years
        sub = simulate_subject(
            preset,
            seed,
            pose=pose,
            session_seed=None if k == 0 else k,
            extra_shift_ppm=planted_shift_ppm(group, plan.years, rates) or None,
            **kwargs,
        )
        if baseline is None:
            baseline = dict(sub.participant)
        sub.participant = dict(baseline)
        yield sub


def simulate_sessions(
    preset: str, seed: int, plans: Sequence[SessionPlan], poses: Sequence[HeadPose], **kwargs: Any
) -> list[SimulatedSubject]:
    """All sessions of one subject as a list (see :func:`iter_sessions`)."""
    return list(iter_sessions(preset, seed, plans, poses, **kwargs))


def write_subject_sessions(
    root: Path,
    preset: str,
    seed: int,
    plans: Sequence[SessionPlan],
    poses: Sequence[HeadPose],
    *,
    rates: Mapping[str, float] | None,
    phase_units: str,
    regional: list[pd.DataFrame],
    lesion_rows: list[pd.DataFrame],
    progress: Callable[[str], None] | None = None,
    **kwargs: Any,
) -> dict:
    """Simulate and write every session of one subject; return its (baseline) participant row.

    Writes ``sub-<l>/ses-<k>/anat/...``, the truth of each session under
    ``derivatives/simulation/sub-<l>/ses-<k>/anat`` and ``sub-<l>/sub-<l>_sessions.tsv``
    (``session_id``, ``acq_time``, ``years_from_baseline``); appends the session's regional
    and lesion truth (with ``session_id``) to ``regional`` / ``lesion_rows``.
    """
    from bids_qsm.simulate.bids_writer import _write_json, _write_tsv, write_subject

    participant: dict = {}
    rates = DEFAULT_RATES_PPM_PER_YEAR if rates is None else dict(rates)
    for plan, sub in zip(
        plans, iter_sessions(preset, seed, plans, poses, rates_ppm_per_year=rates,
                             progress=progress, **kwargs), strict=True
    ):  # fmt: skip
        write_subject(root, sub, phase_units=phase_units, session=plan.label)
        pid = sub.participant["participant_id"]
        ids = {"participant_id": pid, "session_id": f"ses-{plan.label}"}
        regional.append(sub.regional_truth.assign(**ids))
        if sub.lesion_truth is not None and len(sub.lesion_truth):
            lesion_rows.append(sub.lesion_truth.assign(**ids))
        participant = sub.participant
    pid = participant["participant_id"]
    table = pd.DataFrame(sessions_table(plans))
    _write_tsv(root / pid / f"{pid}_sessions.tsv", table)
    _write_json(root / pid / f"{pid}_sessions.json", SESSIONS_JSON)
    group = str(kwargs.get("group", "HC"))
    _write_json(
        root / "derivatives" / "simulation" / pid / f"{pid}_desc-plantedrates_stats.json",
        {
            "Description": "planted linear change of each structure's mean susceptibility",
            "Units": "ppm/year",
            "Rates": {n: (float(r) if group == "MS" else 0.0) for n, r in rates.items()},
            "IntervalYears": plans[1].years if len(plans) > 1 else None,
            "AtrophyProgression": "disease duration grows with the session time "
            "(ATROPHY_PER_YEAR of bids_qsm.simulate.cohort)"
            if kwargs.get("atrophy")
            else None,
        },
    )
    return participant


#: Column descriptions of ``sub-<l>_sessions.tsv``.
SESSIONS_JSON: dict[str, dict[str, str]] = {
    "session_id": {"Description": "session label with the ses- prefix"},
    "acq_time": {"Description": "acquisition date and time of the session (ISO 8601)"},
    "years_from_baseline": {"Description": "time since the first session", "Units": "year"},
}


def sessions_table(plans: Sequence[SessionPlan]) -> list[dict[str, object]]:
    """Rows of ``sub-<l>_sessions.tsv``: session_id, acq_time and years from baseline."""
    return [
        {
            "session_id": f"ses-{p.label}",
            "acq_time": p.acq_time,
            "years_from_baseline": round(p.years, 4),
        }
        for p in plans
    ]

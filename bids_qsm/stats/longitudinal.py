"""Longitudinal iron: per-subject change tables and linear mixed models of iron over time.

Pure numpy/pandas/statsmodels (no image I/O):

* :func:`session_times`: days and years from baseline of each session, from the
  ``acq_time`` column of ``sub-<l>_sessions.tsv`` (earliest session = baseline).
* :func:`change_table`: one subject's ``desc-longitudinal_stats`` table: the regional values
  of every session (measured in the subject space with the same labels) and, per structure,
  the change per year (ordinary least-squares slope over the timed sessions).
* :func:`mixed_models`: per structure, hemisphere and measure, the linear mixed model
  ``measure ~ group * years + covariates + (1 | subject)`` (statsmodels ``MixedLM``, REML,
  random intercept per participant) on all sessions of all participants (unbalanced
  sessions and missing visits are fine: every available session is one row). Reports the
  rate of change per group (the ``years`` slope of the controls; slope + interaction for a
  case group), the group difference in rates (the interaction), 95 % CI, t and p from a t
  reference with participant-level degrees of freedom (:func:`rate_df`), and
  Benjamini-Hochberg q per term. Models that cannot be estimated (singular design, constant
  measure, too few participants or residual df, no convergence, non-finite standard errors)
  keep a ``reason`` and are left out of the FDR, as in :mod:`bids_qsm.stats.group`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from bids_qsm.stats.columns import column_descriptions, column_units
from bids_qsm.stats.effects import df_problem, model_problem
from bids_qsm.stats.group_tables import regions

LOGGER = logging.getLogger("bids_qsm.longitudinal")

DAYS_PER_YEAR = 365.25

#: Measures of the change table / mixed models, with units (per year for the rates).
LONGITUDINAL_MEASURES: dict[str, str] = column_units(
    "change", "chi_mean_ppm", "r2star_mean_hz", "phaseiron_mean_rad", "volume_mm3"
)

#: Columns of ``sub-<l>_desc-longitudinal_stats.tsv`` (in order).
CHANGE_COLUMNS: dict[str, dict[str, str]] = column_descriptions("change")

_RATE_COLUMNS = {
    "chi_mean_ppm": "chi_change_ppm_per_year",
    "r2star_mean_hz": "r2star_change_hz_per_year",
    "phaseiron_mean_rad": "phaseiron_change_rad_per_year",
    "volume_mm3": "volume_change_mm3_per_year",
}


def session_times(sessions: pd.DataFrame | None, labels: Sequence[str]) -> pd.DataFrame:
    """``session_id``, ``acq_time``, ``days_from_baseline``, ``years_from_baseline`` per label.

    ``sessions``: the subject's ``sessions.tsv`` (``session_id``, optional ``acq_time``) or
    None. Sessions without a parseable acq_time get NaN times. Baseline: the earliest one.
    """
    ids = [lab if lab.startswith("ses-") else f"ses-{lab}" for lab in labels]
    out = pd.DataFrame({"session_id": ids, "acq_time": "n/a"})
    when = pd.Series(pd.NaT, index=out.index, dtype="datetime64[ns]")
    if sessions is not None and {"session_id", "acq_time"} <= set(sessions.columns):
        lut = dict(zip(sessions["session_id"].astype(str), sessions["acq_time"], strict=True))
        raw = out["session_id"].map(lut)
        out["acq_time"] = raw.fillna("n/a").astype(str)
        when = pd.to_datetime(raw, errors="coerce", format="ISO8601")
    days = (when - when.min()).dt.total_seconds() / 86400.0
    out["days_from_baseline"] = days.round(3)
    out["years_from_baseline"] = (days / DAYS_PER_YEAR).round(5)
    return out


def _slope(t: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(t) & np.isfinite(y)
    if ok.sum() < 2 or np.ptp(t[ok]) <= 0:
        return np.nan
    if np.ptp(y[ok]) == 0:  # e.g. volumes from the one label set: exactly no change
        return 0.0
    return float(np.polyfit(t[ok], y[ok], 1)[0])


def change_table(per_session: Mapping[str, pd.DataFrame], times: pd.DataFrame) -> pd.DataFrame:
    """One subject's longitudinal table from its per-session regional tables.

    ``per_session``: session_id -> regional table (:func:`bids_qsm.stats.regional.
    regional_table` on the subject grid, same labels for every session); ``times``: from
    :func:`session_times`. Rows: session x structure x hemisphere, sorted by time.
    """
    frames = []
    for ses, df in per_session.items():
        part = df.drop(columns=["session_id"], errors="ignore").assign(session_id=ses)
        frames.append(part)
    long = pd.concat(frames, ignore_index=True).merge(times, on="session_id", how="left")
    for measure, rate in _RATE_COLUMNS.items():
        if measure not in long.columns:
            long[measure] = np.nan
        slopes = {
            key: _slope(g["years_from_baseline"].to_numpy(float), g[measure].to_numpy(float))
            for key, g in long.groupby(["structure", "hemisphere"], sort=False)
        }
        long[rate] = [slopes[k] for k in zip(long["structure"], long["hemisphere"], strict=True)]
    keys = list(zip(long["structure"], long["hemisphere"], strict=True))
    order = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    long["_region"] = [order[k] for k in keys]
    long = long.sort_values(["_region", "years_from_baseline", "session_id"], kind="stable")
    return long[list(CHANGE_COLUMNS)].reset_index(drop=True)


# ----------------------------------------------------------------------------- mixed models
MIXED_COLUMNS: dict[str, dict[str, str]] = column_descriptions("mixed")


def _design(sub: pd.DataFrame, group_column: str, control: str, cases: Sequence[str],
            covariates: Sequence[str]) -> pd.DataFrame:  # fmt: skip
    """Fixed-effect design: intercept, group dummies, years, group x years, covariates."""
    g = sub[group_column].astype(str)
    cols: dict[str, np.ndarray] = {"const": np.ones(len(sub))}
    for c in cases:
        cols[f"{group_column}[{c}]"] = (g == c).to_numpy(float)
    t = sub["years_from_baseline"].to_numpy(float)
    cols["years"] = t
    for c in cases:
        cols[f"{group_column}[{c}]:years"] = (g == c).to_numpy(float) * t
    for cov in covariates:
        v = sub[cov]
        if pd.api.types.is_numeric_dtype(v):
            cols[cov] = v.to_numpy(float) - float(v.mean())
        else:
            for lev in sorted(v.astype(str).unique())[1:]:
                cols[f"{cov}[{lev}]"] = (v.astype(str) == lev).to_numpy(float)
    X = pd.DataFrame(cols, index=sub.index)
    return X.loc[:, (X != 0).any(axis=0)]


#: Optimisers tried in turn (statsmodels MixedLM.fit ``method``) until one converges.
_METHODS = ("lbfgs", "bfgs", "cg")


def _fit_mixed(y: pd.Series, X: pd.DataFrame, groups: pd.Series):  # -> (result, reason, scale)
    """REML fit of ``y ~ X + (1 | groups)`` on ``y / SD(y)`` (well-conditioned for values of
    any units, e.g. ppm); returns the fit, "" or why not, and the scale to multiply back."""
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    problem = model_problem(y.to_numpy(float), X.to_numpy(float))
    if problem:
        return None, problem, 1.0
    df = len(y) - X.shape[1] - 1  # fixed effects + random-intercept variance
    problem = df_problem(float(df))
    if problem:
        return None, problem, 1.0
    scale = float(np.std(y.to_numpy(float))) or 1.0
    why = "mixed model did not converge"
    for method in _METHODS:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                res = sm.MixedLM((y / scale).astype(float), X, groups=groups).fit(
                    reml=True, method=method
                )
            except (np.linalg.LinAlgError, ValueError) as exc:
                why = f"mixed model failed ({type(exc).__name__})"
                continue
        if not getattr(res, "converged", True) or any(
            issubclass(w.category, ConvergenceWarning) and "converge" in str(w.message).lower()
            for w in caught
        ):
            why = "mixed model did not converge"
            continue
        if not np.isfinite(np.asarray(res.bse_fe, float)).all():
            why = "singular fit (non-finite standard errors)"
            continue
        return res, "", scale
    return None, why, 1.0


def _wald(res, weights: Mapping[str, float]) -> tuple[float, float]:
    """Estimate and SE of sum(w_i beta_i) over fixed effects."""
    names = list(res.fe_params.index)
    w = np.array([weights.get(n, 0.0) for n in names])
    cov = np.asarray(res.cov_params().loc[names, names], float)
    return float(w @ res.fe_params.to_numpy(float)), float(np.sqrt(max(w @ cov @ w, 0.0)))


def rate_df(per_group: Mapping[str, int]) -> int:
    """Degrees of freedom of the rate tests: participants with two or more timed sessions
    (``per_group``: their count per group) minus the number of groups.

    A rate (and a difference of rates) is a between-participant comparison of within-
    participant slopes, so its replicates are participants, as in the two-stage analysis
    of per-participant slopes (a two-sample t test of the slopes for two groups without
    covariates, Laird & Ware 1982). The normal reference statsmodels uses for ``MixedLM``
    is anti-conservative with the few participants of a cohort (16: z = 2.66 gives p =
    0.008 against 0.019 with t on 14 df), and it ignores between-participant variation of
    the rates, which the random-intercept model cannot see.
    """
    return int(sum(per_group.values())) - len(per_group)


def mixed_models(
    data: pd.DataFrame,
    *,
    group_column: str = "group",
    control_label: str = "HC",
    case_labels: Sequence[str] = ("MS",),
    covariates: Sequence[str] = (),
    measures: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Linear mixed models of every structure x hemisphere x measure (see module docstring).

    ``data``: all participants' change tables joined with participants.tsv (one row per
    session x structure x hemisphere; needs ``years_from_baseline`` and ``group_column``).
    """
    from scipy import stats as sps

    measures = [m for m in (measures or LONGITUDINAL_MEASURES) if m in data.columns]
    cases = [c for c in case_labels if c != control_label]
    levels = [control_label, *cases]
    rows: list[dict[str, object]] = []
    for structure, hemi in regions(data):
        region = data[(data["structure"] == structure) & (data["hemisphere"] == hemi)]
        for measure in measures:
            cols = ["participant_id", "years_from_baseline", group_column, measure, *covariates]
            sub = region[list(dict.fromkeys(cols))].dropna()
            sub = sub[sub[group_column].astype(str).isin(levels)]
            timed = sub.groupby("participant_id")["years_from_baseline"].nunique()
            sub = sub[sub["participant_id"].map(timed) >= 1]
            X = _design(sub, group_column, control_label, cases, covariates)
            per_group = {
                lev: int(timed[timed >= 2].index.isin(
                    sub.loc[sub[group_column].astype(str) == lev, "participant_id"]).sum())
                for lev in levels
            }  # fmt: skip
            within = sub.groupby("participant_id")[measure].agg(np.ptp).to_numpy(float)
            if min(per_group.values(), default=0) < 2:
                res, why, scale = (
                    None,
                    "fewer than 2 participants with 2 timed sessions in a group",
                    1.0,
                )
            elif float(np.max(within, initial=0.0)) <= 1e-9 * max(1.0, sub[measure].abs().max()):
                res, why, scale = (
                    None,
                    "no within-participant change (same value in every session)",
                    1.0,
                )
            else:
                res, why, scale = _fit_mixed(sub[measure], X, sub["participant_id"])
            terms = [(f"rate:{control_label}", {"years": 1.0}, control_label)]
            for c in cases:
                inter = f"{group_column}[{c}]:years"
                terms.append((f"rate:{c}", {"years": 1.0, inter: 1.0}, c))
                terms.append((f"rate_difference:{c}-{control_label}", {inter: 1.0}, c))
            df = rate_df(per_group)
            tc = float(sps.t.ppf(0.975, df)) if df > 0 else np.nan
            for term, weights, lev in terms:
                est = se = np.nan
                if res is not None:
                    est, se = (scale * v for v in _wald(res, weights))
                t = est / se if res is not None and se > 0 else np.nan
                rows.append(
                    {
                        "structure": structure,
                        "hemisphere": hemi,
                        "measure": measure,
                        "units": f"{LONGITUDINAL_MEASURES.get(measure, '')}/year",
                        "term": term,
                        "estimate": est,
                        "se": se,
                        "ci_low": est - tc * se,
                        "ci_high": est + tc * se,
                        "t": t,
                        "df": df if res is not None else np.nan,
                        "p": float(2 * sps.t.sf(abs(t), df)) if np.isfinite(t) else np.nan,
                        "n_obs": int(len(sub)),
                        "n_subjects": int(sub["participant_id"].nunique()),
                        "n_subjects_group": per_group.get(lev, 0),
                        "random_intercept_sd": scale
                        * float(np.sqrt(max(float(res.cov_re.iloc[0, 0]), 0)))
                        if res is not None
                        else np.nan,
                        "residual_sd": scale * float(np.sqrt(res.scale))
                        if res is not None
                        else np.nan,
                        "reason": why,
                        "model": f"{measure} ~ {group_column} * years"
                        + "".join(f" + {c}" for c in covariates)
                        + " + (1 | participant)",
                    }
                )
    from bids_qsm.stats.group import fdr_table

    return fdr_table(rows, MIXED_COLUMNS, "term")

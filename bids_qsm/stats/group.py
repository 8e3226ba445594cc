"""Group level, regional part: cohort tables and the statistics of the seed studies.

Pure pandas/statsmodels on the participant stats tables (no image I/O here). Gathering is in
:mod:`bids_qsm.stats.group_tables`, the design in :mod:`bids_qsm.stats.group_design` (both
re-exported here):

* :func:`find_stats_tables` / :func:`gather_tables` / :func:`read_participants` gather every
  ``sub-*/[ses-*/]anat/*_seg-<atlas>_stats.tsv`` (and lesion tables) into one long table joined
  with ``participants.tsv``; :func:`wide_table` pivots it to one row per acquisition.
* :func:`group_differences`: per structure x hemisphere x measure, ordinary least squares
  ``measure ~ group + covariates [+ volume]`` (statsmodels OLS), one contrast per non-control
  group level against the controls, 95% CI, t, p and Benjamini-Hochberg q.
* :func:`clinical_associations`: partial correlation of each measure with each clinical variable
  in the patients, adjusted for the covariates, from the OLS t of the variable
  (``r = t / sqrt(t^2 + df_resid)``, identical to the residual-on-residual correlation).
* :func:`normative_zscores`: z of every participant against the controls (leave-one-out for the
  controls themselves).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from bids_qsm.stats.columns import column_descriptions
from bids_qsm.stats.effects import (
    df_problem,
    model_problem,
    standardized_difference,
)
from bids_qsm.stats.group_design import (  # noqa: F401 (re-exported: the group API)
    Design,
    _group_col,
    design_matrix,
    resolve_design,
)
from bids_qsm.stats.group_tables import (  # noqa: F401 (re-exported: the group API)
    DEFAULT_MEASURES,
    ENTITY_COLUMNS,
    VOLUME_TOKENS,
    _with_sub,
    find_lesion_tables,
    find_stats_tables,
    first_acquisition,
    gather_tables,
    measure_columns,
    read_participants,
    read_tsv,
    regions,
    wide_table,
)

LOGGER = logging.getLogger("bids_qsm.group")


def _model_columns(design: Design, measure: str, variable: str | None = None) -> list[str]:
    cols = [measure, design.group_column, *design.covariates]
    if variable:
        cols.append(variable)
    if design.use_volume and "volume_mm3" not in cols:
        cols.append("volume_mm3")
    return list(dict.fromkeys(cols))


def _fit(y: pd.Series, X: pd.DataFrame):  # -> (RegressionResultsWrapper | None, str)
    """OLS fit and "" , or (None, reason) when the model is not estimable (see effects)."""
    problem = model_problem(y.to_numpy(float), X.to_numpy(float))
    if problem:
        return None, problem
    return sm.OLS(y.astype(float), X).fit(), ""


def _bh(p: pd.Series) -> pd.Series:
    """Benjamini-Hochberg q values (NaN p, i.e. untested rows, stay NaN and are not counted)."""
    q = pd.Series(np.nan, index=p.index)
    ok = p.notna()
    if ok.any():
        q[ok] = multipletests(p[ok].to_numpy(), method="fdr_bh")[1]
    return q


def fdr_table(rows: list[dict[str, object]], columns: Iterable[str], by: str) -> pd.DataFrame:
    """The model rows as a table of ``columns``, with q (:func:`_bh` over the rows of each
    value of ``by``: a contrast, clinical variable or mixed-model term) right after p."""
    out = pd.DataFrame(rows, columns=[c for c in columns if c != "q"])
    out.insert(out.columns.get_loc("p") + 1, "q", np.nan)
    for _, idx in out.groupby(by).groups.items():
        out.loc[idx, "q"] = _bh(out.loc[idx, "p"])
    return out


def present_measures(long: pd.DataFrame, measures: Iterable[str] | None = None) -> list[str]:
    """The requested measures (default :data:`DEFAULT_MEASURES`) that have finite values."""
    out = []
    for m in measures if measures is not None else DEFAULT_MEASURES:
        if m in long.columns and pd.to_numeric(long[m], errors="coerce").notna().any():
            out.append(m)
        else:
            LOGGER.info("measure %s absent or all n/a: not tested", m)
    return out


# ----------------------------------------------------------------------------- models
GROUPDIFF_COLUMNS: dict[str, dict[str, str]] = column_descriptions("groupdiff")


def group_differences(
    data: pd.DataFrame, design: Design, measures: Sequence[str], units: dict[str, str] | None = None
) -> pd.DataFrame:
    """OLS group comparison per structure, hemisphere, measure and contrast.

    ``data``: long regional table joined with participants, one acquisition per participant.
    Returns the columns of :data:`GROUPDIFF_COLUMNS`; q is Benjamini-Hochberg over the tested
    rows of a contrast (structures x hemispheres x measures). Rows whose model is not
    estimable (too few participants, singular design, constant measure such as the
    whole-brain reference mean) or has fewer than :data:`MIN_RESIDUAL_DF` residual df are kept
    with NaN t/p/q, a ``reason``, and are excluded from the FDR; every estimable row gets
    Cohen's d and Hedges' g with a 95% CI.
    """
    units = {**DEFAULT_MEASURES, **(units or {})}
    rows: list[dict[str, object]] = []
    for structure, hemi in regions(data):
        region = data[(data["structure"] == structure) & (data["hemisphere"] == hemi)]
        for measure in measures:
            sub = region[_model_columns(design, measure)].dropna()
            sub = sub[
                sub[design.group_column]
                .astype(str)
                .isin([design.control_label, *design.case_labels])
            ]
            X = design_matrix(sub, design)
            res, why = _fit(sub[measure], X) if len(sub) else (None, "no participant")
            is_ctrl = sub[design.group_column].astype(str) == design.control_label
            for case in design.case_labels:
                label = f"{case}-{design.control_label}"
                col = _group_col(design.group_column, case)
                is_case = sub[design.group_column].astype(str) == case
                ok = res is not None and is_ctrl.sum() >= 2 and is_case.sum() >= 2
                reason = why or ("" if ok else "fewer than 2 participants in a group")
                if ok:
                    reason = df_problem(res.df_resid) or ""
                tested = ok and not reason
                ci = res.conf_int(0.05).loc[col] if ok else (np.nan, np.nan)
                eff = standardized_difference(
                    res.params[col] if ok else np.nan,
                    float(np.sqrt(res.scale)) if ok else np.nan,
                    int(is_case.sum()),
                    int(is_ctrl.sum()),
                    res.df_resid if ok else np.nan,
                )
                rows.append(
                    {
                        "structure": structure,
                        "hemisphere": hemi,
                        "measure": measure,
                        "units": units.get(measure, ""),
                        "contrast": label,
                        "estimate": res.params[col] if ok else np.nan,
                        "ci_low": ci[0],
                        "ci_high": ci[1],
                        "t": res.tvalues[col] if tested else np.nan,
                        "df": res.df_resid if ok else np.nan,
                        "p": res.pvalues[col] if tested else np.nan,
                        "n": int(len(sub)),
                        "n_control": int(is_ctrl.sum()),
                        "n_case": int(is_case.sum()),
                        "control_mean": sub.loc[is_ctrl, measure].mean(),
                        "case_mean": sub.loc[is_case, measure].mean(),
                        "cohens_d": eff[0],
                        "hedges_g": eff[1],
                        "g_ci_low": eff[2],
                        "g_ci_high": eff[3],
                        "reason": reason,
                        "model": design.formula(measure),
                    }
                )
    return fdr_table(rows, GROUPDIFF_COLUMNS, "contrast")


CLINICAL_COLUMNS: dict[str, dict[str, str]] = column_descriptions("clinical")


def default_clinical_columns(participants: pd.DataFrame, design: Design) -> list[str]:
    """Numeric participants.tsv columns other than the covariates and the group column."""
    skip = {"participant_id", design.group_column, *design.covariates, *design.skipped}
    return [
        c
        for c in participants.columns
        if c not in skip and pd.api.types.is_numeric_dtype(participants[c])
    ]


def clinical_associations(
    data: pd.DataFrame,
    design: Design,
    measures: Sequence[str],
    variables: Sequence[str],
    units: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Covariate-adjusted partial correlations in the patients (non-control participants).

    Model per structure, hemisphere, measure and variable: ``measure ~ variable + covariates
    [+ volume]`` (OLS) in the participants whose group is not the control label (clinical
    scores such as EDSS or disease duration are undefined or zero in controls). q:
    Benjamini-Hochberg over the tested rows of one variable; rows with fewer than
    :data:`MIN_RESIDUAL_DF` residual df or a non-estimable model get n/a statistics and a
    ``reason`` instead.
    """
    units = {**DEFAULT_MEASURES, **(units or {})}
    patients = data[data[design.group_column].astype(str).isin(design.case_labels)]
    population = "+".join(design.case_labels)
    z975 = float(sps.norm.ppf(0.975))
    rows: list[dict[str, object]] = []
    for variable in variables:
        if variable not in data.columns:
            LOGGER.warning("clinical column %r not in participants.tsv: skipped", variable)
            continue
        for structure, hemi in regions(patients):
            region = patients[
                (patients["structure"] == structure) & (patients["hemisphere"] == hemi)
            ]
            for measure in measures:
                sub = region[_model_columns(design, measure, variable)].dropna()
                X = design_matrix(sub, design, with_group=False, variable=variable)
                if not len(sub):
                    res, reason = None, "no patient"
                elif sub[variable].nunique() < 2:
                    res, reason = None, f"{variable} constant in the patients"
                else:
                    res, reason = _fit(sub[measure], X)
                if res is not None:
                    reason = df_problem(res.df_resid) or ""
                df_resid = res.df_resid if res is not None else np.nan
                if reason:
                    res = None
                r = lo = hi = np.nan
                if res is not None:
                    t = float(res.tvalues[variable])
                    r = t / np.sqrt(t * t + res.df_resid)
                    k = X.shape[1] - 2  # covariate columns besides intercept and variable
                    if len(sub) - 3 - k > 0:
                        se = 1.0 / np.sqrt(len(sub) - 3 - k)
                        lo, hi = np.tanh(np.arctanh(r) + np.array([-z975, z975]) * se)
                rows.append(
                    {
                        "structure": structure,
                        "hemisphere": hemi,
                        "measure": measure,
                        "units": units.get(measure, ""),
                        "variable": variable,
                        "population": population,
                        "r": r,
                        "ci_low": lo,
                        "ci_high": hi,
                        "slope": res.params[variable] if res is not None else np.nan,
                        "t": res.tvalues[variable] if res is not None else np.nan,
                        "df": df_resid,
                        "p": res.pvalues[variable] if res is not None else np.nan,
                        "n": int(len(sub)),
                        "reason": reason,
                        "model": design.formula(measure, with_group=False, variable=variable),
                    }
                )
    return fdr_table(rows, CLINICAL_COLUMNS, "variable")


ZSCORE_COLUMNS: dict[str, dict[str, str]] = column_descriptions("zscores")


def normative_zscores(data: pd.DataFrame, design: Design, measures: Sequence[str]) -> pd.DataFrame:
    """z of every participant's value against the controls, per structure/hemisphere/measure.

    Controls are scored against the other controls (leave-one-out), so their z are not
    shrunk towards zero. Needs at least 3 controls (2 left after leaving one out).
    """
    rows = []
    gcol = design.group_column
    for structure, hemi in regions(data):
        region = data[(data["structure"] == structure) & (data["hemisphere"] == hemi)]
        is_ctrl = (region[gcol].astype(str) == design.control_label).to_numpy()
        for measure in measures:
            vals = pd.to_numeric(region[measure], errors="coerce").to_numpy(float)
            ctrl_ok = is_ctrl & np.isfinite(vals)
            for i, (pid, ses, grp) in enumerate(
                zip(region["participant_id"], region["session_id"], region[gcol], strict=True)
            ):
                ref = ctrl_ok.copy()
                ref[i] = False
                ref_vals = vals[ref]
                n = int(ref_vals.size)
                mu = float(ref_vals.mean()) if n else np.nan
                sd = float(ref_vals.std(ddof=1)) if n >= 2 else np.nan
                z = (vals[i] - mu) / sd if n >= 2 and sd > 0 else np.nan
                rows.append(
                    {
                        "participant_id": pid,
                        "session_id": ses,
                        "group": grp,
                        "structure": structure,
                        "hemisphere": hemi,
                        "measure": measure,
                        "value": vals[i],
                        "control_mean": mu,
                        "control_sd": sd,
                        "n_control": n,
                        "z": z,
                    }
                )
    return pd.DataFrame(rows, columns=list(ZSCORE_COLUMNS))


def regional_analysis_data(long: pd.DataFrame, design: Design) -> pd.DataFrame:
    """One acquisition per participant, only participants with a known group level."""
    data = first_acquisition(long)
    known = data[design.group_column].astype(str).isin([design.control_label, *design.case_labels])
    if (~known).any():
        dropped = sorted(set(data.loc[~known, "participant_id"]))
        LOGGER.warning(
            "no usable %s for: %s (left out of the models)", design.group_column, ", ".join(dropped)
        )
    return data[known & data[design.group_column].notna()]

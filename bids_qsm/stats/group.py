"""Group level, regional part: cohort tables and the statistics of the seed studies.

Pure pandas/statsmodels on the participant stats tables (no image I/O here):

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from bids_qsm.errors import InputDataError, InputMissingError
from bids_qsm.stats.effects import (
    MIN_RESIDUAL_DF,
    df_problem,
    model_problem,
    standardized_difference,
)

LOGGER = logging.getLogger("bids_qsm.group")

#: Columns identifying one acquisition in the participant tables.
ENTITY_COLUMNS: tuple[str, ...] = ("participant_id", "session_id", "acq", "run")

#: Measures tested by default (those present with finite values are used), with units.
DEFAULT_MEASURES: dict[str, str] = {
    "chi_mean_ppm": "ppm",
    "phaseiron_mean_rad": "rad",
    "r2star_mean_hz": "Hz",
    "mpapt_rad": "rad",
    "apt_volume_mm3": "mm^3",
}

#: Covariate token meaning "the volume_mm3 of the structure being tested".
VOLUME_TOKENS: tuple[str, ...] = ("volume", "volume_mm3")

#: Columns of the participant stats table that identify rows rather than measure.
_NON_MEASURE = {*ENTITY_COLUMNS, "atlas", "structure", "hemisphere", "reference_region"}


# ----------------------------------------------------------------------------- gathering
def find_stats_tables(output_dir: Path, atlas: str) -> list[Path]:
    """Every participant ``*_seg-<atlas>_stats.tsv`` under ``output_dir`` (sorted)."""
    output_dir = Path(output_dir)
    pats = (f"sub-*/anat/*_seg-{atlas}_stats.tsv", f"sub-*/ses-*/anat/*_seg-{atlas}_stats.tsv")
    return sorted({p for pat in pats for p in output_dir.glob(pat)})


def find_lesion_tables(output_dir: Path) -> list[Path]:
    """Every participant ``*_desc-lesions_stats.tsv`` under ``output_dir`` (sorted)."""
    output_dir = Path(output_dir)
    pats = ("sub-*/anat/*_desc-lesions_stats.tsv", "sub-*/ses-*/anat/*_desc-lesions_stats.tsv")
    return sorted({p for pat in pats for p in output_dir.glob(pat)})


def _with_sub(label: object) -> str:
    text = str(label).strip()
    return text if text.startswith("sub-") else f"sub-{text}"


def read_tsv(path: Path) -> pd.DataFrame:
    """Read a BIDS TSV: ``n/a`` as missing, entity columns kept as text (``n/a`` when empty).

    An unreadable, undecodable, malformed or empty table raises :class:`InputDataError` (65).
    """
    try:
        df = pd.read_csv(
            path,
            sep="\t",
            na_values=["n/a"],
            keep_default_na=True,
            dtype={c: str for c in (*ENTITY_COLUMNS, "lesion_id", "label")},
        )
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise InputDataError(f"corrupt table ({type(exc).__name__}: {reason})", path) from exc
    if df.shape[1] < 2:
        raise InputDataError(f"corrupt table: {df.shape[1]} column (not tab-separated?)", path)
    for col in ("session_id", "acq", "run"):
        if col in df.columns:
            df[col] = df[col].fillna("n/a").astype(str)
    return df


def read_participants(bids_dir: Path, group_column: str = "group") -> pd.DataFrame:
    """``BIDS_DIR/participants.tsv`` with ``participant_id`` normalised to ``sub-<label>``.

    Raises :class:`InputMissingError` (66) when the file is absent and
    :class:`InputDataError` (65) when it lacks ``participant_id`` or ``group_column``.
    """
    path = Path(bids_dir) / "participants.tsv"
    if not path.is_file():
        raise InputMissingError(
            "participants.tsv not found: the group level needs it for the group and covariates",
            path,
        )
    try:
        df = pd.read_csv(
            path,
            sep="\t",
            na_values=["n/a"],
            keep_default_na=True,
            dtype={"participant_id": str, group_column: str},
        )
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise InputDataError(f"corrupt table ({type(exc).__name__}: {reason})", path) from exc
    if "participant_id" not in df.columns:
        raise InputDataError("no participant_id column", path)
    if group_column not in df.columns:
        raise InputDataError(
            f"no {group_column!r} column (needed to compare groups; "
            f"set --group-column); columns are: {', '.join(map(str, df.columns))}",
            path,
        )
    df["participant_id"] = df["participant_id"].map(_with_sub)
    if df["participant_id"].duplicated().any():
        dup = df.loc[df["participant_id"].duplicated(), "participant_id"].iloc[0]
        raise InputDataError(f"participants.tsv lists {dup} more than once", path)
    return df


def gather_tables(paths: Sequence[Path], participants: pd.DataFrame | None = None) -> pd.DataFrame:
    """Concatenate participant tables and join them with ``participants`` (left join).

    The participant columns (other than ``participant_id``) are appended after the table's
    own columns; participants absent from ``participants.tsv`` get missing values (logged).
    """
    if not paths:
        return pd.DataFrame()
    frames = []
    for p in paths:
        df = read_tsv(p)
        if "participant_id" not in df.columns:  # take it from the file name
            df.insert(0, "participant_id", Path(p).name.split("_")[0])
        frames.append(df)
    long = pd.concat(frames, ignore_index=True)
    long["participant_id"] = long["participant_id"].map(_with_sub)
    if participants is None:
        return long
    extra = [c for c in participants.columns if c not in long.columns or c == "participant_id"]
    missing = sorted(set(long["participant_id"]) - set(participants["participant_id"]))
    if missing:
        LOGGER.warning("not in participants.tsv (no group/covariates): %s", ", ".join(missing))
    return long.merge(participants[extra], on="participant_id", how="left")


def first_acquisition(long: pd.DataFrame) -> pd.DataFrame:
    """Keep one acquisition per participant (first session, acq, run in sorted order).

    The group models assume one observation per participant; extra sessions/runs are
    dropped with a warning (longitudinal designs need a mixed model, not provided here).
    """
    if long.empty:
        return long
    keys = long[list(ENTITY_COLUMNS)].drop_duplicates().sort_values(list(ENTITY_COLUMNS))
    first = keys.drop_duplicates("participant_id")
    if len(first) < len(keys):
        LOGGER.warning(
            "%d extra session/acq/run tables ignored by the group models (first one per "
            "participant kept)",
            len(keys) - len(first),
        )
    return long.merge(first, on=list(ENTITY_COLUMNS), how="inner")


def measure_columns(long: pd.DataFrame) -> list[str]:
    """Numeric measure columns of a regional long table (in table order)."""
    return [
        c
        for c in long.columns
        if c not in _NON_MEASURE
        and c.endswith(("_ppm", "_hz", "_rad", "_mm3", "nvox"))
        and pd.api.types.is_numeric_dtype(long[c])
    ]


def wide_table(long: pd.DataFrame, participants: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per acquisition; columns ``<structure>_<hemisphere>_<measure>``.

    Joined with ``participants`` (its columns first, after the entity columns).
    """
    regional_cols = [c for c in long.columns if c in _NON_MEASURE or c in measure_columns(long)]
    regional = long[regional_cols]
    measures = measure_columns(regional)
    wide = regional.pivot_table(
        index=list(ENTITY_COLUMNS),
        columns=["structure", "hemisphere"],
        values=measures,
        aggfunc="first",
        dropna=False,
        sort=False,
    )
    order = list(dict.fromkeys(zip(long["structure"], long["hemisphere"], strict=True)))
    cols = [(m, s, h) for (s, h) in order for m in measures if (m, s, h) in wide.columns]
    wide = wide[cols]
    wide.columns = [f"{s}_{h}_{m}" for (m, s, h) in cols]
    wide = wide.reset_index()
    if participants is not None:
        pcols = [c for c in participants.columns if c not in wide.columns or c == "participant_id"]
        wide = wide.merge(participants[pcols], on="participant_id", how="left")
        lead = list(ENTITY_COLUMNS) + [c for c in pcols if c != "participant_id"]
        wide = wide[lead + [c for c in wide.columns if c not in lead]]
    return wide


# ----------------------------------------------------------------------------- design
@dataclass
class Design:
    """Resolved model terms for one cohort."""

    group_column: str
    control_label: str
    case_labels: list[str]
    covariates: list[str]  # participant columns actually used
    use_volume: bool
    skipped: list[str] = field(default_factory=list)

    @property
    def contrasts(self) -> dict[str, str]:
        """Contrast label (``"MS-HC"``) -> design column of the group indicator."""
        return {
            f"{c}-{self.control_label}": _group_col(self.group_column, c) for c in self.case_labels
        }

    def formula(self, measure: str, with_group: bool = True, variable: str | None = None) -> str:
        """Human-readable model, e.g. ``chi_mean_ppm ~ group + age + sex + volume``."""
        terms = ([self.group_column] if with_group else []) + ([variable] if variable else [])
        terms += self.covariates + (["volume"] if self.use_volume else [])
        return f"{measure} ~ " + (" + ".join(terms) if terms else "1")


def _group_col(group_column: str, level: str) -> str:
    return f"{group_column}[{level}]"


def resolve_design(
    participants: pd.DataFrame,
    covariates: Iterable[str],
    group_column: str = "group",
    control_label: str = "HC",
    path: Path | None = None,
    adjust_volume: bool = True,
) -> Design:
    """Check the group column and covariates against ``participants.tsv``.

    Covariates absent from the table are skipped with a warning. ``adjust_volume`` (or a
    ``volume`` / ``volume_mm3`` covariate) adds the tested structure's own volume to every
    regional model (atrophy shifts iron measures). Raises :class:`InputDataError`
    when no participant carries ``control_label`` or no other group level exists.
    """
    levels = sorted({str(v) for v in participants[group_column].dropna()})
    if control_label not in levels:
        raise InputDataError(
            f"participants.tsv: no participant has {group_column} = {control_label!r} "
            f"(levels: {', '.join(levels) or 'none'}; set --control-label)",
            path,
        )
    cases = [lv for lv in levels if lv != control_label]
    if not cases:
        raise InputDataError(
            f"participants.tsv: only the control group {control_label!r} in column "
            f"{group_column!r}; nothing to compare",
            path,
        )
    used: list[str] = []
    skipped: list[str] = []
    use_volume = adjust_volume
    for cov in covariates:
        if cov in VOLUME_TOKENS:
            use_volume = True
        elif cov in participants.columns and cov != group_column:
            used.append(cov)
        else:
            skipped.append(cov)
            LOGGER.warning("covariate %r is not a column of participants.tsv: skipped", cov)
    return Design(group_column, control_label, cases, used, use_volume, skipped)


def _encode(data: pd.DataFrame, column: str) -> pd.DataFrame:
    """Numeric column as is; text column as treatment dummies (first sorted level dropped)."""
    s = data[column]
    if pd.api.types.is_numeric_dtype(s):
        return pd.DataFrame({column: s.astype(float)}, index=data.index)
    levels = sorted({str(v) for v in s.dropna()})
    return pd.DataFrame(
        {f"{column}[{lv}]": (s.astype(str) == lv).astype(float) for lv in levels[1:]},
        index=data.index,
    )


def design_matrix(
    data: pd.DataFrame, design: Design, *, with_group: bool = True, variable: str | None = None
) -> pd.DataFrame:
    """Design matrix (intercept, group indicators, [variable], covariates, [volume]).

    ``data`` must already be free of missing values in the used columns. Covariate columns
    that are constant in ``data`` are dropped (they would make the design singular).
    """
    parts = [pd.DataFrame({"Intercept": 1.0}, index=data.index)]
    if with_group:
        g = data[design.group_column].astype(str)
        parts.append(
            pd.DataFrame(
                {
                    _group_col(design.group_column, c): (g == c).astype(float)
                    for c in design.case_labels
                },
                index=data.index,
            )
        )
    if variable is not None:
        parts.append(pd.DataFrame({variable: data[variable].astype(float)}, index=data.index))
    for cov in design.covariates:
        enc = _encode(data, cov)
        parts.append(enc.loc[:, enc.std(ddof=0) > 0])
    if design.use_volume and data["volume_mm3"].nunique() > 1:  # constant: no information
        parts.append(
            pd.DataFrame({"volume": data["volume_mm3"].astype(float) / 1000.0}, index=data.index)
        )  # mL: better conditioned
    return pd.concat(parts, axis=1)


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


def _regions(long: pd.DataFrame) -> list[tuple[str, str]]:
    return list(dict.fromkeys(zip(long["structure"], long["hemisphere"], strict=True)))


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
GROUPDIFF_COLUMNS: dict[str, dict[str, str]] = {
    "structure": {"Description": "Structure (or whole_brain)."},
    "hemisphere": {"Description": "L, R or bilateral."},
    "measure": {"Description": "Column of the regional table that was modelled."},
    "units": {"Description": "Units of the measure (and of estimate, CI, means)."},
    "contrast": {"Description": "Group level minus control level, e.g. MS-HC."},
    "estimate": {
        "Description": "Adjusted group difference (OLS coefficient of the group "
        "indicator), in the measure's units."
    },
    "ci_low": {"Description": "Lower bound of the 95% confidence interval of estimate."},
    "ci_high": {"Description": "Upper bound of the 95% confidence interval of estimate."},
    "t": {"Description": "t statistic of estimate."},
    "df": {"Description": "Residual degrees of freedom."},
    "p": {"Description": "Two-sided p value."},
    "q": {
        "Description": "Benjamini-Hochberg FDR q over all structures, hemispheres and measures "
        "of the contrast."
    },
    "n": {"Description": "Participants in the model (complete cases)."},
    "n_control": {"Description": "Controls in the model."},
    "n_case": {"Description": "Participants of the case group in the model."},
    "control_mean": {"Description": "Unadjusted mean of the controls."},
    "case_mean": {"Description": "Unadjusted mean of the case group."},
    "cohens_d": {
        "Description": "Standardised adjusted difference: estimate / residual SD of the model "
        "(Cohen's d when there is no covariate)."
    },
    "hedges_g": {"Description": "cohens_d with Hedges' small-sample correction J(df)."},
    "g_ci_low": {"Description": "Lower bound of the 95% CI of hedges_g."},
    "g_ci_high": {"Description": "Upper bound of the 95% CI of hedges_g."},
    "reason": {
        "Description": "Why t, p and q are n/a: model not estimable (too few participants, "
        f"singular design, constant measure) or residual df < {MIN_RESIDUAL_DF} (estimate and "
        "effect size then only describe the sample). Empty: tested, counted in the FDR."
    },
    "model": {"Description": "Model formula (volume = the structure's volume_mm3, in mL)."},
}


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
    for structure, hemi in _regions(data):
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
    out = pd.DataFrame(rows, columns=[c for c in GROUPDIFF_COLUMNS if c != "q"])
    out.insert(out.columns.get_loc("p") + 1, "q", np.nan)
    for _, idx in out.groupby("contrast").groups.items():
        out.loc[idx, "q"] = _bh(out.loc[idx, "p"])
    return out


CLINICAL_COLUMNS: dict[str, dict[str, str]] = {
    "structure": GROUPDIFF_COLUMNS["structure"],
    "hemisphere": GROUPDIFF_COLUMNS["hemisphere"],
    "measure": GROUPDIFF_COLUMNS["measure"],
    "units": GROUPDIFF_COLUMNS["units"],
    "variable": {"Description": "Clinical variable (column of participants.tsv)."},
    "population": {"Description": "Participants included: the non-control groups (patients)."},
    "r": {
        "Description": "Partial correlation of measure and variable adjusted for the "
        "covariates, r = t / sqrt(t^2 + df)."
    },
    "ci_low": {"Description": "Lower bound of the 95% CI of r (Fisher z)."},
    "ci_high": {"Description": "Upper bound of the 95% CI of r (Fisher z)."},
    "slope": {"Description": "Adjusted OLS slope: measure units per unit of variable."},
    "t": {"Description": "t statistic of the slope."},
    "df": {"Description": "Residual degrees of freedom."},
    "p": {"Description": "Two-sided p value (same for r and slope)."},
    "q": {
        "Description": "Benjamini-Hochberg FDR q over all structures, hemispheres and measures "
        "of the variable."
    },
    "n": {"Description": "Participants in the model (complete cases)."},
    "reason": {
        "Description": "Why r, slope, t, p and q are n/a: model not estimable (too few "
        "patients, singular design, constant variable or measure) or residual df < "
        f"{MIN_RESIDUAL_DF}. Empty: tested, counted in the FDR."
    },
    "model": {"Description": "Model formula."},
}


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
        for structure, hemi in _regions(patients):
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
    out = pd.DataFrame(rows, columns=[c for c in CLINICAL_COLUMNS if c != "q"])
    out.insert(out.columns.get_loc("p") + 1, "q", np.nan)
    for _, idx in out.groupby("variable").groups.items():
        out.loc[idx, "q"] = _bh(out.loc[idx, "p"])
    return out


ZSCORE_COLUMNS: dict[str, dict[str, str]] = {
    "participant_id": {"Description": "Participant."},
    "session_id": {"Description": "Session (n/a without sessions)."},
    "group": {"Description": "Group of the participant (value of the group column)."},
    "structure": GROUPDIFF_COLUMNS["structure"],
    "hemisphere": GROUPDIFF_COLUMNS["hemisphere"],
    "measure": GROUPDIFF_COLUMNS["measure"],
    "value": {"Description": "The participant's value, in the measure's units."},
    "control_mean": {
        "Description": "Mean of the controls (the participant left out if a control)."
    },
    "control_sd": {"Description": "Standard deviation (ddof=1) of the same controls."},
    "n_control": {"Description": "Controls in the reference."},
    "z": {"Description": "(value - control_mean) / control_sd (unadjusted)."},
}


def normative_zscores(data: pd.DataFrame, design: Design, measures: Sequence[str]) -> pd.DataFrame:
    """z of every participant's value against the controls, per structure/hemisphere/measure.

    Controls are scored against the other controls (leave-one-out), so their z are not
    shrunk towards zero. Needs at least 3 controls (2 left after leaving one out).
    """
    rows = []
    gcol = design.group_column
    for structure, hemi in _regions(data):
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

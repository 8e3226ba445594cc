"""Group level: the model design (group levels, covariates, volume term) of one cohort.

:func:`resolve_design` checks the requested terms against ``participants.tsv`` and
:func:`design_matrix` encodes them (categorical covariates as indicators, volume in mL).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bids_qsm.errors import InputDataError
from bids_qsm.stats.group_tables import VOLUME_TOKENS

LOGGER = logging.getLogger("bids_qsm.group")


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

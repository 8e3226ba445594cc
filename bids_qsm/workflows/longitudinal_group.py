"""Group level, several sessions: mixed models of iron over time and the trajectories figure.

Gathers every ``sub-<l>/anat/sub-<l>_desc-longitudinal_stats.tsv`` (written by the participant
level for subjects with two or more sessions), joins it with ``participants.tsv`` and fits
:func:`bids_qsm.stats.longitudinal.mixed_models`. Writes, in ``OUTPUT_DIR/group/``::

    desc-longitudinal_stats.tsv (+ .json)        all participants' change tables, joined
    desc-longitudinalrates_stats.tsv (+ .json)   rates per group, rate differences, CI, p, q
    figures/desc-trajectories_plot.png           trajectories per group (group report)

Does nothing (returns None) when no participant has a longitudinal table.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

LOGGER = logging.getLogger("bids_qsm.group")


def find_longitudinal_tables(output_dir: Path) -> list[Path]:
    """``sub-*/anat/sub-*_desc-longitudinal_stats.tsv`` under ``output_dir`` (sorted)."""
    return sorted(Path(output_dir).glob("sub-*/anat/sub-*_desc-longitudinal_stats.tsv"))


def run_longitudinal_group(
    settings: Any, participants: pd.DataFrame, design: Any, exclusions: dict[str, str]
) -> dict[str, Any] | None:
    """Mixed models on the longitudinal tables; returns what the report needs (or None).

    ``settings``: :class:`bids_qsm.workflows.group.GroupSettings`; ``design``: the resolved
    cross-sectional design (group column, control/case labels, covariates; the volume
    covariate is not used: the labels, hence volumes, are the same in every session).
    """
    from bids_qsm.stats import longitudinal as L
    from bids_qsm.stats.group import gather_tables
    from bids_qsm.workflows.group import write_table

    paths = find_longitudinal_tables(settings.output_dir)
    if not paths:
        return None
    group_dir = Path(settings.output_dir) / "group"
    long = gather_tables(paths, participants)
    long = long[long["atlas"].astype(str) == str(settings.atlas)]
    data = long[~long["participant_id"].isin(list(exclusions))]
    covariates = [c for c in design.covariates if c in data.columns]
    rates = L.mixed_models(
        data,
        group_column=design.group_column,
        control_label=design.control_label,
        case_labels=design.case_labels,
        covariates=covariates,
        measures=[m for m in L.LONGITUDINAL_MEASURES if m in data.columns],
    )
    write_table(
        long,
        group_dir / "desc-longitudinal_stats.tsv",
        L.CHANGE_COLUMNS,
        "Longitudinal regional tables of every participant with two or more sessions "
        "(subject space, same labels for all sessions), joined with participants.tsv.",
    )
    write_table(
        rates,
        group_dir / "desc-longitudinalrates_stats.tsv",
        L.MIXED_COLUMNS,
        "Linear mixed models per structure and measure: measure ~ group * years + "
        "covariates + (1 | participant) (statsmodels MixedLM, REML). Rates per group, "
        "group differences in rates, 95% CI and p (t reference, participant-level df) and "
        "Benjamini-Hochberg q per term.",
    )
    from bids_qsm.reports.longitudinal import trajectories_figure

    fig = trajectories_figure(data, rates, design, group_dir / "figures")
    LOGGER.info(
        "group: longitudinal mixed models on %d participants (%d sessions)",
        data["participant_id"].nunique(),
        data[["participant_id", "session_id"]].drop_duplicates().shape[0],
    )
    return {"data": data, "rates": rates, "figure": fig}

"""Participant level: Nipype workflows from GRE magnitude + phase to BIDS derivatives.

The entry point :func:`run_participant_level`; the graph is built by
:mod:`bids_qsm.workflows.participant_graph` (its names are re-exported here).

Graph of one acquisition (``init_gre_wf``)::

    load ──> qsm_wf ──> swi_wf ──────────────┐
      │        ├──────> atlas_wf ──> stats_wf ┼──> ds (derivatives) ──> report (per subject)
      │        └──────────────────> lesion ───┘

Every box is a thin interface (``bids_qsm.interfaces``) around the pure numerical libraries
(``bids_qsm.qsm``, ``bids_qsm.swi``, ``bids_qsm.atlas``, ``bids_qsm.stats``). Nodes run with
MultiProc by default (``--nprocs``, ``--omp-nthreads``, ``--mem-mb``) or any Nipype plugin
(``--use-plugin``); the work directory caches finished nodes, so a re-run only redoes what
changed (QSM is three nodes, field / background / inversion, see ``init_qsm_wf``).
Subjects are scheduled by :mod:`bids_qsm.workflows.scheduler` (several at once when
``--nprocs`` allows): a failing subject is logged (crash files in its log folder), gets a report
page saying why, and the others go on.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from bids_qsm.bids.writers import update_bidsignore, write_dataset_description
from bids_qsm.config import Config
from bids_qsm.workflows.errors_bridge import run_error
from bids_qsm.workflows.participant_graph import (  # noqa: F401 (re-exported: the graph API)
    _NODE_RE,
    STAGE_LABELS,
    THREAD_VARIABLES,
    _configure_nipype,
    _wf_name,
    apt_threshold,
    find_user_brain_mask,
    find_user_field,
    init_atlas_wf,
    init_gre_wf,
    init_participant_wf,
    init_qsm_wf,
    init_swi_wf,
    omp_threads,
    qsm_options,
    set_thread_limits,
    swi_options,
    write_stage_timings,
)
from bids_qsm.workflows.reporting import write_citation
from bids_qsm.workflows.scheduler import run_subjects

LOGGER = logging.getLogger("bids_qsm.participant")


def run_participant_level(config: Config, acquisitions: list[Any]) -> int:
    """Run the participant level for the selected acquisitions; return the exit code."""
    out_dir = Path(config.execution.output_dir)
    write_dataset_description(out_dir, config.execution.bids_dir)
    update_bidsignore(out_dir)
    by_subject: dict[str, list[Any]] = defaultdict(list)
    for acq in acquisitions:
        by_subject[acq.subject].append(acq)

    if config.execution.boilerplate_only:
        path = write_citation(config, out_dir)
        LOGGER.info("Methods boilerplate written to %s", path)
        return 0

    results = run_subjects(config, dict(by_subject))
    failed = {r.subject: r.as_error() for r in results if not r.ok}
    n = len(by_subject)
    write_citation(config, out_dir)
    if failed:
        LOGGER.error("%d of %d subject(s) failed: %s", len(failed), n, ", ".join(sorted(failed)))
        raise run_error(failed, n)
    return 0

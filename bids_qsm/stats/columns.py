"""One home for the column descriptions of every statistics table: ``columns.tsv``.

``columns.tsv`` (beside this module) has one row per table and column, in the table's column
order: ``table``, ``column``, ``description`` and ``units`` (empty: no ``Units`` key). A
description ``@<table>`` takes the entry of the same column from that earlier table, so a
concept shared by several tables (a structure, a hemisphere, a degree of freedom) is written
once. ``{MIN_RESIDUAL_DF}`` in a description is replaced by
:data:`bids_qsm.stats.effects.MIN_RESIDUAL_DF`.

Tables: ``regional`` (``<src>_seg-<atlas>_stats.tsv``), ``lesions`` (lesion-wise table),
``groupdiff``, ``clinical``, ``zscores`` (group level), ``aptthresholds`` (group SWI
thresholds), ``change`` and ``mixed`` (longitudinal) and ``exclusions`` (group exclusions).
The dictionaries returned are the BIDS JSON sidecar entries (``{"Description": ..., "Units":
...}``) of the tables' columns.
"""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path

from bids_qsm.stats.effects import MIN_RESIDUAL_DF

COLUMNS_TSV = Path(__file__).with_name("columns.tsv")


@cache
def _all_tables() -> dict[str, dict[str, dict[str, str]]]:
    tables: dict[str, dict[str, dict[str, str]]] = {}
    with COLUMNS_TSV.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            desc = row["description"]
            if desc.startswith("@"):
                entry = dict(tables[desc[1:]][row["column"]])
            else:
                entry = {"Description": desc.replace("{MIN_RESIDUAL_DF}", str(MIN_RESIDUAL_DF))}
                if row["units"]:
                    entry["Units"] = row["units"]
            tables.setdefault(row["table"], {})[row["column"]] = entry
    return tables


def column_descriptions(table: str) -> dict[str, dict[str, str]]:
    """Column name -> sidecar entry of ``table`` (a fresh copy, in column order)."""
    return {col: dict(entry) for col, entry in _all_tables()[table].items()}


def column_units(table: str, *columns: str) -> dict[str, str]:
    """Column -> ``Units`` of the ``columns`` of ``table``, in the given order."""
    entries = _all_tables()[table]
    return {col: entries[col]["Units"] for col in columns}

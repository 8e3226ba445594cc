"""HTML tables of the participant report: regional values, lesions, QC rows, provenance.

Values are read from the ``_stats.tsv`` tables (χ in ppm, shown in ppb) and from the
provenance mapping of :class:`bids_qsm.reports.participant.ReportInputs`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from bids_qsm.atlas.structures import STRUCTURE_NAMES
from bids_qsm.reports.html import _as_float, _badge, _chi_bar, _esc, _signed

# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

#: Column -> table header of the regional and lesion tables of the report.
_HEADERS: dict[str, str] = {
    "label": "Label",
    "lesion_id": "Lesion",
    "volume_mm3": "Volume (mm³)",
    "chi_mean_ppm": "χ mean (ppb)",
    "chi_median_ppm": "χ median (ppb)",
    "chi_std_ppm": "χ SD (ppb)",
    "chi_iqr": "χ P25 … P75 (ppb)",
    "rim_chi_mean_ppm": "Rim χ (ppb)",
    "core_chi_mean_ppm": "Core χ (ppb)",
    "rim_minus_core_ppm": "Rim − core (ppb)",
    "r2star_mean_hz": "R2* (s⁻¹)",
    "phaseiron_mean_rad": "Phase-iron (rad)",
    "rim_phaseiron_mean_rad": "Rim phase-iron (rad)",
    "mpapt_rad": "MP-APT (rad)",
    "apt_volume_mm3": "APT vol. (mm³)",
}


def _kind(column: str) -> str:
    """How a column is shown: ppb (ppm column shown x1000), int (mm^3), f1 (Hz), f3 (rad),
    iqr (the P25 … P75 pair) or text."""
    if column in ("label", "lesion_id"):
        return "text"
    if column == "chi_iqr":
        return "iqr"
    for suffix, kind in (("_ppm", "ppb"), ("_mm3", "int"), ("_hz", "f1")):
        if column.endswith(suffix):
            return kind
    return "f3"


def _columns(*names: str) -> tuple[tuple[str, str, str], ...]:
    """(column, header, kind) of each column shown."""
    return tuple((n, _HEADERS[n], _kind(n)) for n in names)


_REGIONAL_COLUMNS = _columns(
    "volume_mm3",
    "chi_mean_ppm",
    "chi_median_ppm",
    "chi_std_ppm",
    "chi_iqr",
    "r2star_mean_hz",
    "phaseiron_mean_rad",
    "mpapt_rad",
    "apt_volume_mm3",
)
_LESION_COLUMNS = _columns(
    "label",
    "lesion_id",
    "volume_mm3",
    "chi_mean_ppm",
    "rim_chi_mean_ppm",
    "core_chi_mean_ppm",
    "rim_minus_core_ppm",
    "phaseiron_mean_rad",
    "rim_phaseiron_mean_rad",
    "mpapt_rad",
    "apt_volume_mm3",
)


def _cell(value: Any, kind: str) -> str:
    if kind == "iqr":
        lo, hi = (_as_float(x) for x in value)
        if lo is None or hi is None:
            return "–"
        return f"{_signed(lo * 1000, 1)} … {_signed(hi * 1000, 1)}"
    if kind == "text":
        return _esc("–" if value is None or (isinstance(value, float) and math.isnan(value))
                    else value)  # fmt: skip
    v = _as_float(value)
    if v is None:
        return "–" if value is None or str(value) in ("nan", "n/a", "") else _esc(value)
    if kind == "ppb":
        return _signed(v * 1000, 1)
    if kind == "int":
        return f"{v:,.0f}"
    if kind == "f1":
        return f"{v:.1f}"
    return _signed(v, 3)


def _regional_html(table: pd.DataFrame | None) -> str:
    if table is None or table.empty:
        return '<p class="muted">No regional table (no atlas in GRE space for this run).</p>'
    t = table.copy()
    if "structure" not in t.columns:
        t["structure"] = "?"
    if "hemisphere" not in t.columns:
        t["hemisphere"] = ""
    rank = {s: i for i, s in enumerate((*STRUCTURE_NAMES, "whole_brain"))}
    hrank = {"L": 0, "R": 1, "bilateral": 2}
    t["_s"] = t["structure"].map(lambda s: rank.get(s, len(rank)))
    t["_h"] = t["hemisphere"].map(lambda h: hrank.get(h, 3))
    t = t.sort_values(["_s", "structure", "_h"], kind="stable")
    if {"chi_p25_ppm", "chi_p75_ppm"} <= set(t.columns):
        t["chi_iqr"] = list(zip(t["chi_p25_ppm"], t["chi_p75_ppm"], strict=True))
    cols = [c for c in _REGIONAL_COLUMNS if c[0] in t.columns]
    head = "<tr><th>Structure</th><th>Hemi.</th>"
    if "chi_mean_ppm" in t.columns:
        head += '<th class="barcol">χ mean</th>'
    head += "".join(f"<th>{_esc(h)}</th>" for _, h, _ in cols) + "</tr>"
    body = []
    for structure, grp in t.groupby("structure", sort=False):
        first = True
        for _, row in grp.iterrows():
            cls = ' class="bil"' if row["hemisphere"] == "bilateral" else ""
            cells = ""
            if first:
                name = str(structure).replace("_", " ")
                cells += f'<td rowspan="{len(grp)}" class="sname">{_esc(name)}</td>'
                first = False
            cells += f"<td>{_esc(row['hemisphere'])}</td>"
            if "chi_mean_ppm" in t.columns:
                cells += f'<td class="barcol">{_chi_bar(row["chi_mean_ppm"])}</td>'
            cells += "".join(f'<td class="num">{_cell(row[c], k)}</td>' for c, _, k in cols)
            body.append(f"<tr{cls}>{cells}</tr>")
    ref = ""
    if "reference_region" in t.columns and "reference_value_ppm" in t.columns:
        rr = t["reference_region"].dropna()
        rv = pd.to_numeric(t["reference_value_ppm"], errors="coerce").dropna()
        if len(rr) and len(rv):
            ref = (
                f" Susceptibility is relative to the {_esc(rr.iloc[0])} reference "
                f"(subtracted {rv.iloc[0]:+.4f} ppm)."
            )
    atlas = ""
    if "atlas" in t.columns and t["atlas"].notna().any():
        atlas = f" Atlas: {_esc(t['atlas'].dropna().iloc[0])}."
    note = (
        '<p class="muted">1 ppb = 0.001 ppm. Bars: χ mean on a ±200 ppb scale (red '
        "paramagnetic, blue diamagnetic). Phase-iron: SWI high-pass filtered phase with iron "
        "positive; MP-APT and APT volume: mean phase and volume of abnormal-phase tissue "
        "(Buffalo method). The full table (voxel counts, filtered phase, thresholds), with its "
        f"JSON sidecar, is the <code>_stats.tsv</code> file.{atlas}{ref}</p>"
    )
    return (
        f'<div class="tablewrap"><table class="data regional"><thead>{head}</thead><tbody>'
        + "".join(body)
        + f"</tbody></table></div>{note}"
    )


def _lesion_html(table: pd.DataFrame, max_rows: int = 200) -> str:
    if table.empty:
        return '<p class="muted">The lesion masks contained no lesion in the GRE grid.</p>'
    cols = [c for c in _LESION_COLUMNS if c[0] in table.columns]
    t = table
    is_total = t["lesion_id"].astype(str) == "total" if "lesion_id" in t.columns else None
    totals = t[is_total] if is_total is not None else t.iloc[0:0]
    lesions = t[~is_total] if is_total is not None else t
    shown = pd.concat([totals, lesions.head(max_rows)])
    head = "<tr>" + "".join(f"<th>{_esc(h)}</th>" for _, h, _ in cols) + "</tr>"
    rows = []
    for i, (_, row) in enumerate(shown.iterrows()):
        cls = ' class="bil"' if i < len(totals) else ""
        rows.append(
            f"<tr{cls}>"
            + "".join(
                f'<td class="{"num" if k != "text" else ""}">{_cell(row[c], k)}</td>'
                for c, _, k in cols
            )
            + "</tr>"
        )
    more = (
        f'<p class="muted">{len(lesions) - max_rows} more lesions in the TSV.</p>'
        if len(lesions) > max_rows
        else ""
    )
    return (
        f"<p>{len(lesions)} lesion(s); shaded rows are the per-label totals. Rim: a 1-2 "
        "voxel shell inside the lesion border; core: the rest.</p>"
        f'<div class="tablewrap"><table class="data"><thead>{head}</thead><tbody>'
        + "".join(rows)
        + f"</tbody></table></div>{more}"
    )


def _qc_html(qc_rows: list[dict[str, str]]) -> str:
    head = "<tr><th>Metric</th><th>Value</th><th>Expected</th><th>Status</th><th>Note</th></tr>"
    rows = "".join(
        f'<tr class="{"flag" if r["status"] == "check" else ""}"><td>{_esc(r["label"])}</td>'
        f'<td class="num">{_esc(r["value"])}</td><td>{_esc(r["expected"])}</td>'
        f"<td>{_badge(r['status'])}</td><td>{_esc(r['note'])}</td></tr>"
        for r in qc_rows
    )
    return f'<table class="data qc"><thead>{head}</thead><tbody>{rows}</tbody></table>'


def _provenance_html(prov: Mapping[str, Any], output_dir: Path) -> str:
    rows = []
    for key, label in (
        ("version", "bids-qsm version"),
        ("command", "Command line"),
        ("run_id", "Run identifier"),
        ("date", "Date"),
        ("log_dir", "Log folder"),
        ("config_file", "Configuration"),
    ):
        if prov.get(key):
            val = prov[key]
            if isinstance(val, list | tuple):
                val = " ".join(str(v) for v in val)
            rows.append(f"<tr><th>{_esc(label)}</th><td><code>{_esc(val)}</code></td></tr>")
    out = f'<table class="kv">{"".join(rows)}</table>' if rows else ""
    elapsed = prov.get("elapsed_s") or prov.get("stage_timings_s") or prov.get("timings_s") or {}
    if isinstance(elapsed, Mapping) and elapsed:
        vals = {k: _as_float(v) for k, v in elapsed.items()}
        total = sum(v for k, v in vals.items() if v is not None and k != "total")
        trs = "".join(
            f'<tr><td>{_esc(k)}</td><td class="num">{v:.1f}</td></tr>'
            for k, v in vals.items()
            if v is not None and k != "total"
        )
        tot = vals.get("total") or total
        out += (
            '<h4>Elapsed time per stage</h4><table class="data narrow"><thead><tr><th>Stage</th>'
            f"<th>Seconds</th></tr></thead><tbody>{trs}"
            f'<tr class="bil"><td>total</td><td class="num">{tot:.1f}</td></tr></tbody></table>'
        )
    software = prov.get("software") or {}
    if isinstance(software, Mapping) and software:
        out += (
            "<h4>Software</h4><p>"
            + ", ".join(f"{_esc(k)} {_esc(v)}" for k, v in software.items())
            + "</p>"
        )
    errors = [str(e) for e in prov.get("errors") or []]
    crash = [Path(c) for c in prov.get("crash_files") or []]
    if errors or crash:
        out += '<h4 class="errtitle">Errors</h4><ul class="errors">'
        out += "".join(f"<li>{_esc(e)}</li>" for e in errors)
        for c in crash:
            try:
                rel = os.path.relpath(c, output_dir).replace(os.sep, "/")
                inside = not rel.startswith("..")
            except ValueError:
                inside = False
            link = f'<a href="{_esc(rel)}">{_esc(c.name)}</a>' if inside else _esc(c)
            out += f"<li>Crash file: {link}</li>"
        out += "</ul>"
    else:
        out += '<p class="status ok">No errors recorded.</p>'
    return out

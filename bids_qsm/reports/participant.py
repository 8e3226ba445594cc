"""Per-subject HTML report (fMRIPrep style): ``OUTPUT_DIR/sub-<label>.html``.

One HTML page per subject at the top of the derivatives; figures under
``OUTPUT_DIR/sub-<label>/figures/`` referenced with relative paths. Every GRE acquisition
(session, acq, run) of the subject is one section of the page. Each call of
:func:`write_participant_report` renders its acquisition's section into a *reportlet*
(``sub-<label>/figures/<source_prefix>_desc-section_report.html``) and then re-assembles the
page from all reportlets present, under a file lock, so several sessions processed by parallel
jobs all end up in the page. :func:`assemble_subject_report` rebuilds the page alone (for
``--reports-only``).

The page uses inline CSS only (no JavaScript, no network) and is deterministic for given
inputs (no wall-clock timestamp), so a re-run with the same inputs rewrites identical bytes.
"""

from __future__ import annotations

import fcntl
import html
import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bids_qsm.atlas.qc import QC_LIMITS as _QC_LIMITS
from bids_qsm.atlas.structures import STRUCTURE_NAMES
from bids_qsm.reports._atomic import atomic_copy, atomic_write_text, atomic_write_with
from bids_qsm.reports._markdown import inline_markdown, markdown_to_html

__all__ = [
    "FIGURE_ORDER",
    "QC_CHECKS",
    "QCCheck",
    "ReportInputs",
    "assemble_subject_report",
    "evaluate_qc",
    "figures_dir",
    "regional_chi_figure",
    "report_path",
    "write_participant_report",
]

_SECTION_SUFFIX = "_desc-section_report.html"
_META_RE = re.compile(r"^<!-- bids-qsm-section (\{.*?\}) -->")


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass
class ReportInputs:
    """Everything the report of one GRE acquisition shows.

    Attributes
    ----------
    subject : label with or without ``sub-``.
    session : label with or without ``ses-``, or None.
    source_prefix : BIDS prefix of the acquisition, e.g. ``"sub-01_ses-1_acq-iso"``.
    figures : figure key -> file. Known keys, in display order: ``chimap``, ``mask``,
        ``atlas``, ``registration``, ``minip``, ``r2star``, ``phaseiron`` (others follow).
        A key mapped to None, or to a missing file, is shown as "not produced".
    regional_table : content of ``<src>_seg-<atlas>_stats.tsv`` (may be None or empty).
    lesion_table : content of ``<src>_desc-lesions_stats.tsv``, or None.
    qc : quality metrics and acquisition facts: ``mask_volume_ml``, ``reference_region``,
        ``reference_value_ppm``, ``frac_abs_chi_gt_0p5`` (fraction, 0-1),
        ``registration_brain_dice``, ``n_echoes``, ``te_ms``, ``b0_tesla``, ``voxel_size_mm``,
        ``b0_dir``, ``atlas``... Unknown keys are listed as information.
    warnings : free-text warnings of the run (e.g. "registration skipped: ...").
    methods_markdown : text of :func:`bids_qsm.reports.boilerplate.methods_boilerplate`.
    provenance : ``version``, ``command``, ``run_id``, ``date``, ``elapsed_s`` (stage ->
        seconds), ``software`` (package -> version), ``errors`` (list of str),
        ``crash_files`` (list of paths), ``log_dir``, ``config_file``.
    figure_captions : optional caption overrides (key -> text).
    orientation : sentence on the display orientation of the figures (see
        :func:`bids_qsm.reports.figures.orientation_note`); a generic one if empty.
    """

    subject: str
    session: str | None
    source_prefix: str
    figures: dict[str, Path | None] = field(default_factory=dict)
    regional_table: pd.DataFrame | None = None
    lesion_table: pd.DataFrame | None = None
    qc: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    methods_markdown: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    figure_captions: dict[str, str] = field(default_factory=dict)
    orientation: str = ""


def _label(value: str, prefix: str) -> str:
    value = str(value)
    return value[len(prefix) + 1 :] if value.startswith(prefix + "-") else value


def report_path(output_dir: Path, subject: str) -> Path:
    """``OUTPUT_DIR/sub-<label>.html``."""
    return Path(output_dir) / f"sub-{_label(subject, 'sub')}.html"


def figures_dir(output_dir: Path, subject: str) -> Path:
    """``OUTPUT_DIR/sub-<label>/figures`` (where the pipeline may write figures directly)."""
    return Path(output_dir) / f"sub-{_label(subject, 'sub')}" / "figures"


# --------------------------------------------------------------------------------------------
# QC
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QCCheck:
    """A quality metric with its plausible range and what to do when it is outside."""

    key: str
    label: str
    unit: str
    low: float | None
    high: float | None
    advice: str
    scale: float = 1.0  # display = value * scale
    fmt: str = "{:.3g}"
    absolute: bool = False  # compare |value|

    def status(self, value: Any) -> str:
        """``"ok"``, ``"check"`` or ``"n/a"`` (missing or not a number)."""
        v = _as_float(value)
        if v is None:
            return "n/a"
        if self.absolute:
            v = abs(v)
        if (self.low is not None and v < self.low) or (self.high is not None and v > self.high):
            return "check"
        return "ok"

    def expected(self) -> str:
        """Human-readable expected range."""

        def f(x: float) -> str:
            return self.fmt.format(x * self.scale)

        lhs = "|value|" if self.absolute else "value"
        if self.low is not None and self.high is not None:
            return f"{f(self.low)} – {f(self.high)} {self.unit}".strip()
        if self.low is not None:
            return f"≥ {f(self.low)} {self.unit}".strip()
        if self.high is not None:
            return (
                f"{lhs} ≤ {f(self.high)} {self.unit}".strip()
                if self.absolute
                else (f"≤ {f(self.high)} {self.unit}".strip())
            )
        return ""


#: Metrics checked in every report, with the limits used to flag them.
QC_CHECKS: tuple[QCCheck, ...] = (
    QCCheck(
        "mask_volume_ml",
        "Brain mask volume",
        "mL",
        800.0,
        2000.0,
        "Adult brain masks are about 1000-1700 mL: check the mask outline figure for missing "
        "brain or included scalp/sinus (expected for a partial field of view).",
        fmt="{:.0f}",
    ),
    QCCheck(
        "reference_value_ppm",
        "Reference value subtracted",
        "ppm",
        None,
        0.05,
        "A large offset of the reference region suggests residual background field or a poor mask.",
        fmt="{:+.4f}",
        absolute=True,
    ),
    QCCheck(
        "frac_abs_chi_gt_0p5",
        "Mask voxels with |χ| > 0.5 ppm",
        "%",
        None,
        0.01,
        "More than 1% of extreme values points to streaking, unwrapping errors or background "
        "field residuals (often at the mask edge).",
        scale=100.0,
        fmt="{:.2f}",
    ),
    QCCheck(
        "registration_brain_dice",
        "Registration brain-mask Dice",
        "",
        0.8,
        None,
        "Low overlap of the warped template brain with the subject mask: check the "
        "registration figure; regional values may be wrong.",
        fmt="{:.3f}",
    ),
    QCCheck(
        "registration_dgm_cc",
        "Registration: local similarity in the deep gray matter",
        "",
        _QC_LIMITS["dgm_local_cc"][0],
        None,
        "The warped template does not match the subject's deep gray matter (mean local "
        "correlation in a box around the basal ganglia): check the zoomed registration figure.",
        fmt="{:.3f}",
    ),
    QCCheck(
        "registration_jacobian_p01",
        "Registration: Jacobian determinant, 1st percentile",
        "",
        _QC_LIMITS["jacobian_p01"][0],
        None,
        "Strong local expansion of the template (or folding): the warp may be implausible.",
        fmt="{:.2f}",
    ),
    QCCheck(
        "registration_jacobian_p99",
        "Registration: Jacobian determinant, 99th percentile",
        "",
        None,
        _QC_LIMITS["jacobian_p99"][1],
        "Strong local compression of the template: the warp may be implausible.",
        fmt="{:.2f}",
    ),
    QCCheck(
        "registration_iron_contrast_ppb",
        "Registration: iron contrast of warped pallidum / SN / RN (min)",
        "ppb",
        _QC_LIMITS["iron_contrast_min_ppb"][0],
        None,
        "A warped iron-rich nucleus (globus pallidus, substantia nigra or red nucleus) is "
        "barely brighter than its surroundings on the χ map: its label probably misses the "
        "nucleus; check the zoomed registration figure.",
        fmt="{:.0f}",
    ),
)

_ACQ_KEYS = {
    "n_echoes": "Echoes",
    "te_ms": "Echo times (ms)",
    "b0_tesla": "Field strength (T)",
    "voxel_size_mm": "Voxel size (mm)",
    "matrix": "Matrix",
    "b0_dir": "B0 direction (voxel axes)",
    "phase_units": "Phase units",
    "reference_region": "Reference region",
    "atlas": "Atlas",
    "t1w": "T1w used",
}


def _as_float(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def evaluate_qc(
    qc: Mapping[str, Any], regional_table: pd.DataFrame | None = None
) -> list[dict[str, str]]:
    """Rows of the QC table: ``key``, ``label``, ``value``, ``expected``, ``status``, ``note``.

    Besides :data:`QC_CHECKS`, a negative bilateral globus pallidus susceptibility is flagged
    as a likely phase-sign inversion (the globus pallidus must come out paramagnetic).
    """
    rows: list[dict[str, str]] = []
    for chk in QC_CHECKS:
        value = qc.get(chk.key)
        status = chk.status(value)
        v = _as_float(value)
        if v is not None:
            shown = chk.fmt.format(v * chk.scale) + (f" {chk.unit}" if chk.unit else "")
        elif value is None or str(value).strip().lower() in ("nan", "n/a", "none", ""):
            shown = "not available"
        else:
            shown = str(value)
        rows.append(
            {
                "key": chk.key,
                "label": chk.label,
                "value": shown.strip(),
                "expected": chk.expected(),
                "status": status,
                "note": chk.advice if status == "check" else "",
            }
        )
    gp = _gp_chi(regional_table)
    if gp is not None:
        status = "check" if gp < 0 else "ok"
        rows.append(
            {
                "key": "gp_sign",
                "label": "Globus pallidus χ (bilateral)",
                "value": f"{gp * 1000:+.1f} ppb",
                "expected": "> 0 ppb (paramagnetic)",
                "status": status,
                "note": "Negative globus pallidus susceptibility suggests an inverted phase sign "
                "(vendor convention): rerun with the phase-sign option."
                if status == "check"
                else "",
            }
        )
    known = {c.key for c in QC_CHECKS} | set(_ACQ_KEYS)
    for key, value in qc.items():
        if key in known:
            continue
        rows.append(
            {
                "key": key,
                "label": key.replace("_", " "),
                "value": _fmt_value(value),
                "expected": "",
                "status": "info",
                "note": "",
            }
        )
    return rows


def _gp_chi(table: pd.DataFrame | None) -> float | None:
    if table is None or table.empty or not {"structure", "chi_mean_ppm"} <= set(table.columns):
        return None
    sel = table["structure"] == "globus_pallidus"
    if "hemisphere" in table.columns:
        bil = sel & (table["hemisphere"] == "bilateral")
        sel = bil if bil.any() else sel
    vals = pd.to_numeric(table.loc[sel, "chi_mean_ppm"], errors="coerce").dropna()
    return float(vals.mean()) if len(vals) else None


# --------------------------------------------------------------------------------------------
# Formatting helpers
# --------------------------------------------------------------------------------------------


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt_value(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return "–" if not math.isfinite(float(value)) else f"{float(value):.4g}"
    if isinstance(value, list | tuple | np.ndarray):
        return ", ".join(_fmt_value(v) for v in value)
    if value is None:
        return "–"
    return str(value)


def _badge(status: str) -> str:
    text = {"ok": "OK", "check": "CHECK", "n/a": "n/a", "info": "info"}.get(status, status)
    cls = {"ok": "ok", "check": "warn", "n/a": "na", "info": "na"}.get(status, "na")
    return f'<span class="badge {cls}">{_esc(text)}</span>'


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", name) or "figure"


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------

#: Display order, titles and default captions of the known figures.
FIGURE_ORDER: tuple[tuple[str, str, str], ...] = (
    (
        "chimap",
        "Susceptibility map",
        "χ (ppm, paramagnetic bright) at a fixed window of −0.15 to +0.15 ppm inside the "
        "brain mask; axial slices evenly spaced through the deep gray matter, then coronal and "
        "sagittal views through its centre. Look for streaks, dots at phase singularities, and "
        "bright rims at the mask edge.",
    ),
    (
        "mask",
        "Brain mask",
        "Brain mask (red outline) over the magnitude, slices over the whole mask extent. The "
        "outline should follow the brain surface and exclude scalp, skull and sinuses.",
    ),
    (
        "atlas",
        "Atlas in GRE space",
        "Atlas labels warped into the GRE grid over χ. Each structure should sit on its "
        "anatomy; globus pallidus, substantia nigra and red nucleus are bright on χ.",
    ),
    (
        "registration",
        "Registration check",
        "Template edges over the subject image, from the atlas registration stage.",
    ),
    (
        "minip",
        "SWI minimum-intensity projection",
        "Minimum-intensity projection of the SWI over thin slabs; veins are dark.",
    ),
    (
        "r2star",
        "R2* map",
        "R2* at a fixed window of 0 to 50 s⁻¹ inside the brain mask; iron-rich nuclei are bright.",
    ),
    (
        "phaseiron",
        "SWI phase-iron map",
        "High-pass filtered phase with iron positive (red), at a fixed window of ±0.2 rad; "
        "veins and iron-rich nuclei are red.",
    ),
    (
        "regional",
        "Regional susceptibility",
        "Mean χ per structure and hemisphere (ppb), with the interquartile range when available.",
    ),
)

_DEFAULT_ORIENTATION = (
    "Figures show the acquisition voxel grid (oblique acquisitions are not resampled); "
    "yellow letters, when present, mark the subject's left/right (L/R) and anterior/posterior "
    "(A/P) sides."
)


def regional_chi_figure(table: pd.DataFrame, out: Path) -> Path | None:
    """Bar chart of the mean χ (ppb) per structure, left and right (None without data)."""
    if table is None or table.empty or not {"structure", "chi_mean_ppm"} <= set(table.columns):
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    t = table.copy()
    if "hemisphere" not in t.columns:
        t["hemisphere"] = "bilateral"
    order = [s for s in STRUCTURE_NAMES if s in set(t["structure"])]
    order += sorted(set(t["structure"]) - set(order) - {"whole_brain"})
    if not order:
        return None
    hemis = [h for h in ("L", "R") if h in set(t["hemisphere"])] or ["bilateral"]
    colors = {"L": "#3b7dd8", "R": "#e8833a", "bilateral": "#6b6b6b"}
    fig = Figure(figsize=(12, 3.6), dpi=100)
    ax = fig.add_axes((0.07, 0.28, 0.91, 0.62))
    width = 0.8 / len(hemis)
    x = np.arange(len(order), dtype=float)
    for i, h in enumerate(hemis):
        sub = t[t["hemisphere"] == h].set_index("structure")
        y = (
            np.array([_as_float(sub["chi_mean_ppm"].get(s)) or np.nan for s in order], dtype=float)
            * 1000
        )
        xs = x - 0.4 + width * (i + 0.5)
        ax.bar(xs, y, width * 0.92, color=colors[h], label=h)
        if {"chi_p25_ppm", "chi_p75_ppm"} <= set(sub.columns):
            lo = np.array([_as_float(sub["chi_p25_ppm"].get(s)) or np.nan for s in order]) * 1000
            hi = np.array([_as_float(sub["chi_p75_ppm"].get(s)) or np.nan for s in order]) * 1000
            ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(y)
            # the interquartile range as a whisker (the mean may lie outside it in skewed
            # structures, so it is drawn as a segment rather than as error bars)
            ax.vlines(xs[ok], lo[ok], hi[ok], colors="#333333", linewidth=0.8)
    ax.axhline(0, color="#333333", lw=0.8)
    ax.set_xticks(x, [s.replace("_", " ") for s in order], rotation=30, ha="right", fontsize=9)
    ax.set_ylabel("χ mean (ppb)")
    ax.set_title("Mean susceptibility per structure (bars) with interquartile range", fontsize=10)
    ax.legend(frameon=False, fontsize=9, ncols=len(hemis))
    ax.grid(axis="y", color="#dddddd", lw=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    out = Path(out)
    return atomic_write_with(out, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def _collect_figures(
    inputs: ReportInputs, output_dir: Path, figdir: Path
) -> list[tuple[str, str, str, Path | None]]:
    """Copy figures into ``figdir``; return (key, title, caption, final path or None)."""
    known = {k: (t, c) for k, t, c in FIGURE_ORDER}
    keys = [k for k, _, _ in FIGURE_ORDER if k in inputs.figures or k == "regional"]
    keys += [k for k in inputs.figures if k not in known]
    out: list[tuple[str, str, str, Path | None]] = []
    for key in keys:
        title, caption = known.get(key, (key.replace("_", " ").capitalize(), ""))
        caption = inputs.figure_captions.get(key, caption)
        src = inputs.figures.get(key)
        dst: Path | None = None
        if key == "regional" and src is None:
            if inputs.regional_table is None or inputs.regional_table.empty:
                continue
            dst = regional_chi_figure(
                inputs.regional_table,
                figdir / f"{inputs.source_prefix}_desc-regionalchi_report.png",
            )
            if dst is None:
                continue
        elif src is not None and Path(src).is_file():
            src = Path(src)
            if src.resolve().parent == figdir.resolve():
                dst = src  # already written in place by the pipeline: no copy
            else:
                name = f"{inputs.source_prefix}_desc-{_safe(key)}_report{src.suffix.lower()}"
                dst = atomic_copy(src, figdir / name)
        out.append((key, title, caption, dst))
    return out


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

# column -> (header, kind); kinds: ppb (ppm column shown x1000), int, f1, f3, text
_REGIONAL_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("volume_mm3", "Volume (mm³)", "int"),
    ("chi_mean_ppm", "χ mean (ppb)", "ppb"),
    ("chi_median_ppm", "χ median (ppb)", "ppb"),
    ("chi_std_ppm", "χ SD (ppb)", "ppb"),
    ("chi_iqr", "χ P25 … P75 (ppb)", "iqr"),
    ("r2star_mean_hz", "R2* (s⁻¹)", "f1"),
    ("phaseiron_mean_rad", "Phase-iron (rad)", "f3"),
    ("mpapt_rad", "MP-APT (rad)", "f3"),
    ("apt_volume_mm3", "APT vol. (mm³)", "int"),
)

_LESION_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("label", "Label", "text"),
    ("lesion_id", "Lesion", "text"),
    ("volume_mm3", "Volume (mm³)", "int"),
    ("chi_mean_ppm", "χ mean (ppb)", "ppb"),
    ("rim_chi_mean_ppm", "Rim χ (ppb)", "ppb"),
    ("core_chi_mean_ppm", "Core χ (ppb)", "ppb"),
    ("rim_minus_core_ppm", "Rim − core (ppb)", "ppb"),
    ("phaseiron_mean_rad", "Phase-iron (rad)", "f3"),
    ("rim_phaseiron_mean_rad", "Rim phase-iron (rad)", "f3"),
    ("mpapt_rad", "MP-APT (rad)", "f3"),
    ("apt_volume_mm3", "APT vol. (mm³)", "int"),
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


def _signed(v: float, digits: int) -> str:
    """``+1.5`` / ``-1.5`` / ``0.0`` (no signed zero after rounding)."""
    text = f"{v:+.{digits}f}"
    return text[1:] if float(text) == 0 else text


def _chi_bar(value: Any, full_scale_ppm: float = 0.2) -> str:
    v = _as_float(value)
    if v is None:
        return ""
    w = min(abs(v) / full_scale_ppm, 1.0) * 50
    side = "pos" if v >= 0 else "neg"
    return f'<span class="chibar"><span class="{side}" style="width:{w:.1f}%"></span></span>'


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


def _summary_html(inputs: ReportInputs, qc_rows: list[dict[str, str]]) -> str:
    facts = [
        ("Subject", f"sub-{_label(inputs.subject, 'sub')}"),
        ("Session", f"ses-{_label(inputs.session, 'ses')}" if inputs.session else "–"),
        ("Acquisition", inputs.source_prefix),
    ]
    for key, label in _ACQ_KEYS.items():
        if key in inputs.qc and inputs.qc[key] is not None:
            facts.append((label, _fmt_value(inputs.qc[key])))
    n_check = sum(r["status"] == "check" for r in qc_rows)
    n_warn = len(inputs.warnings)
    status = (
        '<p class="status ok">All quality checks passed.</p>'
        if n_check == 0
        else f'<p class="status warn">{n_check} quality check(s) flagged: see the QC table.</p>'
    )
    if n_warn:
        status += f'<p class="status warn">{n_warn} warning(s) raised during the run.</p>'
    if inputs.provenance.get("errors") or inputs.provenance.get("crash_files"):
        status += '<p class="status err">Errors occurred: see Provenance.</p>'
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in facts)
    return f'{status}<table class="kv">{rows}</table>'


def _qc_html(qc_rows: list[dict[str, str]]) -> str:
    head = "<tr><th>Metric</th><th>Value</th><th>Expected</th><th>Status</th><th>Note</th></tr>"
    rows = "".join(
        f'<tr class="{"flag" if r["status"] == "check" else ""}"><td>{_esc(r["label"])}</td>'
        f'<td class="num">{_esc(r["value"])}</td><td>{_esc(r["expected"])}</td>'
        f"<td>{_badge(r['status'])}</td><td>{_esc(r['note'])}</td></tr>"
        for r in qc_rows
    )
    return f'<table class="data qc"><thead>{head}</thead><tbody>{rows}</tbody></table>'


def _figures_html(
    figs: list[tuple[str, str, str, Path | None]], output_dir: Path, sid: str, orientation: str
) -> str:
    parts = [f'<p class="muted">{_esc(orientation or _DEFAULT_ORIENTATION)}</p>']
    for key, title, caption, path in figs:
        fid = f"{sid}-fig-{_safe(key)}"
        if path is None:
            parts.append(
                f'<figure id="{fid}" class="missing"><h4>{_esc(title)}</h4>'
                '<div class="placeholder">Figure not produced for this run (see Warnings).</div>'
                "</figure>"
            )
            continue
        rel = os.path.relpath(path, output_dir).replace(os.sep, "/")
        parts.append(
            f'<figure id="{fid}"><h4>{_esc(title)}</h4>'
            f'<a href="{_esc(rel)}"><img src="{_esc(rel)}" alt="{_esc(title)}" '
            'loading="lazy"></a>'
            f"<figcaption>{inline_markdown(caption)}</figcaption></figure>"
        )
    return "\n".join(parts)


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


def _section_id(prefix: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", prefix)


def _render_section(inputs: ReportInputs, output_dir: Path, figdir: Path) -> tuple[str, dict]:
    sid = _section_id(inputs.source_prefix)
    qc_rows = evaluate_qc(inputs.qc, inputs.regional_table)
    figs = _collect_figures(inputs, output_dir, figdir)
    parts: list[tuple[str, str, str]] = [
        ("summary", "Summary", _summary_html(inputs, qc_rows)),
        ("qc", "Quality control", _qc_html(qc_rows)),
        ("figures", "Figures", _figures_html(figs, output_dir, sid, inputs.orientation)),
        ("regional", "Regional values", _regional_html(inputs.regional_table)),
    ]
    if inputs.lesion_table is not None:
        parts.append(("lesions", "Lesions", _lesion_html(inputs.lesion_table)))
    warn_html = (
        '<ul class="warnings">' + "".join(f"<li>{_esc(w)}</li>" for w in inputs.warnings) + "</ul>"
        if inputs.warnings
        else '<p class="status ok">No warnings.</p>'
    )
    parts.append(("warnings", f"Warnings ({len(inputs.warnings)})", warn_html))
    methods_md = re.sub(r"\A\s*#{1,2} Methods[^\n]*\n", "", inputs.methods_markdown)
    methods = (
        markdown_to_html(methods_md, heading_offset=1)
        if inputs.methods_markdown.strip()
        else '<p class="muted">No methods text was generated.</p>'
    )
    parts.append(("methods", "Methods", f'<div class="methods">{methods}</div>'))
    parts.append(("provenance", "Provenance", _provenance_html(inputs.provenance, output_dir)))

    n_check = sum(r["status"] == "check" for r in qc_rows)
    # one error usually has one crash file: count errors, or crash files when no message
    n_err = len(inputs.provenance.get("errors") or []) or len(
        inputs.provenance.get("crash_files") or []
    )
    meta = {
        "prefix": inputs.source_prefix,
        "id": sid,
        "n_flags": n_check,
        "n_warnings": len(inputs.warnings),
        "n_errors": n_err,
        "parts": [[k, t] for k, t, _ in parts],
    }
    body = "\n".join(
        f'<section id="{sid}-{k}" class="card"><h3>{_esc(t)}</h3>\n{h}\n</section>'
        for k, t, h in parts
    )
    frag = (
        f"<!-- bids-qsm-section {json.dumps(meta, sort_keys=True)} -->\n"
        f'<div class="acq" id="{sid}"><h2>{_esc(inputs.source_prefix)}</h2>\n{body}\n</div>\n'
    )
    return frag, meta


# --------------------------------------------------------------------------------------------
# Page assembly
# --------------------------------------------------------------------------------------------

_CSS = """
:root{--fg:#1f2328;--muted:#656d76;--line:#d0d7de;--bg:#f6f8fa;--accent:#0b5394;
--ok:#1a7f37;--warn:#b35900;--err:#cf222e}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 -apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:var(--fg);
background:var(--bg)}
header{background:#0d2b45;color:#fff;padding:18px 28px}
header h1{margin:0;font-size:24px;font-weight:600}
header p{margin:4px 0 0;color:#c9d7e3;font-size:13px}
nav{position:sticky;top:0;z-index:5;background:#fff;border-bottom:1px solid var(--line);
padding:8px 28px;font-size:13px}
nav .acqnav{margin:2px 0}
nav b{margin-right:8px}
nav a{color:var(--accent);text-decoration:none;margin-right:12px}
nav a:hover{text-decoration:underline}
main{max-width:1280px;margin:0 auto;padding:12px 28px 40px}
.acq>h2{font-size:20px;margin:26px 0 10px;padding-bottom:4px;border-bottom:2px solid var(--accent)}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:14px 20px;
margin:14px 0;box-shadow:0 1px 2px rgba(0,0,0,.04)}
.card h3{margin:0 0 10px;font-size:17px;color:#0d2b45}
h4{margin:18px 0 6px;font-size:15px}
table{border-collapse:collapse}
table.kv th{text-align:left;font-weight:600;padding:3px 18px 3px 0;color:var(--muted);
vertical-align:top}
table.kv td{padding:3px 0}
.tablewrap{overflow-x:auto}
table.data{width:100%;font-size:12.5px}
table.data.narrow{width:auto}
table.data th{background:#eef2f6;text-align:left;padding:6px 6px;
border-bottom:1px solid var(--line);vertical-align:bottom}
table.data td{padding:4px 6px;border-bottom:1px solid #eaeef2}
table.data td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.data tr.bil td{background:#f3f6f9;font-weight:600}
table.data td.sname{font-weight:600;text-transform:capitalize;vertical-align:top;
background:#fff!important}
table.qc tr.flag td{background:#fff4e5}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:700}
.badge.ok{background:#dafbe1;color:var(--ok)}
.badge.warn{background:#ffe8cc;color:var(--warn)}
.badge.na{background:#eaeef2;color:var(--muted)}
.status{margin:4px 0 10px;font-weight:600}
.status.ok{color:var(--ok)} .status.warn{color:var(--warn)} .status.err{color:var(--err)}
.muted{color:var(--muted);font-size:13px}
figure{margin:8px 0 22px}
figure img{width:100%;height:auto;border-radius:4px;background:#000;display:block}
figcaption{color:var(--muted);font-size:13px;margin-top:6px}
.placeholder{border:2px dashed var(--line);border-radius:6px;padding:30px;text-align:center;
color:var(--muted)}
.barcol{width:90px}
.chibar{display:flex;position:relative;width:84px;height:10px;background:#f0f2f4;
border-radius:2px}
.chibar::after{content:"";position:absolute;left:50%;top:-2px;bottom:-2px;
border-left:1px solid #888}
.chibar .pos{position:absolute;left:50%;height:100%;background:#d6604d;border-radius:0 2px 2px 0}
.chibar .neg{position:absolute;right:50%;height:100%;background:#4393c3;border-radius:2px 0 0 2px}
ul.warnings li{color:var(--warn)}
ul.errors li{color:var(--err)}
.errtitle{color:var(--err)}
.methods{max-width:58em;font-family:Georgia,"Times New Roman",serif;font-size:15px}
.methods h4,.methods h5{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif}
.methods ol{font-size:13px}
code{font-size:12px;background:#f0f2f4;padding:1px 4px;border-radius:3px;word-break:break-all}
footer{color:var(--muted);font-size:12px;text-align:center;padding:20px}
"""


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``path`` (created if needed) for the block's duration."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _read_sections(figdir: Path) -> list[tuple[dict, str]]:
    out = []
    for p in sorted(figdir.glob(f"*{_SECTION_SUFFIX}")):
        text = p.read_text(encoding="utf-8")
        m = _META_RE.match(text)
        if m is None:
            continue
        out.append((json.loads(m.group(1)), text[m.end() :].lstrip("\n")))
    return out


def _page(subject: str, sections: Sequence[tuple[dict, str]], version: str) -> str:
    label = _label(subject, "sub")
    nav = []
    for meta, _ in sections:
        flags = int(meta.get("n_flags", 0))
        errs = int(meta.get("n_errors", 0))
        badge = (
            '<span class="badge warn">'
            + (f"{errs} error(s)" if errs else f"{flags} flag(s)")
            + "</span>"
            if (flags or errs)
            else '<span class="badge ok">OK</span>'
        )
        links = "".join(
            f'<a href="#{_esc(meta["id"])}-{_esc(k)}">{_esc(t)}</a>' for k, t in meta["parts"]
        )
        nav.append(
            f'<div class="acqnav"><b><a href="#{_esc(meta["id"])}">{_esc(meta["prefix"])}</a>'
            f"</b>{badge} {links}</div>"
        )
    body = "\n".join(html_ for _, html_ in sections) or (
        '<p class="muted">No acquisition was reported for this subject.</p>'
    )
    n = len(sections)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>bids-qsm: sub-{_esc(label)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>sub-{_esc(label)}</h1><p>bids-qsm {_esc(version)} participant report · "
        f"{n} GRE acquisition{'s' if n != 1 else ''} · QSM, R2*, SWI and regional iron</p>"
        f"</header>\n<nav>{''.join(nav)}</nav>\n<main>\n{body}\n</main>\n"
        "<footer>Generated by bids-qsm. Figures and tables are also available as files in "
        f"the sub-{_esc(label)}/ folder.</footer>\n</body>\n</html>\n"
    )


def assemble_subject_report(output_dir: Path, subject: str, version: str | None = None) -> Path:
    """(Re)build ``OUTPUT_DIR/sub-<label>.html`` from the reportlets present on disk."""
    from bids_qsm import __version__

    output_dir = Path(output_dir)
    figdir = figures_dir(output_dir, subject)
    with _locked(figdir / ".report.lock"):
        sections = _read_sections(figdir)
        page = _page(subject, sections, version or __version__)
        return atomic_write_text(report_path(output_dir, subject), page)


def write_participant_report(inputs: ReportInputs, output_dir: Path) -> Path:
    """Write the section of one acquisition and rebuild ``OUTPUT_DIR/sub-<label>.html``.

    Figures are copied (atomically) to ``OUTPUT_DIR/sub-<label>/figures/`` as
    ``<source_prefix>_desc-<key>_report.<ext>`` unless already there, and referenced with
    relative paths; a regional bar chart is generated from ``regional_table``. Returns the path
    of the HTML page.
    """
    output_dir = Path(output_dir)
    figdir = figures_dir(output_dir, inputs.subject)
    figdir.mkdir(parents=True, exist_ok=True)
    frag, _ = _render_section(inputs, output_dir, figdir)
    atomic_write_text(figdir / f"{inputs.source_prefix}{_SECTION_SUFFIX}", frag)
    return assemble_subject_report(
        output_dir, inputs.subject, version=inputs.provenance.get("version")
    )

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
import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bids_qsm.atlas.structures import STRUCTURE_NAMES
from bids_qsm.reports._atomic import atomic_copy, atomic_write_text, atomic_write_with
from bids_qsm.reports._markdown import inline_markdown, markdown_to_html
from bids_qsm.reports.html import _CSS, _as_float, _esc, _fmt_value, _safe
from bids_qsm.reports.qc import _ACQ_KEYS, QC_CHECKS, QCCheck, evaluate_qc
from bids_qsm.reports.tables import _lesion_html, _provenance_html, _qc_html, _regional_html

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


#: File name ending of the per-acquisition report sections, and their metadata line.
_SECTION_SUFFIX = "_desc-section_report.html"
_META_RE = re.compile(r"^<!-- bids-qsm-section (\{.*?\}) -->")


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

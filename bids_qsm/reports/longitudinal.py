"""Report sections of longitudinal subjects and cohorts (sessions side by side, trajectories).

* :func:`sessions_figure`: for one subject, the same slices of every session's
  susceptibility map in subject space (same window), side by side, with the outlines of the
  labels registered once to the subject template.
* :func:`subject_section`: that figure and the change table (bilateral structures: chi per
  session and change per year), as an HTML section.
* :func:`trajectories_figure` / :func:`group_section`: per structure, every participant's
  chi over time (thin lines) and the mixed-model fit of each group (thick lines), and the
  table of rates and rate differences.
* :func:`insert_section`: put a section into an existing report page (before ``</main>``),
  replacing an earlier one with the same id (so a re-run rewrites the page identically).

Susceptibility is shown in ppb (the tables stay in ppm).
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd

from bids_qsm.atlas.structures import STRUCTURE_NAMES, aal3_structures
from bids_qsm.bids.writers import atomic_write_text
from bids_qsm.reports.group_figures import save_figure

#: Structures shown in the trajectories figure and the change tables.
SHOWN = ("thalamus", "caudate", "putamen", "globus_pallidus")
_COLOURS = ("#4393c3", "#d6604d", "#5aae61", "#9970ab", "#bf812d")


def _esc(text: object) -> str:
    return html.escape(str(text))


def sessions_figure(out_dir: Path, subject: str, sessions: list[str]) -> Path | None:
    """PNG of the sessions' subject-space Chimaps side by side (3 axial slices each)."""
    anat = Path(out_dir) / f"sub-{subject}"
    maps = []
    for ses in sessions:
        hits = sorted(
            (anat / ses / "anat").glob(f"sub-{subject}_{ses}*_space-subject_Chimap.nii.gz")
        )
        if not hits:
            return None
        maps.append(np.asarray(nib.load(str(hits[0])).dataobj, np.float32))
    dseg = sorted((anat / "anat").glob(f"sub-{subject}_space-subject_seg-*_dseg.nii.gz"))
    labels = np.asarray(nib.load(str(dseg[0])).dataobj) if dseg else None
    if labels is not None:  # outline the reported deep gray matter structures only
        dgm = np.isin(labels, [v for s in aal3_structures() for v in s.labels])
        labels = np.where(dgm, labels, 0) if dgm.any() else labels
    mask = np.asarray(maps[0] != 0)
    zs = np.nonzero(mask.any(axis=(0, 1)))[0]
    if not zs.size:
        return None
    if labels is not None and (labels > 0).any():
        zl = np.nonzero((labels > 0).any(axis=(0, 1)))[0]
        slices = [int(np.percentile(zl, q)) for q in (25, 50, 75)]
    else:
        slices = [int(np.percentile(zs, q)) for q in (40, 55, 70)]
    fig, axes = plt.subplots(len(slices), len(maps), figsize=(2.4 * len(maps), 2.4 * len(slices)),
                             squeeze=False)  # fmt: skip
    for j, (ses, chi) in enumerate(zip(sessions, maps, strict=True)):
        for i, z in enumerate(slices):
            ax = axes[i, j]
            ax.imshow(np.rot90(chi[:, :, z] * 1000), cmap="gray", vmin=-100, vmax=150)
            if labels is not None:
                ax.contour(np.rot90(labels[:, :, z] > 0), levels=[0.5], colors="#ffb000",
                           linewidths=0.6)  # fmt: skip
            ax.set_axis_off()
            if i == 0:
                ax.set_title(ses, fontsize=9)
    fig.suptitle(
        "\u03c7 in subject space, -100..150 ppb (outline: deep gray matter labels)", fontsize=9
    )
    fig.tight_layout()
    return save_figure(fig, anat / "figures" / f"sub-{subject}_desc-longitudinal_sessions.png")


def _change_table_html(table: pd.DataFrame) -> str:
    bil = table[(table["hemisphere"] == "bilateral") & table["structure"].isin(STRUCTURE_NAMES)]
    if bil.empty:
        return '<p class="muted">No structure (atlas registration skipped).</p>'
    sessions = list(dict.fromkeys(bil["session_id"]))
    head = "".join(f"<th>{_esc(s)} \u03c7 (ppb)</th>" for s in sessions)
    rows = []
    for name, g in bil.groupby("structure", sort=False):
        vals = g.set_index("session_id")["chi_mean_ppm"] * 1000
        cells = "".join(f"<td>{vals.get(s, np.nan):.1f}</td>" for s in sessions)
        rate = g["chi_change_ppm_per_year"].iloc[0] * 1000
        rate_txt = "n/a" if not np.isfinite(rate) else f"{rate:+.2f}"
        rows.append(f"<tr><td>{_esc(name)}</td>{cells}<td>{rate_txt}</td></tr>")
    days = bil.drop_duplicates("session_id").set_index("session_id")["days_from_baseline"]
    when = ", ".join(f"{_esc(s)}: {d:g} d" if np.isfinite(d) else f"{_esc(s)}: n/a"
                     for s, d in days.items())  # fmt: skip
    return (
        f"<p>Days from baseline (sessions.tsv acq_time): {when}.</p>"
        f'<table class="data"><tr><th>structure</th>{head}<th>change (ppb/year)</th></tr>'
        + "".join(rows)
        + "</table>"
    )


def subject_section(out_dir: Path, subject: str) -> str | None:
    """HTML of the longitudinal section of ``sub-<subject>.html`` (None: not longitudinal)."""
    path = Path(out_dir) / f"sub-{subject}" / "anat" / f"sub-{subject}_desc-longitudinal_stats.tsv"
    if not path.is_file():
        return None
    table = pd.read_csv(path, sep="\t", na_values=["n/a"])
    sessions = list(dict.fromkeys(table["session_id"]))
    fig = sessions_figure(Path(out_dir), subject, sessions)
    img = ""
    if fig is not None:
        rel = f"sub-{subject}/figures/{fig.name}"
        img = f'<div class="figrow"><img src="{_esc(rel)}" alt="sessions side by side"></div>'
    return (
        f"<p>{len(sessions)} sessions in one subject space (rigid midpoint); the atlas was "
        "registered once to the subject template, so every session's values come from the "
        f"same labels and voxels (<code>{_esc(path.name)}</code>).</p>"
        + img
        + _change_table_html(table)
    )


def insert_section(page: Path, key: str, title: str, body: str) -> Path:
    """Insert (or replace) ``<section id=key>`` before ``</main>`` of an HTML page."""
    text = Path(page).read_text()
    start, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    text = re.sub(re.escape(start) + ".*?" + re.escape(end) + "\n?", "", text, flags=re.S)
    block = (f'{start}<section id="{_esc(key)}" class="card"><h3>{_esc(title)}</h3>\n{body}\n'
             f"</section>{end}\n")  # fmt: skip
    if "</main>" in text:
        text = text.replace("</main>", block + "</main>", 1)
    else:
        text = text.replace("</body>", block + "</body>", 1)
    return atomic_write_text(Path(page), text)


def add_subject_section(out_dir: Path, subject: str, page: Path | None) -> None:
    """Hook of the participant report: the longitudinal section, when the subject has one."""
    if page is None or not Path(page).is_file():
        return
    body = subject_section(Path(out_dir), subject)
    if body is not None:
        insert_section(Path(page), "longitudinal", "Longitudinal: sessions and change", body)


# ----------------------------------------------------------------------------- group
def trajectories_figure(data: pd.DataFrame, rates: pd.DataFrame, design: Any, figdir: Path
                        ) -> Path | None:  # fmt: skip
    """Per structure (bilateral), chi over years: participants (thin) and group fits (thick)."""
    bil = data[(data["hemisphere"] == "bilateral") & data["structure"].isin(SHOWN)]
    bil = bil.dropna(subset=["years_from_baseline", "chi_mean_ppm"])
    if bil.empty:
        return None
    gcol = design.group_column
    levels = [design.control_label, *design.case_labels]
    fig, axes = plt.subplots(1, len(SHOWN), figsize=(3.3 * len(SHOWN), 3.0), squeeze=False)
    for ax, name in zip(axes[0], SHOWN, strict=True):
        sub = bil[bil["structure"] == name]
        for k, lev in enumerate(levels):
            colour = _COLOURS[k % len(_COLOURS)]
            g = sub[sub[gcol].astype(str) == lev]
            for _, p in g.groupby("participant_id"):
                p = p.sort_values("years_from_baseline")
                ax.plot(p["years_from_baseline"], p["chi_mean_ppm"] * 1000, color=colour,
                        lw=0.6, alpha=0.5, marker=".", ms=3)  # fmt: skip
            r = rates[(rates.structure == name) & (rates.hemisphere == "bilateral")
                      & (rates.measure == "chi_mean_ppm")]  # fmt: skip
            r = r[r.term == f"rate:{lev}"]
            if len(g) and len(r) and np.isfinite(r["estimate"].iloc[0]):
                t = np.linspace(0, g["years_from_baseline"].max(), 2)
                base = g.loc[g["years_from_baseline"] == g.groupby("participant_id")[
                    "years_from_baseline"].transform("min"), "chi_mean_ppm"].mean()  # fmt: skip
                slope = r["estimate"].iloc[0]
                ax.plot(t, (base + slope * t) * 1000, color=colour, lw=2.2,
                        label=f"{lev}: {1000 * slope:+.2f} ppb/y")  # fmt: skip
        ax.set_title(name.replace("_", " "), fontsize=9)
        ax.set_xlabel("years from baseline")
        ax.set_ylabel("mean \u03c7 (ppb)")
        ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return save_figure(fig, Path(figdir) / "desc-trajectories_plot.png")


def group_section(result: dict[str, Any]) -> str:
    """HTML of the longitudinal section of ``group.html``: trajectories and rate table."""
    rates = result["rates"]
    fig = result.get("figure")
    img = (f'<div class="figrow"><img src="figures/{_esc(fig.name)}" alt="trajectories"></div>'
           if fig is not None else "")  # fmt: skip
    shown = rates[(rates.hemisphere == "bilateral") & (rates.measure == "chi_mean_ppm")]
    rows = []
    for _, r in shown.iterrows():
        est = "n/a" if not np.isfinite(r.estimate) else f"{1000 * r.estimate:+.2f}"
        ci = ("" if not np.isfinite(r.ci_low)
              else f"[{1000 * r.ci_low:+.2f}, {1000 * r.ci_high:+.2f}]")  # fmt: skip
        q = "n/a" if not np.isfinite(r.q) else f"{r.q:.3g}"
        rows.append(f"<tr><td>{_esc(r.structure)}</td><td>{_esc(r.term)}</td><td>{est}</td>"
                    f"<td>{ci}</td><td>{q}</td><td>{_esc(r.reason)}</td></tr>")  # fmt: skip
    n = result["data"]["participant_id"].nunique()
    return (
        f"<p>{n} participants with two or more sessions; linear mixed model per structure and "
        "measure, <code>measure ~ group * years + covariates + (1 | participant)</code> "
        "(desc-longitudinalrates_stats.tsv; all hemispheres and measures there).</p>"
        + img
        + '<table class="data"><tr><th>structure</th><th>term</th><th>\u03c7 rate (ppb/year)'
        "</th><th>95% CI</th><th>q</th><th>reason</th></tr>" + "".join(rows) + "</table>"
    )


def add_group_section(group_dir: Path, result: dict[str, Any] | None) -> None:
    """Hook of the group report: the trajectories section, when there are longitudinal data."""
    page = Path(group_dir) / "group.html"
    if result is None or not page.is_file():
        return
    insert_section(page, "longitudinal", "Longitudinal: iron over time", group_section(result))

"""``OUTPUT_DIR/group/group.html``: the group report, in the style of the subject reports.

Same CSS, header and sticky navigation as ``sub-<label>.html``. Sections: summary, cohort
(demographics per group), cohort QC (every participant's report badge, registration Dice,
z-score outliers, exclusion, link to the subject report), excluded participants, group
differences (forest plot of Hedges' g, values by group, tables), clinical associations
(added-variable plots of the tested rows), normative z-scores, lesions, SWI thresholds,
voxelwise analysis and methods (run times are in the log). Susceptibility is displayed in
ppb; the TSV tables keep ppm. No timestamp: the same inputs give the same bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nilearn
import numpy as np
import pandas as pd
import statsmodels

from bids_qsm import __version__
from bids_qsm.bids.writers import atomic_write_text
from bids_qsm.reports import group_figures as GF
from bids_qsm.reports.html import _CSS, _esc, _html_table, _num
from bids_qsm.stats.effects import MIN_RESIDUAL_DF
from bids_qsm.stats.group import DEFAULT_MEASURES, Design

__all__ = ["GroupCohort", "demographics_table", "methods_paragraph", "write_group_report"]

_META_RE = re.compile(r"^<!-- bids-qsm-section (\{.*?\}) -->")
_EXTRA_CSS = """
table.data td.ok{color:var(--ok)} table.data td.warn{color:var(--warn)}
table.data tr.excl td{background:#f6f6f6;color:var(--muted)}
.figrow img{max-width:100%;height:auto;display:block;margin:6px 0 14px;background:#fff}
"""


@dataclass
class GroupCohort:
    """What the report shows besides the statistics: everyone with outputs, z, lesions."""

    participants: pd.DataFrame
    long: pd.DataFrame
    zscores: pd.DataFrame = field(default_factory=pd.DataFrame)
    lesions: pd.DataFrame | None = None
    exclusions: dict[str, str] = field(default_factory=dict)
    output_dir: Path | None = None


# ----------------------------------------------------------------------------- tables


def demographics_table(participants: pd.DataFrame, design: Design) -> pd.DataFrame:
    """One row per group (and all): n, then every participants.tsv column summarised.

    Numbers: mean ± SD (min–max); EDSS: median [min–max]; text: counts per level.
    """
    gcol = design.group_column
    levels = [design.control_label, *design.case_labels]
    cols = [c for c in participants.columns if c not in ("participant_id", gcol)]
    rows = []
    for label, sub in [(lv, participants[participants[gcol].astype(str) == lv]) for lv in levels]:
        row = {"group": _esc(label), "n": str(len(sub))}
        for c in cols:
            s = sub[c].dropna()
            if s.empty:
                row[c] = "–"
            elif pd.api.types.is_numeric_dtype(participants[c]):
                v = s.astype(float)
                if c.upper() == "EDSS":
                    row[c] = f"{v.median():.3g} [{v.min():.3g}–{v.max():.3g}]"
                else:
                    sd = f" ± {v.std(ddof=1):.3g}" if len(v) > 1 else ""
                    row[c] = f"{v.mean():.3g}{sd} ({v.min():.3g}–{v.max():.3g})"
            else:
                counts = s.astype(str).value_counts().sort_index()
                row[c] = _esc(", ".join(f"{k} {n}" for k, n in counts.items()))
        rows.append(row)
    return pd.DataFrame(rows, columns=["group", "n", *cols])


def _report_status(output_dir: Path, pid: str) -> tuple[str, str]:
    """(badge html, css class) from the subject report's section metadata."""
    figdir = output_dir / pid / "figures"
    metas = []
    for p in sorted(figdir.glob("*_desc-section_report.html")) if figdir.is_dir() else []:
        m = _META_RE.match(p.read_text(encoding="utf-8").split("\n", 1)[0])
        if m:
            metas.append(json.loads(m.group(1)))
    if not metas:
        return '<span class="badge na">no report</span>', ""
    errs = sum(int(m.get("n_errors", 0)) for m in metas)
    flags = sum(int(m.get("n_flags", 0)) for m in metas)
    if errs:
        return f'<span class="badge warn">{errs} error(s)</span>', "warn"
    if flags:
        return f'<span class="badge warn">{flags} QC flag(s)</span>', "warn"
    return '<span class="badge ok">OK</span>', "ok"


def _dice(output_dir: Path, pid: str) -> str:
    for side in sorted((output_dir / pid).glob("**/anat/*_Chimap.json")):
        try:
            reg = json.loads(side.read_text()).get("AtlasRegistration") or {}
        except (OSError, ValueError):
            continue
        return _num(reg.get("brain_dice"), 3)
    return "–"


def qc_table(cohort: GroupCohort, design: Design, measure: str) -> tuple[pd.DataFrame, list[str]]:
    """Cohort QC: one row per participant of participants.tsv (with or without outputs)."""
    out_dir = Path(cohort.output_dir or ".")
    have = set(cohort.long["participant_id"]) if len(cohort.long) else set()
    z = cohort.zscores
    if len(z):
        z = z[(z["measure"] == measure) & (z["hemisphere"] == "bilateral")]
    rows, classes = [], []
    for _, p in cohort.participants.sort_values("participant_id").iterrows():
        pid = str(p["participant_id"])
        badge, _ = _report_status(out_dir, pid)
        link = (
            f'<a href="../{_esc(pid)}.html">{_esc(pid)}</a>'
            if (out_dir / f"{pid}.html").is_file()
            else _esc(pid)
        )
        zz = z[z["participant_id"] == pid] if len(z) else z
        out = zz[zz["z"].abs() >= 3] if len(zz) else zz
        flags = ", ".join(
            f"{str(r.structure).replace('_', ' ')} ({r.z:+.1f})" for r in out.itertuples()
        )
        if pid in cohort.exclusions:
            status, cls = f"excluded: {_esc(cohort.exclusions[pid])}", "excl"
        elif pid not in have:
            status, cls = "no regional table (failed or not run)", "excl"
        else:
            status, cls = "analysed", ""
        rows.append(
            {
                "participant": link,
                "group": _esc(p.get(design.group_column, "")),
                "subject report": badge,
                "registration Dice": _dice(out_dir, pid),
                "|z| \u2265 3 (\u03c7, bilateral)": _esc(flags or "none") if len(zz) else "–",
                "status": status,
            }
        )
        classes.append(cls)
    return pd.DataFrame(rows), classes


def _stat_rows(table: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Display rows of a groupdiff (kind="diff") or clinical table; chi in ppb."""
    rows = []
    for _, r in table.iterrows():
        factor, unit = GF.display_scale(str(r["measure"]))
        base = {
            "structure": _esc(str(r["structure"]).replace("_", " ")),
            "hemi": _esc(r["hemisphere"]),
            "measure": _esc(GF.QUANTITY.get(r["measure"], r["measure"])),
        }
        if kind == "diff":
            est = factor * float(r["estimate"])
            lo, hi = factor * float(r["ci_low"]), factor * float(r["ci_high"])
            base.update(
                {
                    "contrast": _esc(r["contrast"]),
                    "difference (95% CI)": f"{_num(est)} [{_num(lo)}, {_num(hi)}] {unit}"
                    if np.isfinite(est) else "–",
                    "Hedges' g (95% CI)": f"{_num(r['hedges_g'], 2)} "
                    f"[{_num(r['g_ci_low'], 2)}, {_num(r['g_ci_high'], 2)}]",
                    "n (ctrl/case)": f"{int(r['n_control'])}/{int(r['n_case'])}",
                }
            )  # fmt: skip
        else:
            base.update(
                {
                    "variable": _esc(r["variable"]),
                    "partial r (95% CI)": f"{_num(r['r'], 2)} [{_num(r['ci_low'], 2)}, "
                    f"{_num(r['ci_high'], 2)}]",
                    f"slope ({unit} per unit)": _num(factor * float(r["slope"])),
                    "n": str(int(r["n"])),
                }
            )
        base.update(
            {
                "t": _num(r["t"]),
                "df": _num(r["df"]),
                "p": _num(r["p"], 2),
                "q": _num(r["q"], 2),
                "not tested because": _esc(r["reason"]) if r["reason"] else "",
            }
        )
        rows.append(base)
    return pd.DataFrame(rows)


def lesion_summary(lesions: pd.DataFrame | None, exclusions: Mapping[str, str]) -> pd.DataFrame:
    """Per participant: lesions, total volume, volume-weighted mean χ and mean rim χ (ppb)."""
    if lesions is None or lesions.empty:
        return pd.DataFrame()
    rows = []
    for pid, d in lesions.groupby("participant_id", sort=True):
        vol = d["volume_mm3"].astype(float)
        chi = d["chi_mean_ppm"].astype(float)
        ok = np.isfinite(chi) & (vol > 0)
        wmean = float(np.average(chi[ok], weights=vol[ok])) * 1000 if ok.any() else np.nan
        rim = d["rim_chi_mean_ppm"].astype(float) if "rim_chi_mean_ppm" in d else pd.Series()
        rows.append(
            {
                "participant": _esc(pid) + (" (excluded)" if pid in exclusions else ""),
                "lesions": str(len(d)),
                "total volume (mm\u00b3)": _num(vol.sum(), 4),
                "mean \u03c7, volume-weighted (ppb)": _num(wmean),
                "mean rim \u03c7 (ppb)": _num(1000 * rim.mean()) if len(rim) else "–",
                "largest lesion (mm\u00b3)": _num(vol.max(), 4),
            }
        )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- text
def methods_paragraph(
    design: Design, atlas_name: str, settings: Mapping[str, Any], voxelwise: Any
) -> str:
    """Methods text generated from the parameters actually used."""
    cov = ", ".join(design.covariates) or "no covariate"
    vol = " and the structure's volume" if design.use_volume else ""
    measures = ", ".join(GF.QUANTITY.get(m, m) for m in settings.get("measures", []))
    text = (
        f"Group statistics were computed with bids-qsm {__version__}. For every {atlas_name} "
        f"structure and hemisphere (and both hemispheres together), the regional {measures} "
        f"were compared between {' and '.join(design.case_labels)} and {design.control_label} "
        f"participants with ordinary least squares (statsmodels {statsmodels.__version__}), "
        f"adjusting for {cov}{vol}; effect sizes are Hedges' g (the adjusted difference over "
        "the residual standard deviation, small-sample corrected) with 95% confidence "
        "intervals. Models with fewer than "
        f"{MIN_RESIDUAL_DF} residual degrees of freedom, a singular design or a constant "
        "measure were not tested (their rows say why) and were left out of the false "
        "discovery rate correction (Benjamini-Hochberg, over all tested structures, "
        "hemispheres and measures of each contrast). Associations with clinical variables "
        f"({', '.join(settings.get('clinical_columns', [])) or 'none'}) were tested in the "
        f"patients as partial correlations adjusted for {cov}{vol}, with the same rules and "
        "FDR correction over the tests of each variable. Normative z-scores used the controls' "
        "mean and standard deviation (leave-one-out for controls). SWI abnormal-phase tissue "
        "was defined per structure as voxels whose phase iron exceeded the healthy-control "
        "mean + 2 SD of the pooled control voxels, and MP-APT and the abnormal-phase volume "
        "were recomputed with these thresholds (Hagemeier et al. 2012)."
    )
    if voxelwise is not None:
        perm = int(settings.get("n_permutations", 0))
        text += (
            f" For the voxelwise analysis, each susceptibility map was resampled onto the "
            f"{voxelwise.template_name} template with the participant's ANTs transforms "
            "(linear interpolation), and the same design (without the volume term) was "
            f"fitted at every voxel of a deep gray matter mask (nilearn {nilearn.__version__}); "
            "t maps were corrected with the false discovery rate over the mask voxels"
            + (
                f" and by {perm} max-|t| permutations (Freedman-Lane; family-wise error)"
                if perm > 0
                else ""
            )
            + "."
        )
    return text


def _img(path: Path | None, alt: str) -> str:
    if path is None:
        return f'<p class="muted">No figure: {_esc(alt)} has no non-constant values.</p>'
    return f'<div class="figrow"><img src="figures/{_esc(path.name)}" alt="{_esc(alt)}"></div>'


def _alnum(text: str) -> str:
    return "".join(ch for ch in text.replace("-", "vs") if ch.isalnum())


# ----------------------------------------------------------------------------- page
def _sections_stats(
    prefix: str,
    figdir: Path,
    design: Design,
    data: pd.DataFrame,
    groupdiff: pd.DataFrame,
    clinical: pd.DataFrame,
    measures: Sequence[str],
) -> list[tuple[str, str, str]]:
    out = []
    parts = []
    for contrast in dict.fromkeys(groupdiff["contrast"]):
        f = GF.forest_figure(
            groupdiff, measures, contrast, figdir / f"{prefix}_desc-{_alnum(contrast)}_forest.png"
        )
        parts.append(_img(f, f"forest plot {contrast}"))
    for m in measures[:3]:  # the forest plot shows every measure
        f = GF.group_figure(
            data, design, groupdiff, m, figdir / f"{prefix}_desc-{_alnum(m)}_groups.png"
        )
        parts.append(_img(f, GF.axis_label(m)))
    tested = groupdiff[groupdiff["reason"] == ""]
    sig = tested[tested["q"] < 0.05]
    parts.append(
        f"<p>{len(sig)} of {len(tested)} tested comparisons at q &lt; 0.05; "
        f"{len(groupdiff) - len(tested)} rows not tested (see the last column).</p>"
        + (_html_table(_stat_rows(sig, "diff")) if len(sig) else "")
        + "<details><summary>All group-difference rows</summary>"
        + _html_table(_stat_rows(groupdiff, "diff"))
        + "</details>"
    )
    out.append(("groupdiff", "Group differences", "".join(parts)))

    parts = []
    if len(clinical):
        tested = clinical[clinical["reason"] == ""]
        for v in dict.fromkeys(tested["variable"]):
            for m in [mm for mm in measures if (tested["measure"] == mm).any()][:2]:
                f = GF.partial_regression_figure(
                    data, design, clinical, m, v, figdir / f"{prefix}_desc-{_alnum(m + v)}_avp.png"
                )
                if f is not None:
                    parts.append(_img(f, f"{m} vs {v}"))
        if tested.empty:
            reasons = clinical["reason"].value_counts()
            parts.append(
                '<p class="status warn">No clinical association was tested: '
                + _esc("; ".join(f"{k} ({n} rows)" for k, n in reasons.head(3).items()))
                + f". A model needs at least {MIN_RESIDUAL_DF} residual degrees of freedom "
                "(patients minus model parameters).</p>"
            )
        sig = tested[tested["q"] < 0.05]
        parts.append(
            f"<p>{len(sig)} of {len(tested)} tested associations at q &lt; 0.05.</p>"
            + (_html_table(_stat_rows(sig, "clin")) if len(sig) else "")
            + "<details><summary>All clinical rows</summary>"
            + _html_table(_stat_rows(clinical, "clin"))
            + "</details>"
        )
    else:
        parts.append('<p class="muted">No clinical variable.</p>')
    out.append(("clinical", "Clinical associations (patients)", "".join(parts)))
    return out


def _nav_page(title: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    links = "".join(f'<a href="#{k}">{_esc(t)}</a>' for k, t, _ in sections)
    body = "\n".join(
        f'<section id="{k}" class="card"><h3>{_esc(t)}</h3>\n{h}\n</section>'
        for k, t, h in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}{_EXTRA_CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{_esc(title)}</h1><p>{_esc(subtitle)}</p></header>\n"
        f'<nav><div class="acqnav"><b>Group</b>{links}</div></nav>\n<main>\n{body}\n</main>\n'
        "<footer>Generated by bids-qsm. Tables: the TSV files in this folder (susceptibility "
        "in ppm there, in ppb here).</footer>\n</body>\n</html>\n"
    )


def write_group_report(
    group_dir: Path,
    *,
    atlas_name: str,
    design: Design,
    data: pd.DataFrame,
    groupdiff: pd.DataFrame,
    clinical: pd.DataFrame,
    thresholds: pd.DataFrame | None,
    voxelwise: Any,
    settings: Mapping[str, Any],
    timings: Mapping[str, float] | None = None,
    cohort: GroupCohort | None = None,
) -> Path:
    """Write ``group_dir/group.html`` and its figures; return the HTML path.

    ``timings`` (step -> s) is accepted but not shown: the page must not change between runs
    (the group level logs the timings). ``cohort`` adds the demographics, QC, exclusion,
    z-score and lesion sections (without it, only the analysed participants are known).
    """
    group_dir = Path(group_dir)
    figdir = group_dir / "figures"
    prefix = f"seg-{atlas_name}"
    measures: Sequence[str] = settings.get("measures", list(DEFAULT_MEASURES))
    first = "chi_mean_ppm" if "chi_mean_ppm" in measures else (measures[0] if measures else "")
    analysed = data.drop_duplicates("participant_id")
    cohort = cohort or GroupCohort(participants=analysed, long=data, output_dir=group_dir.parent)
    counts = analysed[design.group_column].astype(str).value_counts().sort_index()
    tested = groupdiff[groupdiff["reason"] == ""]
    sections: list[tuple[str, str, str]] = []

    summary = (
        f"<p>{len(analysed)} participants analysed ("
        + ", ".join(f"{_esc(k)} {v}" for k, v in counts.items())
        + f"); {len(cohort.exclusions)} excluded. Atlas {_esc(atlas_name)}. Covariates: "
        + _esc(", ".join(design.covariates) or "none")
        + (" + structure volume" if design.use_volume else "")
        + (f" (skipped, not in participants.tsv: {_esc(', '.join(design.skipped))})"
           if design.skipped else "")
        + f".</p><p>{int((tested['q'] < 0.05).sum())} of {len(tested)} tested group "
        f"comparisons at q &lt; 0.05. Models with fewer than {MIN_RESIDUAL_DF} residual degrees "
        "of freedom are shown as description only, never as findings.</p>"
    )  # fmt: skip
    sections.append(("summary", "Summary", summary))
    pids = set(analysed["participant_id"])
    demo = demographics_table(
        cohort.participants[cohort.participants["participant_id"].isin(pids)], design
    )
    sections.append(("cohort", "Cohort (analysed participants)", _html_table(demo)))
    qc, classes = qc_table(cohort, design, first)
    sections.append(("qc", "Cohort QC", _html_table(qc, row_classes=classes)))
    excl = pd.DataFrame(
        {"participant": [_esc(k) for k in cohort.exclusions], "reason": [
            _esc(v) for v in cohort.exclusions.values()]}
    )  # fmt: skip
    sections.append(
        (
            "excluded",
            f"Excluded participants ({len(excl)})",
            _html_table(excl)
            if len(excl)
            else '<p class="muted">None (use --exclude-participants LABEL or TSV).</p>',
        )
    )
    sections += _sections_stats(prefix, figdir, design, data, groupdiff, clinical, measures)
    if len(cohort.zscores) and first:
        f = GF.zscore_figure(
            cohort.zscores,
            first,
            [design.control_label, *design.case_labels],
            figdir / f"{prefix}_desc-zscores_heatmap.png",
        )
        sections.append(("zscores", "Normative z-scores", _img(f, "z-scores")))
    les = lesion_summary(cohort.lesions, cohort.exclusions)
    sections.append(
        ("lesions", "Lesions", _html_table(les) if len(les) else '<p class="muted">None.</p>')
    )
    if thresholds is not None and len(thresholds):
        thr = thresholds.map(lambda v: _num(v, 4) if isinstance(v, float) else _esc(v))
        sections.append(("swi", "SWI abnormal-phase thresholds", _html_table(thr)))
    sections.append(("voxelwise", "Voxelwise analysis", _voxelwise_html(voxelwise, figdir)))
    sections.append(
        ("methods", "Methods", '<div class="methods"><p>'
         + _esc(methods_paragraph(design, atlas_name, settings, voxelwise)) + "</p></div>")
    )  # fmt: skip
    # ``timings`` stay in the log (group/log/<run-id>/): the page has no run-dependent content
    page = _nav_page(
        f"bids-qsm group report (seg-{atlas_name})",
        f"bids-qsm {__version__} · {len(analysed)} participants · "
        + " vs ".join([*design.case_labels, design.control_label]),
        sections,
    )
    return atomic_write_text(group_dir / "group.html", page)


def _voxelwise_html(voxelwise: Any, figdir: Path) -> str:
    if voxelwise is None:
        return '<p class="muted">Not run (disabled, or too few warped susceptibility maps).</p>'
    parts = []
    for r in voxelwise.results:
        f = GF.voxelwise_figure(
            r,
            voxelwise.template_img,
            voxelwise.mask_img,
            figdir / f"space-{voxelwise.template_name}_desc-{_alnum(r.contrast)}_tstat.png",
        )
        parts.append(
            _img(f, f"{r.contrast} t map") + f"<p>{_esc(r.contrast)}: {r.n_significant_q05} of "
            f"{r.n_voxels} mask voxels at q &lt; 0.05 (n = {r.n}, df = {r.df}).</p>"
        )
    parts.append("<p>Maps: " + ", ".join(_esc(p.name) for p in voxelwise.files) + "</p>")
    return "".join(parts)

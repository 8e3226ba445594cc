"""``OUTPUT_DIR/group/group.html``: figures, tables and a methods paragraph of the group level.

Figures (PNG, ``group/figures/``): per-structure values by group for each tested measure,
scatter plots of each measure against each clinical variable in the patients with the OLS
fit, and the voxelwise t maps over the template. Every file is written atomically.
"""

from __future__ import annotations

import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import nilearn
import numpy as np
import pandas as pd
import statsmodels

from bids_qsm import __version__
from bids_qsm.bids.writers import atomic_write_bytes, atomic_write_text
from bids_qsm.stats.group import DEFAULT_MEASURES, Design

_LABELS = {
    "chi_mean_ppm": "mean susceptibility (ppm)",
    "phaseiron_mean_rad": "mean phase iron (rad)",
    "r2star_mean_hz": "mean R2* (Hz)",
    "mpapt_rad": "MP-APT (rad)",
    "apt_volume_mm3": "abnormal-phase volume (mm^3)",
}


def _save_fig(fig: plt.Figure, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _grid(n: int, ncols: int = 4) -> tuple[plt.Figure, np.ndarray]:
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.8 * nrows), squeeze=False)
    fig.subplots_adjust(
        left=0.06, right=0.98, bottom=0.08, top=1 - 0.35 / nrows, hspace=0.6, wspace=0.35
    )
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def _bilateral(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["hemisphere"] == "bilateral"]


def group_figure(
    data: pd.DataFrame, design: Design, groupdiff: pd.DataFrame, measure: str, path: Path
) -> Path:
    """Box + points of ``measure`` by group, one panel per structure (bilateral rows)."""
    bil = _bilateral(data)
    structures = list(dict.fromkeys(bil["structure"]))
    levels = [design.control_label, *design.case_labels]
    fig, axes = _grid(len(structures))
    rng = np.random.default_rng(0)
    for ax, st in zip(axes, structures, strict=False):
        d = bil[bil["structure"] == st]
        vals = [
            d.loc[d[design.group_column].astype(str) == lv, measure].dropna().to_numpy()
            for lv in levels
        ]
        ax.boxplot(vals, showfliers=False, widths=0.5)
        ax.set_xticks(range(1, len(levels) + 1), levels)
        for i, v in enumerate(vals):
            ax.plot(i + 1 + rng.uniform(-0.12, 0.12, v.size), v, "o", ms=3, alpha=0.7)
        row = groupdiff[
            (groupdiff["structure"] == st)
            & (groupdiff["hemisphere"] == "bilateral")
            & (groupdiff["measure"] == measure)
        ]
        title = st.replace("_", " ")
        if len(row) and np.isfinite(row["q"].iloc[0]):
            title += f"\nq = {row['q'].iloc[0]:.2g}"
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"{_LABELS.get(measure, measure)} by group (bilateral)", fontsize=10)
    return _save_fig(fig, path)


def clinical_figure(
    data: pd.DataFrame,
    design: Design,
    clinical: pd.DataFrame,
    measure: str,
    variable: str,
    path: Path,
) -> Path:
    """Scatter of ``measure`` against ``variable`` in the patients with an OLS fit line."""
    import statsmodels.api as sm

    bil = _bilateral(data)
    bil = bil[bil[design.group_column].astype(str).isin(design.case_labels)]
    structures = list(dict.fromkeys(bil["structure"]))
    fig, axes = _grid(len(structures))
    for ax, st in zip(axes, structures, strict=False):
        d = bil[bil["structure"] == st][[variable, measure]].dropna()
        ax.plot(d[variable], d[measure], "o", ms=3.5, alpha=0.8)
        if len(d) >= 3 and d[variable].nunique() > 1:
            fit = sm.OLS(d[measure].astype(float), sm.add_constant(d[variable].astype(float))).fit()
            xs = np.linspace(d[variable].min(), d[variable].max(), 20)
            ax.plot(xs, fit.params.iloc[0] + fit.params.iloc[1] * xs, "-", lw=1.5)
        row = clinical[
            (clinical["structure"] == st)
            & (clinical["hemisphere"] == "bilateral")
            & (clinical["measure"] == measure)
            & (clinical["variable"] == variable)
        ]
        title = st.replace("_", " ")
        if len(row) and np.isfinite(row["r"].iloc[0]):
            title += f"\npartial r = {row['r'].iloc[0]:.2f}, q = {row['q'].iloc[0]:.2g}"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(variable, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(
        f"{_LABELS.get(measure, measure)} vs {variable} in patients (bilateral; line: "
        "unadjusted OLS fit, r: adjusted)",
        fontsize=10,
    )
    return _save_fig(fig, path)


def voxelwise_figure(result: Any, template_img: Any, mask_img: Any, path: Path) -> Path:
    """t map over the template where FDR q < 0.05, else where uncorrected p < 0.001."""
    from nilearn import plotting
    from scipy import stats as sps

    q = np.asarray(result.q.dataobj)
    t = np.asarray(result.tstat.dataobj)
    inside = np.asarray(mask_img.dataobj) > 0
    sig = (q < 0.05) & inside
    if sig.any():
        threshold, label = float(np.abs(t[sig]).min()), "q < 0.05"
    else:
        threshold = float(sps.t.isf(0.0005, max(result.df, 1)))
        label = "no voxel at q < 0.05; shown: uncorrected p < 0.001"
    vmax = max(float(np.percentile(np.abs(t[inside]), 99.5)), 1.5 * threshold)
    coords = np.argwhere(np.asarray(mask_img.dataobj) > 0)
    zs = np.unique(np.linspace(coords[:, 2].min(), coords[:, 2].max(), 7)[1:-1].round())
    cuts = [float((mask_img.affine @ np.array([0, 0, z, 1]))[2]) for z in zs]
    fig = plt.figure(figsize=(11, 3))
    title = f"{result.contrast}: t ({label})"
    plotting.plot_stat_map(
        result.tstat,
        bg_img=template_img,
        threshold=threshold,
        display_mode="z",
        cut_coords=cuts,
        figure=fig,
        title=title,
        colorbar=True,
        cmap="RdBu_r",
        symmetric_cbar=True,
        vmax=vmax,
    )
    return _save_fig(fig, path)


def methods_paragraph(
    design: Design, atlas_name: str, settings: Mapping[str, Any], voxelwise: Any
) -> str:
    """Methods text generated from the parameters actually used."""
    cov = ", ".join(design.covariates) or "no covariate"
    vol = " and the structure's volume" if design.use_volume else ""
    measures = ", ".join(_LABELS.get(m, m) for m in settings.get("measures", []))
    text = (
        f"Group statistics were computed with bids-qsm {__version__}. For every {atlas_name} "
        f"structure and hemisphere (and both hemispheres together), the regional {measures} "
        f"were compared between {' and '.join(design.case_labels)} and {design.control_label} "
        f"participants with ordinary least squares (statsmodels {statsmodels.__version__}), "
        f"adjusting for {cov}{vol}; 95% confidence intervals and two-sided p values were "
        "corrected for the false discovery rate (Benjamini-Hochberg) over all structures, "
        "hemispheres and measures of each contrast. Associations with clinical variables "
        f"({', '.join(settings.get('clinical_columns', [])) or 'none'}) were tested in the "
        f"patients as partial correlations adjusted for {cov}{vol}, with FDR correction over "
        "all tests of each variable. Normative z-scores used the controls' mean and standard "
        "deviation (leave-one-out for controls). SWI abnormal-phase tissue was defined per "
        "structure as voxels whose phase iron exceeded the healthy-control mean + 2 SD of the "
        "pooled control voxels (the Buffalo 'mean - 2 SD' of the filtered phase, whose sign is "
        "opposite), and MP-APT and the abnormal-phase volume were recomputed with these "
        "thresholds (Hagemeier et al. 2012)."
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


def _table_html(df: pd.DataFrame, max_rows: int | None = None) -> str:
    if max_rows is not None:
        df = df.head(max_rows)
    return df.to_html(
        index=False, float_format=lambda v: f"{v:.4g}", na_rep="n/a", border=0, classes="tbl"
    )


_CSS = """body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}
.tbl{border-collapse:collapse;font-size:12px}.tbl td,.tbl th{padding:2px 6px;
border-bottom:1px solid #ddd;text-align:right}img{max-width:100%}
details{margin:.5em 0}h2{border-bottom:2px solid #444}"""


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
) -> Path:
    """Write ``group_dir/group.html`` and its figures; return the HTML path."""
    group_dir = Path(group_dir)
    figdir = group_dir / "figures"
    measures: Sequence[str] = settings.get("measures", list(DEFAULT_MEASURES))
    sections: list[str] = []
    counts = (
        data.drop_duplicates("participant_id")[design.group_column]
        .astype(str)
        .value_counts()
        .to_dict()
    )
    sections.append(
        "<h2>Cohort</h2><p>"
        + ", ".join(f"{html.escape(k)}: {v}" for k, v in sorted(counts.items()))
        + " participants. Atlas "
        f"{html.escape(atlas_name)}. Covariates: {html.escape(', '.join(design.covariates))}"
        + (" + structure volume" if design.use_volume else "")
        + (
            f" (skipped, not in participants.tsv: {html.escape(', '.join(design.skipped))})"
            if design.skipped
            else ""
        )
        + ".</p>"
    )
    sections.append(
        "<h2>Methods</h2><p>"
        + html.escape(methods_paragraph(design, atlas_name, settings, voxelwise))
        + "</p>"
    )

    sections.append("<h2>Group differences</h2>")
    for m in measures:
        f = group_figure(
            data, design, groupdiff, m, figdir / f"seg-{atlas_name}_desc-{_alnum(m)}_groups.png"
        )
        sections.append(f'<img src="figures/{f.name}" alt="{m} by group">')
    sig = groupdiff[groupdiff["q"] < 0.05]
    sections.append(
        f"<p>{len(sig)} of {int(groupdiff['p'].notna().sum())} tests at q &lt; 0.05."
        "</p>" + _table_html(sig.drop(columns=["model"]))
    )
    sections.append(
        "<details><summary>All group-difference tests</summary>"
        + _table_html(groupdiff.drop(columns=["model"]))
        + "</details>"
    )

    sections.append("<h2>Clinical associations (patients)</h2>")
    variables = list(dict.fromkeys(clinical["variable"])) if len(clinical) else []
    for v in variables:
        for m in measures[:1] if v != "EDSS" else measures[:2]:
            f = clinical_figure(
                data,
                design,
                clinical,
                m,
                v,
                figdir / f"seg-{atlas_name}_desc-{_alnum(m + v)}_scatter.png",
            )
            sections.append(f'<img src="figures/{f.name}" alt="{m} vs {v}">')
    if len(clinical):
        sig = clinical[clinical["q"] < 0.05]
        sections.append(
            f"<p>{len(sig)} of {int(clinical['p'].notna().sum())} tests at "
            "q &lt; 0.05.</p>" + _table_html(sig.drop(columns=["model"]))
        )
        sections.append(
            "<details><summary>All clinical tests</summary>"
            + _table_html(clinical.drop(columns=["model"]))
            + "</details>"
        )
    else:
        sections.append("<p>No clinical variable.</p>")

    if thresholds is not None and len(thresholds):
        sections.append(
            "<h2>SWI abnormal-phase thresholds (controls)</h2>" + _table_html(thresholds)
        )

    sections.append("<h2>Voxelwise analysis</h2>")
    if voxelwise is None:
        sections.append("<p>Not run (disabled, or too few warped susceptibility maps).</p>")
    else:
        for r in voxelwise.results:
            f = voxelwise_figure(
                r,
                voxelwise.template_img,
                voxelwise.mask_img,
                figdir / f"space-{voxelwise.template_name}_desc-{_alnum(r.contrast)}_tstat.png",
            )
            sections.append(
                f'<img src="figures/{f.name}" alt="{r.contrast} t map">'
                f"<p>{html.escape(r.contrast)}: {r.n_significant_q05} of "
                f"{r.n_voxels} mask voxels at q &lt; 0.05 (n = {r.n}, "
                f"df = {r.df}).</p>"
            )
        sections.append(
            "<p>Maps: " + ", ".join(html.escape(p.name) for p in voxelwise.files) + "</p>"
        )
    if timings:
        sections.append(
            "<h2>Run time</h2><p>"
            + ", ".join(f"{html.escape(k)}: {v:.1f} s" for k, v in timings.items())
            + "</p>"
        )
    doc = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>bids-qsm group report"
        f"</title><style>{_CSS}</style></head><body><h1>bids-qsm group report "
        f"(seg-{html.escape(atlas_name)})</h1>" + "\n".join(sections) + "</body></html>\n"
    )
    return atomic_write_text(group_dir / "group.html", doc)


def _alnum(text: str) -> str:
    return "".join(ch for ch in text.replace("-", "vs") if ch.isalnum())

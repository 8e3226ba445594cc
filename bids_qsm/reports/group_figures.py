"""Figures of the group report (PNG, written atomically; deterministic for given tables).

Susceptibility is shown in ppb (1 ppb = 0.001 ppm, the tables stay in ppm); every axis names
its quantity and unit. Panels whose values are constant (e.g. the whole-brain mean of a map
referenced to the whole brain) are left out.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bids_qsm.bids.writers import atomic_write_bytes
from bids_qsm.stats import group as G
from bids_qsm.stats.group_tables import region_rows

#: Quantity names of the measures (without units).
QUANTITY = {
    "chi_mean_ppm": "mean \u03c7",
    "phaseiron_mean_rad": "mean phase iron",
    "r2star_mean_hz": "mean R2*",
    "mpapt_rad": "MP-APT",
    "apt_volume_mm3": "abnormal-phase volume",
}

_GROUP_COLOURS = ("#4393c3", "#d6604d", "#5aae61", "#9970ab", "#bf812d")


def display_scale(measure: str) -> tuple[float, str]:
    """(factor, unit) to display ``measure``: ppm values are shown in ppb."""
    if measure.endswith("_ppm"):
        return 1000.0, "ppb"
    unit = G.DEFAULT_MEASURES.get(measure, "")
    if not unit:
        for suffix, u in (("_hz", "Hz"), ("_rad", "rad"), ("_mm3", "mm\u00b3")):
            if measure.endswith(suffix):
                unit = u
    return 1.0, unit.replace("mm^3", "mm\u00b3")


def axis_label(measure: str) -> str:
    """``mean χ (ppb)``."""
    _, unit = display_scale(measure)
    return f"{QUANTITY.get(measure, measure)} ({unit})" if unit else QUANTITY.get(measure, measure)


def save_figure(fig: plt.Figure, path: Path, dpi: int = 90) -> Path:
    """PNG bytes without a timestamp (deterministic), written atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _grid(n: int, ncols: int = 4, w: float = 3.3, h: float = 2.9) -> tuple[plt.Figure, np.ndarray]:
    ncols = max(1, min(ncols, n))
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False)
    fig.subplots_adjust(
        left=0.08, right=0.98, bottom=0.1, top=1 - 0.45 / nrows, hspace=0.75, wspace=0.45
    )
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def _bilateral(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["hemisphere"] == "bilateral"]


def _is_constant(values: np.ndarray) -> bool:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return v.size == 0 or float(np.ptp(v)) <= max(1e-7, 1e-9 * float(np.abs(v).max()))


def _stat_title(row: pd.Series | None) -> str:
    if row is None:
        return ""
    if row.get("reason"):
        return "descriptive only: " + str(row["reason"]).split(":")[0]
    g, lo, hi, q = (row.get(k) for k in ("hedges_g", "g_ci_low", "g_ci_high", "q"))
    return f"g = {g:.2f} [{lo:.2f}, {hi:.2f}], q = {q:.2g}"


def _row(table: pd.DataFrame, structure: str, measure: str, **match: str) -> pd.Series | None:
    sel = region_rows(table, structure, measure, **match)
    return table[sel].iloc[0] if sel.any() else None


def group_figure(
    data: pd.DataFrame, design: G.Design, groupdiff: pd.DataFrame, measure: str, path: Path
) -> Path | None:
    """Box + points of ``measure`` by group, one panel per non-constant structure (bilateral)."""
    bil = _bilateral(data)
    factor, _ = display_scale(measure)
    levels = [design.control_label, *design.case_labels]
    panels = []
    for st in dict.fromkeys(bil["structure"]):
        d = bil[bil["structure"] == st]
        vals = [
            d.loc[d[design.group_column].astype(str) == lv, measure].dropna().to_numpy(float)
            for lv in levels
        ]
        row = _row(groupdiff, st, measure) if len(groupdiff) else None
        constant = row is not None and str(row.get("reason", "")) == "constant measure"
        if not (constant or _is_constant(np.concatenate(vals))):  # in the table's units
            panels.append((st, [factor * v for v in vals]))
    if not panels:
        return None
    fig, axes = _grid(len(panels))
    rng = np.random.default_rng(0)
    contrast = f"{design.case_labels[0]}-{design.control_label}"
    for ax, (st, vals) in zip(axes, panels, strict=False):
        ax.boxplot(vals, showfliers=False, widths=0.5)
        ax.set_xticks(range(1, len(levels) + 1), levels)
        for i, v in enumerate(vals):
            colour = _GROUP_COLOURS[i % len(_GROUP_COLOURS)]
            ax.plot(i + 1 + rng.uniform(-0.12, 0.12, v.size), v, "o", ms=3.5, alpha=0.8, c=colour)
        row = _row(groupdiff, st, measure, contrast=contrast) if len(groupdiff) else None
        ax.set_title(f"{st.replace('_', ' ')}\n{_stat_title(row)}", fontsize=8.5)
        ax.set_ylabel(axis_label(measure), fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"{axis_label(measure)} by group (both hemispheres)", fontsize=10)
    return save_figure(fig, path)


def forest_figure(groupdiff: pd.DataFrame, measures: Sequence[str], contrast: str, path: Path):
    """Hedges' g with 95% CI per structure (bilateral), one panel per measure.

    Filled: q < 0.05; open: tested, q >= 0.05; grey: descriptive only (see ``reason``).
    """
    gd = _bilateral(groupdiff[groupdiff["contrast"] == contrast])
    gd = gd[np.isfinite(gd["hedges_g"].astype(float))]
    measures = [m for m in measures if (gd["measure"] == m).any()]
    if not measures:
        return None
    structures = list(dict.fromkeys(gd["structure"]))
    fig, axes = plt.subplots(
        1, len(measures), figsize=(3.1 * len(measures) + 1.2, 0.32 * len(structures) + 1.3),
        sharey=True, squeeze=False,
    )  # fmt: skip
    ys = np.arange(len(structures))[::-1]
    for ax, m in zip(axes.ravel(), measures, strict=True):
        sub = gd[gd["measure"] == m].set_index("structure")
        for y, st in zip(ys, structures, strict=True):
            if st not in sub.index:
                continue
            r = sub.loc[st]
            tested = not r["reason"]
            sig = tested and float(r["q"]) < 0.05
            colour = "#b2182b" if sig else ("#2166ac" if tested else "#999999")
            ax.plot([r["g_ci_low"], r["g_ci_high"]], [y, y], "-", c=colour, lw=1.4)
            ax.plot(r["hedges_g"], y, "o", ms=5, c=colour, mfc=colour if sig else "white", mew=1.3)
        ax.axvline(0, c="k", lw=0.8)
        ax.set_title(QUANTITY.get(m, m), fontsize=9)
        ax.set_xlabel(f"Hedges' g ({contrast}, SD units)", fontsize=8)
        ax.tick_params(labelsize=7.5)
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set_yticks(ys, [s.replace("_", " ") for s in structures])
    fig.suptitle(
        "Standardised group differences, 95% CI (filled: q < 0.05; open: q \u2265 0.05; "
        "grey: not tested)",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return save_figure(fig, path)


def _residuals(y: np.ndarray, Z: np.ndarray) -> np.ndarray:
    beta, *_ = np.linalg.lstsq(Z, y, rcond=None)
    return y - Z @ beta


def partial_regression_figure(
    data: pd.DataFrame,
    design: G.Design,
    clinical: pd.DataFrame,
    measure: str,
    variable: str,
    path: Path,
) -> Path | None:
    """Added-variable plots in the patients: measure and variable residualised on the covariates.

    The slope of each panel's line is the adjusted OLS slope and the correlation of the points
    is the partial r of the table. Only tested rows (no ``reason``) are drawn.
    """
    bil = _bilateral(data)
    bil = bil[bil[design.group_column].astype(str).isin(design.case_labels)]
    factor, unit = display_scale(measure)
    panels = []
    for st in dict.fromkeys(bil["structure"]):
        row = _row(clinical, st, measure, variable=variable)
        if row is None or row["reason"]:
            continue
        region = bil[bil["structure"] == st]
        sub = region[G._model_columns(design, measure, variable)].dropna()
        Z = G.design_matrix(sub, design, with_group=False).to_numpy(float)
        ry = _residuals(factor * sub[measure].to_numpy(float), Z)
        rx = _residuals(sub[variable].to_numpy(float), Z)
        panels.append((st, rx, ry, row))
    if not panels:
        return None
    fig, axes = _grid(len(panels))
    for ax, (st, rx, ry, row) in zip(axes, panels, strict=False):
        ax.plot(rx, ry, "o", ms=3.5, alpha=0.8, c=_GROUP_COLOURS[1])
        slope = float(np.dot(rx, ry) / np.dot(rx, rx)) if np.dot(rx, rx) > 0 else 0.0
        xs = np.linspace(rx.min(), rx.max(), 2)
        ax.plot(xs, slope * xs, "-", c="k", lw=1.2)
        ax.axhline(0, c="#999", lw=0.6)
        ax.set_title(
            f"{st.replace('_', ' ')}\npartial r = {row['r']:.2f}, q = {row['q']:.2g}, "
            f"df = {int(row['df'])}",
            fontsize=8.5,
        )
        ax.set_xlabel(f"{variable} | covariates (residual)", fontsize=8)
        ax.set_ylabel(f"{QUANTITY.get(measure, measure)} | cov. ({unit})", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(
        f"{axis_label(measure)} vs {variable} in patients, adjusted for "
        f"{', '.join(design.covariates + (['volume'] if design.use_volume else [])) or 'nothing'}"
        " (added-variable plots; line: adjusted slope)",
        fontsize=9.5,
    )
    return save_figure(fig, path)


def zscore_figure(zscores: pd.DataFrame, measure: str, group_order: Sequence[str], path: Path):
    """Heat map of the participants' z-scores (bilateral structures) against the controls."""
    z = _bilateral(zscores[zscores["measure"] == measure])
    if z.empty:
        return None
    table = z.pivot_table(index="participant_id", columns="structure", values="z", sort=False)
    table = table.loc[:, table.notna().any()]
    if table.empty:
        return None
    rank = {g: i for i, g in enumerate(group_order)}
    groups = z.drop_duplicates("participant_id").set_index("participant_id")["group"].astype(str)
    order = sorted(table.index, key=lambda p: (rank.get(groups.get(p, ""), 99), p))
    table = table.loc[order]
    fig, ax = plt.subplots(figsize=(0.55 * table.shape[1] + 2.6, 0.26 * len(table) + 1.6))
    im = ax.imshow(table.to_numpy(float), cmap="RdBu_r", vmin=-4, vmax=4, aspect="auto")
    ax.set_xticks(range(table.shape[1]), [c.replace("_", " ") for c in table.columns])
    ax.set_yticks(range(len(table)), [f"{p} ({groups.get(p, '?')})" for p in table.index])
    ax.tick_params(axis="x", rotation=45, labelsize=7.5)
    ax.tick_params(axis="y", labelsize=7.5)
    for (i, j), v in np.ndenumerate(table.to_numpy(float)):
        if np.isfinite(v) and abs(v) >= 3:
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=6.5, c="w")
    cb = fig.colorbar(im, ax=ax, fraction=0.04)
    cb.set_label("z (SD of the controls)", fontsize=8)
    ax.set_title(f"{axis_label(measure)}: z-scores against the controls", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


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
    coords = np.argwhere(inside)
    zs = np.unique(np.linspace(coords[:, 2].min(), coords[:, 2].max(), 7)[1:-1].round())
    cuts = [float((mask_img.affine @ np.array([0, 0, z, 1]))[2]) for z in zs]
    fig = plt.figure(figsize=(11, 3))
    plotting.plot_stat_map(
        result.tstat,
        bg_img=template_img,
        threshold=threshold,
        display_mode="z",
        cut_coords=cuts,
        figure=fig,
        title=f"{result.contrast}: t ({label}); z in mm (MNI)",
        colorbar=True,
        cmap="RdBu_r",
        symmetric_cbar=True,
        vmax=vmax,
    )
    return save_figure(fig, path)

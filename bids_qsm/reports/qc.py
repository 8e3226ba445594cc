"""Quality-control checks of one GRE acquisition for the participant report.

Each :class:`QCCheck` is a metric with its plausible range and the advice shown when it is
outside; :func:`evaluate_qc` turns the run's metrics into the rows of the report's QC table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bids_qsm.atlas.qc import QC_LIMITS as _QC_LIMITS
from bids_qsm.reports.html import _as_float, _fmt_value

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

"""HTML building blocks shared by the participant and group reports.

Escaping, number formatting (ppm shown as ppb, signed values without a signed zero), status
badges, the inline χ bar and the page style sheet (inline CSS only: no JavaScript, no network).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd


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


def _as_float(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


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


_NUMERIC_RE = re.compile(r"^(?:[-+]?\d|–$)")


def _num(v: Any, digits: int = 3) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return _esc(v) if v not in (None, "") else "–"
    return "–" if not np.isfinite(f) else f"{f:.{digits}g}"


def _html_table(df: pd.DataFrame, cls: str = "data", row_classes: Sequence[str] = ()) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in df.columns)
    rows = []
    for i, (_, r) in enumerate(df.iterrows()):
        rc = row_classes[i] if i < len(row_classes) else ""
        cells = "".join(
            f'<td class="num">{v}</td>' if isinstance(v, str) and _NUMERIC_RE.match(v)
            else f"<td>{v}</td>"
            for v in r.to_numpy()
        )  # fmt: skip
        rows.append(f'<tr class="{rc}">{cells}</tr>')
    return (
        f'<div class="tablewrap"><table class="{cls}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )

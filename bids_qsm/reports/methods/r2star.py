"""Methods text of the R2* / T2* mapping."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bids_qsm.reports.methods._common import (
    _Citer,
    _get,
    _key,
    _method,
    _num,
)


def _r2star_text(q: Mapping[str, Any], r2: Mapping[str, Any], cite: _Citer) -> list[str]:
    method = _method(r2, "method", "r2star_method", "fit") or _method(q, "r2star_method", "r2star")
    clip_max = _get(r2, "r2star_max_hz", "max_hz") or _get(q, "r2star_max_hz")
    if method is None and clip_max is not None:
        method = "loglinear"  # bids_qsm.qsm.r2star: weighted log-linear fit
    if method is None:
        return []
    mk = _key(method)
    if mk == "arlo":
        how = f"the auto-regression on linear operations (ARLO) method{cite('pei2015')}"
    elif mk in ("loglinear", "loglin", "wls", "weightedloglinear", "linear"):
        how = "a weighted log-linear fit of the magnitude over echo time"
    elif mk in ("nonlinear", "nlls"):
        how = "a non-linear least-squares mono-exponential fit"
    else:
        how = f"{method}"
    clip = _get(r2, "clip_hz", "range_hz", "clip") or _get(q, "r2star_clip_hz")
    if clip is None and clip_max is not None:
        clip = [0, clip_max]
    txt = f"R2* (and T2* = 1/R2*) maps were estimated by {how}"
    if isinstance(clip, list | tuple) and len(clip) == 2:
        txt += f", clipped to {_num(clip[0])}–{_num(clip[1])} s⁻¹"
    return [txt + "."]

"""Tolerant access to the parameter dictionary and number formatting for the methods text.

Key names are matched case- and separator-insensitively (``max_radius_mm`` = ``MaxRadiusMM``),
also inside nested ``options`` / ``parameters`` dictionaries and per-stage dictionaries; a
missing value gives None (its clause is omitted), never an exception.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bids_qsm.reports.references import REFERENCES

_MISSING = object()
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


# --------------------------------------------------------------------------------------------
# Tolerant parameter access
# --------------------------------------------------------------------------------------------


def _norm(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(key).lower())


def _view(sec: Any) -> dict[str, Any]:
    """Normalised-key view of a mapping, with nested ``options``/``parameters`` merged in."""
    if not isinstance(sec, Mapping):
        return {}
    out: dict[str, Any] = {}
    for nested in ("options", "parameters", "params"):
        for k, v in sec.items():
            if _norm(k) == nested and isinstance(v, Mapping):
                for k2, v2 in v.items():
                    out.setdefault(_norm(k2), v2)
    for k, v in sec.items():
        out[_norm(k)] = v  # top level wins
    return out


def _get(sec: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    """First value found under any of ``names`` (normalised), or ``default``."""
    v = _view(sec)
    for n in names:
        val = v.get(_norm(n), _MISSING)
        if val is not _MISSING and val is not None and val != "":
            return val
    return default


def _section(parameters: Mapping[str, Any], *names: str) -> dict[str, Any]:
    val = _get(parameters, *names)
    return dict(val) if isinstance(val, Mapping) else {}


def _method(sec: Mapping[str, Any], *names: str) -> str | None:
    """Algorithm name of a stage given as a string or as ``{"method": ...}``."""
    val = _get(sec, *names)
    if isinstance(val, Mapping):
        val = _get(val, "method", "algorithm", "name", "type")
    if val is None or isinstance(val, bool):
        return None
    return str(val)


def _stage_param(
    sec: Mapping[str, Any], stages: Sequence[str], algo: str | None, *names: str
) -> Any:
    """A parameter of one stage: in the stage dict, the algorithm dict, or flat prefixed keys."""
    dicts = [_get(sec, s) for s in stages]
    if algo:
        dicts += [_get(sec, algo), _get(sec, f"{algo}_params"), _get(sec, f"{algo}_options")]
    for d in dicts:
        if isinstance(d, Mapping):
            val = _get(d, *names)
            if val is not None:
                return val
    prefixed = [f"{p}_{n}" for p in ([algo] if algo else []) + list(stages) for n in names]
    return _get(sec, *prefixed)


def _key(name: str | None) -> str:
    return _norm(name or "")


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


def _num(v: Any) -> str:
    """Compact number: 0.1, 1e-05, 12, 1.5."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if f == int(f) and abs(f) < 1e5:
        return str(int(f))
    if abs(f) >= 1e4 or (0 < abs(f) < 1e-3):
        mant, exp = f"{f:.3e}".split("e")
        mant = mant.rstrip("0").rstrip(".")
        sup = str(int(exp)).translate(_SUPERSCRIPT)
        return f"10{sup}" if mant == "1" else f"{mant}×10{sup}"
    return f"{f:.4g}"


def _as_float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f == f and abs(f) != float("inf") else None


def _seq(v: Any, sep: str = ", ") -> str:
    if isinstance(v, str) or not isinstance(v, Iterable):
        return _num(v)
    return sep.join(_num(x) for x in v)


def _clauses(items: Iterable[tuple[str, Any]]) -> str:
    """``"a = 1, b = 2"`` for the items whose value is known."""
    parts = [
        f"{label} = {_num(v) if not isinstance(v, list | tuple) else _seq(v)}"
        for label, v in items
        if v is not None
    ]
    return ", ".join(parts)


def _paren(text: str) -> str:
    return f" ({text})" if text else ""


class _Citer:
    """Numbers references in order of first citation."""

    def __init__(self) -> None:
        self.order: list[str] = []

    def __call__(self, *keys: str) -> str:
        nums = []
        for k in keys:
            if k not in REFERENCES:
                continue
            if k not in self.order:
                self.order.append(k)
            nums.append(self.order.index(k) + 1)
        return f" [{', '.join(str(n) for n in sorted(set(nums)))}]" if nums else ""

    def references_markdown(self) -> str:
        return "\n".join(f"{i}. {REFERENCES[k].text()}" for i, k in enumerate(self.order, 1))

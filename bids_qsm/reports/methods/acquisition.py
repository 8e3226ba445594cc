"""Methods text: the acquisition clause (echoes, echo times, field strength, voxel size)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bids_qsm.reports.methods._common import (
    _get,
    _num,
    _seq,
)


def _acquisition(acq: Mapping[str, Any]) -> str:
    parts = []
    te = _get(acq, "te_ms", "echo_times_ms")
    if te is None:
        te_s = _get(acq, "echo_times_s", "EchoTime_s", "echo_times", "te_s")
        if isinstance(te_s, list | tuple) and te_s:
            te = [round(float(t) * 1000, 2) for t in te_s]
    n = _get(acq, "n_echoes", "echoes", "NumberOfEchoes")
    if n is None and isinstance(te, list | tuple):
        n = len(te)
    if n is not None:
        parts.append(f"{_num(n)} echo{'es' if str(n) != '1' else ''}")
    if te is not None:
        parts.append(f"TE = {_seq(te)} ms")
    b0 = _get(acq, "b0_tesla", "MagneticFieldStrength", "b0")
    if b0 is not None:
        parts.append(f"B0 = {_num(b0)} T")
    vs = _get(acq, "voxel_size_mm", "voxel_size")
    if vs is not None:
        parts.append(f"voxel size {_seq(vs, ' × ')} mm")
    return "; ".join(parts)

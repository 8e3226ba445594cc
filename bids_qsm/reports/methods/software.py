"""Methods text: the software paragraph (bids-qsm and the packages it builds on)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bids_qsm.reports.methods._common import (
    _Citer,
    _get,
    _norm,
)

_SOFTWARE = (
    ("nipype", "Nipype", "gorgolewski2011"),
    ("pybids", "PyBIDS", "yarkoni2019"),
    ("nibabel", "NiBabel", "brett_nibabel"),
    ("numpy", "NumPy", "harris2020"),
    ("scipy", "SciPy", "virtanen2020"),
    ("scikit-image", "scikit-image", "vanderwalt2014"),
    ("antspyx", "ANTsPy (antspyx)", "tustison2021"),
)


def _software_text(sw: Mapping[str, Any], version: str, cite: _Citer) -> str:
    bids_cite = cite("gorgolewski2016")
    parts = []
    for key, label, ref in _SOFTWARE:
        v = _get(sw, key, key.replace("-", "_"), key.replace("scikit-image", "skimage"))
        if v is not None:
            parts.append(f"{label} {v}{cite(ref)}")
    for k, v in sw.items():  # anything else that was reported
        skip = {_norm(x[0]) for x in _SOFTWARE} | {"skimage", "scikitimage", "bidsqsm"}
        if _norm(k) not in skip:
            parts.append(f"{k} {v}")
    txt = (
        f"Processing used bids-qsm {version}, a BIDS App"
        f"{bids_cite} whose outputs follow the BIDS derivatives conventions"
    )
    if parts:
        txt += ", built on " + ", ".join(parts)
    return txt + "."

"""Methods text: a journal-style paragraph generated from the parameters actually used.

:func:`methods_boilerplate` turns the nested parameter dictionary of a run into Markdown text
with numbered citations and a reference list; :func:`write_citation_files` writes it to
``logs/CITATION.md`` (plus ``CITATION.html`` and ``CITATION.bib``).

The parameter dictionary is read tolerantly: sections ``acquisition``, ``qsm``, ``r2star``,
``swi``, ``atlas`` and ``software`` are all optional, and inside each section key names are
matched case- and separator-insensitively (``max_radius_mm`` = ``MaxRadiusMM``), also inside
nested ``options`` / ``parameters`` dictionaries and per-stage dictionaries (e.g.
``{"inversion": {"method": "rts", "mu": 1e5}}`` or ``{"inversion": "rts", "rts_mu": 1e5}``).
A missing value omits its clause; it never raises.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bids_qsm.reports._atomic import atomic_write_text
from bids_qsm.reports._markdown import markdown_to_html
from bids_qsm.reports.methods._common import _Citer, _get, _section, _view
from bids_qsm.reports.methods.acquisition import _acquisition
from bids_qsm.reports.methods.atlas import _atlas_text
from bids_qsm.reports.methods.qsm import _qsm_text
from bids_qsm.reports.methods.r2star import _r2star_text
from bids_qsm.reports.methods.software import _software_text
from bids_qsm.reports.methods.swi import _swi_text
from bids_qsm.reports.references import REFERENCES

__all__ = ["methods_boilerplate", "write_citation_files"]


def methods_boilerplate(parameters: Mapping[str, Any], version: str) -> str:
    """Journal-style methods text (Markdown) generated from the parameters actually used.

    Parameters
    ----------
    parameters
        Nested dictionary with optional sections ``acquisition`` (n_echoes, te_ms or
        echo_times_s, b0_tesla, voxel_size_mm), ``qsm`` (e.g. ``QSMOptions.to_dict()`` plus
        ``reference_value_ppm``), ``r2star``, ``swi`` (``SWIOptions.to_dict()`` or
        ``SWIResult.parameters``), ``atlas`` (the registration parameters) and ``software``
        (package -> version). Missing sections or keys omit the matching sentences.
    version
        bids-qsm version.

    Returns
    -------
    str
        Markdown: a heading, one paragraph per processing part, and a numbered reference list.
    """
    params = parameters if isinstance(parameters, Mapping) else {}
    cite = _Citer()
    q = _section(params, "qsm")
    acq = _section(params, "acquisition", "input", "inputs") or {
        k: v
        for k, v in _view(q).items()
        if k in ("echotimess", "b0tesla", "voxelsizemm", "nechoes")
    }
    r2 = _section(params, "r2star", "r2s")
    sw = _section(params, "swi")
    at = _section(params, "atlas", "registration")
    soft = _section(params, "software", "versions")

    n_echoes = _get(acq, "n_echoes", "echoes")
    if n_echoes is None:
        te = _get(acq, "echo_times_s", "te_ms", "EchoTime_s")
        n_echoes = len(te) if isinstance(te, list | tuple) else None
    try:
        n_echoes = int(n_echoes) if n_echoes is not None else None
    except (TypeError, ValueError):
        n_echoes = None

    paragraphs: list[tuple[str, list[str]]] = []
    acq_txt = _acquisition(acq)
    intro = (
        "Gradient-echo magnitude and phase images"
        + (f" ({acq_txt})" if acq_txt else "")
        + f" were processed with bids-qsm {version} to obtain quantitative susceptibility maps "
        "(QSM), R2* and T2* maps, susceptibility-weighted images (SWI) and regional iron "
        "measures, following the recommendations of the ISMRM QSM consensus"
        f"{cite('qsm_consensus_2024')}."
    )
    paragraphs.append(("", [intro]))
    qs = _qsm_text(q, cite, n_echoes)
    if qs:
        paragraphs.append(("Quantitative susceptibility mapping", qs))
    r2s = _r2star_text(q, r2, cite)
    if r2s:
        paragraphs.append(("R2* mapping", r2s))
    sws = _swi_text(sw, cite)
    if sws:
        paragraphs.append(("Susceptibility-weighted imaging and phase-iron measures", sws))
    ats = _atlas_text(at, cite)
    if ats:
        paragraphs.append(("Regional measures", ats))
    paragraphs.append(("Software", [_software_text(soft, version, cite)]))

    lines = [f"## Methods (bids-qsm {version})", ""]
    for title, sentences in paragraphs:
        if title:
            lines += [f"### {title}", ""]
        lines += [" ".join(sentences), ""]
    lines += [
        "*This text was generated automatically by bids-qsm from the parameters of the run "
        "and is released under the CC0 licence: copy it into your manuscript unchanged or "
        "edited.*",
        "",
        "### References",
        "",
        cite.references_markdown(),
        "",
    ]
    return "\n".join(lines)


def _used_keys(markdown: str) -> list[str]:
    """Reference keys in the order they appear in a generated text's reference list."""
    order = []
    for ref in REFERENCES.values():
        pos = markdown.find(ref.title)
        if pos >= 0:
            order.append((pos, ref.key))
    return [k for _, k in sorted(order)]


def write_citation_files(parameters: Mapping[str, Any], version: str, logs_dir: Path) -> Path:
    """Write ``CITATION.md``, ``CITATION.html`` and ``CITATION.bib`` into ``logs_dir``.

    All three are written atomically. Returns the path of ``CITATION.md``.
    """
    logs_dir = Path(logs_dir)
    md = methods_boilerplate(parameters, version)
    md_path = atomic_write_text(logs_dir / "CITATION.md", md)
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>bids-qsm {html.escape(version)}: methods boilerplate</title>"
        "<style>body{font-family:Georgia,serif;max-width:46em;margin:2em auto;line-height:1.5;"
        "color:#222;padding:0 1em}h2,h3{font-family:Helvetica,Arial,sans-serif}"
        "a{color:#1a5fb4}</style></head>\n<body>\n" + markdown_to_html(md) + "\n</body></html>\n"
    )
    atomic_write_text(logs_dir / "CITATION.html", page)
    bib = "\n\n".join(REFERENCES[k].bibtex() for k in _used_keys(md)) + "\n"
    atomic_write_text(logs_dir / "CITATION.bib", bib)
    return md_path

"""Methods text of the atlas registration and the regional measures."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bids_qsm.reports.methods._common import (
    _Citer,
    _get,
    _key,
)


def _atlas_text(at: Mapping[str, Any], cite: _Citer) -> list[str]:
    name = _get(at, "atlas", "name")
    if name is None and not at:
        return []
    s: list[str] = []
    if name is not None:
        ref = cite("rolls2020") if _key(name).startswith("aal3") else ""
        tpl = _get(at, "template", "template_name")
        tpl_txt = ""
        if tpl is not None:
            tk = _key(tpl)
            tcite = (
                cite("evans2012") if "nlin6" in tk else (cite("fonov2011") if "2009" in tk else "")
            )
            tpl_txt = f" defined on the {tpl} template{tcite}"
        s.append(f"Regional measures were extracted with the {name} atlas{ref}{tpl_txt}.")
    if _get(at, "skipped", "registration_skipped") in (True, "true", "yes"):
        reason = _get(at, "skip_reason", "reason")
        s.append(
            "Atlas registration was skipped"
            + (f" ({reason})" if reason else "")
            + "; no regional values were computed."
        )
        return s
    subj = _get(at, "SubjectImage", "subject_image", "moving")
    t2s = _get(at, "TemplateToSubject", "registration")
    transforms: list[str] = []
    syn = False
    region = None
    if isinstance(t2s, Mapping):
        stages = _get(t2s, "Stages", "stages") or []
        for st in stages if isinstance(stages, list | tuple) else []:
            tr = str(_get(st, "Transform", "transform", default=""))
            transforms.append(tr.split("[")[0].lower())
            syn = syn or tr.lower().startswith("syn")
            region = _get(st, "Region", default=None) or region
    elif isinstance(t2s, str):
        syn = "syn" in t2s.lower()
        transforms.append(t2s)
    soft = _get(at, "Software", "software")
    if transforms or soft is not None or subj is not None:
        chain = ", ".join("symmetric normalisation (SyN)" if t == "syn" else t for t in transforms)
        txt = "The template was registered to the subject"
        if subj is not None:
            subj = str(subj)
            if len(subj) > 1 and not subj[1].isupper():
                subj = subj[0].lower() + subj[1:]
            txt += f" ({subj})"
        if chain:
            txt += f" with {chain} stages"
            if region:
                txt += f" (the last restricted to a {region})"
        if syn:
            txt += cite("avants2008")
        if soft is not None:
            txt += f" in {soft}{cite('tustison2021')}"
        s.append(txt + ".")
    rp = _get(at, "RegistrationParams") or {}
    if isinstance(rp, Mapping) and rp.get("quality") == "sloppy":
        s.append(
            "The registration used the fast low-quality preset (--sloppy: fewer iterations), "
            "meant for demonstrations and tests; its regional values are not for publication."
        )
    if _get(at, "GREtoT1w") is not None:
        s.append("The T1w image was aligned rigidly to the GRE (mutual information).")
    interp = _get(at, "LabelInterpolation", "label_interpolation")
    s.append(
        "Labels were carried into the GRE voxel grid"
        + (f" with {interp} interpolation" if interp is not None else "")
        + "; values were computed for thalamus, pulvinar, caudate, putamen, globus pallidus, "
        "hippocampus, amygdala, nucleus accumbens, substantia nigra and red nucleus, left, right "
        "and bilateral."
    )
    return s

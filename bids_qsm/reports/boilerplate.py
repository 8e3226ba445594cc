"""Methods boilerplate: a journal-style paragraph generated from the parameters actually used.

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
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bids_qsm.reports._atomic import atomic_write_text
from bids_qsm.reports._markdown import markdown_to_html
from bids_qsm.reports.references import REFERENCES

__all__ = ["methods_boilerplate", "write_citation_files"]

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


# --------------------------------------------------------------------------------------------
# Sections of the text
# --------------------------------------------------------------------------------------------


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


def _qsm_text(q: Mapping[str, Any], cite: _Citer, n_echoes: int | None) -> list[str]:
    s: list[str] = []
    units = _get(q, "phase_units")
    if units is not None and _key(units) in ("arbitrary", "au"):
        s.append("Phase images stored in arbitrary units were rescaled to radians in [-π, π).")
    sign = _get(q, "phase_sign")
    if sign is not None and str(sign).strip() in ("-1", "-1.0"):
        s.append(
            "The phase was negated (vendor convention) so that paramagnetic susceptibility is "
            "positive."
        )
    # Mask
    mask = _method(q, "mask_source", "mask", "mask_method", "brain_mask")
    if mask is not None:
        mk = _key(mask)
        if mk in ("user", "custom", "provided", "external"):
            s.append("A user-provided brain mask was used.")
        else:
            scale = _stage_param(q, ["mask"], None, "threshold_scale")
            opening = _stage_param(q, ["mask"], None, "opening_radius_mm")
            detail = "; ".join(
                x
                for x in (
                    f"threshold scale {_num(scale)}" if scale is not None else "",
                    f"opening radius {_num(opening)} mm" if opening is not None else "",
                )
                if x
            )
            if "threshold" in mk or "magnitude" in mk:
                how = "by thresholding and morphological operations (largest connected component, "
                how += "hole filling" + (f"; {detail})" if detail else ")")
            else:
                how = f"({mask}{'; ' + detail if detail else ''})"
            s.append(f"A brain mask was computed from the echo-combined magnitude {how}.")
    # Phase offsets and unwrapping
    multi = n_echoes is None or n_echoes > 1
    offset = _method(q, "phase_offset_removal", "phase_offset", "offset_removal", "mcpc")
    sigma = _get(q, "mcpc_sigma_vox", "mcpc3ds_sigma_vox", "mcpc_sigma")
    source = _get(q, "field_source")
    user_field = isinstance(source, str) and source.startswith("user")
    if user_field:
        s.append(
            "The "
            + ("local field (ppm, background removed)" if "local" in source else "total field (Hz)")
            + " was supplied by the user (phase offset removal, unwrapping and echo combination"
            " done outside bids-qsm); the magnitude gave the mask and R2*."
        )
    poly = _get(q, "mcpc_poly_degree")
    if multi and (offset is None or _key(offset).startswith("mcpc") or _key(offset) == "true"):
        if offset is not None or sigma is not None:
            smooth = "smoothing σ = " + _seq(sigma) + " voxels" if sigma else ""
            if poly is not None and _as_float(poly):
                smooth = (
                    f"a polynomial of degree {_num(poly)} fitted to the offset inside the mask, "
                    "only the remainder smoothed"
                    + (f" with σ = {_seq(sigma)} voxels" if sigma else "")
                )
            s.append(
                "The phase offset common to all echoes was removed with MCPC-3D-S"
                f"{cite('eckstein2018')}{_paren(smooth)}."
            )
    unwrap = _method(q, "unwrapping", "unwrap", "unwrapping_method")
    if unwrap is not None and not user_field:
        uk = _key(unwrap)
        if uk in ("quality", "skimage", "reliability", "qualityguided"):
            s.append(
                "Phase was unwrapped exactly with the 3D reliability-sorting, quality-guided "
                "path-following algorithm"
                f"{cite('herraez2002', 'abdulrahman2007')} of scikit-image"
                f"{cite('vanderwalt2014')}"
                + (", later echoes temporally against the first" if multi else "")
                + "."
            )
        elif uk == "romeo":
            s.append(
                "Phase was unwrapped with the quality-guided region-growing algorithm ROMEO"
                f"{cite('dymerska2021')}."
            )
        elif uk == "laplacian":
            s.append(
                "Phase was unwrapped with the Laplacian method"
                f"{cite('schofield2003')} (fast but not exact, as noted by the consensus"
                f"{cite('qsm_consensus_2024')})."
            )
        else:
            s.append(f"Phase was unwrapped with the {unwrap} method.")
    combination = _get(q, "echo_combination")
    if not multi and q and not user_field:
        s.append("The field was computed from the single echo as phase / (2π TE).")
    if multi and q and not user_field:
        weighting = _get(q, "fit_weighting", "echo_weighting", "weighting")
        if weighting is None and isinstance(combination, str) and "mag^2" in combination:
            weighting = "squared magnitude, i.e. SNR weighting"
        resid = _get(
            q, "residual_threshold", "fit_residual_threshold", "max_residual", "residual_max"
        )
        txt = (
            "Echoes were combined before background field removal, as recommended by the "
            f"consensus{cite('qsm_consensus_2024')}, by a weighted least-squares fit of the "
            "unwrapped phase over echo time"
        )
        if weighting is not None:
            txt += f" (weights: {weighting})"
        if resid is not None:
            txt += (
                f"; voxels whose relative fit residual exceeded {_num(resid)} were excluded "
                "from the mask"
            )
        s.append(txt + ".")
    # Background removal
    bg = _method(q, "bg_removal", "background", "background_removal", "bfr")
    if bg is not None:
        bk = _key(bg)
        st = ["bg_removal", "background", "background_removal"]
        if bk == "vsharp":
            rmax = _stage_param(q, st, "vsharp", "max_radius_mm", "radius_mm", "radius")
            rmax = rmax if rmax is not None else _get(q, "vsharp_radius_mm")
            rmin = _stage_param(q, st, "vsharp", "min_radius_mm")
            radii = _get(q, "vsharp_radii_mm", "radii_mm")
            if isinstance(radii, list | tuple) and radii:
                rmax = max(radii) if rmax is None else rmax
                rmin = min(radii) if rmin is None else rmin
                nrad = len(radii)
            else:
                nrad = None
            thr = _stage_param(q, st, "vsharp", "threshold", "tsvd")
            ero = _stage_param(q, st, "vsharp", "erosion_vox", "mask_erosion_vox")
            detail = []
            if rmax is not None:
                detail.append(
                    (f"{nrad} " if nrad else "")
                    + f"spherical kernels from {_num(rmax)} mm"
                    + (f" down to {_num(rmin)} mm" if rmin is not None else "")
                )
            if thr is not None:
                detail.append(f"truncation threshold {_num(thr)}")
            if ero is not None:
                detail.append(f"mask eroded by {_num(ero)} voxel(s)")
            s.append(
                f"The background field was removed with V-SHARP{cite('wu2012')}"
                f"{_paren('; '.join(detail))}."
            )
        elif bk == "sharp":
            s.append(f"The background field was removed with SHARP{cite('schweser2011')}.")
        elif bk == "resharp":
            s.append(f"The background field was removed with RESHARP{cite('sun2014')}.")
        elif bk == "pdf":
            detail = _clauses(
                [
                    ("tolerance", _stage_param(q, st, "pdf", "tol", "tolerance")),
                    ("max. iterations", _stage_param(q, st, "pdf", "max_iter", "iterations")),
                ]
            )
            s.append(
                "The background field was removed by projection onto dipole fields (PDF)"
                f"{cite('liu2011')}{_paren(detail)}."
            )
        elif bk == "lbv":
            detail = _clauses(
                [
                    ("tolerance", _stage_param(q, st, "lbv", "tol", "tolerance")),
                    ("max. iterations", _stage_param(q, st, "lbv", "max_iter", "iterations")),
                ]
            )
            s.append(
                "The background field was removed with the Laplacian boundary value method (LBV)"
                f"{cite('zhou2014')}{_paren(detail)}."
            )
        else:
            s.append(f"The background field was removed with {bg}.")
    # Inversion
    inv = _method(q, "inversion", "dipole_inversion", "inversion_method")
    if inv is not None:
        ik = _key(inv)
        st = ["inversion", "dipole_inversion"]

        def p(*names: str) -> Any:
            return _stage_param(q, st, ik, *names)

        if ik == "rts":
            detail = _clauses(
                [
                    ("δ", p("delta")),
                    ("μ", p("mu")),
                    ("ρ", p("rho")),
                    ("tolerance", p("tol", "tolerance")),
                    ("max. iterations", p("max_iter", "iterations")),
                    ("LSMR iterations", p("lsmr_iter")),
                ]
            )
            lsmr = p("lsmr_iter") is not None or "rts_lsmr_iter" not in q
            step1 = "an LSMR solution" if lsmr else "exact k-space division"
            s.append(
                "Susceptibility was obtained by the rapid two-step dipole inversion (RTS)"
                f"{cite('kames2018')}: {step1} on the well-conditioned k-space region "
                "followed by a sparsity-regularised recovery of the ill-conditioned cone"
                f"{_paren(detail)}."
            )
        elif ik == "tikhonov":
            detail = _clauses(
                [
                    ("λ", p("lam", "lambda", "lambda_")),
                    ("regulariser", p("reg", "regularizer")),
                    ("CG tolerance", p("tol", "cg_tol", "tolerance")),
                    ("max. iterations", p("max_iter", "iterations")),
                ]
            )
            s.append(
                "Susceptibility was obtained by iterative Tikhonov-regularised least squares"
                f"{cite('tikhonov1963')} solved by conjugate gradients, the consensus "
                f"reference implementation{cite('qsm_consensus_2024')}{_paren(detail)}."
            )
        elif ik in ("tv", "tvadmm", "l1", "tvl1"):
            detail = _clauses(
                [
                    ("λ", p("lam", "lambda", "lambda_")),
                    ("ρ", p("rho")),
                    ("tolerance", p("tol", "tolerance")),
                    ("max. iterations", p("max_iter", "iterations")),
                ]
            )
            if p("rho") is None and p("lam", "lambda") is not None:
                detail += ", ρ = 100 λ"
            s.append(
                "Susceptibility was obtained by total-variation regularised dipole inversion "
                f"solved with ADMM{cite('bilgic2014')}{_paren(detail)}."
            )
        elif ik == "wtv":  # issue 13: the default since then
            detail = _clauses(
                [
                    ("λ", p("lambda", "lam")),
                    ("μ2", p("mu2")),
                    ("iterations", p("max_iter", "iterations")),
                    ("data weight", p("weight")),
                ]
            )
            s.append(
                "Susceptibility was obtained by total-variation regularised dipole inversion "
                "whose data term is weighted inside the brain mask only (linear FANSI model"
                f"{cite('milovic2018')}), solved with ADMM from the first step of the rapid "
                f"two-step inversion{cite('kames2018')} (exact k-space division on the "
                f"well-conditioned k-space region){_paren(detail)}."
            )
        elif ik == "tkd":
            thr = p("threshold", "delta")
            s.append(
                "Susceptibility was obtained by thresholded k-space division (TKD)"
                f"{cite('shmueli2009')}"
                f"{_paren('threshold ' + _num(thr) if thr is not None else '')}; the consensus"
                f"{cite('qsm_consensus_2024')} recommends TKD for quick previews only, not for "
                "quantitative analyses."
            )
        elif ik == "medi":
            s.append(f"Susceptibility was obtained with MEDI{cite('liu2012medi')}.")
        else:
            s.append(f"Susceptibility was obtained by {inv} dipole inversion.")
        ero = _as_float(_get(q, "chimap_erosion_mm"))
        if ero:
            s.append(
                f"The outer {_num(ero)} mm of the background-removal mask were left out of the "
                "reported susceptibility map (least reliable voxels)."
            )
        pad = _stage_param(q, st, None, "pad_mm")
        if pad is not None:
            s.append(f"Fields were zero-padded by {_num(pad)} mm before every FFT.")
        s.append(
            "The dipole kernel was oriented along the B0 direction derived from the image "
            "affine, so oblique acquisitions are handled without resampling."
        )
    ref = _get(q, "reference", "reference_region")
    if isinstance(ref, Mapping):
        ref = _get(ref, "region", "name", "method")
    ref_val = _get(q, "reference_value_ppm", "reference_value")
    if ref is not None:
        rk = _key(ref)
        if rk == "none":
            s.append("No susceptibility referencing was applied (values are relative).")
        else:
            region = {
                "brain": "whole-brain mask",
                "wholebrain": "whole-brain mask",
                "csf": "cerebrospinal fluid",
            }.get(rk, str(ref).replace("_", " "))
            txt = (
                f"Susceptibility values (ppm, paramagnetic positive) are referenced to the mean "
                f"of the {region}"
            )
            if ref_val is not None:
                v = _as_float(ref_val)
                txt += f" (value subtracted: {v:+.4f} ppm)" if v is not None else ""
            s.append(txt + ".")
    return s


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


def _swi_text(sw: Mapping[str, Any], cite: _Citer) -> list[str]:
    hp = _method(sw, "highpass", "high_pass", "HighPassFilter", "swi_highpass")
    if hp is None:
        return []
    s: list[str] = []
    hk = _key(hp)
    n = _get(sw, "mask_power", "MaskPower", "swi_mask_power")
    if hk == "gaussian":
        sig_mm = _get(sw, "gaussian_sigma_mm")
        sig_vox = _get(sw, "gaussian_sigma_vox", "sigma_vox", "sigma")
        sig = (
            f"σ = {_seq(sig_mm)} mm"
            if sig_mm is not None
            else (f"σ = {_seq(sig_vox)} voxels" if sig_vox is not None else "")
        )
        s.append(
            "Susceptibility-weighted images were computed following CLEAR-SWI"
            f"{cite('eckstein2021')}: the "
            + (
                "background-removed local field"
                if "local" in str(_get(sw, "FieldSource") or "")
                else "unwrapped, echo-combined field"
            )
            + f" was high-pass filtered with a Gaussian kernel{_paren(sig)} and expressed as "
            "phase at a reference echo time"
        )
    elif hk == "homodyne":
        win = _get(sw, "homodyne_window", "window")
        s.append(
            "Susceptibility-weighted images were computed following Haacke et al."
            f"{cite('haacke2004')}: the phase was high-pass filtered by homodyne filtering"
            f"{_paren(f'{_num(win)} × {_num(win)} Hanning window' if win is not None else '')}"
        )
    else:
        s.append(f"Susceptibility-weighted images were computed with a {hp} high-pass filter")
    ref_te = _get(sw, "ReferenceEchoTime_s", "reference_te_s")
    if ref_te is not None and hk == "gaussian":
        s[-1] += f" ({_num(float(ref_te) * 1000)} ms)"
    weighting = _get(sw, "magnitude_weighting", "MagnitudeCombination")
    wtxt = {"snr": "SNR-weighted (root-sum-of-squares)", "te": "TE-weighted", "mean": "mean"}.get(
        _key(weighting), str(weighting) if weighting is not None else ""
    )
    s[-1] += (
        f"; the {wtxt + ' ' if wtxt else ''}combined magnitude was multiplied by the negative "
        f"phase mask{' to the power ' + _num(n) if n is not None else ''}"
        f"{cite('haacke2004')}."
    )
    thick = _get(sw, "minip_thickness_mm", "minip_mm")
    if thick is not None:
        mode = _get(sw, "minip_mode")
        s.append(
            f"Minimum-intensity projections were computed over {_num(thick)} mm"
            f"{' sliding' if _key(mode) == 'sliding' else ''} slabs."
        )
    apt = _get(sw, "apt_threshold_rad", "threshold_rad")
    s.append(
        "A phase-iron map (filtered phase with the sign chosen so that iron is positive) gave "
        "the regional mean filtered phase and the Buffalo measures of abnormal phase: the mean "
        "phase of abnormal-phase tissue (MP-APT) and its volume"
        f"{cite('hagemeier2012', 'habib2012')}"
        + (
            f", with a fixed threshold of {_num(apt)} rad"
            if apt is not None
            else ", with per-structure thresholds derived from the healthy controls"
        )
        + "."
    )
    return s


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
    if isinstance(t2s, Mapping):
        stages = _get(t2s, "Stages", "stages") or []
        for st in stages if isinstance(stages, list | tuple) else []:
            tr = str(_get(st, "Transform", "transform", default=""))
            transforms.append(tr.split("[")[0].lower())
            syn = syn or tr.lower().startswith("syn")
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
        if syn:
            txt += cite("avants2008")
        if soft is not None:
            txt += f" in {soft}{cite('tustison2021')}"
        s.append(txt + ".")
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


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


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

"""Methods text of the QSM stages: phase preparation, mask, unwrapping and echo combination,
background field removal, dipole inversion and referencing (one function per stage)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bids_qsm.reports.methods._common import (
    _as_float,
    _Citer,
    _clauses,
    _get,
    _key,
    _method,
    _num,
    _paren,
    _seq,
    _stage_param,
)


def _phase_text(q: Mapping[str, Any]) -> list[str]:
    """Phase rescaling and sign convention."""
    units, sign = _get(q, "phase_units"), _get(q, "phase_sign")
    rescaled = units is not None and _key(units) in ("arbitrary", "au")
    negated = sign is not None and str(sign).strip() in ("-1", "-1.0")
    return [
        text
        for done, text in (
            (
                rescaled,
                "Phase images stored in arbitrary units were rescaled to radians in [-π, π).",
            ),
            (
                negated,
                "The phase was negated (vendor convention) so that paramagnetic "
                "susceptibility is positive.",
            ),
        )
        if done
    ]


def _mask_text(q: Mapping[str, Any]) -> list[str]:
    """Brain mask: user-provided or computed from the magnitude."""
    s: list[str] = []
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
    return s


def _field_text(q: Mapping[str, Any], cite: _Citer, n_echoes: int | None) -> list[str]:
    """Field preparation: phase offsets (MCPC-3D-S), unwrapping, echo combination."""
    s: list[str] = []
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
            repair = (
                " (after a second temporal unwrapping from the field of their neighbours)"
                if _get(q, "unwrap_repair")
                else ""
            )
            txt += (
                f"; voxels whose relative fit residual exceeded {_num(resid)}{repair} were "
                "excluded from the mask"
            )
        mag_min = _get(q, "mask_magnitude_min")
        if isinstance(mag_min, int | float) and mag_min > 0:
            txt += (
                f", as were voxels whose combined magnitude was below {_num(mag_min)} of its "
                "median in the mask (bone and air)"
            )
        s.append(txt + ".")
    return s


#: Iterative background removal methods: how the text names them, and their reference.
_ITERATIVE_BACKGROUND: dict[str, tuple[str, str]] = {
    "pdf": ("by projection onto dipole fields (PDF)", "liu2011"),
    "lbv": ("with the Laplacian boundary value method (LBV)", "zhou2014"),
}


def _background_text(q: Mapping[str, Any], cite: _Citer) -> list[str]:
    """Background field removal."""
    s: list[str] = []
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
        elif bk in _ITERATIVE_BACKGROUND:
            how, ref = _ITERATIVE_BACKGROUND[bk]
            detail = _clauses(
                [
                    ("tolerance", _stage_param(q, st, bk, "tol", "tolerance")),
                    ("max. iterations", _stage_param(q, st, bk, "max_iter", "iterations")),
                ]
            )
            s.append(f"The background field was removed {how}{cite(ref)}{_paren(detail)}.")
        else:
            s.append(f"The background field was removed with {bg}.")
    return s


def _wtv_text(p: Any, cite: _Citer) -> str:
    """The weighted-data-term TV inversion (``p``: its parameter lookup)."""
    detail = _clauses(
        [
            ("λ", p("lambda", "lam")),
            ("μ2", p("mu2")),
            ("iterations", p("max_iter", "iterations")),
            ("data weight", p("weight")),
        ]
    )
    return (
        "Susceptibility was obtained by total-variation regularised dipole inversion "
        "whose data term is weighted inside the brain mask only (linear FANSI model"
        f"{cite('milovic2018')}), solved with ADMM from the first step of the rapid "
        f"two-step inversion{cite('kames2018')} (exact k-space division on the "
        f"well-conditioned k-space region){_paren(detail)}."
    )


def _inversion_text(q: Mapping[str, Any], cite: _Citer) -> list[str]:
    """Dipole inversion, the reported-map erosion, padding and the B0 direction."""
    s: list[str] = []
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
        elif ik == "wtv":
            s.append(_wtv_text(p, cite))
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
    return s


def _reference_text(q: Mapping[str, Any]) -> list[str]:
    """Susceptibility referencing."""
    s: list[str] = []
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


def _qsm_text(q: Mapping[str, Any], cite: _Citer, n_echoes: int | None) -> list[str]:
    """Sentences of the QSM paragraph, one stage after the other (citations numbered in order)."""
    return [
        *_phase_text(q),
        *_mask_text(q),
        *_field_text(q, cite, n_echoes),
        *_background_text(q, cite),
        *_inversion_text(q, cite),
        *_reference_text(q),
    ]

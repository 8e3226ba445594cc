"""Methods text of the SWI and phase-iron (MP-APT) measures."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bids_qsm.reports.methods._common import _Citer, _get, _key, _method, _num, _paren, _seq


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

"""Phase units: detect radians versus arbitrary scanner units and rescale to [-pi, pi).

Scanners and converters export phase either in radians or in arbitrary units (integers in
-4096..4095, 0..4095, or scaled floats such as +-0.0037). Arbitrary units are mapped to
radians by min/max rescaling of the full range onto [-pi, pi).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from bids_qsm.errors import InputDataError

PhaseUnits = Literal["rad", "arbitrary"]

# Phase in radians spans at most [-pi, pi] (some tools store [0, 2 pi)); allow float slack.
_RAD_TOLERANCE = 1e-3


def detect_phase_units(phase: np.ndarray) -> PhaseUnits:
    """Return ``"rad"`` if the finite values look like radians, else ``"arbitrary"``.

    Radians: the range lies within [-pi, pi] or [0, 2 pi] and spans more than pi (a wrapped
    phase image covers most of the circle). Anything else (vendor integers, tiny scaled
    floats such as +-0.0037) is arbitrary.
    """
    finite = phase[np.isfinite(phase)]
    if finite.size == 0:
        raise ValueError("phase image has no finite values")
    lo, hi = float(finite.min()), float(finite.max())
    span = hi - lo
    in_sym = lo >= -np.pi - _RAD_TOLERANCE and hi <= np.pi + _RAD_TOLERANCE
    in_pos = lo >= -_RAD_TOLERANCE and hi <= 2 * np.pi + _RAD_TOLERANCE
    if (in_sym or in_pos) and span > np.pi:
        return "rad"
    return "arbitrary"


def rescale_to_radians(phase: np.ndarray, units: PhaseUnits | None = None) -> np.ndarray:
    """Phase in radians in [-pi, pi) (float32).

    ``units=None`` detects them. Arbitrary units are min/max rescaled onto [-pi, pi);
    radians are re-wrapped into [-pi, pi) (so [0, 2 pi) inputs are handled too).
    """
    phase = np.asarray(phase, dtype=np.float32)
    if units is None:
        units = detect_phase_units(phase)
    if units == "arbitrary":
        finite = phase[np.isfinite(phase)]
        lo, hi = float(finite.min()), float(finite.max())
        if hi <= lo:
            raise ValueError("phase image is constant: cannot rescale arbitrary units")
        # Integer exports cover [lo, hi] with hi = lo + (2^n - 1); map lo -> -pi, hi+step -> pi.
        out = (phase - lo) / (hi - lo) * np.float32(2 * np.pi) - np.float32(np.pi)
    else:
        out = phase.copy()
    return wrap_to_pi(out)


def wrap_to_pi(phase: np.ndarray) -> np.ndarray:
    """Wrap angles (rad) into [-pi, pi) (float32)."""
    two_pi = np.float32(2 * np.pi)
    return (
        np.mod(np.asarray(phase, dtype=np.float32) + np.float32(np.pi), two_pi) - np.float32(np.pi)
    ).astype(np.float32)


def apply_phase_sign(phase: np.ndarray, sign: int = 1) -> np.ndarray:
    """Phase (rad) with the vendor sign convention applied, re-wrapped to [-pi, pi).

    bids-qsm expects phase that decreases over echo time in paramagnetic tissue (the Siemens /
    Philips convention), so that susceptibility comes out paramagnetic-positive. Vendors whose
    phase runs the other way (GE) need ``sign=-1``; check that veins and the globus pallidus are
    positive on the Chimap.
    """
    if sign not in (1, -1):
        raise ValueError(f"phase sign must be +1 or -1, got {sign}")
    phase = np.asarray(phase, dtype=np.float32)
    return phase.copy() if sign == 1 else wrap_to_pi(-phase)


def combine_magnitude(
    mag: np.ndarray, te_s: Sequence[float] | None = None, weighting: str = "snr"
) -> np.ndarray:
    """Combine multi-echo magnitude (X, Y, Z, E) into one image (float32, same unit as input).

    The one implementation, used by the QSM mask and the SWI (``bids_qsm.swi.swi`` imports it).

    ``combined = sum_k w_k M_k / sqrt(sum_k w_k^2)`` (unit noise gain for equal per-echo noise).

    * ``"snr"`` (default): ``w_k = M_k`` (matched filter, SNR-optimal for equal noise), which
      reduces to the root-sum-of-squares ``sqrt(sum_k M_k^2)``.
    * ``"te"``: ``w_k = TE_k M_k`` (CLEAR-SWI's contrast-weighted option: more T2* contrast).
    * ``"mean"``: plain average of the echoes.

    A 3D input is returned unchanged (as float32).
    """
    mag = np.asarray(mag, dtype=np.float32)
    if mag.ndim == 3:
        return mag.copy()
    if mag.ndim != 4:
        raise InputDataError(f"magnitude must be 3D or 4D, got shape {mag.shape}")
    if weighting == "snr":
        return np.sqrt(np.einsum("...e,...e->...", mag, mag, dtype=np.float32))
    if weighting == "mean":
        return mag.mean(axis=-1, dtype=np.float32)
    if weighting == "te":
        if te_s is None or len(te_s) != mag.shape[-1]:
            raise InputDataError("TE weighting needs one echo time per echo")
        te = np.asarray(te_s, dtype=np.float32)
        w = mag * te
        num = np.einsum("...e,...e->...", w, mag, dtype=np.float32)
        den = np.sqrt(np.einsum("...e,...e->...", w, w, dtype=np.float32))
        with np.errstate(divide="ignore", invalid="ignore"):
            out = num / den
        out[~np.isfinite(out)] = 0.0
        return out
    raise ValueError(f"unknown magnitude weighting {weighting!r} (snr, te, mean)")

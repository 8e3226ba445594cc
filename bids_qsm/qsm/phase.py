"""Phase units: detect radians versus arbitrary scanner units and rescale to [-pi, pi).

Scanners and converters export phase either in radians or in arbitrary units (integers in
-4096..4095, 0..4095, or scaled floats such as +-0.0037). Arbitrary units are mapped to
radians by min/max rescaling of the full range onto [-pi, pi).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

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

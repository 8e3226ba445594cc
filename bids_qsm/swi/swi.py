"""Magnitude combination, Haacke negative-phase mask and the SWI image.

The phase entering :func:`phase_mask` is the SWI filtered phase (rad) in the **SWI sign
convention: paramagnetic negative** (veins and iron have phi < 0 and are darkened).
"""

from __future__ import annotations

import numpy as np

from bids_qsm.qsm.phase import combine_magnitude

__all__ = ["combine_magnitude", "phase_mask", "swi_image"]


def phase_mask(swi_phase_rad: np.ndarray, power: int = 1) -> np.ndarray:
    """Haacke negative-phase mask (float32 in [0, 1]), raised to ``power``.

    ``m = (pi + phi) / pi`` for ``-pi < phi < 0``, ``m = 1`` for ``phi >= 0`` and ``m = 0`` for
    ``phi <= -pi`` (the Gaussian path is not wrapped, so phases beyond -pi are possible).
    ``phi`` is in the SWI convention (paramagnetic negative).
    """
    phi = np.asarray(swi_phase_rad, dtype=np.float32)
    m = np.clip((np.float32(np.pi) + phi) / np.float32(np.pi), 0.0, 1.0).astype(np.float32)
    if power != 1:
        m = m ** np.float32(power)
    return m


def swi_image(combined_mag: np.ndarray, swi_phase_rad: np.ndarray, power: int = 4) -> np.ndarray:
    """SWI = combined magnitude x (negative-phase mask)^power (float32, magnitude units)."""
    return (np.asarray(combined_mag, np.float32) * phase_mask(swi_phase_rad, power)).astype(
        np.float32
    )

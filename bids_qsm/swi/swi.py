"""Magnitude combination, Haacke negative-phase mask and the SWI image.

The phase entering :func:`phase_mask` is the SWI filtered phase (rad) in the **SWI sign
convention: paramagnetic negative** (veins and iron have phi < 0 and are darkened).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bids_qsm.errors import InputDataError

__all__ = ["combine_magnitude", "phase_mask", "swi_image"]


def combine_magnitude(
    mag: np.ndarray, te_s: Sequence[float] | None = None, weighting: str = "snr"
) -> np.ndarray:
    """Combine multi-echo magnitude (X, Y, Z, E) into one image (float32, same unit as input).

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

"""Acquisition presets: tiny (unit tests), small (demo), full (benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass

from bids_qsm.errors import UsageError


@dataclass(frozen=True)
class Preset:
    """GRE and T1w protocol of a preset (mm; SNR of echo-1 brain magnitude)."""

    name: str
    voxel_mm: tuple[float, float, float]
    fov_mm: tuple[float, float, float]
    snr: float
    t1w_voxel_mm: float
    #: The 1 mm truth is block-averaged by this factor before the field computation.
    compute_factor: int = 1
    t1w_fov_mm: tuple[float, float, float] = (240.0, 240.0, 176.0)  # AP, SI, LR (PIR order)


#: GRE field of view (LR, AP, SI) covers the whole head down to the skull base.
PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", (3.0, 3.0, 3.0), (192.0, 228.0, 174.0), 150.0, 2.0, compute_factor=2),
    "small": Preset("small", (2.0, 2.0, 2.0), (192.0, 228.0, 174.0), 100.0, 1.5),
    "full": Preset("full", (1.0, 1.0, 1.0), (192.0, 228.0, 174.0), 40.0, 1.0),
}

DEFAULT_TE_S: tuple[float, ...] = (0.004, 0.010, 0.016, 0.022)


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (UsageError if unknown)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None

"""SWI pipeline: high-pass phase -> phase mask -> SWI -> minIP, plus the phase-iron map.

Sign conventions (written into ``SWIResult.parameters``)
-------------------------------------------------------
* Inputs (``phase_rad``, ``field_hz``) are in the bids-qsm internal convention after the vendor
  phase-sign option: positive = paramagnetic (veins, iron), signal ``M exp(+i 2 pi f TE)``.
* ``hp_phase_rad`` (the *SWI filtered phase*) is in the SWI/Haacke convention:
  **paramagnetic negative**, radians at the reference echo time ``reference_te_s``:
  Gaussian path ``hp_phase = -2 pi TE_ref hp(field_hz)``; homodyne path
  ``hp_phase = -(TE_ref / TE_echo) homodyne(echo)``.
* ``phase_iron_rad = -hp_phase_rad``: **iron positive**, rad at ``reference_te_s``.
* ``swi = combined magnitude x m^n`` with Haacke's mask ``m = (pi + phi)/pi`` for phi < 0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bids_qsm.errors import InputDataError, UsageError
from bids_qsm.swi.highpass import (
    field_from_phase,
    gaussian_highpass,
    homodyne_highpass,
    sigma_mm_to_vox,
)
from bids_qsm.swi.minip import minip, slab_voxels
from bids_qsm.swi.swi import combine_magnitude, swi_image

LOGGER = logging.getLogger("bids_qsm.swi")

__all__ = ["DEFAULT_REFERENCE_TE_S", "SWIOptions", "SWIResult", "compute_swi"]

#: Without an explicit reference TE, the acquired echo closest to this (Haacke's classic 3 T
#: SWI echo time, 20 ms) is used, so that both high-pass paths express phase at a real echo.
DEFAULT_REFERENCE_TE_S: float = 0.020


@dataclass
class SWIOptions:
    """Settings of the SWI stage (every value is reported in the output sidecars).

    Attributes
    ----------
    highpass : ``"gaussian"`` (default for multi-echo; CLEAR-SWI style Gaussian high-pass of the
        unwrapped combined field) or ``"homodyne"`` (Haacke; Hanning window on one echo's complex
        signal, the usual choice for single-echo data).
    gaussian_sigma_vox : Gaussian standard deviation per axis (voxels); 0 = no smoothing along
        that axis (default [4, 4, 0]: in-plane only, as in CLEAR-SWI).
    gaussian_sigma_mm : if set, overrides ``gaussian_sigma_vox`` (mm per axis).
    homodyne_window : Hanning window width in k-space samples (per in-plane axis).
    homodyne_echo : 0-based echo for the homodyne path; None = echo closest to the reference TE.
    mask_power : n in ``SWI = magnitude x m^n``.
    magnitude_weighting : ``"snr"`` (root-sum-of-squares = SNR-optimal), ``"te"`` or ``"mean"``.
    minip_thickness_mm : minIP slab thickness (mm). 8 mm: about four 2 mm slices, the range
        used clinically for venography (CLEAR-SWI uses ~7 slices of 1-1.5 mm).
    minip_mode : ``"sliding"`` (same geometry as the input) or ``"slabs"`` (non-overlapping).
    slice_axis : voxel axis along which minIP slabs are taken and homodyne slices are cut.
    reference_te_s : TE (s) at which the filtered field is expressed as a phase; None = the
        acquired echo closest to 20 ms.
    apt_threshold_rad : fixed per-run abnormal-phase threshold in phase-iron units (rad at the
        reference TE, iron positive): voxels above it are "abnormal". It scales with B0 x TE;
        the control-derived per-structure threshold of the group level is preferred.
    n_threads : FFT worker threads.
    """

    highpass: str = "gaussian"
    gaussian_sigma_vox: tuple[float, float, float] = (4.0, 4.0, 0.0)
    gaussian_sigma_mm: tuple[float, float, float] | None = None
    homodyne_window: int = 64
    homodyne_echo: int | None = None
    mask_power: int = 4
    magnitude_weighting: str = "snr"
    minip_thickness_mm: float = 8.0
    minip_mode: str = "sliding"
    slice_axis: int = 2
    reference_te_s: float | None = None
    apt_threshold_rad: float = 0.1
    n_threads: int = 1

    def __post_init__(self) -> None:
        if self.highpass not in ("gaussian", "homodyne"):
            raise UsageError(
                f"SWI high-pass must be 'gaussian' or 'homodyne', not {self.highpass!r}"
            )
        if self.magnitude_weighting not in ("snr", "te", "mean"):
            raise UsageError(f"unknown SWI magnitude weighting {self.magnitude_weighting!r}")
        if self.minip_mode not in ("sliding", "slabs"):
            raise UsageError(f"unknown minIP mode {self.minip_mode!r}")
        if int(self.mask_power) < 1 or int(self.homodyne_window) < 2:
            raise UsageError("SWI mask power must be >= 1 and the homodyne window >= 2 samples")
        if self.minip_thickness_mm <= 0:
            raise UsageError("minIP slab thickness must be positive (mm)")
        if self.slice_axis not in (0, 1, 2):
            raise UsageError("slice axis must be 0, 1 or 2")
        if self.reference_te_s is not None and self.reference_te_s <= 0:
            raise UsageError("reference TE must be positive (s)")
        for name in ("gaussian_sigma_vox", "gaussian_sigma_mm"):
            val = getattr(self, name)
            if val is None:
                continue
            if len(val) != 3 or any(float(v) < 0 for v in val):
                raise UsageError(f"{name} needs three non-negative values (x, y, z)")
            setattr(self, name, tuple(float(v) for v in val))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML-serialisable dict of the options (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class SWIResult:
    """Outputs of :func:`compute_swi` (all float32, shape (X, Y, Z))."""

    swi: np.ndarray  #: SWI image (magnitude units)
    minip: np.ndarray  #: minIP of the SWI (magnitude units)
    hp_phase_rad: np.ndarray  #: SWI filtered phase, rad at reference TE, paramagnetic negative
    phase_iron_rad: np.ndarray  #: = -hp_phase_rad, iron positive, zero outside the mask
    parameters: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    magnitude: np.ndarray | None = None  #: combined magnitude before the phase mask


def _as4d(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4:
        raise InputDataError(f"{name} must be 3D or 4D (X, Y, Z, echo), got shape {a.shape}")
    return a


def compute_swi(
    mag: np.ndarray,
    phase_rad: np.ndarray | None,
    te_s: Sequence[float],
    voxel_size: np.ndarray,
    mask: np.ndarray,
    field_hz: np.ndarray | None = None,
    options: SWIOptions | None = None,
) -> SWIResult:
    """SWI, minIP, SWI filtered phase and phase-iron map from (multi-)echo GRE.

    Parameters
    ----------
    mag : (X, Y, Z, E) or (X, Y, Z) magnitude.
    phase_rad : same shape, wrapped phase (rad, internal sign: paramagnetic positive), or None
        when ``field_hz`` is given and the Gaussian path is used.
    te_s : echo times (s), one per echo.
    voxel_size : voxel edge lengths (mm).
    mask : (X, Y, Z) brain mask.
    field_hz : unwrapped combined field (Hz, paramagnetic positive) from the QSM core, used by
        the Gaussian path. If None, the Gaussian path estimates it from ``phase_rad`` by
        Laplacian unwrapping and a weighted linear fit (adequate for SWI only).
    options : :class:`SWIOptions` (defaults if None).
    """
    opt = options or SWIOptions()
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    mag4 = _as4d(mag, "magnitude")
    te = np.asarray(te_s, dtype=np.float64).ravel()
    vs = np.asarray(voxel_size, dtype=np.float64).ravel()
    m = np.asarray(mask, dtype=bool)
    ne = mag4.shape[-1]
    if te.size != ne:
        raise InputDataError(f"{te.size} echo times for {ne} magnitude echoes")
    if m.shape != mag4.shape[:3] or vs.size != 3:
        raise InputDataError(f"mask {m.shape} / voxel size {vs.shape} do not match {mag4.shape}")
    ph4 = None if phase_rad is None else _as4d(phase_rad, "phase")
    if ph4 is not None and ph4.shape != mag4.shape:
        raise InputDataError(f"phase {ph4.shape} and magnitude {mag4.shape} shapes differ")

    ref_te = (
        float(opt.reference_te_s)
        if opt.reference_te_s is not None
        else float(te[np.argmin(np.abs(te - DEFAULT_REFERENCE_TE_S))])
    )
    params: dict[str, Any] = {
        "options": opt.to_dict(),
        "ReferenceEchoTime_s": ref_te,
        "EchoTime_s": te.tolist(),
        "HighPassFilter": opt.highpass,
        "FilteredPhaseSign": "paramagnetic negative (SWI/Haacke convention)",
        "PhaseIronSign": "iron (paramagnetic) positive; phase_iron = -filtered phase",
        "FilteredPhaseUnits": "rad at ReferenceEchoTime_s",
        "PhaseMask": "m = (pi + phi)/pi for -pi < phi < 0, 1 for phi >= 0, 0 for phi <= -pi",
        "MaskPower": int(opt.mask_power),
        "MagnitudeCombination": opt.magnitude_weighting,
    }

    t0 = time.perf_counter()
    comb = combine_magnitude(mag4, te, opt.magnitude_weighting)
    timings["magnitude_combination"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if opt.highpass == "gaussian":
        sigma = (
            sigma_mm_to_vox(opt.gaussian_sigma_mm, vs)
            if opt.gaussian_sigma_mm is not None
            else tuple(opt.gaussian_sigma_vox)
        )
        if field_hz is None:
            if ph4 is None:
                raise InputDataError("the Gaussian SWI high-pass needs field_hz or the phase")
            fld = field_from_phase(mag4, ph4, te, vs, opt.n_threads)
            params["FieldSource"] = "Laplacian unwrapping + weighted linear fit (SWI fallback)"
        else:
            fld = np.asarray(field_hz, dtype=np.float32)
            if fld.shape != m.shape:
                raise InputDataError(f"field_hz shape {fld.shape} differs from mask {m.shape}")
            params["FieldSource"] = "unwrapped combined field from the QSM core"
        timings["field_estimate"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        hp_field = gaussian_highpass(fld, m, sigma)
        hp_phase = (np.float32(-2.0 * np.pi * ref_te) * hp_field).astype(np.float32)
        params["GaussianSigma_vox"] = [float(s) for s in sigma]
        params["GaussianSigma_mm"] = [float(s * d) for s, d in zip(sigma, vs, strict=True)]
        if max(params["GaussianSigma_mm"]) > 6.0:
            # Too smooth a low-pass leaves skull-base background curvature in deep gray matter.
            LOGGER.warning(
                "SWI Gaussian high-pass sigma is %s mm (voxels of %s mm): consider "
                "gaussian_sigma_mm of about 4 mm in-plane",
                [round(v, 1) for v in params["GaussianSigma_mm"]],
                [round(float(v), 2) for v in vs],
            )
    else:
        if ph4 is None:
            raise InputDataError("the homodyne SWI high-pass needs the phase")
        e = (
            int(np.argmin(np.abs(te - ref_te)))
            if opt.homodyne_echo is None
            else int(opt.homodyne_echo)
        )
        if not 0 <= e < ne:
            raise UsageError(f"homodyne echo {e} out of range (0..{ne - 1})")
        hp = homodyne_highpass(
            mag4[..., e], ph4[..., e], opt.homodyne_window, opt.slice_axis, opt.n_threads
        )
        # Internal sign (paramagnetic positive) -> SWI sign, rescaled to the reference TE.
        hp_phase = (np.float32(-ref_te / te[e]) * hp).astype(np.float32)
        hp_phase[~m] = 0.0
        params["HomodyneEcho"] = e
        params["HomodyneEchoTime_s"] = float(te[e])
        params["HomodyneWindow_samples"] = int(opt.homodyne_window)
    timings["highpass"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    swi = swi_image(comb, hp_phase, int(opt.mask_power))
    timings["swi"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    mip = minip(swi, opt.minip_thickness_mm, vs, axis=opt.slice_axis, mode=opt.minip_mode)
    timings["minip"] = time.perf_counter() - t0
    params["MinIPSlices"] = slab_voxels(opt.minip_thickness_mm, float(vs[opt.slice_axis]))
    params["MinIPThickness_mm"] = float(opt.minip_thickness_mm)
    params["MinIPMode"] = opt.minip_mode
    params["MinIPAxis"] = int(opt.slice_axis)

    phase_iron = np.where(m, -hp_phase, np.float32(0.0)).astype(np.float32)
    params["AbnormalPhaseThreshold_rad"] = float(opt.apt_threshold_rad)
    timings["total"] = time.perf_counter() - t_all
    return SWIResult(
        swi=swi,
        minip=mip,
        hp_phase_rad=hp_phase,
        phase_iron_rad=phase_iron,
        parameters=params,
        timings_s=timings,
        magnitude=comb,
    )

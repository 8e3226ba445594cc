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
from bids_qsm.methods import DEFAULT_SWI_HIGHPASS, SWI_HIGHPASS_METHODS
from bids_qsm.qsm.geometry import ppm_to_hz
from bids_qsm.swi.dipole_roi import phase_quality_mask
from bids_qsm.swi.highpass import (
    field_from_phase,
    gaussian_highpass,
    homodyne_highpass,
    sigma_mm_to_vox,
)
from bids_qsm.swi.minip import minip, slab_voxels
from bids_qsm.swi.phase_iron import participant_threshold
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
        unwrapped field) or ``"homodyne"`` (Haacke; Hanning window on one echo's complex
        signal, the usual choice for single-echo data).
    field_source : ``"local"`` (default): the Gaussian path high-passes the background-removed
        local field of the QSM core (V-SHARP/PDF/LBV) when it is given, which removes the
        air-tissue background that otherwise dominates the filtered phase near the skull
        base; voxels outside the local-field mask take the high-passed total field (SWI image
        only). ``"total"``: always the total field (classic CLEAR-SWI).
    gaussian_sigma_mm : Gaussian standard deviation per axis in mm (default [2, 2, 0]: in-plane
        only; chosen by measurement on the simulator, see ``docs/methods_swi.md``).
    gaussian_sigma_vox : if set, overrides ``gaussian_sigma_mm`` (voxels per axis).
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
    apt_threshold_rad : participant-level abnormal-phase threshold in phase-iron units (rad at
        the reference TE, iron positive): voxels above it are "abnormal". None (default): the
        run's own brain mean + 2 SD of the phase-iron map
        (:func:`bids_qsm.swi.phase_iron.participant_threshold`), which follows B0, TE and
        noise; the control-derived per-structure threshold of the group level is preferred.
    quality_edge_mm, quality_r2star_max_hz, quality_residual_max : phase-quality mask of the
        phase-iron map (:func:`bids_qsm.swi.dipole_roi.phase_quality_mask`): voxels closer
        than this to the brain edge (mm), with R2* above this (Hz at 3 T, scaled with B0) or
        an echo-fit residual above this are set to NaN (background field dominates there).
    n_threads : FFT worker threads.
    """

    highpass: str = DEFAULT_SWI_HIGHPASS
    field_source: str = "local"
    gaussian_sigma_mm: tuple[float, float, float] | None = (2.0, 2.0, 0.0)
    gaussian_sigma_vox: tuple[float, float, float] | None = None
    homodyne_window: int = 64
    homodyne_echo: int | None = None
    mask_power: int = 4
    magnitude_weighting: str = "snr"
    minip_thickness_mm: float = 8.0
    minip_mode: str = "sliding"
    slice_axis: int = 2
    reference_te_s: float | None = None
    apt_threshold_rad: float | None = None
    quality_edge_mm: float = 4.0
    quality_r2star_max_hz: float = 80.0
    quality_residual_max: float = 0.3
    n_threads: int = 1

    def __post_init__(self) -> None:
        if self.highpass not in SWI_HIGHPASS_METHODS:
            raise UsageError(
                f"SWI high-pass must be 'gaussian' or 'homodyne', not {self.highpass!r}"
            )
        if self.field_source not in ("local", "total"):
            raise UsageError(f"SWI field source must be 'local' or 'total': {self.field_source!r}")
        if self.gaussian_sigma_mm is None and self.gaussian_sigma_vox is None:
            raise UsageError("give the SWI Gaussian width in mm (gaussian_sigma_mm) or voxels")
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
    #: = -hp_phase_rad, iron positive; 0 outside the mask, NaN where background dominates
    phase_iron_rad: np.ndarray
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


def _gaussian_phase(
    mag4: np.ndarray,
    ph4: np.ndarray | None,
    te: np.ndarray,
    vs: np.ndarray,
    m: np.ndarray,
    ref_te: float,
    opt: SWIOptions,
    field_hz: np.ndarray | None,
    local_hz: np.ndarray | None,
    local_mask: np.ndarray | None,
    params: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray]:
    """SWI filtered phase (rad at ref TE, paramagnetic negative) and the mask it is valid in."""
    sigma = (
        tuple(float(s) for s in opt.gaussian_sigma_vox)
        if opt.gaussian_sigma_vox is not None
        else sigma_mm_to_vox(opt.gaussian_sigma_mm, vs)
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
    hp_field = gaussian_highpass(fld, m, sigma)
    valid = m
    if opt.field_source == "local" and local_hz is not None:
        lm = m if local_mask is None else (np.asarray(local_mask, bool) & m)
        if local_hz.shape != m.shape:
            raise InputDataError(f"local field shape {local_hz.shape} differs from {m.shape}")
        hp_local = gaussian_highpass(np.asarray(local_hz, np.float32), lm, sigma)
        hp_field = np.where(lm, hp_local, hp_field)
        valid = lm
        params["FieldSource"] = (
            "background-removed local field from the QSM core (total field outside its mask)"
        )
    params["PhaseIronFieldSource"] = (
        "local" if valid is not m else ("total" if field_hz is not None else "fallback")
    )
    hp_phase = (np.float32(-2.0 * np.pi * ref_te) * hp_field).astype(np.float32)
    params["GaussianSigma_vox"] = [float(s) for s in sigma]
    params["GaussianSigma_mm"] = [float(s * d) for s, d in zip(sigma, vs, strict=True)]
    if max(params["GaussianSigma_mm"]) > 6.0:
        # Too smooth a low-pass leaves skull-base background curvature in deep gray matter.
        LOGGER.warning(
            "SWI Gaussian high-pass sigma is %s mm (voxels of %s mm): consider "
            "gaussian_sigma_mm of about 2 mm in-plane",
            [round(v, 1) for v in params["GaussianSigma_mm"]],
            [round(float(v), 2) for v in vs],
        )
    return hp_phase, valid


def _homodyne_phase(
    mag4: np.ndarray,
    ph4: np.ndarray | None,
    te: np.ndarray,
    m: np.ndarray,
    ref_te: float,
    opt: SWIOptions,
    params: dict[str, Any],
) -> np.ndarray:
    """Homodyne SWI filtered phase (rad at ref TE, paramagnetic negative), 0 outside ``m``."""
    if ph4 is None:
        raise InputDataError("the homodyne SWI high-pass needs the phase")
    ne = mag4.shape[-1]
    e = int(np.argmin(np.abs(te - ref_te))) if opt.homodyne_echo is None else int(opt.homodyne_echo)
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
    params["PhaseIronFieldSource"] = "echo phase (homodyne)"
    return hp_phase


_Checked = tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]


def _check_inputs(
    mag: np.ndarray,
    phase_rad: np.ndarray | None,
    te_s: Sequence[float],
    voxel_size: np.ndarray,
    mask: np.ndarray,
) -> _Checked:
    """(magnitude 4D, phase 4D or None, echo times s, voxel size mm, mask), shapes checked."""
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
    return mag4, ph4, te, vs, m


def _base_parameters(opt: SWIOptions, te: np.ndarray, ref_te: float) -> dict[str, Any]:
    """Sidecar parameters known before filtering (conventions, echo times in s)."""
    return {
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


def _phase_iron(
    hp_phase: np.ndarray,
    valid: np.ndarray,
    m: np.ndarray,
    vs: np.ndarray,
    opt: SWIOptions,
    b0_tesla: float,
    r2star_hz: np.ndarray | None,
    fit_residual: np.ndarray | None,
    params: dict[str, Any],
) -> np.ndarray:
    """Phase-iron map (rad, iron positive; NaN outside the phase-quality mask) and, in
    ``params``, the quality mask and the abnormal-phase threshold."""
    r2max = float(opt.quality_r2star_max_hz) * float(b0_tesla) / 3.0
    quality = valid & phase_quality_mask(
        m,
        vs,
        edge_mm=float(opt.quality_edge_mm),
        r2star_hz=r2star_hz,
        r2star_max_hz=r2max,
        fit_residual=fit_residual,
        residual_max=float(opt.quality_residual_max),
    )
    phase_iron = np.where(m, -hp_phase, np.float32(0.0)).astype(np.float32)
    phase_iron[m & ~quality] = np.nan
    params["PhaseQualityMask"] = {
        "Description": "phase-iron is n/a (NaN) in brain voxels excluded as background-dominated",
        "EdgeDistance_mm": float(opt.quality_edge_mm),
        "R2starMax_Hz": r2max if r2star_hz is not None else None,
        "FitResidualMax": float(opt.quality_residual_max) if fit_residual is not None else None,
        "ExcludedFraction": float(1.0 - quality.sum() / max(int(m.sum()), 1)),
    }
    if opt.apt_threshold_rad is None:
        thr = participant_threshold(phase_iron, m)  # NaN: too few phase-quality voxels
        params["AbnormalPhaseThresholdRule"] = "brain mean + 2 SD of this run's phase iron"
    else:
        thr = float(opt.apt_threshold_rad)
        params["AbnormalPhaseThresholdRule"] = "fixed (apt_threshold_rad)"
    params["AbnormalPhaseThreshold_rad"] = float(thr) if np.isfinite(thr) else None
    return phase_iron


def compute_swi(
    mag: np.ndarray,
    phase_rad: np.ndarray | None,
    te_s: Sequence[float],
    voxel_size: np.ndarray,
    mask: np.ndarray,
    field_hz: np.ndarray | None = None,
    options: SWIOptions | None = None,
    *,
    local_field_ppm: np.ndarray | None = None,
    local_mask: np.ndarray | None = None,
    b0_tesla: float = 3.0,
    r2star_hz: np.ndarray | None = None,
    fit_residual: np.ndarray | None = None,
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
    local_field_ppm, local_mask : background-removed local field (ppm) of the QSM core and the
        mask it is defined in; with ``field_source="local"`` the phase-iron map comes from it.
    b0_tesla : field strength (T): converts the local field to Hz and scales the R2* limit.
    r2star_hz, fit_residual : optional quality maps for the phase-quality mask.
    """
    opt = options or SWIOptions()
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    mag4, ph4, te, vs, m = _check_inputs(mag, phase_rad, te_s, voxel_size, mask)
    ref_te = (
        float(opt.reference_te_s)
        if opt.reference_te_s is not None
        else float(te[np.argmin(np.abs(te - DEFAULT_REFERENCE_TE_S))])
    )
    params = _base_parameters(opt, te, ref_te)

    t0 = time.perf_counter()
    comb = combine_magnitude(mag4, te, opt.magnitude_weighting)
    timings["magnitude_combination"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    valid = m
    if opt.highpass == "gaussian":
        local_hz = (
            None
            if local_field_ppm is None
            else ppm_to_hz(np.asarray(local_field_ppm, np.float32), b0_tesla)
        )
        hp_phase, valid = _gaussian_phase(
            mag4, ph4, te, vs, m, ref_te, opt, field_hz, local_hz, local_mask, params
        )
    else:
        hp_phase = _homodyne_phase(mag4, ph4, te, m, ref_te, opt, params)
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

    phase_iron = _phase_iron(hp_phase, valid, m, vs, opt, b0_tesla, r2star_hz, fit_residual, params)
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

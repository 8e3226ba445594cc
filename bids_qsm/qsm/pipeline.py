"""Top-level QSM reconstruction: magnitude + phase (rad) -> referenced susceptibility (ppm).

Default pipeline (ISMRM consensus 2024): magnitude brain mask; MCPC-3D-S offset removal with one
exact (quality-guided) spatial unwrap and temporal unwrapping of the echoes; SNR-weighted field
fit over TE (at the mask edge the coarse-grid unwrap is grown from sure voxels, and failed
echo fits are unwrapped again in time from their neighbours); voxels with relative fit
residual > 0.3 excluded, then voxels that are not brain tissue by their signal decay (R2* above
100 Hz at 3 T: bone and air partial volume) or their magnitude (below 0.1 of the median:
noise-level bone and air) excluded without hole filling; a 1-voxel erosion; LBV background
removal; weighted-data-term TV inversion (``wtv``, from RTS step 1), a 2 mm erosion of the
reported mask; whole-brain reference. Every stage is a function of its own module and can be
called separately; all work happens inside the mask bounding box.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import errors
from ..methods import QSMMethodChoices
from .stages import (  # noqa: F401 (re-exported)
    ALGORITHM_NAMES,
    BG_REMOVAL,
    BG_REMOVAL_REGISTRY,
    INVERSION,
    INVERSION_REGISTRY,
    MASK_R2STAR_HZ_PER_TESLA,
    REFERENCE,
    UNWRAPPING,
    Inputs,
    _as_4d,
    _user_field,
    compute_mask,
    invert_field,
    prepare_field,
    prepare_inputs,
    reference_susceptibility,
    remove_background,
)


@dataclass
class QSMOptions(QSMMethodChoices):
    """Every algorithm choice and parameter of :func:`reconstruct_qsm` (units in names)."""

    # mask
    mask_threshold_scale: float = 0.5
    mask_opening_radius_mm: float = 4.0
    residual_threshold: float = 0.3
    # Voxels with R2* above this (Hz) are not brain tissue (bone/air partial volume) and leave
    # the mask, holes included; None: 100 Hz x B0 / 3 T; 0 disables (multi-echo only).
    mask_r2star_max_hz: float | None = None
    # Voxels whose combined magnitude is below this fraction of the median in the mask have no
    # usable phase (bone, air) and leave the mask, holes included; 0 disables.
    mask_magnitude_min: float = 0.1
    mask_erosion_vox: int = 1  # erosion before background removal (consensus: 1 voxel)
    # unwrapping / phase offset (MCPC-3D-S)
    unwrap_downsample: int | None = None  # None: auto, coarse grid of about 2 mm; 1: full res
    # on the coarse grid: edge and steep-phase voxels unwrapped by growing from sure ones
    unwrap_edge_grow: bool = True
    # voxels with residual > residual_threshold are unwrapped again in time from their
    # neighbours' field (repairs 2 pi errors of the spatial unwrap; multi-echo, quality only)
    unwrap_repair: bool = True
    mcpc_sigma_vox: tuple[float, float, float] = (10.0, 10.0, 5.0)
    mcpc_refine_passes: int = 1
    mcpc_poly_degree: int = 3  # polynomial part of the offset fitted first (0: Gaussian only)
    # V-SHARP
    vsharp_max_radius_mm: float = 12.0
    vsharp_min_radius_mm: float | None = None  # None: two (largest) voxel edges
    vsharp_step_mm: float | None = None  # None: two (largest) voxel edges
    vsharp_threshold: float = 0.05
    # PDF
    pdf_tol: float = 1e-3
    pdf_max_iter: int = 100
    pdf_pad_mm: float = 30.0
    # LBV
    lbv_tol: float = 1e-2
    lbv_max_iter: int = 100
    # inversion
    # The Chimap mask is the background-removal mask eroded by this (mm) after the inversion:
    # the outermost voxels (noisiest field, least constrained susceptibility) are not reported.
    chimap_erosion_mm: float = 2.0
    inversion_pad_mm: float = 12.0
    tkd_threshold: float = 0.15
    tikhonov_lambda: float = 0.01
    tikhonov_reg: str = "gradient"  # "gradient" (lambda ||grad chi||^2) or "identity"
    tikhonov_tol: float = 0.03
    tikhonov_max_iter: int = 100
    tv_lambda: float = 1e-3
    tv_rho: float | None = None  # None: 100 * tv_lambda
    tv_tol: float = 1e-3
    tv_max_iter: int = 250
    rts_delta: float = 0.15
    rts_mu: float = 1e5
    rts_rho: float = 10.0
    rts_tol: float = 1e-2
    rts_max_iter: int = 20
    rts_lsmr_iter: int | None = None  # None: exact on the well-conditioned cone
    # weighted-data-term TV ("wtv", bids_qsm.qsm.wtv), started from RTS
    wtv_lambda: float = 3e-4
    wtv_mu1: float | None = None  # None: 100 * wtv_lambda
    wtv_mu2: float = 0.03
    wtv_tol: float = 0.0  # 0: exactly wtv_max_iter iterations
    wtv_max_iter: int = 25
    wtv_relax: float = 1.0  # ADMM over-relaxation factor (1: plain ADMM)
    wtv_weight: str = "mask"  # "mask" (1 inside) or "magnitude" (combined magnitude)
    wtv_rts_iter: int = 0  # RTS step-2 iterations of the start (0: step 1 only)
    # reference / R2*
    csf_r2star_max_hz: float = 5.0
    r2star_max_hz: float = 1000.0

    def __post_init__(self) -> None:
        for name, allowed in (
            ("unwrapping", UNWRAPPING),
            ("bg_removal", BG_REMOVAL),
            ("inversion", INVERSION),
            ("reference", REFERENCE),
        ):
            if getattr(self, name) not in allowed:
                raise errors.UsageError(
                    f"QSM option {name}={getattr(self, name)!r} is not one of {', '.join(allowed)}"
                )
        if self.phase_sign not in (1, -1):
            raise errors.UsageError(f"phase_sign must be +1 or -1, got {self.phase_sign}")
        self.mcpc_sigma_vox = tuple(float(s) for s in self.mcpc_sigma_vox)

    def to_dict(self) -> dict:
        """JSON-serialisable dict of every option (for the Chimap sidecar)."""
        d = dataclasses.asdict(self)
        d["mcpc_sigma_vox"] = list(self.mcpc_sigma_vox)
        return d


#: The QSMOptions fields read by field preparation (mask, unwrapping, echo fit, R2*), by
#: background removal and by inversion and referencing: every field in exactly one (a new
#: option must be added to the stage that reads it; tests/test_qsm_stages.py checks). The
#: staged Nipype nodes receive only the fields of their stage (the last one all of them, for
#: the sidecar), so that changing a later stage reuses the cached earlier ones.
FIELD_OPTIONS: tuple[str, ...] = (
    "unwrapping", "phase_sign", "mask_threshold_scale", "mask_opening_radius_mm",
    "residual_threshold", "mask_r2star_max_hz", "mask_magnitude_min", "mask_erosion_vox",
    "unwrap_downsample", "unwrap_edge_grow", "unwrap_repair", "mcpc_sigma_vox",
    "mcpc_refine_passes", "mcpc_poly_degree", "r2star_max_hz",
)  # fmt: skip
BACKGROUND_OPTIONS: tuple[str, ...] = (
    "bg_removal", "vsharp_max_radius_mm", "vsharp_min_radius_mm", "vsharp_step_mm",
    "vsharp_threshold", "pdf_tol", "pdf_max_iter", "pdf_pad_mm", "lbv_tol", "lbv_max_iter",
)  # fmt: skip
INVERSION_OPTIONS: tuple[str, ...] = (
    "inversion", "reference", "chimap_erosion_mm", "inversion_pad_mm", "tkd_threshold",
    "tikhonov_lambda", "tikhonov_reg", "tikhonov_tol", "tikhonov_max_iter", "tv_lambda",
    "tv_rho", "tv_tol", "tv_max_iter", "rts_delta", "rts_mu", "rts_rho", "rts_tol",
    "rts_max_iter", "rts_lsmr_iter", "wtv_lambda", "wtv_mu1", "wtv_mu2", "wtv_tol",
    "wtv_max_iter", "wtv_relax", "wtv_weight", "wtv_rts_iter", "csf_r2star_max_hz",
)  # fmt: skip


def stage_options(options: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """The entries of an options dict read by ``stage`` ("field", "background" or
    "inversion"; the last one gets all, since the sidecar records every option)."""
    keys = {"field": FIELD_OPTIONS, "background": BACKGROUND_OPTIONS}.get(stage)
    return dict(options) if keys is None else {k: v for k, v in options.items() if k in keys}


@dataclass
class QSMResult:
    """Outputs of :func:`reconstruct_qsm` (all maps on the input grid)."""

    chi_ppm: np.ndarray
    mask: np.ndarray
    brain_mask: np.ndarray
    field_hz: np.ndarray
    local_field_ppm: np.ndarray
    fit_residual: np.ndarray
    combined_mag: np.ndarray
    r2star_hz: np.ndarray | None
    t2star_s: np.ndarray | None
    reference_region: str
    reference_value_ppm: float
    timings_s: dict[str, float] = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)


def qsm_parameters(
    opt: QSMOptions,
    acquisition: Mapping[str, Any],
    user_field: str | None,
    user_mask: bool,
    radii: list[float],
    r2_max: float,
    ref_value: float,
) -> dict:
    """The sidecar parameters of a reconstruction: options, algorithms and acquisition.

    ``acquisition``: ``te`` (s), ``b0`` (unit vector), ``vs`` (mm), ``b0_tesla`` (T);
    ``user_field``: None, ``"total"`` or ``"local"``.
    """
    te, b0, vs, b0_tesla = (acquisition[k] for k in ("te", "b0", "vs", "b0_tesla"))
    multi = len(te) > 1
    return {
        **opt.to_dict(),
        "unwrapping_algorithm": ALGORITHM_NAMES[opt.unwrapping],
        "field_source": "phase" if user_field is None else f"user {user_field} field",
        "phase_offset_removal": (
            "MCPC-3D-S (Eckstein 2018), polynomial of degree "
            f"{opt.mcpc_poly_degree} fitted before the Gaussian smoothing"
            if multi
            else "none (single echo)"
        )
        if user_field is None
        else "none (user field)",
        "echo_combination": "weighted least squares over TE through the origin, w = mag^2"
        if multi
        else "single echo: phase / (2 pi TE)",
        "bg_removal_algorithm": ALGORITHM_NAMES[opt.bg_removal]
        if user_field is None or user_field == "total"
        else "none (user local field)",
        "inversion_algorithm": ALGORITHM_NAMES[opt.inversion],
        "vsharp_radii_mm": radii if opt.bg_removal == "vsharp" else None,
        "mask_source": "user" if user_mask else "magnitude threshold + morphology",
        "mask_r2star_max_hz_used": float(r2_max) if multi else None,
        "reference_region": opt.reference,
        "reference_value_ppm": ref_value,
        "echo_times_s": te,
        "b0_tesla": float(b0_tesla),
        "b0_direction_voxel_axes": [float(v) for v in b0],
        "voxel_size_mm": [float(v) for v in vs],
        "sign_convention": "paramagnetic positive",
        "units": "ppm",
    }


def reconstruct_qsm(
    mag: np.ndarray,
    phase_rad: np.ndarray,
    te_s: Sequence[float],
    b0_tesla: float,
    voxel_size: np.ndarray,
    b0_dir: np.ndarray,
    options: QSMOptions | None = None,
    mask: np.ndarray | None = None,
    csf_mask: np.ndarray | None = None,
    threads: int = 2,
    *,
    total_field_hz: np.ndarray | None = None,
    local_field_ppm: np.ndarray | None = None,
) -> QSMResult:
    """Run the QSM pipeline on (X, Y, Z, E) magnitude and phase (rad); see module docstring.

    ``te_s`` echo times (s), ``b0_tesla`` field strength (T), ``voxel_size`` (mm), ``b0_dir``
    unit B0 vector in voxel axes (from the affine), ``mask`` optional user brain mask,
    ``csf_mask`` optional CSF mask for ``reference="csf"`` (else derived from R2*).

    A field computed elsewhere (e.g. the user's own unwrapping) can replace the phase:
    ``total_field_hz`` (3D, Hz, unwrapped and free of the phase offset) skips offset removal,
    unwrapping and the echo fit (no residual criterion: the residual map is 0);
    ``local_field_ppm`` (3D, ppm, background already removed) also skips background removal
    and is inverted where it is finite and non-zero inside the mask. ``phase_rad`` may then be
    None; the magnitude still gives the mask, the R2* tissue criterion and R2*/T2*.

    The stages are the functions of :mod:`bids_qsm.qsm.stages`.
    """
    opt = options or QSMOptions()
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    last = [time.perf_counter()]

    def tick(name: str) -> None:
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - last[0]
        last[0] = now

    inp = prepare_inputs(
        mag, phase_rad, te_s, voxel_size, b0_dir, opt.phase_sign, total_field_hz, local_field_ppm
    )
    tick("prepare")
    bmask = compute_mask(inp.combined, inp.vs, opt, mask)
    tick("mask")
    prep = prepare_field(inp, bmask, b0_tesla, opt, threads, tick)
    box = prep.box
    user_local = inp.user_field[1][box] if inp.user_field and inp.user_field[0] == "local" else None
    local, f_mask, radii = remove_background(
        prep.field_ppm, prep.mask, inp.vs, inp.b0, opt, threads, user_local
    )
    tick("background")
    chi, f_mask = invert_field(local, f_mask, inp.vs, inp.b0, opt, threads, inp.combined[box])
    tick("inversion")
    csf_box = np.asarray(csf_mask, bool)[box] if csf_mask is not None else None
    chi, ref_value = reference_susceptibility(chi, f_mask, opt, csf_box, prep.r2star_hz)
    tick("reference")

    def full(x: np.ndarray | None, dtype=np.float32) -> np.ndarray | None:
        if x is None:
            return None
        out = np.zeros(inp.combined.shape, dtype)
        out[box] = x
        return out

    timings["total"] = time.perf_counter() - t_all
    acquisition = {"te": inp.te, "b0": inp.b0, "vs": inp.vs, "b0_tesla": b0_tesla}
    kind = inp.user_field[0] if inp.user_field else None
    params = qsm_parameters(
        opt, acquisition, kind, mask is not None, radii, prep.r2star_limit_hz, ref_value
    )
    return QSMResult(
        chi_ppm=full(chi),
        mask=full(f_mask, bool),
        brain_mask=bmask.copy(),
        field_hz=full(prep.fit.field_hz),
        local_field_ppm=full(local),
        fit_residual=full(prep.fit.residual),
        combined_mag=inp.combined,
        r2star_hz=full(prep.r2star_hz),
        t2star_s=full(prep.t2star_s),
        reference_region=opt.reference,
        reference_value_ppm=ref_value,
        timings_s=timings,
        parameters=params,
    )

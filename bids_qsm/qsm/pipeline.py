"""Top-level QSM reconstruction: magnitude + phase (rad) -> referenced susceptibility (ppm).

Default pipeline (ISMRM consensus 2024): magnitude brain mask; MCPC-3D-S offset removal with one
exact (quality-guided) spatial unwrap and temporal unwrapping of the echoes; SNR-weighted field
fit over TE; voxels with relative fit residual > 0.3 excluded, then voxels that are not brain
tissue by their signal decay (R2* above 100 Hz at 3 T: bone and air partial volume) excluded
without hole filling; a 1-voxel erosion; V-SHARP (12 mm down to two voxels);
RTS inversion; whole-brain reference. Every stage is a function of its own module and can be
called separately; all work happens inside the mask bounding box.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .. import errors
from .background import lbv, pdf, vsharp, vsharp_radii
from .echofit import FieldFit, fit_field
from .geometry import hz_to_ppm
from .grid import bounding_box
from .inversion import rts, tikhonov, tkd, tv_admm
from .mask import brain_mask, erode_mask, erode_voxels, largest_component, refine_mask
from .phase import apply_phase_sign, combine_magnitude
from .r2star import fit_r2star
from .reference import csf_mask_from_r2star, reference_chi
from .wtv import invert_wtv

UNWRAPPING = ("quality", "laplacian")
BG_REMOVAL = ("vsharp", "pdf", "lbv")
INVERSION = ("rts", "tikhonov", "tv", "tkd", "wtv")
REFERENCE = ("brain", "csf", "none")

#: Default tissue limit of the mask, R2* (Hz) per tesla: 100 Hz at 3 T (T2* 10 ms), about twice the
#: R2* of the globus pallidus, the most iron-rich normal brain tissue (about 40-50 Hz at 3 T).
#: R2* of tissue grows about linearly with B0, so the limit scales with the field strength.
MASK_R2STAR_HZ_PER_TESLA = 100.0 / 3.0

ALGORITHM_NAMES = {
    "quality": "quality-guided region growing (scikit-image unwrap_phase, Abdul-Rahman 2007) of "
    "the echo-2/echo-1 phase difference, temporal unwrapping of the echoes",
    "laplacian": "Laplacian unwrapping (Schofield 2003), per echo",
    "vsharp": "V-SHARP (Wu 2012)",
    "pdf": "projection onto dipole fields, PDF (Liu 2011)",
    "lbv": "Laplacian boundary value, LBV (Zhou 2014)",
    "rts": "rapid two-step, RTS (Kames 2018)",
    "tikhonov": "iterative Tikhonov (conjugate gradients)",
    "tv": "total variation by ADMM (Bilgic 2014)",
    "tkd": "thresholded k-space division, TKD (Shmueli 2009)",
    # issue 13: weighted-data-term TV (bids_qsm.qsm.wtv)
    "wtv": "TV with a data term weighted inside the mask only, ADMM (FANSI-like linear model, "
    "Milovic 2018), started from RTS step 1 (Kames 2018)",
}


@dataclass
class QSMOptions:
    """Every algorithm choice and parameter of :func:`reconstruct_qsm` (units in names)."""

    unwrapping: str = "quality"
    bg_removal: str = "lbv"
    inversion: str = "wtv"  # issue 13 (was "rts")
    reference: str = "brain"
    phase_sign: int = 1
    # mask
    mask_threshold_scale: float = 0.5
    mask_opening_radius_mm: float = 4.0
    residual_threshold: float = 0.3
    # Voxels with R2* above this (Hz) are not brain tissue (bone/air partial volume) and leave
    # the mask, holes included; None: 100 Hz x B0 / 3 T; 0 disables (multi-echo only).
    mask_r2star_max_hz: float | None = None
    mask_erosion_vox: int = 1  # erosion before background removal (consensus: 1 voxel)
    # unwrapping / phase offset (MCPC-3D-S)
    unwrap_downsample: int | None = None  # None: auto, coarse grid of about 2 mm; 1: full res
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
    # --- issue 13: weighted-data-term TV ("wtv", bids_qsm.qsm.wtv), RTS start ---
    wtv_lambda: float = 3e-4
    wtv_mu1: float | None = None  # None: 100 * wtv_lambda
    wtv_mu2: float = 0.03
    wtv_tol: float = 0.0  # 0: exactly wtv_max_iter iterations
    wtv_max_iter: int = 20
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


def _as_4d(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise errors.InputDataError(f"{name} must be 3D or 4D (X, Y, Z, echo), got {x.shape}")
    return x


def _user_field(
    total_hz: np.ndarray | None, local_ppm: np.ndarray | None, shape: tuple[int, ...]
) -> tuple[str, np.ndarray] | None:
    """``("total", Hz)`` or ``("local", ppm)`` from the optional user fields (checked), or None."""
    if total_hz is not None and local_ppm is not None:
        raise errors.UsageError("give either a total field or a local field, not both")
    kind, arr = ("total", total_hz) if total_hz is not None else ("local", local_ppm)
    if arr is None:
        return None
    arr = np.asarray(arr, np.float32)
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.shape != tuple(shape):
        raise errors.InputDataError(f"{kind} field {arr.shape} does not match the image {shape}")
    return kind, arr


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
    """
    opt = options or QSMOptions()
    t_all = time.perf_counter()
    timings: dict[str, float] = {}

    def tick(name: str, t0: float) -> float:
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - t0
        return now

    t = time.perf_counter()
    mag4 = _as_4d(mag, "magnitude")
    user_field = _user_field(total_field_hz, local_field_ppm, mag4.shape[:3])
    ph4 = _as_4d(phase_rad, "phase") if phase_rad is not None else None
    if ph4 is None and user_field is None:
        raise errors.UsageError("reconstruct_qsm needs the phase or a total/local field")
    if ph4 is None:
        ph4 = np.zeros_like(mag4)
    te = [float(v) for v in te_s]
    vs = np.asarray(voxel_size, dtype=float)
    b0 = np.asarray(b0_dir, dtype=float)
    b0 = b0 / np.linalg.norm(b0)
    if mag4.shape != ph4.shape:
        raise errors.InputDataError(f"magnitude {mag4.shape} and phase {ph4.shape} differ")
    if len(te) != mag4.shape[-1]:
        raise errors.InputDataError(f"{len(te)} echo times for {mag4.shape[-1]} echoes")
    if any(b <= a for a, b in zip(te, te[1:], strict=False)) or te[0] <= 0:
        raise errors.InputDataError(f"echo times must be positive and increasing, got {te}")
    if not np.isfinite(ph4).all() or not np.isfinite(mag4).all():
        mag4 = np.nan_to_num(mag4)
        ph4 = np.nan_to_num(ph4)
    ph4 = apply_phase_sign(ph4, opt.phase_sign)
    combined = combine_magnitude(mag4)
    t = tick("prepare", t)

    if mask is None:
        bmask = brain_mask(
            combined,
            vs,
            threshold_scale=opt.mask_threshold_scale,
            opening_radius_mm=opt.mask_opening_radius_mm,
        )
    else:
        bmask = np.asarray(mask, bool)
        if bmask.shape != combined.shape:
            raise errors.InputDataError(f"mask {bmask.shape} does not match image {combined.shape}")
        if not bmask.any():
            raise errors.InputDataError("the brain mask is empty")
    t = tick("mask", t)

    # Work inside the mask bounding box from here on.
    box = bounding_box(bmask, 1)
    m_box = bmask[box]
    if user_field is None:
        fit = fit_field(
            mag4[box],
            ph4[box],
            te,
            m_box,
            vs,
            unwrapping=opt.unwrapping,
            mcpc_sigma_vox=opt.mcpc_sigma_vox,
            mcpc_refine_passes=opt.mcpc_refine_passes,
            mcpc_poly_degree=opt.mcpc_poly_degree,
            downsample=opt.unwrap_downsample,
            threads=threads,
        )
    else:
        # A user field is defined where it is finite and non-zero (0 outside the user's mask).
        u_box = user_field[1][box]
        m_box = largest_component(m_box & np.isfinite(u_box) & (u_box != 0))
        if not m_box.any():
            raise errors.InputDataError(f"the user {user_field[0]} field is 0 in the brain mask")
        zeros = np.zeros(m_box.shape, np.float32)
        f_hz = zeros if user_field[0] == "local" else np.where(m_box, u_box, 0)
        fit = FieldFit(f_hz.astype(np.float32), zeros, zeros, np.zeros((*m_box.shape, 0)))
    t = tick("unwrap_fit", t)

    multi = len(te) > 1
    r2 = t2 = None
    if multi:  # R2* is cheap and is needed by the tissue criterion of the mask
        r2, t2 = fit_r2star(mag4[box], te, m_box, r2star_max_hz=opt.r2star_max_hz)
    t = tick("r2star", t)

    r2_max = opt.mask_r2star_max_hz
    if r2_max is None:
        r2_max = MASK_R2STAR_HZ_PER_TESLA * float(b0_tesla)
    q_mask = m_box
    if multi and user_field is None:
        # Phase quality: holes (isolated noisy voxels, veins) are filled back.
        q_mask = refine_mask(q_mask, fit.residual, opt.residual_threshold)
    if multi and r2_max > 0:
        # Tissue: bone and air partial volume decays fast. Not filled back: the hole
        # filling of the magnitude mask encloses non-brain regions (e.g. skull base next to
        # the midbrain) whose strong field V-SHARP would otherwise treat as local.
        q_mask = refine_mask(q_mask, r2, float(r2_max), fill=False)
    if opt.mask_erosion_vox > 0:
        q_mask = largest_component(erode_voxels(q_mask, vs, opt.mask_erosion_vox))
    field_ppm = hz_to_ppm(fit.field_hz, b0_tesla).astype(np.float32)
    radii = vsharp_radii(vs, opt.vsharp_max_radius_mm, opt.vsharp_min_radius_mm, opt.vsharp_step_mm)
    if user_field is not None and user_field[0] == "local":
        f_mask = q_mask.copy()
        local = np.where(f_mask, user_field[1][box], 0).astype(np.float32)
    elif opt.bg_removal == "vsharp":
        local, f_mask = vsharp(
            field_ppm,
            q_mask,
            vs,
            radii_mm=radii,
            threshold=opt.vsharp_threshold,
            threads=threads,
        )
    elif opt.bg_removal == "lbv":
        local, f_mask = lbv(
            field_ppm, q_mask, vs, tol=opt.lbv_tol, max_iter=opt.lbv_max_iter, threads=threads
        )
    else:
        local, f_mask = pdf(
            field_ppm,
            q_mask,
            vs,
            b0,
            tol=opt.pdf_tol,
            max_iter=opt.pdf_max_iter,
            pad_mm=opt.pdf_pad_mm,
            threads=threads,
        )
    if not f_mask.any():
        raise errors.InputDataError("background field removal left an empty mask")
    t = tick("background", t)

    pad = opt.inversion_pad_mm
    if opt.inversion == "rts":
        chi = rts(
            local, f_mask, vs, b0, delta=opt.rts_delta, mu=opt.rts_mu, rho=opt.rts_rho,
            tol=opt.rts_tol, max_iter=opt.rts_max_iter, lsmr_iter=opt.rts_lsmr_iter,
            pad_mm=pad, threads=threads,
        )  # fmt: skip
    elif opt.inversion == "tikhonov":
        chi = tikhonov(
            local, f_mask, vs, b0, lam=opt.tikhonov_lambda, reg=opt.tikhonov_reg,
            tol=opt.tikhonov_tol, max_iter=opt.tikhonov_max_iter, pad_mm=pad, threads=threads,
        )  # fmt: skip
    elif opt.inversion == "tv":
        chi = tv_admm(
            local, f_mask, vs, b0, lam=opt.tv_lambda, rho=opt.tv_rho, tol=opt.tv_tol,
            max_iter=opt.tv_max_iter, pad_mm=pad, threads=threads,
        )  # fmt: skip
    elif opt.inversion == "wtv":  # issue 13
        chi = invert_wtv(local, f_mask, vs, b0, combined[box], opt, threads)
    else:
        chi = tkd(local, f_mask, vs, b0, threshold=opt.tkd_threshold, pad_mm=pad, threads=threads)
    if opt.chimap_erosion_mm > 0:
        eroded = largest_component(erode_mask(f_mask, vs, opt.chimap_erosion_mm))
        if eroded.any():
            f_mask = eroded
            chi = np.where(f_mask, chi, np.float32(0))
    t = tick("inversion", t)

    csf_box = None
    if opt.reference == "csf":
        if csf_mask is not None:
            csf_box = np.asarray(csf_mask, bool)[box]
        elif r2 is not None:
            try:
                csf_box = csf_mask_from_r2star(r2, f_mask, max_r2star_hz=opt.csf_r2star_max_hz)
            except ValueError as exc:
                raise errors.InputDataError(str(exc)) from exc
        else:
            raise errors.UsageError("reference 'csf' on single-echo data needs a CSF mask")
    try:
        chi, ref_value = reference_chi(chi, f_mask, opt.reference, csf_box)
    except ValueError as exc:
        raise errors.InputDataError(str(exc)) from exc
    t = tick("reference", t)

    def full(x: np.ndarray | None, dtype=np.float32) -> np.ndarray | None:
        if x is None:
            return None
        out = np.zeros(combined.shape, dtype)
        out[box] = x
        return out

    timings["total"] = time.perf_counter() - t_all
    params = {
        **opt.to_dict(),
        "unwrapping_algorithm": ALGORITHM_NAMES[opt.unwrapping],
        "field_source": "phase" if user_field is None else f"user {user_field[0]} field",
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
        if user_field is None or user_field[0] == "total"
        else "none (user local field)",
        "inversion_algorithm": ALGORITHM_NAMES[opt.inversion],
        "vsharp_radii_mm": radii if opt.bg_removal == "vsharp" else None,
        "mask_source": "user" if mask is not None else "magnitude threshold + morphology",
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
    return QSMResult(
        chi_ppm=full(chi),
        mask=full(f_mask, bool),
        brain_mask=bmask.copy(),
        field_hz=full(fit.field_hz),
        local_field_ppm=full(local),
        fit_residual=full(fit.residual),
        combined_mag=combined,
        r2star_hz=full(r2),
        t2star_s=full(t2),
        reference_region=opt.reference,
        reference_value_ppm=ref_value,
        timings_s=timings,
        parameters=params,
    )

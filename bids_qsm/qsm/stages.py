"""The stages of :func:`bids_qsm.qsm.pipeline.reconstruct_qsm`, each callable on its own.

1. :func:`prepare_inputs` and :func:`compute_mask`: checked 4D arrays, phase sign, combined
   magnitude, brain mask.
2. :func:`prepare_field`: inside the mask bounding box, phase offset removal, unwrapping and echo
   fit (or a user field), R2*, and the mask refined by fit residual, R2* and erosion; the total
   field in ppm.
3. :func:`remove_background`: background field removal, by the method registered under
   ``options.bg_removal`` in :data:`BG_REMOVAL_REGISTRY`.
4. :func:`invert_field`: dipole inversion, by :data:`INVERSION_REGISTRY`, then the erosion of the
   reported mask; :func:`reference_susceptibility`: referencing.

The method names are defined once in :mod:`bids_qsm.methods` (imported by the configuration);
the registries' keys must equal them.
Units: fields in Hz or ppm as named, voxel sizes and radii in mm, susceptibility in ppm.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import errors
from ..methods import (
    BG_REMOVAL_METHODS,
    INVERSION_METHODS,
    REFERENCE_REGIONS,
    UNWRAPPING_METHODS,
)
from .background import lbv, pdf, vsharp, vsharp_radii
from .echofit import FieldFit, fit_field, repair_unwrapping
from .geometry import hz_to_ppm
from .grid import bounding_box
from .inversion import rts, rts_options, tikhonov, tkd, tv_admm
from .mask import brain_mask, erode_mask, erode_voxels, largest_component, refine_mask
from .phase import apply_phase_sign, combine_magnitude
from .r2star import fit_r2star
from .reference import csf_mask_from_r2star, reference_chi
from .wtv import invert_wtv

if TYPE_CHECKING:
    from .pipeline import QSMOptions

#: Default tissue limit of the mask, R2* (Hz) per tesla: 100 Hz at 3 T (T2* 10 ms), about twice the
#: R2* of the globus pallidus, the most iron-rich normal brain tissue (about 40-50 Hz at 3 T).
#: R2* of tissue grows about linearly with B0, so the limit scales with the field strength.
MASK_R2STAR_HZ_PER_TESLA = 100.0 / 3.0

#: A background-removal method: (total field ppm, mask, voxel size mm, unit B0, options,
#: threads) -> (local field ppm, mask where it is valid).
BackgroundMethod = Callable[..., tuple[np.ndarray, np.ndarray]]
#: A dipole-inversion method: (local field ppm, mask, voxel size mm, unit B0, options,
#: threads) -> susceptibility (ppm).
InversionMethod = Callable[..., np.ndarray]


def _bg_vsharp(field_ppm, mask, vs, b0, opt, radii, threads):
    return vsharp(
        field_ppm, mask, vs, radii_mm=radii, threshold=opt.vsharp_threshold, threads=threads
    )


def _bg_pdf(field_ppm, mask, vs, b0, opt, radii, threads):
    return pdf(
        field_ppm,
        mask,
        vs,
        b0,
        tol=opt.pdf_tol,
        max_iter=opt.pdf_max_iter,
        pad_mm=opt.pdf_pad_mm,
        threads=threads,
    )


def _bg_lbv(field_ppm, mask, vs, b0, opt, radii, threads):
    return lbv(field_ppm, mask, vs, tol=opt.lbv_tol, max_iter=opt.lbv_max_iter, threads=threads)


def _inv_rts(local, mask, vs, b0, opt, threads, magnitude=None):
    return rts(local, mask, vs, b0, threads=threads, **rts_options(opt))


def _inv_tikhonov(local, mask, vs, b0, opt, threads, magnitude=None):
    return tikhonov(
        local, mask, vs, b0, lam=opt.tikhonov_lambda, reg=opt.tikhonov_reg,
        tol=opt.tikhonov_tol, max_iter=opt.tikhonov_max_iter, pad_mm=opt.inversion_pad_mm,
        threads=threads,
    )  # fmt: skip


def _inv_tv(local, mask, vs, b0, opt, threads, magnitude=None):
    return tv_admm(
        local, mask, vs, b0, lam=opt.tv_lambda, rho=opt.tv_rho, tol=opt.tv_tol,
        max_iter=opt.tv_max_iter, pad_mm=opt.inversion_pad_mm, threads=threads,
    )  # fmt: skip


def _inv_tkd(local, mask, vs, b0, opt, threads, magnitude=None):
    return tkd(
        local, mask, vs, b0, threshold=opt.tkd_threshold, pad_mm=opt.inversion_pad_mm,
        threads=threads,
    )  # fmt: skip


def _inv_wtv(local, mask, vs, b0, opt, threads, magnitude=None):
    if magnitude is None and opt.wtv_weight == "magnitude":
        raise ValueError("wtv_weight = 'magnitude' needs the combined magnitude")
    mag = magnitude if magnitude is not None else mask.astype(np.float32)
    return invert_wtv(local, mask, vs, b0, mag, opt, threads)


#: Background-removal methods by name (the order is the documented order of the choices).
BG_REMOVAL_REGISTRY: dict[str, BackgroundMethod] = {
    "vsharp": _bg_vsharp,
    "pdf": _bg_pdf,
    "lbv": _bg_lbv,
}
#: Dipole-inversion methods by name.
INVERSION_REGISTRY: dict[str, InversionMethod] = {
    "rts": _inv_rts,
    "tikhonov": _inv_tikhonov,
    "tv": _inv_tv,
    "tkd": _inv_tkd,
    "wtv": _inv_wtv,
}

UNWRAPPING: tuple[str, ...] = UNWRAPPING_METHODS
BG_REMOVAL: tuple[str, ...] = BG_REMOVAL_METHODS
INVERSION: tuple[str, ...] = INVERSION_METHODS
REFERENCE: tuple[str, ...] = REFERENCE_REGIONS
if tuple(BG_REMOVAL_REGISTRY) != BG_REMOVAL or tuple(INVERSION_REGISTRY) != INVERSION:
    raise ImportError("bids_qsm.qsm.stages: method registries differ from bids_qsm.methods")

#: Sidecar descriptions of the methods.
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
    "wtv": "TV with a data term weighted inside the mask only, ADMM (FANSI-like linear model, "
    "Milovic 2018), started from RTS step 1 (Kames 2018)",
}


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


@dataclass
class Inputs:
    """Checked inputs: (X, Y, Z, E) float32 magnitude and signed phase (rad), echo times (s),
    voxel size (mm), unit B0 direction (voxel axes), combined magnitude, optional user field."""

    mag4: np.ndarray
    ph4: np.ndarray
    te: list[float]
    vs: np.ndarray
    b0: np.ndarray
    combined: np.ndarray
    user_field: tuple[str, np.ndarray] | None


def prepare_inputs(
    mag: np.ndarray,
    phase_rad: np.ndarray | None,
    te_s: Sequence[float],
    voxel_size: np.ndarray,
    b0_dir: np.ndarray,
    phase_sign: int,
    total_field_hz: np.ndarray | None = None,
    local_field_ppm: np.ndarray | None = None,
) -> Inputs:
    """Check shapes and echo times, apply the phase sign, combine the magnitude."""
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
    ph4 = apply_phase_sign(ph4, phase_sign)
    combined = combine_magnitude(mag4)
    return Inputs(mag4, ph4, te, vs, b0, combined, user_field)


def compute_mask(
    combined: np.ndarray, vs: np.ndarray, opt: QSMOptions, mask: np.ndarray | None = None
) -> np.ndarray:
    """The brain mask: ``mask`` checked, or thresholded from the combined magnitude."""
    if mask is None:
        return brain_mask(
            combined,
            vs,
            threshold_scale=opt.mask_threshold_scale,
            opening_radius_mm=opt.mask_opening_radius_mm,
        )
    bmask = np.asarray(mask, bool)
    if bmask.shape != combined.shape:
        raise errors.InputDataError(f"mask {bmask.shape} does not match image {combined.shape}")
    if not bmask.any():
        raise errors.InputDataError("the brain mask is empty")
    return bmask


def _fit_or_user_field(
    inp: Inputs, box: tuple[slice, ...], m_box: np.ndarray, opt: QSMOptions, threads: int
) -> tuple[FieldFit, np.ndarray]:
    """The echo fit of the phase in the box, or the user field as a fit (and its mask)."""
    if inp.user_field is None:
        fit = fit_field(
            inp.mag4[box],
            inp.ph4[box],
            inp.te,
            m_box,
            inp.vs,
            unwrapping=opt.unwrapping,
            mcpc_sigma_vox=opt.mcpc_sigma_vox,
            mcpc_refine_passes=opt.mcpc_refine_passes,
            mcpc_poly_degree=opt.mcpc_poly_degree,
            downsample=opt.unwrap_downsample,
            edge_grow=opt.unwrap_edge_grow,
            threads=threads,
        )
        return fit, m_box
    # A user field is defined where it is finite and non-zero (0 outside the user's mask).
    kind, user = inp.user_field
    u_box = user[box]
    m_box = largest_component(m_box & np.isfinite(u_box) & (u_box != 0))
    if not m_box.any():
        raise errors.InputDataError(f"the user {kind} field is 0 in the brain mask")
    zeros = np.zeros(m_box.shape, np.float32)
    f_hz = zeros if kind == "local" else np.where(m_box, u_box, 0)
    return FieldFit(f_hz.astype(np.float32), zeros, zeros, np.zeros((*m_box.shape, 0))), m_box


@dataclass
class PreparedField:
    """Output of :func:`prepare_field`, all on the mask bounding box ``box``."""

    box: tuple[slice, ...]
    fit: FieldFit
    r2star_hz: np.ndarray | None
    t2star_s: np.ndarray | None
    mask: np.ndarray  # refined mask given to background removal
    field_ppm: np.ndarray  # total field (ppm)
    r2star_limit_hz: float


def prepare_field(
    inp: Inputs,
    bmask: np.ndarray,
    b0_tesla: float,
    opt: QSMOptions,
    threads: int = 2,
    tick: Callable[[str], None] | None = None,
) -> PreparedField:
    """Unwrapping and echo fit, R2*, mask refinement, total field in ppm (see module doc).

    ``tick(name)`` is called at the end of the ``unwrap_fit`` and ``r2star`` parts (timings).
    """
    tick = tick or (lambda name: None)
    # Work inside the mask bounding box from here on.
    box = bounding_box(bmask, 1)
    fit, m_box = _fit_or_user_field(inp, box, bmask[box], opt, threads)
    multi = len(inp.te) > 1
    if multi and inp.user_field is None and opt.unwrap_repair and opt.unwrapping == "quality":
        fit, _ = repair_unwrapping(fit, inp.mag4[box], inp.te, m_box, opt.residual_threshold)
    tick("unwrap_fit")

    r2 = t2 = None
    if multi:  # R2* is cheap and is needed by the tissue criterion of the mask
        r2, t2 = fit_r2star(
            inp.mag4[box], inp.te, m_box, r2star_max_hz=opt.r2star_max_hz, threads=threads
        )
    tick("r2star")

    r2_max = opt.mask_r2star_max_hz
    if r2_max is None:
        r2_max = MASK_R2STAR_HZ_PER_TESLA * float(b0_tesla)
    q_mask = m_box
    if multi and inp.user_field is None:
        # Phase quality: holes (isolated noisy voxels, veins) are filled back.
        q_mask = refine_mask(q_mask, fit.residual, opt.residual_threshold)
    if multi and r2_max > 0:
        # Tissue: bone and air partial volume decays fast. Not filled back: the hole
        # filling of the magnitude mask encloses non-brain regions (e.g. skull base next to
        # the midbrain) whose strong field V-SHARP would otherwise treat as local.
        q_mask = refine_mask(q_mask, r2, float(r2_max), fill=False)
    if opt.mask_magnitude_min > 0:
        # Signal: bone and air enclosed by the hole filling have noise-level magnitude
        # (2-6 % of tissue on the simulator), a random phase and a low "R2*" (noise does not
        # decay); their field spikes became LBV boundary values. Not filled back.
        mag_box = inp.combined[box]
        mag_min = np.float32(opt.mask_magnitude_min * float(np.median(mag_box[q_mask])))
        q_mask = largest_component(q_mask & (mag_box >= mag_min))
    if opt.mask_erosion_vox > 0:
        q_mask = largest_component(erode_voxels(q_mask, inp.vs, opt.mask_erosion_vox))
    field_ppm = hz_to_ppm(fit.field_hz, b0_tesla).astype(np.float32)
    return PreparedField(box, fit, r2, t2, q_mask, field_ppm, r2_max)


def remove_background(
    field_ppm: np.ndarray,
    mask: np.ndarray,
    vs: np.ndarray,
    b0: np.ndarray,
    opt: QSMOptions,
    threads: int = 2,
    user_local_ppm: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """(local field ppm, its mask, V-SHARP radii mm) by ``BG_REMOVAL_REGISTRY[opt.bg_removal]``.

    ``user_local_ppm`` (a background-free user field on the same grid) replaces the method.
    """
    radii = vsharp_radii(vs, opt.vsharp_max_radius_mm, opt.vsharp_min_radius_mm, opt.vsharp_step_mm)
    if user_local_ppm is not None:
        f_mask = mask.copy()
        local = np.where(f_mask, user_local_ppm, 0).astype(np.float32)
    else:
        method = BG_REMOVAL_REGISTRY[opt.bg_removal]
        local, f_mask = method(field_ppm, mask, vs, b0, opt, radii, threads)
    if not f_mask.any():
        raise errors.InputDataError("background field removal left an empty mask")
    return local, f_mask, radii


def invert_field(
    local: np.ndarray,
    mask: np.ndarray,
    vs: np.ndarray,
    b0: np.ndarray,
    opt: QSMOptions,
    threads: int = 2,
    magnitude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(susceptibility ppm, reported mask): ``INVERSION_REGISTRY[opt.inversion]``, then the
    outer ``opt.chimap_erosion_mm`` of the mask left out. ``magnitude`` (the combined
    magnitude on the same grid) is the data weight of ``wtv`` with ``wtv_weight="magnitude"``."""
    chi = INVERSION_REGISTRY[opt.inversion](local, mask, vs, b0, opt, threads, magnitude)
    if opt.chimap_erosion_mm > 0:
        eroded = largest_component(erode_mask(mask, vs, opt.chimap_erosion_mm))
        if eroded.any():
            mask = eroded
            chi = np.where(mask, chi, np.float32(0))
    return chi, mask


def reference_susceptibility(
    chi: np.ndarray,
    mask: np.ndarray,
    opt: QSMOptions,
    csf_box: np.ndarray | None = None,
    r2star_hz: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """(referenced chi ppm, subtracted value ppm) for ``opt.reference``.

    For ``"csf"``: ``csf_box`` (a CSF mask on the same grid) or one derived from ``r2star_hz``.
    """
    if opt.reference == "csf" and csf_box is None:
        if r2star_hz is None:
            raise errors.UsageError("reference 'csf' on single-echo data needs a CSF mask")
        try:
            csf_box = csf_mask_from_r2star(r2star_hz, mask, max_r2star_hz=opt.csf_r2star_max_hz)
        except ValueError as exc:
            raise errors.InputDataError(str(exc)) from exc
    try:
        return reference_chi(chi, mask, opt.reference, csf_box if opt.reference == "csf" else None)
    except ValueError as exc:
        raise errors.InputDataError(str(exc)) from exc

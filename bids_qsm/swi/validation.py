"""Phase-iron measures of one GRE scan computed with the core functions (benchmarks, tests).

The same chain as the participant workflow, without Nipype and without registration (labels
given on the GRE grid): the combined field from the wrapped phase (Laplacian unwrapping of the
echo differences, the SWI fallback), V-SHARP background removal (12 mm, as the QSM core's
default), R2* by log-linear fit, :func:`bids_qsm.swi.pipeline.compute_swi` with the given
options, and the self-positive ROIs of each structure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bids_qsm.atlas.structures import StructureDef
from bids_qsm.qsm.background import vsharp
from bids_qsm.qsm.geometry import hz_to_ppm, ppm_to_hz
from bids_qsm.qsm.r2star import fit_r2star
from bids_qsm.swi.dipole_roi import DEFAULT_DOMINANCE, self_positive_labels
from bids_qsm.swi.highpass import field_from_phase, gaussian_highpass, sigma_mm_to_vox
from bids_qsm.swi.pipeline import SWIOptions, SWIResult, compute_swi

__all__ = ["PhaseIronScan", "oracle_phase_iron", "phase_iron_scan", "structure_values"]


@dataclass
class PhaseIronScan:
    """Phase-iron map (rad at the reference TE, iron positive, NaN = excluded) and ROIs."""

    result: SWIResult
    roi_labels: np.ndarray  #: labels restricted to the self-positive ROIs
    labels: np.ndarray
    mask: np.ndarray
    local_mask: np.ndarray | None = None  #: where the background-removed local field is defined


def phase_iron_scan(
    mag: np.ndarray,
    phase: np.ndarray,
    te_s: Sequence[float],
    voxel_size: Sequence[float],
    mask: np.ndarray,
    labels: np.ndarray,
    b0_dir: Sequence[float],
    b0_tesla: float,
    structures: Sequence[StructureDef],
    options: SWIOptions | None = None,
    dominance: float | None = DEFAULT_DOMINANCE,
) -> PhaseIronScan:
    """Run the SWI phase-iron chain on one multi-echo scan (see the module docstring).

    ``dominance``: the self-positive ROI criterion; None = plain labels (no ROI).
    """
    opt = options or SWIOptions()
    vs = np.asarray(voxel_size, float)
    te = np.asarray(te_s, float)
    field_hz = np.where(mask, field_from_phase(mag, phase, te, vs, 1), 0).astype(np.float32)
    local_hz, local_mask = vsharp(field_hz, mask, vs, max_radius_mm=12.0, threads=1)
    r2, _ = fit_r2star(mag, te, mask)
    res = compute_swi(
        mag,
        phase,
        te,
        vs,
        mask,
        field_hz=field_hz,
        options=opt,
        local_field_ppm=hz_to_ppm(local_hz, b0_tesla),
        local_mask=local_mask,
        b0_tesla=b0_tesla,
        r2star_hz=r2,
    )
    sigma = opt.gaussian_sigma_mm
    if opt.gaussian_sigma_vox is not None:
        sigma = tuple(s * d for s, d in zip(opt.gaussian_sigma_vox, vs, strict=True))
    roi = (
        np.asarray(labels)
        if dominance is None
        else self_positive_labels(labels, structures, vs, b0_dir, sigma, mask, dominance=dominance)
    )
    return PhaseIronScan(
        res, roi, np.asarray(labels), np.asarray(mask, bool), np.asarray(local_mask, bool) & mask
    )


def structure_values(
    image: np.ndarray, labels: np.ndarray, mask: np.ndarray, structures: Sequence[StructureDef]
) -> dict[str, np.ndarray]:
    """Finite voxel values of ``image`` per structure name (both hemispheres together)."""
    out: dict[str, np.ndarray] = {}
    for name in dict.fromkeys(s.name for s in structures):
        labs = sorted({v for s in structures if s.name == name for v in s.labels})
        v = image[np.isin(labels, labs) & mask]
        out[name] = v[np.isfinite(v)]
    return out


def oracle_phase_iron(
    scan: PhaseIronScan,
    true_local_field_ppm: np.ndarray,
    voxel_size: Sequence[float],
    b0_tesla: float,
    options: SWIOptions | None = None,
) -> np.ndarray:
    """Noise-free phase iron of a simulation: the true local field through the same filter.

    The simulator's field of the sources inside the brain (ppm) is converted to Hz, high-passed
    with the Gaussian of ``options`` inside the scan's local-field mask and expressed as phase
    iron at the scan's reference TE (rad, iron positive); NaN where the scan's phase-iron map
    is NaN (phase-quality mask). Its regional mean is what a perfect field estimate (no noise,
    exact background removal) would give: the physical sign of a structure's filtered phase,
    which is its susceptibility *contrast* to its surroundings, not its absolute value.
    """
    opt = options or SWIOptions()
    vs = np.asarray(voxel_size, float)
    sigma = (
        tuple(float(v) for v in opt.gaussian_sigma_vox)
        if opt.gaussian_sigma_vox is not None
        else sigma_mm_to_vox(opt.gaussian_sigma_mm, vs)
    )
    lm = scan.mask if scan.local_mask is None else scan.local_mask
    hz = ppm_to_hz(np.asarray(true_local_field_ppm, np.float32), b0_tesla).astype(np.float32)
    ref_te = float(scan.result.parameters["ReferenceEchoTime_s"])
    out = gaussian_highpass(np.where(lm, hz, 0).astype(np.float32), lm, sigma)
    out = (out * np.float32(2.0 * np.pi * ref_te)).astype(np.float32)
    out[~np.isfinite(scan.result.phase_iron_rad)] = np.nan
    return out

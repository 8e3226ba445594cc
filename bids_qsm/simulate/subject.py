"""Simulate one subject: 1 mm tissue maps -> fields -> GRE signal on the acquisition grid."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from bids_qsm.atlas.structures import aal3_structures
from bids_qsm.errors import UsageError
from bids_qsm.qsm.geometry import b0_direction_from_affine, voxel_sizes
from bids_qsm.simulate.acquisition import (
    HeadPose,
    gre_signal,
    grid_shape,
    oblique_grid_affine,
    partial_volume_sigma,
    resample,
    sagittal_grid_affine,
    shim_residual_ppm,
    smooth_phase_offset,
)
from bids_qsm.simulate.anatomy import HeadModel, Region, build_head_model
from bids_qsm.simulate.cohort import (
    BETWEEN_SUBJECT_SD_PPM,
    atrophy_mm,
    disease_shift_ppm,
    draw_participant,
    structure_atrophy,
    structure_offsets_ppm,
)
from bids_qsm.simulate.deformation import (
    Deformation,
    DeformationParams,
    random_deformation,
    sample_points,
    warp_compute_grid,
)
from bids_qsm.simulate.forward import forward_field_ppm
from bids_qsm.simulate.lesions import LesionSet, place_lesions
from bids_qsm.simulate.presets import DEFAULT_TE_S, get_preset
from bids_qsm.simulate.tissue_maps import TissueMaps, tissue_maps
from bids_qsm.simulate.tissues import CHI_AIR_PPM
from bids_qsm.simulate.truth import lesion_truth, regional_truth

#: Magnitude scale of the written images (arbitrary units, like a scanner's).
MAG_SCALE = 1000.0


@dataclass
class SimulatedSubject:
    """One simulated GRE session with its ground truth (all arrays on the GRE grid)."""

    mag: np.ndarray  # (X,Y,Z,E) float32, GRE magnitude (arbitrary units)
    phase: np.ndarray  # (X,Y,Z,E) float32, radians in [-pi, pi)
    te_s: tuple[float, ...]  # echo times (s)
    b0_tesla: float
    affine: np.ndarray  # 4x4 acquisition-grid affine (scanner mm)
    voxel_size: np.ndarray  # mm
    b0_dir: np.ndarray  # unit B0 direction in voxel axes
    chi_ppm: np.ndarray  # true susceptibility (ppm, relative to CSF; paramagnetic +)
    labels: np.ndarray  # true AAL3 labels (int16, nearest neighbour)
    brain_mask: np.ndarray  # bool
    total_field_ppm: np.ndarray  # true total field (local + background), ppm
    local_field_ppm: np.ndarray  # true field of the sources inside the brain mask, ppm
    r2star_hz: np.ndarray
    regional_truth: pd.DataFrame
    t1w: tuple[np.ndarray, np.ndarray] | None
    lesion_masks: dict[str, np.ndarray]
    lesion_truth: pd.DataFrame | None
    participant: dict
    phase_offset_rad: np.ndarray | None = None  # true phi0 (rad)
    pose: HeadPose = field(default_factory=HeadPose)
    noise_sigma: float = 0.0  # per real channel, in magnitude units
    deformation: Deformation = field(default_factory=Deformation.identity)
    structure_loss: dict = field(default_factory=dict)  # atrophy volume fractions


def _smooth_unit_field(
    shape: tuple[int, ...], rng: np.random.Generator, sigma: float
) -> np.ndarray:
    """Smooth Gaussian random field (correlation ``sigma`` voxels), unit SD, float32.

    Drawn on a grid coarser by ``sigma / 2`` and linearly upsampled (cheap on 1 mm grids).
    """
    step = max(1, int(sigma // 2))
    coarse = tuple(int(np.ceil(n / step)) + 1 for n in shape)
    g = ndimage.gaussian_filter(rng.standard_normal(coarse, dtype=np.float32), sigma / step)
    if step > 1:
        g = ndimage.zoom(g, step, order=1, grid_mode=False)
    g = np.ascontiguousarray(g[: shape[0], : shape[1], : shape[2]])
    g -= np.float32(g.mean())
    g /= np.float32(g.std() + 1e-12)
    return g


def block_mean(a: np.ndarray, f: int) -> np.ndarray:
    """Average non-overlapping f x f x f blocks (the array is cropped to a multiple of f)."""
    if f == 1:
        return a
    n = [s // f for s in a.shape]
    c = a[: n[0] * f, : n[1] * f, : n[2] * f].astype(np.float32, copy=False)
    return c.reshape(n[0], f, n[1], f, n[2], f).mean(axis=(1, 3, 5), dtype=np.float32)


def block_affine(affine: np.ndarray, f: int) -> np.ndarray:
    """Affine of the grid produced by :func:`block_mean` (block centres)."""
    s = np.eye(4)
    s[:3, :3] *= f
    s[:3, 3] = (f - 1) / 2.0
    return affine @ s


def simulate_subject(
    preset: str = "tiny", seed: int = 0, *, oblique_deg: float = 0.0,
    te_s: tuple[float, ...] | None = None, b0_tesla: float = 3.0, snr: float | None = None,
    lesions: bool = False, t1w: bool = False, group: str = "HC", edss: float = 0.0,
    null_effect: bool = False, atrophy: bool = False, n_lesions: int | None = None,
    pose: HeadPose | None = None, shim_residual_hz: float = 0.0,
    between_subject_sd_ppm: float = BETWEEN_SUBJECT_SD_PPM, effect_scale: float = 1.0,
    participant_label: str = "01", age: int | None = None, sex: str | None = None,
    disease_duration: float | None = None, voxel_mm: tuple[float, float, float] | None = None,
    fov_mm: tuple[float, float, float] | None = None, compute_factor: int | None = None,
    pad_fraction: float = 0.25, workers: int = 2, rigid_anatomy: bool = False,
    deformation: DeformationParams | None = None, session_seed: int | None = None,
    extra_shift_ppm: dict[str, float] | None = None,
) -> SimulatedSubject:  # fmt: skip
    """Simulate a multi-echo GRE scan of the digital head phantom with its ground truth.

    Parameters
    ----------
    preset
        ``tiny`` (3 mm), ``small`` (2 mm) or ``full`` (1 mm); see :mod:`.presets`.
    seed
        Makes the output deterministic (same seed and options -> identical arrays).
    oblique_deg
        Tilt of the GRE slab about the left-right axis (degrees); B0 stays along scanner z.
    te_s, b0_tesla
        Echo times (s; default 4, 10, 16, 22 ms) and field strength (T).
    snr
        Echo-1 brain magnitude over the noise SD; ``None`` uses the preset's, ``inf`` or 0
        gives noiseless data.
    lesions, n_lesions
        Add white matter lesions (default count 4-12, more with EDSS).
    t1w
        Also simulate a sagittal T1w at the preset's T1w resolution.
    group, edss, null_effect, atrophy
        ``MS`` patients get the EDSS-scaled deep gray matter effect (none with
        ``null_effect``) and, with ``atrophy``, ventricular enlargement and thalamus,
        caudate and putamen volume loss scaled with EDSS and disease duration
        (:func:`.cohort.structure_atrophy`; kept with ``null_effect``).
    pose
        Head position in the scanner (default: MNI-aligned, no shift).
    shim_residual_hz
        Amplitude (Hz, about 80 mm from the centre) of a second-order shim residual.
    between_subject_sd_ppm
        SD of the random per-structure offsets of this subject (ppm).
    effect_scale
        Multiplies the patients' deep gray matter effect (1 = seed-study magnitudes).
    voxel_mm, fov_mm
        Override the preset's GRE voxel size and field of view (mm).
    compute_factor
        Block-average the 1 mm truth by this factor before computing fields (preset
        default: 2 for tiny, else 1).
    pad_fraction, workers
        Zero padding of the field computation and FFT threads.
    rigid_anatomy, deformation
        Every subject's anatomy is the template under a random affine and smooth
        displacement (:mod:`.deformation`, amplitude / smoothness in ``deformation``);
        ``rigid_anatomy`` keeps the template head itself (only the pose moves it).
    session_seed, extra_shift_ppm
        Later session (:mod:`.sessions`): new noise streams; chi added per structure (ppm).
    """
    p = get_preset(preset)
    te = _check_inputs(group, te_s, b0_tesla)
    rng = _streams(seed, session_seed)
    pose = pose or HeadPose()
    participant = draw_participant(rng["demo"], group, edss=edss if group == "MS" else None,
                                   age=age, sex=sex, disease_duration=disease_duration)  # fmt: skip
    participant = {"participant_id": f"sub-{participant_label}", **participant}
    head = _draw_head(
        rng, group, participant, lesions=lesions, n_lesions=n_lesions, atrophy=atrophy,
        null_effect=null_effect, effect_scale=effect_scale, extra_shift_ppm=extra_shift_ppm,
        between_subject_sd_ppm=between_subject_sd_ppm, b0_tesla=b0_tesla,
        rigid_anatomy=rigid_anatomy, deformation=deformation,
    )  # fmt: skip
    factor = p.compute_factor if compute_factor is None else int(compute_factor)
    g = _acquire(
        p, head, pose, rng, te=te, b0_tesla=b0_tesla, snr=snr, oblique_deg=oblique_deg,
        voxel_mm=voxel_mm, fov_mm=fov_mm, shim_residual_hz=shim_residual_hz, factor=factor,
        pad_fraction=pad_fraction, workers=workers,
    )  # fmt: skip
    chi, r2, labels, brain, affine = g["chi"], g["r2"], g["labels"], g["brain"], g["affine"]
    vox_mm3 = float(np.prod(g["vox"]))
    regional = regional_truth(chi, r2, labels, brain, vox_mm3)
    regional["atrophy_fraction"] = regional["structure"].map(head.loss).fillna(0.0).astype(float)
    lesion_masks, lesion_table = _lesions_on_gre(head, g["to_gre"], g, vox_mm3)
    t1w_out = _t1w_image(p, head, pose.matrix(), g["centre"], rng["t1"]) if t1w else None
    return SimulatedSubject(
        mag=g["mag"], phase=g["phase"], te_s=te, b0_tesla=float(b0_tesla), affine=affine,
        voxel_size=voxel_sizes(affine), b0_dir=b0_direction_from_affine(affine),
        chi_ppm=chi.astype(np.float32), labels=labels, brain_mask=brain,
        total_field_ppm=g["total"].astype(np.float32),
        local_field_ppm=g["local"].astype(np.float32), r2star_hz=r2.astype(np.float32),
        regional_truth=regional, t1w=t1w_out, lesion_masks=lesion_masks,
        lesion_truth=lesion_table, participant=participant, phase_offset_rad=g["phi0"],
        pose=pose, noise_sigma=g["sigma_noise"], deformation=head.deform,
        structure_loss=head.loss,
    )  # fmt: skip


@dataclass
class _Head:
    """The simulated head on the 1 mm phantom grid: its model, tissue maps, lesions,
    structure volume losses and the deformation from the template."""

    hm: HeadModel
    maps: TissueMaps
    lesions: LesionSet | None
    loss: dict[str, float]
    deform: Deformation


def _draw_head(rng: dict[str, np.random.Generator], group: str, participant: dict, *,
               lesions: bool, n_lesions: int | None, atrophy: bool, null_effect: bool,
               effect_scale: float, extra_shift_ppm: dict[str, float] | None,
               between_subject_sd_ppm: float, b0_tesla: float, rigid_anatomy: bool,
               deformation: DeformationParams | None) -> _Head:  # fmt: skip
    """Lesions, atrophy, disease shifts, tissue maps and deformation of one head."""
    edss_val = participant["EDSS"] or 0.0
    hm = build_head_model()
    lesion_set = None
    if lesions:
        if n_lesions is None:
            n_lesions = int(rng["les"].integers(4, 9) + round(edss_val * 0.6))
        lut = np.isin(hm.labels, [v for s in aal3_structures() for v in s.labels])
        forbidden = ndimage.binary_dilation(lut | (hm.region == Region.VEIN), iterations=2)
        lesion_set = place_lesions(hm, rng["les"], n_lesions, forbidden=forbidden)

    loss = structure_atrophy(group, edss_val, participant["disease_duration"]) if atrophy else {}
    shifts = disease_shift_ppm(group, edss_val, null_effect, effect_scale)
    for name, extra in (extra_shift_ppm or {}).items():
        shifts[name] = shifts.get(name, 0.0) + float(extra)
    maps = tissue_maps(
        hm,
        rng["tissue"],
        b0_tesla=b0_tesla,
        shifts=shifts,
        offsets=structure_offsets_ppm(rng["tissue"], between_subject_sd_ppm),
        atrophy=atrophy_mm(group, edss_val) if atrophy else 0.0,
        lesions=lesion_set,
        structure_loss=loss,
        atrophy_rng=rng["atr"],
    )
    if rigid_anatomy:
        deform = Deformation.identity()
    else:
        deform = random_deformation(rng["anat"], hm.brain_mask, hm.affine, deformation)
    return _Head(hm, maps, lesion_set, loss, deform)


def _acquire(p: Any, head: _Head, pose: HeadPose, rng: dict[str, np.random.Generator], *,
             te: tuple[float, ...], b0_tesla: float, snr: float | None, oblique_deg: float,
             voxel_mm: tuple[float, float, float] | None,
             fov_mm: tuple[float, float, float] | None, shim_residual_hz: float, factor: int,
             pad_fraction: float, workers: int) -> dict[str, Any]:  # fmt: skip
    """Fields, GRE grid (centred on the brain) and the GRE signal with the truth maps on it."""
    hm, maps, deform = head.hm, head.maps, head.deform
    pose_m = pose.matrix()
    fields = _compute_grid_fields(hm, maps, deform, pose_m, factor, pad_fraction, workers)

    vox = tuple(float(v) for v in (voxel_mm or p.voxel_mm))
    shape = grid_shape(fov_mm or p.fov_mm, vox)
    brain_centre = hm.affine @ np.append(np.argwhere(hm.brain_mask).mean(0), 1.0)
    centre = (pose_m @ brain_centre)[:3] + np.array([0.0, 0.0, -10.0])
    affine = oblique_grid_affine(shape, vox, centre, oblique_deg)
    to_gre = _GreSampler(hm, deform, fields["affine"], shape, affine, pose_m, vox, fields["vox"])

    chi = to_gre(fields["chi"], cval=CHI_AIR_PPM)
    r2, m0 = to_gre(fields["r2"]), to_gre(fields["m0"])
    brain = to_gre(fields["brain"]) > 0.5
    labels = to_gre(maps.labels, order=0).astype(np.int16)
    labels[~brain] = 0
    total, local = to_gre(fields["total"]), to_gre(fields["local"])
    del fields
    # The scanner centres its frequency on the brain (F0 adjustment), then shims.
    total -= np.float32(total[brain].mean())
    if shim_residual_hz:
        total += shim_residual_ppm(shape, affine, centre, shim_residual_hz, b0_tesla, rng["shim"])

    phi0 = smooth_phase_offset(shape, affine, centre, rng["phase"])
    snr_val = p.snr if snr is None else float(snr)
    echo1 = m0[brain] * np.exp(-r2[brain] * np.float32(te[0]))
    sigma_noise = 0.0
    if np.isfinite(snr_val) and snr_val > 0:
        sigma_noise = float(echo1.mean()) / snr_val * MAG_SCALE
    mag, phase = gre_signal(
        m0 * np.float32(MAG_SCALE), r2, total, phi0, te, b0_tesla, sigma_noise, rng["noise"]
    )
    return {"chi": chi, "r2": r2, "brain": brain, "labels": labels, "total": total,
            "local": local, "phi0": phi0, "mag": mag, "phase": phase, "affine": affine,
            "centre": centre, "sigma_noise": sigma_noise, "to_gre": to_gre, "vox": vox}  # fmt: skip


def _lesions_on_gre(head: _Head, to_gre: _GreSampler, g: dict[str, Any], vox_mm3: float
                    ) -> tuple[dict[str, np.ndarray], pd.DataFrame | None]:  # fmt: skip
    """Lesion masks (T2lesion, T1lesion) on the GRE grid and the lesion truth table."""
    if head.lesions is None:
        return {}, None
    t2_ids = to_gre(head.lesions.t2_ids, order=0)
    t1_ids = to_gre(head.lesions.t1_ids, order=0)
    t2_ids[~g["brain"]] = 0
    t1_ids[~g["brain"]] = 0
    masks = {"T2lesion": t2_ids > 0, "T1lesion": t1_ids > 0}
    table = lesion_truth(t2_ids, t1_ids, head.lesions, g["chi"], g["r2"], g["affine"], vox_mm3)
    return masks, table


def _check_inputs(group: str, te_s: tuple[float, ...] | None, b0_tesla: float
                  ) -> tuple[float, ...]:  # fmt: skip
    """Validated echo times (s); UsageError for a bad group, echo times or field strength."""
    if group not in ("HC", "MS"):
        raise UsageError(f"group must be HC or MS, not {group!r}")
    te = tuple(float(t) for t in (te_s if te_s is not None else DEFAULT_TE_S))
    if not te or min(te) <= 0 or list(te) != sorted(te):
        raise UsageError(f"echo times must be positive and increasing, got {te}")
    if b0_tesla <= 0:
        raise UsageError(f"field strength must be positive, got {b0_tesla} T")
    return te


#: Names of the random streams of one subject, in spawn order (fixed: same seed, same head).
_STREAMS = ("demo", "tissue", "les", "phase", "noise", "t1", "shim", "anat", "atr")


def _streams(seed: int, session_seed: int | None) -> dict[str, np.random.Generator]:
    """The subject's random streams; a later session gets new phase, noise, T1w and shim."""
    rng = {
        k: np.random.default_rng(s)
        for k, s in zip(_STREAMS, np.random.SeedSequence(seed).spawn(9), strict=True)
    }
    if session_seed is not None:  # same subject, new phase offset, noise, T1w noise and shim
        ses = np.random.SeedSequence([seed, session_seed]).spawn(4)
        rng.update({k: np.random.default_rng(s) for k, s in zip(_STREAMS[3:7], ses, strict=True)})
    return rng


def _compute_grid_fields(hm: HeadModel, maps: TissueMaps, deform: Deformation,
                         pose_m: np.ndarray, factor: int, pad_fraction: float, workers: int
                         ) -> dict[str, np.ndarray]:  # fmt: skip
    """Template maps block-averaged by ``factor``, pulled through the deformation, and their
    fields (ppm). Sources relative to air (the padding); the local field comes from chi
    (relative to CSF) inside the brain only. Also the grid's ``affine`` and voxel ``vox``."""
    src_affine = pose_m @ hm.affine  # phantom voxel -> scanner mm
    b0_phantom = np.linalg.solve(src_affine[:3, :3], np.array([0.0, 0.0, 1.0]))
    b0_phantom /= np.linalg.norm(b0_phantom)
    c_affine = block_affine(src_affine, factor)
    phantom_vox = voxel_sizes(c_affine)
    chi_c, local_src, r2_c, m0_c, brain_c = warp_compute_grid(
        [
            block_mean(maps.chi, factor),
            block_mean(np.where(maps.brain, maps.chi, np.float32(0)), factor),
            block_mean(maps.r2star, factor),
            block_mean(maps.m0, factor),
            block_mean(maps.brain.astype(np.float32), factor),
        ],
        block_affine(hm.affine, factor),
        deform,
    )
    total_c, local_c = forward_field_ppm(
        [chi_c - np.float32(CHI_AIR_PPM), local_src],
        phantom_vox,
        b0_phantom,
        pad_fraction=pad_fraction,
        workers=workers,
    )
    return {"affine": c_affine, "vox": phantom_vox, "chi": chi_c, "r2": r2_c, "m0": m0_c,
            "brain": brain_c, "total": total_c, "local": local_c}  # fmt: skip


class _GreSampler:
    """Compute-grid maps (blurred for partial volume, trilinear) or fine template labels
    (nearest, through the deformation) -> the GRE grid."""

    def __init__(self, hm: HeadModel, deform: Deformation, c_affine: np.ndarray,
                 shape: tuple[int, ...], affine: np.ndarray, pose_m: np.ndarray,
                 vox: tuple[float, ...], phantom_vox: np.ndarray) -> None:  # fmt: skip
        self.hm, self.deform, self.c_affine = hm, deform, c_affine
        self.shape, self.affine = shape, affine
        self.gre_subject = np.linalg.solve(pose_m, affine)  # GRE voxel -> subject mm
        self.sigma = partial_volume_sigma(np.array(vox), float(phantom_vox.mean()))

    def __call__(self, a: np.ndarray, order: int = 1, cval: float = 0.0) -> np.ndarray:
        if order == 0:
            return sample_points(
                a, self.hm.affine, self.shape, self.gre_subject, self.deform, order=0
            )
        return resample(a, self.c_affine, self.shape, self.affine, order=order,
                        blur_sigma_vox=self.sigma, cval=cval)  # fmt: skip


def _t1w_image(p: Any, head: _Head, pose_m: np.ndarray, centre: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Sagittal T1w at the preset's T1w resolution (image, affine) with a smooth receive-coil
    bias and Rician-like noise (1% of white matter)."""
    hm, maps, deform = head.hm, head.maps, head.deform
    tv = p.t1w_voxel_mm
    t_shape = grid_shape(p.t1w_fov_mm, (tv, tv, tv))
    t_aff = sagittal_grid_affine(t_shape, tv, centre)
    src_affine = pose_m @ hm.affine
    t_sigma = partial_volume_sigma(np.array([tv]), float(voxel_sizes(src_affine).mean()))
    t1 = ndimage.gaussian_filter(maps.t1w, t_sigma, mode="nearest", truncate=3.0)
    t1 = sample_points(t1, hm.affine, t_shape, np.linalg.solve(pose_m, t_aff), deform, order=1)
    bias = 1.0 + 0.1 * _smooth_unit_field(t_shape, rng, 20.0 / tv)
    noise = rng.normal(0.0, 0.01, (2, *t_shape)).astype(np.float32)
    t1 = np.hypot(t1 * bias + noise[0], noise[1]) * np.float32(MAG_SCALE)
    return t1.astype(np.float32), t_aff

"""Simulate one subject: 1 mm tissue maps -> fields -> GRE signal on the acquisition grid."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import ndimage

from bids_qsm.atlas.structures import BASAL_GANGLIA, aal3_structures
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
from bids_qsm.simulate.anatomy import HeadModel, Region, build_head_model, cropped_distance_mm
from bids_qsm.simulate.atrophy import erode_structures
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
from bids_qsm.simulate.tissues import (
    CHI_AIR_PPM,
    R2STAR_PER_CHI_HZ_PER_PPM,
    STRUCTURE_TISSUES,
    TISSUES,
)

#: Magnitude scale of the written images (arbitrary units, like a scanner's).
MAG_SCALE = 1000.0
#: Relative amplitude (plus an absolute 3 ppb) of the smooth variation inside structures.
_WITHIN_STRUCTURE_VARIATION = 0.15

_REGION_TISSUE = {
    Region.AIR: "air",
    Region.EXTRA_CSF: "csf",
    Region.SKULL: "skull",
    Region.SCALP: "scalp",
    Region.NECK: "neck",
    Region.SINUS: "air",
    Region.VEIN: "vein",
}

# T1w intensity (fraction of white matter) of non-brain regions and lesions.
_T1W_REGION = {
    Region.AIR: 0.0,
    Region.EXTRA_CSF: 0.12,
    Region.SKULL: 0.06,
    Region.SCALP: 0.85,
    Region.NECK: 0.55,
    Region.SINUS: 0.0,
    Region.VEIN: 0.35,
}


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


@dataclass
class _TissueMaps:
    chi: np.ndarray
    r2star: np.ndarray
    m0: np.ndarray
    t1w: np.ndarray
    labels: np.ndarray
    brain: np.ndarray


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


def _tissue_maps(
    hm: HeadModel,
    rng: np.random.Generator,
    *,
    b0_tesla: float,
    shifts: dict[str, float],
    offsets: dict[tuple[str, str], float],
    atrophy: float,
    lesions: LesionSet | None,
    structure_loss: dict[str, float] | None = None,
    atrophy_rng: np.random.Generator | None = None,
) -> _TissueMaps:
    """Susceptibility (ppm vs CSF), R2* (Hz), proton density and T1w maps on the 1 mm grid."""
    shape = hm.shape
    b0_scale = np.float32(b0_tesla / 3.0)
    f_csf, f_gm, f_wm = hm.frac_csf.copy(), hm.frac_gm.copy(), hm.frac_wm.copy()
    labels = hm.labels.copy()
    t1 = hm.template_t1 / np.float32(7400.0)
    if atrophy > 0:
        grow = cropped_distance_mm(hm.ventricles, atrophy) <= atrophy
        # the ventricles grow into white matter; the reported structures lose volume only
        # through ``structure_loss`` (controlled, documented fractions)
        reported = np.isin(labels, [v for s in aal3_structures() for v in s.labels])
        eaten = grow & hm.brain_mask & ~hm.ventricles & ~reported
        f_csf[eaten], f_gm[eaten], f_wm[eaten] = 1.0, 0.0, 0.0
        labels[eaten] = 0
        t1[eaten] = 3300.0 / 7400.0
    if structure_loss:
        to_csf, to_wm = erode_structures(
            labels, hm.labels, hm.ventricles, structure_loss, atrophy_rng or rng
        )
        for m, (c, g, w) in ((to_csf, (1.0, 0.0, 0.0)), (to_wm, (0.0, 0.0, 1.0))):
            f_csf[m], f_gm[m], f_wm[m] = c, g, w
            labels[m] = 0
        t1[to_csf], t1[to_wm] = 3300.0 / 7400.0, 1.0

    gm, wm, csf = TISSUES["gm"], TISSUES["wm"], TISSUES["csf"]
    d_gm, d_wm = rng.normal(0.0, 0.001, 2)
    chi = f_gm * np.float32(gm.chi_ppm + d_gm) + f_wm * np.float32(wm.chi_ppm + d_wm)
    r2 = f_csf * csf.r2star_hz + f_gm * gm.r2star_hz + f_wm * wm.r2star_hz
    m0 = f_csf * csf.m0 + f_gm * gm.m0 + f_wm * wm.m0
    # Slow white matter variation (+-2 ppb, ~6 mm correlation), sampled at WM voxels only.
    wm_idx = np.nonzero(f_wm > 0)
    wm_field = ndimage.gaussian_filter(
        rng.standard_normal(tuple(n // 3 + 2 for n in shape), dtype=np.float32), 2.0
    )
    wm_field /= np.float32(wm_field.std() + 1e-12)
    wm_var = ndimage.map_coordinates(wm_field, np.stack(wm_idx) / np.float32(3.0), order=1)
    chi[wm_idx] += np.float32(0.002) * wm_var * f_wm[wm_idx]

    # Smooth variation inside structures: a coarse random field sampled at their voxels.
    step = 2
    coarse = tuple(int(np.ceil(n / step)) + 1 for n in shape)
    variation = ndimage.gaussian_filter(rng.standard_normal(coarse, dtype=np.float32), 1.25)
    variation /= np.float32(variation.std() + 1e-12)
    lut = np.zeros(int(labels.max()) + 1, np.int16)
    structs = aal3_structures()
    for k, s in enumerate(structs, start=1):  # pulvinar comes after thalamus and overrides
        lut[[v for v in s.labels if v < lut.size]] = k
    struct_idx = lut[labels]
    slices = ndimage.find_objects(struct_idx, len(structs))
    for k, (s, sl) in enumerate(zip(structs, slices, strict=True), 1):
        if sl is None:
            continue
        m = struct_idx[sl] == k
        tis = STRUCTURE_TISSUES[s.name]
        value = tis.chi_ppm + offsets.get((s.name, s.hemisphere), 0.0) + shifts.get(s.name, 0.0)
        amp = _WITHIN_STRUCTURE_VARIATION * abs(tis.chi_ppm) + 0.003
        idx = np.argwhere(m) + np.array([b.start for b in sl])
        v = ndimage.map_coordinates(variation, idx.T / step, order=1)
        fc = f_csf[sl][m]
        chi[sl][m] = (1.0 - fc) * (value + amp * (v - v.mean()))
        r2_t = tis.r2star_hz + R2STAR_PER_CHI_HZ_PER_PPM * (value - tis.chi_ppm)
        r2[sl][m] = (1.0 - fc) * r2_t + fc * csf.r2star_hz
        m0[sl][m] = (1.0 - fc) * tis.m0 + fc * csf.m0

    if lesions is not None:
        les = lesions.t2_ids > 0
        for name, mask in (("lesion", les & ~lesions.rim), ("lesion_rim", lesions.rim)):
            tis = TISSUES[name]
            chi[mask], r2[mask], m0[mask] = tis.chi_ppm, tis.r2star_hz, tis.m0
        t1[les] = 0.7
        t1[lesions.t1_ids > 0] = 0.35

    outside = ~hm.brain_mask
    for reg, name in _REGION_TISSUE.items():
        m = hm.region == reg
        if reg != Region.VEIN:
            m &= outside
        tis = TISSUES[name]
        chi[m], r2[m], m0[m] = tis.chi_ppm, tis.r2star_hz, tis.m0
        t1[m] = _T1W_REGION[reg]
    r2 *= b0_scale
    return _TissueMaps(
        chi.astype(np.float32),
        r2.astype(np.float32),
        m0.astype(np.float32),
        t1.astype(np.float32),
        labels,
        hm.brain_mask,
    )


def _regional_truth(
    chi: np.ndarray, r2: np.ndarray, labels: np.ndarray, brain: np.ndarray, vox_mm3: float
) -> pd.DataFrame:
    """Mean true chi and R2* per structure and hemisphere (and bilateral) on the GRE grid."""
    brain_mean = float(chi[brain].mean()) if brain.any() else 0.0
    groups: dict[tuple[str, str], np.ndarray] = {}
    for s in aal3_structures():
        m = np.isin(labels, s.labels)
        groups[(s.name, s.hemisphere)] = m
        key = (s.name, "bilateral")
        groups[key] = groups.get(key, np.zeros_like(m)) | m
    for hemi in ("L", "R", "bilateral"):
        groups[("basal_ganglia", hemi)] = np.logical_or.reduce(
            [groups[(n, hemi)] for n in BASAL_GANGLIA]
        )
    rows = []
    for (name, hemi), m in groups.items():
        n = int(m.sum())
        rows.append(
            {
                "structure": name,
                "hemisphere": hemi,
                "chi_mean_ppm": float(chi[m].mean()) if n else np.nan,
                "chi_mean_ppm_brainref": float(chi[m].mean()) - brain_mean if n else np.nan,
                "r2star_mean_hz": float(r2[m].mean()) if n else np.nan,
                "nvox": n,
                "volume_mm3": n * vox_mm3,
            }
        )
    return pd.DataFrame(rows)


def _lesion_truth(
    t2_ids: np.ndarray,
    t1_ids: np.ndarray,
    lesions: LesionSet,
    chi: np.ndarray,
    r2: np.ndarray,
    affine: np.ndarray,
    vox_mm3: float,
) -> pd.DataFrame:
    """One row per lesion and label (T2lesion for all, T1lesion for black holes)."""
    rows = []
    for label, ids in (("T2lesion", t2_ids), ("T1lesion", t1_ids)):
        for k in range(1, len(lesions.is_prl) + 1):
            m = ids == k
            n = int(m.sum())
            if label == "T1lesion" and not lesions.is_t1[k - 1]:
                continue
            centre = affine[:3, :3] @ np.argwhere(m).mean(0) + affine[:3, 3] if n else [np.nan] * 3
            rows.append(
                {
                    "label": label,
                    "lesion_id": k,
                    "volume_mm3": n * vox_mm3,
                    "nvox": n,
                    "chi_mean_ppm": float(chi[m].mean()) if n else np.nan,
                    "r2star_mean_hz": float(r2[m].mean()) if n else np.nan,
                    "is_prl": lesions.is_prl[k - 1],
                    "is_t1_hypointense": lesions.is_t1[k - 1],
                    "x_mm": float(centre[0]),
                    "y_mm": float(centre[1]),
                    "z_mm": float(centre[2]),
                }
            )
    return pd.DataFrame(rows)


def simulate_subject(
    preset: str = "tiny",
    seed: int = 0,
    *,
    oblique_deg: float = 0.0,
    te_s: tuple[float, ...] | None = None,
    b0_tesla: float = 3.0,
    snr: float | None = None,
    lesions: bool = False,
    t1w: bool = False,
    group: str = "HC",
    edss: float = 0.0,
    null_effect: bool = False,
    atrophy: bool = False,
    n_lesions: int | None = None,
    pose: HeadPose | None = None,
    shim_residual_hz: float = 0.0,
    between_subject_sd_ppm: float = BETWEEN_SUBJECT_SD_PPM,
    effect_scale: float = 1.0,
    participant_label: str = "01",
    age: int | None = None,
    sex: str | None = None,
    disease_duration: float | None = None,
    voxel_mm: tuple[float, float, float] | None = None,
    fov_mm: tuple[float, float, float] | None = None,
    compute_factor: int | None = None,
    pad_fraction: float = 0.25,
    workers: int = 2,
    rigid_anatomy: bool = False,
    deformation: DeformationParams | None = None,
    session_seed: int | None = None,
    extra_shift_ppm: dict[str, float] | None = None,
) -> SimulatedSubject:
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
    if group not in ("HC", "MS"):
        raise UsageError(f"group must be HC or MS, not {group!r}")
    te = tuple(float(t) for t in (te_s if te_s is not None else DEFAULT_TE_S))
    if not te or min(te) <= 0 or list(te) != sorted(te):
        raise UsageError(f"echo times must be positive and increasing, got {te}")
    if b0_tesla <= 0:
        raise UsageError(f"field strength must be positive, got {b0_tesla} T")
    streams = np.random.SeedSequence(seed).spawn(9)
    rng_demo, rng_tissue, rng_les, rng_phase, rng_noise, rng_t1, rng_shim, rng_anat, rng_atr = (
        np.random.default_rng(s) for s in streams
    )
    if session_seed is not None:  # same subject, new phase offset, noise, T1w noise and shim
        ses = np.random.SeedSequence([seed, session_seed]).spawn(4)
        rng_phase, rng_noise, rng_t1, rng_shim = (np.random.default_rng(s) for s in ses)
    pose = pose or HeadPose()
    participant = draw_participant(
        rng_demo,
        group,
        edss=edss if group == "MS" else None,
        age=age,
        sex=sex,
        disease_duration=disease_duration,
    )
    participant = {"participant_id": f"sub-{participant_label}", **participant}
    edss_val = participant["EDSS"] or 0.0

    hm = build_head_model()
    lesion_set = None
    if lesions:
        if n_lesions is None:
            n_lesions = int(rng_les.integers(4, 9) + round(edss_val * 0.6))
        lut = np.isin(hm.labels, [v for s in aal3_structures() for v in s.labels])
        forbidden = ndimage.binary_dilation(lut | (hm.region == Region.VEIN), iterations=2)
        lesion_set = place_lesions(hm, rng_les, n_lesions, forbidden=forbidden)

    loss = structure_atrophy(group, edss_val, participant["disease_duration"]) if atrophy else {}
    shifts = disease_shift_ppm(group, edss_val, null_effect, effect_scale)
    for name, extra in (extra_shift_ppm or {}).items():
        shifts[name] = shifts.get(name, 0.0) + float(extra)
    maps = _tissue_maps(
        hm,
        rng_tissue,
        b0_tesla=b0_tesla,
        shifts=shifts,
        offsets=structure_offsets_ppm(rng_tissue, between_subject_sd_ppm),
        atrophy=atrophy_mm(group, edss_val) if atrophy else 0.0,
        lesions=lesion_set,
        structure_loss=loss,
        atrophy_rng=rng_atr,
    )
    if rigid_anatomy:
        deform = Deformation.identity()
    else:
        deform = random_deformation(rng_anat, hm.brain_mask, hm.affine, deformation)

    # Fields on the 1 mm phantom grid. Sources relative to air (the padding); the local
    # field comes from chi (relative to CSF) inside the brain only.
    pose_m = pose.matrix()
    src_affine = pose_m @ hm.affine  # phantom voxel -> scanner mm
    b0_phantom = np.linalg.solve(src_affine[:3, :3], np.array([0.0, 0.0, 1.0]))
    b0_phantom /= np.linalg.norm(b0_phantom)
    factor = p.compute_factor if compute_factor is None else int(compute_factor)
    c_affine = block_affine(src_affine, factor)
    phantom_vox = voxel_sizes(c_affine)
    # template maps on the compute grid, pulled through the subject's deformation
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

    # Acquisition grid centred on the brain.
    vox = tuple(float(v) for v in (voxel_mm or p.voxel_mm))
    fov = fov_mm or p.fov_mm
    shape = grid_shape(fov, vox)
    brain_centre = hm.affine @ np.append(np.argwhere(hm.brain_mask).mean(0), 1.0)
    centre = (pose_m @ brain_centre)[:3] + np.array([0.0, 0.0, -10.0])
    affine = oblique_grid_affine(shape, vox, centre, oblique_deg)
    sigma = partial_volume_sigma(np.array(vox), float(phantom_vox.mean()))

    gre_subject = np.linalg.solve(pose_m, affine)  # GRE voxel -> subject mm

    def to_gre(a: np.ndarray, order: int = 1, cval: float = 0.0) -> np.ndarray:
        """Coarse-grid maps (blurred, trilinear) or fine template labels (nearest) -> GRE."""
        if order == 0:
            return sample_points(a, hm.affine, shape, gre_subject, deform, order=0)
        return resample(a, c_affine, shape, affine, order=order, blur_sigma_vox=sigma, cval=cval)

    chi = to_gre(chi_c, cval=CHI_AIR_PPM)
    r2 = to_gre(r2_c)
    m0 = to_gre(m0_c)
    brain = to_gre(brain_c) > 0.5
    labels = to_gre(maps.labels, order=0).astype(np.int16)
    labels[~brain] = 0
    total = to_gre(total_c)
    local = to_gre(local_c)
    del total_c, local_c, chi_c, local_src, r2_c, m0_c, brain_c
    # The scanner centres its frequency on the brain (F0 adjustment), then shims.
    total -= np.float32(total[brain].mean())
    if shim_residual_hz:
        total += shim_residual_ppm(shape, affine, centre, shim_residual_hz, b0_tesla, rng_shim)

    phi0 = smooth_phase_offset(shape, affine, centre, rng_phase)
    snr_val = p.snr if snr is None else float(snr)
    echo1 = m0[brain] * np.exp(-r2[brain] * np.float32(te[0]))
    sigma_noise = 0.0
    if np.isfinite(snr_val) and snr_val > 0:
        sigma_noise = float(echo1.mean()) / snr_val * MAG_SCALE
    mag, phase = gre_signal(
        m0 * np.float32(MAG_SCALE), r2, total, phi0, te, b0_tesla, sigma_noise, rng_noise
    )

    vox_mm3 = float(np.prod(vox))
    regional = _regional_truth(chi, r2, labels, brain, vox_mm3)
    regional["atrophy_fraction"] = regional["structure"].map(loss).fillna(0.0).astype(float)

    lesion_masks: dict[str, np.ndarray] = {}
    lesion_truth = None
    if lesion_set is not None:
        t2_ids = to_gre(lesion_set.t2_ids, order=0)
        t1_ids = to_gre(lesion_set.t1_ids, order=0)
        t2_ids[~brain] = 0
        t1_ids[~brain] = 0
        lesion_masks = {"T2lesion": t2_ids > 0, "T1lesion": t1_ids > 0}
        lesion_truth = _lesion_truth(t2_ids, t1_ids, lesion_set, chi, r2, affine, vox_mm3)

    t1w_out = None
    if t1w:
        tv = p.t1w_voxel_mm
        t_shape = grid_shape(p.t1w_fov_mm, (tv, tv, tv))
        t_aff = sagittal_grid_affine(t_shape, tv, centre)
        t_sigma = partial_volume_sigma(np.array([tv]), float(voxel_sizes(src_affine).mean()))
        t1 = ndimage.gaussian_filter(maps.t1w, t_sigma, mode="nearest", truncate=3.0)
        t1 = sample_points(t1, hm.affine, t_shape, np.linalg.solve(pose_m, t_aff), deform, order=1)
        # Smooth receive-coil bias and Rician-like noise (1% of white matter).
        bias = 1.0 + 0.1 * _smooth_unit_field(t_shape, rng_t1, 20.0 / tv)
        noise = rng_t1.normal(0.0, 0.01, (2, *t_shape)).astype(np.float32)
        t1 = np.hypot(t1 * bias + noise[0], noise[1]) * np.float32(MAG_SCALE)
        t1w_out = (t1.astype(np.float32), t_aff)

    return SimulatedSubject(
        mag=mag,
        phase=phase,
        te_s=te,
        b0_tesla=float(b0_tesla),
        affine=affine,
        voxel_size=voxel_sizes(affine),
        b0_dir=b0_direction_from_affine(affine),
        chi_ppm=chi.astype(np.float32),
        labels=labels,
        brain_mask=brain,
        total_field_ppm=total.astype(np.float32),
        local_field_ppm=local.astype(np.float32),
        r2star_hz=r2.astype(np.float32),
        regional_truth=regional,
        t1w=t1w_out,
        lesion_masks=lesion_masks,
        lesion_truth=lesion_truth,
        participant=participant,
        phase_offset_rad=phi0,
        pose=pose,
        noise_sigma=sigma_noise,
        deformation=deform,
        structure_loss=loss,
    )

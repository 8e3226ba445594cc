"""Dipole-aware regions of interest for filtered-phase iron, and the phase-quality mask.

Why (``docs/methods_swi.md``): the filtered phase inside a structure is the high-passed dipole
field of *its own* iron plus the fields of its neighbours. Where a structure is flat along B0
or sits beside another iron-rich nucleus in the same axial plane, its own iron makes parts of
it *negative* (the substantia nigra next to the red nucleus, the pallidum next to the putamen),
so the plain regional mean of the filtered phase can fall with iron. The "self-positive ROI"
of a structure keeps the voxels where a unit susceptibility of the structure's own label,
pushed through the dipole kernel and the same high-pass as the data, gives a positive filtered
phase. Regional phase-iron values (mean, MP-APT, abnormal-phase volume) are taken over that
ROI, so that they rise with the structure's iron by construction of the geometry alone
(labels, voxel size, B0 direction: no susceptibility value is assumed).

The phase-quality mask drops the voxels where residual background field dominates a high-pass
filtered phase: near the brain edge (air-tissue interfaces of the sinuses, orbits and skull
base), at high R2* (signal dephasing near air) and at a large echo-fit residual.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from bids_qsm.atlas.structures import StructureDef
from bids_qsm.errors import InputDataError
from bids_qsm.qsm.geometry import dipole_kernel, fast_padded_shape
from bids_qsm.swi.highpass import gaussian_highpass, sigma_mm_to_vox

__all__ = ["DEFAULT_DOMINANCE", "phase_quality_mask", "self_positive_labels"]

#: Own-iron response / neighbours' cross-talk required in a self-positive ROI voxel.
DEFAULT_DOMINANCE: float = 2.0


def _unit_field(indicator: np.ndarray, voxel_size: np.ndarray, b0_dir: np.ndarray) -> np.ndarray:
    """Field (ppm) of a unit susceptibility on ``indicator`` (zero-padded FFT, float32)."""
    shape = indicator.shape
    pshape = fast_padded_shape(shape, tuple(n // 2 for n in shape))
    kern = dipole_kernel(pshape, voxel_size, b0_dir)
    buf = np.zeros(pshape, np.float32)
    buf[: shape[0], : shape[1], : shape[2]] = indicator
    spec = sfft.rfftn(buf, overwrite_x=True)
    spec *= kern
    out = sfft.irfftn(spec, s=pshape, overwrite_x=True)
    return np.ascontiguousarray(out[: shape[0], : shape[1], : shape[2]], dtype=np.float32)


def self_positive_labels(
    labels: np.ndarray,
    structures: Sequence[StructureDef],
    voxel_size: Sequence[float],
    b0_dir: Sequence[float],
    sigma_mm: Sequence[float] = (4.0, 4.0, 0.0),
    mask: np.ndarray | None = None,
    margin_mm: float = 20.0,
    dominance: float = DEFAULT_DOMINANCE,
) -> np.ndarray:
    """Label image restricted to each structure's self-positive ROI (int32, same shape).

    For each structure (one hemisphere, union of its label values): the dipole field of a
    unit susceptibility on its voxels, high-passed with the SWI Gaussian (``sigma_mm``, 0 =
    no smoothing along that axis, normalised inside ``mask``), and the voxels where it is
    > 0 keep their label; the others become 0. Labels of no structure are kept unchanged;
    where structures share labels (the pulvinar nuclei are part of the thalamus) the later
    structure of ``structures`` decides.
    With ``dominance`` > 0 a voxel must also satisfy ``w_self > dominance x sum_T |w_T|`` over
    the other structures T (unit susceptibility each; structures sharing label values, such as
    the thalamus and its pulvinar, are not counted): the structure's own iron must dominate the
    cross-talk of its neighbours (e.g. the pallidum's negative field in the putamen). Default
    :data:`DEFAULT_DOMINANCE` (chosen on the simulator, ``docs/methods_swi.md``).
    Computed on the bounding box of the structures plus ``margin_mm``.
    """
    lab = np.asarray(labels)
    vs = np.asarray(voxel_size, dtype=float)
    b = np.asarray(b0_dir, dtype=float)
    if lab.ndim != 3 or vs.size != 3 or b.size != 3 or not np.linalg.norm(b) > 0:
        raise InputDataError("self-positive ROIs need a 3D label image, 3 voxel sizes and B0")
    m = np.ones(lab.shape, bool) if mask is None else np.asarray(mask, bool)
    out = lab.astype(np.int32, copy=True)
    wanted = np.isin(lab, sorted({int(v) for s in structures for v in s.labels}))
    if not wanted.any():
        return out
    idx = np.nonzero(wanted)
    pad = [int(np.ceil(margin_mm / d)) for d in vs]
    box = tuple(
        slice(max(0, int(i.min()) - p), min(n, int(i.max()) + p + 1))
        for i, p, n in zip(idx, pad, lab.shape, strict=True)
    )
    lb, mb = lab[box], m[box]
    sig = sigma_mm_to_vox(sigma_mm, vs)
    sub = out[box]
    inds = [np.isin(lb, s.labels) for s in structures]
    resp = [
        gaussian_highpass(_unit_field(ind.astype(np.float32), vs, b), mb, sig)
        if ind.any()
        else None
        for ind in inds
    ]
    for k, (s, ind, hp) in enumerate(zip(structures, inds, resp, strict=True)):
        if hp is None:
            continue
        own = hp[ind]
        keep = own > 0
        if dominance > 0:
            cross = np.zeros(own.shape, np.float32)
            for j, (t, r) in enumerate(zip(structures, resp, strict=True)):
                if j != k and r is not None and not set(t.labels) & set(s.labels):
                    cross += np.abs(r[ind])
            keep &= own > np.float32(dominance) * cross
        # Later structures decide for their voxels (the pulvinar inside the thalamus).
        sub[ind] = np.where(keep, lb[ind], 0)
    out[box] = sub
    return out


def phase_quality_mask(
    mask: np.ndarray,
    voxel_size: Sequence[float],
    *,
    edge_mm: float = 4.0,
    r2star_hz: np.ndarray | None = None,
    r2star_max_hz: float = 80.0,
    fit_residual: np.ndarray | None = None,
    residual_max: float = 0.3,
) -> np.ndarray:
    """Voxels of ``mask`` where the filtered phase is not dominated by background field (bool).

    Excludes voxels closer than ``edge_mm`` to the outside of ``mask`` (Euclidean distance
    in mm), with R2* above ``r2star_max_hz`` (Hz; dephasing next to air; pass the value for
    the field strength: about 80 Hz at 3 T, twice the pallidum's) and with a relative echo-fit
    residual above ``residual_max`` (the QSM core's quality map; METHODS section 1).
    """
    m = np.asarray(mask, bool)
    if edge_mm > 0:
        dist = ndimage.distance_transform_edt(m, sampling=np.asarray(voxel_size, float))
        m = m & (dist > edge_mm)
    if r2star_hz is not None:
        r2 = np.asarray(r2star_hz)
        m &= ~(r2 > r2star_max_hz)
    if fit_residual is not None:
        res = np.asarray(fit_residual)
        m &= ~(res > residual_max)
    return m

"""The 1 mm head model shared by every simulated subject (MNI152NLin6Asym space).

Brain tissue comes from the packaged MNI152 brain template: its T1 intensity gives partial
volume fractions of CSF, gray and white matter, and the AAL3 labels (resampled through world
coordinates) give the deep gray matter structures. Around the brain a head is built from
distance shells (extra-cerebral CSF, skull, scalp), a face / skull-base block and a neck,
with air cavities (frontal, sphenoid, ethmoid and maxillary sinuses, nasal cavity, mastoid
air cells, ear canals) and a few large veins (superior sagittal, straight and transverse
sinuses, vein of Galen, internal cerebral veins). Air outside the head fills the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache

import numpy as np
from scipy import ndimage

from bids_qsm.simulate.templates import load_aal3, load_template

#: Extra slices below the template's field of view, filled with neck (mm at 1 mm).
NECK_MM = 40
#: Template intensities of the CSF, cortical gray matter and white matter modes.
I_CSF, I_GM, I_WM = 3300.0, 5800.0, 7400.0


class Region(IntEnum):
    """Coarse region codes of the head model (``HeadModel.region``)."""

    AIR = 0
    BRAIN = 1
    EXTRA_CSF = 2
    SKULL = 3
    SCALP = 4
    NECK = 5
    SINUS = 6
    VEIN = 7


@dataclass(frozen=True)
class HeadModel:
    """Anatomy on the 1 mm phantom grid (world = MNI mm through ``affine``)."""

    affine: np.ndarray  # 4x4, voxel -> MNI mm (x axis flipped like the template)
    region: np.ndarray  # uint8 Region codes
    brain_mask: np.ndarray  # bool, the template brain (ventricles included)
    frac_csf: np.ndarray  # float32 partial volume fractions inside the brain (sum to 1)
    frac_gm: np.ndarray
    frac_wm: np.ndarray
    labels: np.ndarray  # int16 AAL3 values
    ventricles: np.ndarray  # bool
    dist_brain_mm: np.ndarray  # float32 distance outside the brain (0 inside)
    template_t1: np.ndarray  # float32 template intensity (0 outside the brain)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.region.shape)  # type: ignore[return-value]

    def world_coords(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable MNI x, y, z (mm) of every voxel (float32; the affine is diagonal)."""
        a = self.affine
        n = self.shape
        x = (a[0, 0] * np.arange(n[0]) + a[0, 3]).astype(np.float32)[:, None, None]
        y = (a[1, 1] * np.arange(n[1]) + a[1, 3]).astype(np.float32)[None, :, None]
        z = (a[2, 2] * np.arange(n[2]) + a[2, 3]).astype(np.float32)[None, None, :]
        return x, y, z


def tissue_fractions(t1: np.ndarray, brain: np.ndarray) -> tuple[np.ndarray, ...]:
    """CSF, GM and WM fractions from T1 intensity by linear mixing between class modes."""
    t1 = t1.astype(np.float32)
    f_wm = np.clip((t1 - I_GM) / (I_WM - I_GM), 0.0, 1.0)
    f_csf = np.clip((I_GM - t1) / (I_GM - I_CSF), 0.0, 1.0)
    f_gm = 1.0 - f_wm - f_csf
    out = []
    for f in (f_csf, f_gm, f_wm):
        f = np.where(brain, f, 0.0).astype(np.float32)
        out.append(f)
    return tuple(out)


def resample_labels_nearest(
    labels: np.ndarray, labels_affine: np.ndarray, shape: tuple[int, ...], affine: np.ndarray
) -> np.ndarray:
    """Nearest-neighbour resampling of a label image onto another grid (world coordinates)."""
    m = np.linalg.inv(labels_affine) @ affine
    lin, off = m[:3, :3], m[:3, 3]
    if np.allclose(lin, np.diag(np.round(np.diag(lin)))) and np.allclose(off, np.round(off)):
        # Axis flips / integer shifts only (e.g. template vs AAL3 grids): exact fancy indexing.
        out = np.zeros(shape, np.int16)
        idx = []
        for ax in range(3):
            src = np.round(lin[ax, ax] * np.arange(shape[ax]) + off[ax]).astype(int)
            idx.append(src)
        ok = [(i >= 0) & (i < labels.shape[ax]) for ax, i in enumerate(idx)]
        sub = labels[np.ix_(*(i[o] for i, o in zip(idx, ok, strict=True)))]
        out[np.ix_(*(np.nonzero(o)[0] for o in ok))] = sub
        return out
    out = ndimage.affine_transform(
        labels, m[:3, :3], offset=m[:3, 3], output_shape=shape, order=0, cval=0, mode="constant"
    )
    return out.astype(np.int16)


def cropped_distance_mm(mask: np.ndarray, max_mm: float) -> np.ndarray:
    """Exact Euclidean distance (mm, 1 mm voxels) to ``mask``, computed only in its bounding
    box grown by ``max_mm``; farther voxels get +inf. Cheap for compact masks."""
    out = np.full(mask.shape, np.inf, np.float32)
    idx = np.argwhere(mask)
    if idx.size == 0:
        return out
    m = int(np.ceil(max_mm)) + 1
    lo = np.maximum(idx.min(0) - m, 0)
    hi = np.minimum(idx.max(0) + m + 1, mask.shape)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    out[sl] = ndimage.distance_transform_edt(~mask[sl])
    return out


def coarse_distance_mm(mask: np.ndarray, factor: int = 2) -> np.ndarray:
    """Approximate distance (mm, 1 mm voxels) to ``mask`` from an EDT on a grid ``factor``
    times coarser (about 8x faster; error below ``factor`` mm), float32."""
    f = factor
    n = [int(np.ceil(s / f)) * f for s in mask.shape]
    padded = np.zeros(n, bool)
    padded[: mask.shape[0], : mask.shape[1], : mask.shape[2]] = mask
    blocks = padded.reshape(n[0] // f, f, n[1] // f, f, n[2] // f, f).any(axis=(1, 3, 5))
    d = ndimage.distance_transform_edt(~blocks, sampling=float(f)).astype(np.float32)
    # Distance from a fine voxel to the nearest marked block is at most (f - 1) mm less.
    d = np.maximum(d - (f - 1) * 0.5, 0.0)
    up = np.repeat(np.repeat(np.repeat(d, f, 0), f, 1), f, 2)
    out = up[: mask.shape[0], : mask.shape[1], : mask.shape[2]].copy()
    out[mask] = 0.0
    return out


def _ellipsoid(x, y, z, center, semi) -> np.ndarray:
    return (
        ((x - center[0]) / semi[0]) ** 2
        + ((y - center[1]) / semi[1]) ** 2
        + ((z - center[2]) / semi[2]) ** 2
    ) <= 1.0


def _tube(x, y, z, points, radius: float) -> np.ndarray:
    """Voxels within ``radius`` mm of a polyline through ``points`` (MNI mm)."""
    out = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), dtype=bool)
    for p0, p1 in zip(points[:-1], points[1:], strict=False):
        p0, p1 = np.asarray(p0, np.float32), np.asarray(p1, np.float32)
        lo = np.minimum(p0, p1) - radius - 1
        hi = np.maximum(p0, p1) + radius + 1
        sx = (x[:, 0, 0] >= lo[0]) & (x[:, 0, 0] <= hi[0])
        sy = (y[0, :, 0] >= lo[1]) & (y[0, :, 0] <= hi[1])
        sz = (z[0, 0, :] >= lo[2]) & (z[0, 0, :] <= hi[2])
        ix, iy, iz = np.nonzero(sx)[0], np.nonzero(sy)[0], np.nonzero(sz)[0]
        if not (ix.size and iy.size and iz.size):
            continue
        sl = np.s_[ix[0] : ix[-1] + 1, iy[0] : iy[-1] + 1, iz[0] : iz[-1] + 1]
        px, py, pz = x[sl[0]], y[:, sl[1]], z[:, :, sl[2]]
        d = p1 - p0
        t = ((px - p0[0]) * d[0] + (py - p0[1]) * d[1] + (pz - p0[2]) * d[2]) / float(d @ d)
        t = np.clip(t, 0.0, 1.0)
        dist2 = (px - p0[0] - t * d[0]) ** 2 + (py - p0[1] - t * d[1]) ** 2
        dist2 = dist2 + (pz - p0[2] - t * d[2]) ** 2
        out[sl] |= dist2 <= radius**2
    return out


# Air cavities (MNI mm): centre, semi-axes. Carved only outside the brain (>= 2 mm away).
_SINUSES: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = (
    ((0.0, 80.0, 2.0), (14.0, 5.0, 10.0)),  # frontal sinus
    ((0.0, 15.0, -42.0), (13.0, 12.0, 10.0)),  # sphenoid sinus
    ((-12.0, 45.0, -30.0), (6.0, 14.0, 9.0)),  # ethmoid cells L
    ((12.0, 45.0, -30.0), (6.0, 14.0, 9.0)),  # ethmoid cells R
    ((-32.0, 35.0, -62.0), (13.0, 16.0, 15.0)),  # maxillary sinus L
    ((32.0, 35.0, -62.0), (13.0, 16.0, 15.0)),  # maxillary sinus R
    ((0.0, 62.0, -55.0), (8.0, 30.0, 12.0)),  # nasal cavity (open to the outside)
    ((-52.0, -32.0, -48.0), (10.0, 12.0, 10.0)),  # mastoid air cells L
    ((52.0, -32.0, -48.0), (10.0, 12.0, 10.0)),  # mastoid air cells R
)
_EAR_CANALS = (
    ((-50.0, -20.0, -45.0), (-100.0, -20.0, -45.0)),
    ((50.0, -20.0, -45.0), (100.0, -20.0, -45.0)),
)
_EAR_CANAL_RADIUS_MM = 4.0

# Large veins inside or next to the brain: polyline (MNI mm) and radius (mm).
_VEINS: tuple[tuple[tuple[tuple[float, float, float], ...], float], ...] = (
    (((-3.0, -2.0, 18.0), (-3.0, -34.0, 12.0), (0.0, -40.0, 9.0)), 1.5),  # internal cerebral L
    (((3.0, -2.0, 18.0), (3.0, -34.0, 12.0), (0.0, -40.0, 9.0)), 1.5),  # internal cerebral R
    (((0.0, -40.0, 9.0), (0.0, -48.0, 6.0)), 2.5),  # vein of Galen
    (((0.0, -48.0, 6.0), (0.0, -70.0, 2.0), (0.0, -96.0, -4.0)), 2.5),  # straight sinus
    (((0.0, -100.0, -6.0), (-40.0, -88.0, -18.0), (-60.0, -60.0, -30.0)), 3.0),  # transverse L
    (((0.0, -100.0, -6.0), (40.0, -88.0, -18.0), (60.0, -60.0, -30.0)), 3.0),  # transverse R
)


def _superior_sagittal_sinus(brain: np.ndarray, hm_affine: np.ndarray) -> list:
    """Polyline following the top of the brain at the midline, 3 mm above its surface."""
    i0 = int(round(np.linalg.inv(hm_affine)[0] @ np.array([0.0, 0.0, 0.0, 1.0])))
    pts = []
    for y in range(-100, 71, 10):
        j = int(round(y - hm_affine[1, 3]))
        col = np.nonzero(brain[i0, j, :])[0]
        if col.size:
            z = hm_affine[2, 2] * col[-1] + hm_affine[2, 3]
            pts.append((0.0, float(y), float(z) + 3.0))
    return pts


@lru_cache(maxsize=1)
def build_head_model() -> HeadModel:
    """Build (once per process) the 1 mm head model from the packaged template and atlas."""
    t1, t_aff = load_template()
    shape = (t1.shape[0], t1.shape[1], t1.shape[2] + NECK_MM)
    affine = t_aff.copy()
    affine[2, 3] -= NECK_MM * affine[2, 2]
    t1_ext = np.zeros(shape, np.float32)
    t1_ext[:, :, NECK_MM:] = t1
    brain = ndimage.binary_fill_holes(t1_ext > 0)
    t1_ext[brain & (t1_ext <= 0)] = I_CSF

    aal, aal_aff = load_aal3()
    labels = resample_labels_nearest(aal, aal_aff, shape, affine)
    labels[~brain] = 0

    f_csf, f_gm, f_wm = tissue_fractions(t1_ext, brain)
    # Exact 2 mm shell of extra-cerebral CSF (ball dilation), coarse distances farther out.
    g = np.indices((5, 5, 5)) - 2
    ball2 = (g**2).sum(0) <= 4
    csf_shell = ndimage.binary_dilation(brain, structure=ball2) & ~brain
    dist = coarse_distance_mm(brain)
    dist[csf_shell] = np.minimum(dist[csf_shell], 2.0)
    dist[~brain & ~csf_shell] = np.maximum(dist[~brain & ~csf_shell], 2.01)
    depth = coarse_distance_mm(~brain)
    ventricles = brain & (f_csf > 0.5) & (depth > 8.0)

    hm = HeadModel(
        affine,
        np.zeros(shape, np.uint8),
        brain,
        f_csf,
        f_gm,
        f_wm,
        labels,
        ventricles,
        dist,
        t1_ext,
    )
    x, y, z = hm.world_coords()

    # Head: a 14 mm shell around the brain, a face / skull-base block and a neck.
    head = dist <= 14.0
    head |= _ellipsoid(x, y, z, (0.0, 22.0, -50.0), (66.0, 70.0, 42.0))
    head |= _ellipsoid(x, y, z, (0.0, -15.0, -60.0), (62.0, 75.0, 30.0))
    neck = ((x / 50.0) ** 2 + ((y + 20.0) / 55.0) ** 2 <= 1.0) & (z <= -60.0)
    head |= neck
    depth_head = coarse_distance_mm(~head)

    region = np.full(shape, Region.NECK, np.uint8)
    region[~head] = Region.AIR
    region[head & (depth_head <= 5.0)] = Region.SCALP
    region[head & (dist > 2.0) & (dist <= 8.0) & (depth_head > 5.0)] = Region.SKULL
    region[head & csf_shell] = Region.EXTRA_CSF
    region[brain] = Region.BRAIN

    cavities = np.zeros(shape, bool)
    for c, s in _SINUSES:
        cavities |= _ellipsoid(x, y, z, c, s)
    for p0, p1 in _EAR_CANALS:
        cavities |= _tube(x, y, z, (p0, p1), _EAR_CANAL_RADIUS_MM)
    region[cavities & head & (dist >= 2.0)] = Region.SINUS

    veins = np.zeros(shape, bool)
    for pts, r in _VEINS:
        veins |= _tube(x, y, z, pts, r)
    sss = _superior_sagittal_sinus(brain, affine)
    if len(sss) >= 2:
        veins |= _tube(x, y, z, sss, 3.0)
    region[veins & head & (region != Region.SINUS)] = Region.VEIN

    return HeadModel(affine, region, brain, f_csf, f_gm, f_wm, labels, ventricles, dist, t1_ext)

"""Structure-wise atrophy of the deep gray matter (template space, 1 mm head model).

A structure losing a fraction ``f`` of its volume gives up its outermost voxels (smallest
distance to its boundary, ties broken by a smooth random field so the shell stays compact)
until ``(1 - f)`` of its template volume remains (counting what an enlarged ventricle already
took). Voxels within 3 mm of the ventricles become CSF (ventricular enlargement), the others
white matter. Susceptibility is set afterwards, per remaining voxel, so atrophy does not
change the structure's iron (``null_effect`` cohorts keep the atrophy).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from bids_qsm.atlas.structures import aal3_structures
from bids_qsm.simulate.anatomy import cropped_distance_mm


def erode_structures(
    labels: np.ndarray,
    template_labels: np.ndarray,
    ventricles: np.ndarray,
    losses: dict[str, float],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the voxels removed by atrophy: (become CSF, become white matter).

    ``labels`` are the current AAL3 labels (possibly already eroded by the ventricles),
    ``template_labels`` the unatrophied ones (reference volumes); ``losses`` maps structure
    names (``thalamus``, ``caudate``, ``putamen``) to volume fractions.
    """
    removed = np.zeros(labels.shape, bool)
    for s in aal3_structures():
        frac = float(losses.get(s.name, 0.0))
        if frac <= 0:
            continue
        m_all = np.isin(labels, s.labels)
        if not m_all.any():
            continue
        n_ref = int(np.isin(template_labels, s.labels).sum())
        n_remove = int(m_all.sum()) - int(round((1.0 - frac) * n_ref))
        if n_remove <= 0:
            continue
        idx = np.argwhere(m_all)
        lo = np.maximum(idx.min(0) - 2, 0)
        hi = np.minimum(idx.max(0) + 3, labels.shape)
        sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        m = m_all[sl]
        depth = ndimage.distance_transform_edt(m).astype(np.float32)
        tie = ndimage.gaussian_filter(rng.standard_normal(m.shape).astype(np.float32), 2.0)
        tie = (tie - tie.min()) / (np.ptp(tie) + 1e-12)
        score = np.where(m, depth + 0.9 * tie, np.inf)
        order = np.argsort(score, axis=None, kind="stable")[:n_remove]
        sub = np.zeros(m.size, bool)
        sub[order] = True
        removed[sl] |= sub.reshape(m.shape)
    near_vent = cropped_distance_mm(ventricles, 3.0) <= 3.0
    return removed & near_vent, removed & ~near_vent

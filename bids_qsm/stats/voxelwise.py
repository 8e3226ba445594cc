"""Voxelwise group analysis of susceptibility maps in template space.

Every participant's Chimap (ppm, GRE space) is resampled onto the atlas template with the
participant's ``<src>_from-GRE_to-<template>_mode-image_xfm.h5`` (:func:`warp_chimap`). Inside a
deep gray matter mask (union of the atlas structures on the template grid,
:func:`deep_gm_mask`), an ordinary least squares GLM with the regional design (intercept,
group indicators, covariates; no volume term) is fitted at every voxel with nilearn's
``OLSModel``; each group contrast gives a t map, two-sided p, Benjamini-Hochberg q over the
mask voxels (statsmodels) and, when ``n_permutations > 0``, family-wise error corrected p by
max-|t| permutation (nilearn ``permuted_ols``, Freedman-Lane).

Output names (``group/``; BIDS-style entities, ``desc`` = contrast without punctuation, e.g.
``MSvsHC`` for ``MS-HC``)::

    space-<template>_desc-<contrast>_tstat.nii.gz     t statistic
    space-<template>_desc-<contrast>_p.nii.gz         two-sided uncorrected p
    space-<template>_desc-<contrast>_q.nii.gz         FDR q (Benjamini-Hochberg, in mask)
    space-<template>_desc-<contrast>_pfwe.nii.gz      permutation FWE p (if permutations)
    space-<template>_desc-<contrast>_effect.nii.gz    adjusted difference (ppm)
    space-<template>_desc-deepgm_mask.nii.gz          analysis mask
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn.glm import OLSModel
from nilearn.maskers import NiftiMasker
from nilearn.mass_univariate import permuted_ols
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from bids_qsm.atlas.structures import StructureDef
from bids_qsm.bids.writers import atomic_save_nifti

LOGGER = logging.getLogger("bids_qsm.group")


@dataclass
class VoxelwiseResult:
    """Maps of one contrast (template grid; 0 / 1 outside the mask for stats / p maps)."""

    contrast: str
    tstat: nib.Nifti1Image
    p: nib.Nifti1Image
    q: nib.Nifti1Image
    effect: nib.Nifti1Image
    pfwe: nib.Nifti1Image | None
    n: int
    df: int
    n_voxels: int
    n_significant_q05: int


def contrast_desc(label: str) -> str:
    """BIDS ``desc`` value of a contrast label: ``"MS-HC"`` -> ``"MSvsHC"``."""
    return re.sub(r"[^A-Za-z0-9]", "", label.replace("-", "vs"))


def deep_gm_mask(
    labels_img: nib.Nifti1Image, structures: Sequence[StructureDef]
) -> nib.Nifti1Image:
    """Union of the structures' labels on the template grid (uint8 0/1)."""
    labels = np.asarray(labels_img.dataobj)
    wanted = sorted({v for s in structures for v in s.labels})
    mask = np.isin(labels, wanted).astype(np.uint8)
    return nib.Nifti1Image(mask, labels_img.affine)


def warp_chimap(chimap: Path, transform: Path, atlas) -> nib.Nifti1Image:  # atlas: Atlas
    """Resample a GRE-space Chimap (ppm) onto the atlas template grid (linear)."""
    from bids_qsm.atlas.registration import warp_to_template

    return warp_to_template(nib.load(chimap), transform, atlas, interpolation="linear")


def _image(values: np.ndarray, masker: NiftiMasker, fill: float) -> nib.Nifti1Image:
    img = masker.inverse_transform(values.astype(np.float32))
    data = np.asarray(img.dataobj, dtype=np.float32)
    inside = np.asarray(masker.mask_img_.dataobj) > 0
    data[~inside] = fill
    return nib.Nifti1Image(data, img.affine)


def voxelwise_glm(
    images: Sequence[nib.Nifti1Image | Path],
    design: pd.DataFrame,
    contrasts: Mapping[str, str],
    mask_img: nib.Nifti1Image,
    n_permutations: int = 0,
    n_jobs: int = 1,
    random_state: int = 0,
) -> list[VoxelwiseResult]:
    """Mass-univariate OLS over the mask voxels; one result per contrast.

    Parameters
    ----------
    images : one template-space map per row of ``design`` (same grid as ``mask_img``).
    design : design matrix (intercept included), e.g. from
        :func:`bids_qsm.stats.group.design_matrix`.
    contrasts : contrast label -> design column tested (``{"MS-HC": "group[MS]"}``).
    mask_img : analysis mask; voxels where any image is not finite are left out.
    n_permutations : > 0 adds max-|t| permutation FWE p values (nilearn ``permuted_ols``).
    """
    if len(images) != len(design):
        raise ValueError(f"{len(images)} images for a design of {len(design)} rows")
    masker = NiftiMasker(mask_img=mask_img, standardize=None).fit()
    # one image at a time: never holds more than one full template volume in memory
    Y = np.vstack([masker.transform(img) for img in images]).astype(np.float64)
    finite = np.isfinite(Y).all(axis=0)
    Y = np.where(finite[None, :], Y, 0.0)
    X = design.to_numpy(float)
    fit = OLSModel(X).fit(Y)
    results = []
    for label, column in contrasts.items():
        c = np.zeros(X.shape[1])
        c[design.columns.get_loc(column)] = 1.0
        con = fit.Tcontrast(c)
        t = np.where(finite, np.nan_to_num(np.ravel(con.t)), 0.0)
        df = int(con.df_den)
        p = np.where(finite, 2.0 * sps.t.sf(np.abs(t), df), 1.0)
        q = np.ones_like(p)
        if finite.any():
            q[finite] = multipletests(p[finite], method="fdr_bh")[1]
        pfwe_img = None
        if n_permutations > 0:
            j = design.columns.get_loc(column)
            others = [k for k in range(X.shape[1]) if k != j and np.ptp(X[:, k]) > 0]
            perm = permuted_ols(
                X[:, [j]],
                Y[:, finite],
                confounding_vars=X[:, others] if others else None,
                model_intercept=True,
                n_perm=int(n_permutations),
                two_sided_test=True,
                random_state=random_state,
                n_jobs=n_jobs if n_permutations * int(finite.sum()) > 20_000_000 else 1,
                verbose=0,
            )
            pfwe = np.ones_like(p)
            pfwe[finite] = 10.0 ** (-np.ravel(perm["logp_max_t"]))
            pfwe_img = _image(pfwe, masker, 1.0)
        effect = np.where(finite, np.ravel(con.effect), 0.0)
        results.append(
            VoxelwiseResult(
                contrast=label,
                tstat=_image(t, masker, 0.0),
                p=_image(p, masker, 1.0),
                q=_image(q, masker, 1.0),
                effect=_image(effect, masker, 0.0),
                pfwe=pfwe_img,
                n=int(X.shape[0]),
                df=df,
                n_voxels=int(finite.sum()),
                n_significant_q05=int((q[finite] < 0.05).sum()),
            )
        )
    return results


def write_voxelwise(
    results: Sequence[VoxelwiseResult],
    mask_img: nib.Nifti1Image,
    group_dir: Path,
    template_name: str,
) -> list[Path]:
    """Write the maps of :func:`voxelwise_glm` (names in the module docstring)."""
    group_dir = Path(group_dir)
    written = [
        atomic_save_nifti(mask_img, group_dir / f"space-{template_name}_desc-deepgm_mask.nii.gz")
    ]
    for r in results:
        stem = group_dir / f"space-{template_name}_desc-{contrast_desc(r.contrast)}"
        maps = {"tstat": r.tstat, "p": r.p, "q": r.q, "effect": r.effect, "pfwe": r.pfwe}
        for suffix, img in maps.items():
            if img is not None:
                written.append(atomic_save_nifti(img, Path(f"{stem}_{suffix}.nii.gz")))
    return written

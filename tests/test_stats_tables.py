"""Regional and lesion tables against hand-built label images with known values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from bids_qsm.atlas.structures import StructureDef, aal3_structures
from bids_qsm.stats.lesions import LESION_COLUMNS, lesion_table
from bids_qsm.stats.regional import STATS_COLUMNS, Entities, regional_table


def _two_blocks() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = np.zeros((20, 10, 10), np.int16)
    labels[2:6, 2:6, 2:6] = 75  # caudate L: 64 voxels
    labels[12:16, 2:6, 2:6] = 76  # caudate R: 64 voxels
    chi = np.zeros(labels.shape, np.float32)
    chi[labels == 75] = 0.06
    chi[labels == 76] = 0.10
    mask = np.ones(labels.shape, bool)
    return labels, chi, mask


def test_regional_table_values_and_columns() -> None:
    labels, chi, mask = _two_blocks()
    mask[2, 2:6, 2:6] = False  # 16 caudate-L voxels outside the mask: excluded from stats
    phase_iron = np.zeros(labels.shape, np.float32)
    phase_iron[12:14, 2:6, 2:6] = 0.3  # 32 abnormal voxels in caudate R
    df = regional_table(
        chi,
        labels,
        mask,
        aal3_structures(),
        voxel_volume_mm3=2.0,
        entities=Entities("sub-01", None, "x", None),
        atlas="AAL3",
        phase_iron_rad=phase_iron,
        apt_threshold_rad=0.1,
        reference_region="brain",
        reference_value_ppm=0.01,
    )
    assert tuple(df.columns) == STATS_COLUMNS
    # 10 structures x 3 hemisphere rows + whole brain
    assert len(df) == 31
    cl = df[(df.structure == "caudate") & (df.hemisphere == "L")].iloc[0]
    assert cl.nvox == 48 and cl.volume_mm3 == pytest.approx(128.0)
    assert cl.chi_mean_ppm == pytest.approx(0.06, abs=1e-6)
    cb = df[(df.structure == "caudate") & (df.hemisphere == "bilateral")].iloc[0]
    assert cb.nvox == 112
    assert cb.chi_mean_ppm == pytest.approx((48 * 0.06 + 64 * 0.10) / 112, abs=1e-6)
    cr = df[(df.structure == "caudate") & (df.hemisphere == "R")].iloc[0]
    assert cr.mpapt_rad == pytest.approx(0.3, abs=1e-6)
    assert cr.apt_volume_mm3 == pytest.approx(64.0)
    # empty structures give NaN statistics, not errors
    put = df[(df.structure == "putamen") & (df.hemisphere == "L")].iloc[0]
    assert put.nvox == 0 and np.isnan(put.chi_mean_ppm)
    wb = df[df.structure == "whole_brain"].iloc[0]
    assert wb.nvox == int(mask.sum())
    assert (df.acq == "x").all() and (df.session_id == "n/a").all()


def test_regional_table_custom_groups_and_per_structure_threshold() -> None:
    labels, chi, mask = _two_blocks()
    structures = [StructureDef("blob", "L", (75,)), StructureDef("blob", "R", (76,))]
    pi = np.where(labels > 0, 0.2, 0.0).astype(np.float32)
    df = regional_table(
        chi,
        labels,
        mask,
        structures,
        1.0,
        Entities("sub-02"),
        "custom",
        phase_iron_rad=pi,
        apt_threshold_rad={"blob": 0.25},
    )
    assert list(df.structure) == ["blob"] * 3 + ["whole_brain"]
    blob = df[df.structure == "blob"]
    assert (blob.apt_volume_mm3 == 0).all() and blob.mpapt_rad.isna().all()


def _ball(shape: tuple[int, int, int], centre: tuple[int, int, int], r: float) -> np.ndarray:
    grid = np.indices(shape)
    d2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
    return d2 <= r * r


def test_lesion_table_rim_core_and_totals() -> None:
    shape = (40, 40, 30)
    a = _ball(shape, (10, 10, 15), 4)
    b = _ball(shape, (28, 28, 15), 3)
    chi = np.zeros(shape, np.float32)
    # paramagnetic rim lesion a: +0.1 ppm rim shell, 0 core
    shell = ndi.binary_dilation(a) & ~ndi.binary_erosion(a)
    chi[shell] = 0.1
    chi[b] = -0.02
    mask = np.ones(shape, bool)
    df = lesion_table({"T2lesion": a | b}, chi, mask, 1.0, Entities("sub-01"))
    assert tuple(df.columns) == LESION_COLUMNS
    les = df[df.lesion_id != "total"].reset_index(drop=True)
    assert len(les) == 2
    big = les.loc[les.volume_mm3.idxmax()]
    assert big.volume_mm3 == pytest.approx(a.sum())
    assert big.rim_chi_mean_ppm == pytest.approx(0.1, abs=1e-6)
    assert big.core_chi_mean_ppm == pytest.approx(0.0, abs=1e-6)
    assert big.rim_minus_core_ppm > 0.09
    small = les.loc[les.volume_mm3.idxmin()]
    assert small.chi_mean_ppm == pytest.approx(-0.02, abs=1e-6)
    # a uniform lesion has no rim excess beyond the partial contact with its 0-ppm surroundings
    assert small.rim_minus_core_ppm < 0.02 < big.rim_minus_core_ppm
    total = df[df.lesion_id == "total"].iloc[0]
    assert total.volume_mm3 == pytest.approx(a.sum() + b.sum())


def test_lesion_table_empty_mask_has_total_row_only() -> None:
    shape = (8, 8, 8)
    df = lesion_table(
        {"T1lesion": np.zeros(shape, bool)},
        np.zeros(shape, np.float32),
        np.ones(shape, bool),
        1.0,
        Entities("sub-01"),
    )
    assert list(df.lesion_id) == ["total"]
    assert df.iloc[0].volume_mm3 == 0

"""Compatibility module: the fabricated group-level cohort lives in
:mod:`bids_qsm.simulate.group_fixtures` (test scaffolding belongs to the simulator)."""

from __future__ import annotations

from bids_qsm.simulate.group_fixtures import (
    BASE_CHI_PPM,
    Cohort,
    fabricate_cohort,
    grid_affine,
    label_volume,
    toy_atlas,
)

__all__ = [
    "BASE_CHI_PPM",
    "Cohort",
    "fabricate_cohort",
    "grid_affine",
    "label_volume",
    "toy_atlas",
]

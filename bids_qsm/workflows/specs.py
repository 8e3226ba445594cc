"""Compatibility module: the node-input specs live in :mod:`bids_qsm.specs` (a lower layer)."""

from __future__ import annotations

from bids_qsm.specs import (
    AtlasSpec,
    acquisition_from_dict,
    acquisition_to_dict,
    atlas_from_spec,
    atlas_spec_from_config,
)

__all__ = [
    "AtlasSpec",
    "acquisition_from_dict",
    "acquisition_to_dict",
    "atlas_from_spec",
    "atlas_spec_from_config",
]

"""Compatibility module: the derivatives table, writer and reader live in
:mod:`bids_qsm.bids.derivatives` (a lower layer, used by the interfaces)."""

from __future__ import annotations

from bids_qsm.bids.derivatives import (  # noqa: F401 (re-exported)
    IMAGE_OUTPUTS,
    OUTPUTS,
    Derivatives,
    _software_versions,
    _without_timings,
    bids_uris,
    clean_stale_temporaries,
    find_tables,
    read_sidecar,
    write_acquisition_derivatives,
)

"""bids_qsm.swi: SWI, minIP, high-pass filtered phase and SWI-phase iron measures.

Pure numpy/scipy (no Nipype, no file I/O). Sign conventions: ``docs/methods_swi.md``.
"""

from bids_qsm.swi.dipole_roi import DEFAULT_DOMINANCE, phase_quality_mask, self_positive_labels
from bids_qsm.swi.highpass import (
    field_from_phase,
    gaussian_highpass,
    homodyne_highpass,
    laplacian_unwrap,
)
from bids_qsm.swi.minip import minip, slab_voxels
from bids_qsm.swi.phase_iron import (
    DEFAULT_N_SD,
    MEASURE_COLUMNS,
    WHOLE_BRAIN_N_SD,
    abnormal_phase_measures,
    phase_iron_threshold,
    pooled_threshold,
    regional_phase_measures,
)
from bids_qsm.swi.pipeline import SWIOptions, SWIResult, compute_swi
from bids_qsm.swi.swi import combine_magnitude, phase_mask, swi_image

__all__ = [
    "DEFAULT_DOMINANCE",
    "DEFAULT_N_SD",
    "MEASURE_COLUMNS",
    "WHOLE_BRAIN_N_SD",
    "SWIOptions",
    "SWIResult",
    "abnormal_phase_measures",
    "combine_magnitude",
    "compute_swi",
    "field_from_phase",
    "gaussian_highpass",
    "homodyne_highpass",
    "laplacian_unwrap",
    "minip",
    "phase_iron_threshold",
    "phase_mask",
    "phase_quality_mask",
    "pooled_threshold",
    "regional_phase_measures",
    "self_positive_labels",
    "slab_voxels",
    "swi_image",
]

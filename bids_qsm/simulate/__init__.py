"""Digital head phantom and cohort simulator (``bids-qsm-simulate``).

:func:`simulate_subject` returns one :class:`SimulatedSubject` (GRE magnitude/phase and the
ground truth as arrays); :func:`write_bids_dataset` writes subjects or a HC/MS cohort as a
BIDS dataset with truth derivatives. See docs/simulator.md.
"""

from bids_qsm.simulate.acquisition import HeadPose
from bids_qsm.simulate.bids_writer import write_bids_dataset
from bids_qsm.simulate.forward import forward_field_ppm, sphere_field_ppm
from bids_qsm.simulate.presets import PRESETS
from bids_qsm.simulate.subject import SimulatedSubject, simulate_subject

__all__ = [
    "PRESETS",
    "HeadPose",
    "SimulatedSubject",
    "forward_field_ppm",
    "simulate_subject",
    "sphere_field_ppm",
    "write_bids_dataset",
]

"""Input specs shared by the interfaces: the acquisition metadata and the multi-echo GRE."""

from __future__ import annotations

from nipype.interfaces.base import BaseInterfaceInputSpec, File


class MetaInputSpec(BaseInterfaceInputSpec):
    """The acquisition metadata JSON written by :class:`~bids_qsm.interfaces.gre.LoadGRE`."""

    meta_file = File(exists=True, mandatory=True, desc="acquisition metadata JSON")


class GreInputSpec(MetaInputSpec):
    """The 4D multi-echo GRE of one acquisition (the outputs of ``LoadGRE``)."""

    mag_file = File(exists=True, mandatory=True, desc="4D magnitude")
    phase_file = File(exists=True, mandatory=True, desc="4D phase (rad)")

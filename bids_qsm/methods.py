"""The algorithm names of the numerical core, defined once (a light module: no numpy).

:mod:`bids_qsm.qsm.stages` registers one function per QSM name (and checks that its registries
match these tuples), :class:`bids_qsm.swi.pipeline.SWIOptions` validates the SWI name, and
:mod:`bids_qsm.config` / the command line offer exactly these choices (first: the documented
order of the choices, not the default).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Phase unwrapping (``--unwrapping``).
UNWRAPPING_METHODS: tuple[str, ...] = ("quality", "laplacian")
#: Background field removal (``--bg-removal``); keys of ``qsm.stages.BG_REMOVAL_REGISTRY``.
BG_REMOVAL_METHODS: tuple[str, ...] = ("vsharp", "pdf", "lbv")
#: Dipole inversion (``--inversion``); keys of ``qsm.stages.INVERSION_REGISTRY``.
INVERSION_METHODS: tuple[str, ...] = ("rts", "tikhonov", "tv", "tkd", "wtv")
#: Susceptibility reference (``--reference``).
REFERENCE_REGIONS: tuple[str, ...] = ("brain", "csf", "none")
#: SWI high-pass filter (``--swi-highpass``).
SWI_HIGHPASS_METHODS: tuple[str, ...] = ("gaussian", "homodyne")

#: The defaults of those choices, shared by ``QSMOptions``, ``SWIOptions`` and ``WorkflowConfig``
#: (the numerical core and the configuration must not drift apart).
DEFAULT_UNWRAPPING = "quality"
DEFAULT_BG_REMOVAL = "lbv"
DEFAULT_INVERSION = "wtv"
DEFAULT_REFERENCE = "brain"
DEFAULT_SWI_HIGHPASS = "gaussian"


@dataclass
class QSMMethodChoices:
    """The QSM algorithm choices, declared once: the base of ``QSMOptions`` (numerical core) and
    of ``WorkflowConfig`` (configuration), so the two cannot drift apart.

    ``phase_sign`` is +1 or -1: the scanner's phase polarity (-1 flips the phase, rad).
    """

    unwrapping: str = DEFAULT_UNWRAPPING
    bg_removal: str = DEFAULT_BG_REMOVAL
    inversion: str = DEFAULT_INVERSION
    reference: str = DEFAULT_REFERENCE
    phase_sign: int = 1


#: The choice of each ``workflow.<name>`` setting (checked once the options are merged).
WORKFLOW_CHOICES: dict[str, tuple[str, ...]] = {
    "unwrapping": UNWRAPPING_METHODS,
    "bg_removal": BG_REMOVAL_METHODS,
    "inversion": INVERSION_METHODS,
    "reference": REFERENCE_REGIONS,
    "swi_highpass": SWI_HIGHPASS_METHODS,
}

__all__ = [
    "QSMMethodChoices",
    "BG_REMOVAL_METHODS",
    "DEFAULT_BG_REMOVAL",
    "DEFAULT_INVERSION",
    "DEFAULT_REFERENCE",
    "DEFAULT_SWI_HIGHPASS",
    "DEFAULT_UNWRAPPING",
    "INVERSION_METHODS",
    "REFERENCE_REGIONS",
    "SWI_HIGHPASS_METHODS",
    "UNWRAPPING_METHODS",
    "WORKFLOW_CHOICES",
]

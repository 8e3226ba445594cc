"""Tissue properties of the phantom at 3 T: susceptibility, R2* and proton density.

Susceptibility is in ppm relative to CSF (paramagnetic positive), from 3 T QSM literature
(Deistung 2013, Lim 2013, Li 2011, Zivadinov 2018). The healthy-control basal ganglia
(caudate + putamen + pallidum, volume weighted in AAL3) average about 0.055 ppm and the
thalamus about -0.001 ppm, matching the controls of the seed study (54.8 and -1.1 ppb).
R2* (Hz) is for 3 T and scales linearly with field strength (see :func:`r2star_at`).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Air relative to water/CSF (ppm): chi_air ~ +0.36, chi_water ~ -9.05 (SI).
CHI_AIR_PPM: float = 9.4


@dataclass(frozen=True)
class Tissue:
    """Properties of one tissue class: chi (ppm vs CSF), R2* at 3 T (Hz), proton density."""

    chi_ppm: float
    r2star_hz: float
    m0: float


#: Tissue classes of the head model (brain classes are mixed by partial volume).
TISSUES: dict[str, Tissue] = {
    "csf": Tissue(0.0, 3.0, 1.00),
    "gm": Tissue(0.015, 17.0, 0.82),
    "wm": Tissue(-0.030, 21.0, 0.70),
    "vein": Tissue(0.40, 35.0, 0.80),
    "scalp": Tissue(0.0, 30.0, 0.85),
    "skull": Tissue(-2.0, 250.0, 0.05),
    "neck": Tissue(0.0, 30.0, 0.75),
    "air": Tissue(CHI_AIR_PPM, 0.0, 0.0),
    "lesion": Tissue(-0.020, 15.0, 0.82),  # demyelinated WM: less diamagnetic than NAWM
    "lesion_rim": Tissue(0.030, 30.0, 0.75),  # iron-laden microglia at a PRL edge
}

#: Deep gray matter (reported structures) for healthy controls.
STRUCTURE_TISSUES: dict[str, Tissue] = {
    # The pulvinar is the most paramagnetic part of the thalamus on in-vivo QSM (posterior and
    # lateral nuclei: Kumar 2021, Front Neuroanat 15:725731; segmented on its own QSM contrast
    # in Li X 2019, NeuroImage 191:337, and Li Y 2021, Front Neurosci 14:607705): +25 ppb vs
    # -10 ppb for the other nuclei (35 ppb of contrast), which keeps the AAL3 thalamus (25 %
    # pulvinar by volume) at about -1.4 ppb, the seed study's -1.1 ppb. R2* follows chi
    # (R2STAR_PER_CHI_HZ_PER_PPM).
    "thalamus": Tissue(-0.010, 20.4, 0.78),  # non-pulvinar nuclei
    "pulvinar": Tissue(0.025, 25.8, 0.78),
    "caudate": Tissue(0.050, 24.0, 0.82),
    "putamen": Tissue(0.040, 28.0, 0.80),
    "globus_pallidus": Tissue(0.130, 42.0, 0.75),
    "hippocampus": Tissue(0.005, 17.0, 0.84),
    "amygdala": Tissue(0.010, 19.0, 0.83),
    "nucleus_accumbens": Tissue(0.030, 22.0, 0.82),
    "substantia_nigra": Tissue(0.130, 38.0, 0.76),
    "red_nucleus": Tissue(0.100, 33.0, 0.77),
}

#: Slope of R2* against iron-driven susceptibility changes in deep gray matter (Hz/ppm, 3 T).
R2STAR_PER_CHI_HZ_PER_PPM: float = 120.0


def r2star_at(r2star_3t_hz: float, b0_tesla: float) -> float:
    """R2* (Hz) at field strength ``b0_tesla`` from its 3 T value (linear in B0)."""
    return r2star_3t_hz * b0_tesla / 3.0

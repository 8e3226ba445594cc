"""bids-qsm: a BIDS App for quantitative susceptibility mapping and brain iron.

Multi-echo gradient-echo (GRE) magnitude and phase in, BIDS derivatives out: susceptibility
maps (ppm), R2*/T2*, SWI, minIP, SWI filtered phase and regional iron tables per atlas
structure, plus group statistics (patients versus controls, clinical correlations).
"""

__version__ = "0.1.0"

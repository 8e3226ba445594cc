"""Compatibility module: the analytic test phantoms live in :mod:`bids_qsm.simulate.phantom`
(test scaffolding belongs to the simulator, not to the numerical core)."""

from __future__ import annotations

from bids_qsm.simulate.phantom import Phantom, forward_field, gre_signal, sphere_phantom

__all__ = ["Phantom", "forward_field", "gre_signal", "sphere_phantom"]

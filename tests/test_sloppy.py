"""``--sloppy``: the fast registration preset is recorded, described and flagged."""

from __future__ import annotations

from bids_qsm.atlas.stages import SLOPPY_PARAMS, RegistrationParams, registration_params
from bids_qsm.reports.methods.atlas import _atlas_text
from bids_qsm.workflows.reporting import registration_quality


def test_sloppy_preset_has_fewer_iterations_and_names_itself() -> None:
    default, sloppy = registration_params(False), registration_params(True)
    assert default == RegistrationParams() and default.quality == "default"
    assert sloppy is SLOPPY_PARAMS and sloppy.quality == "sloppy"

    def syn_cost(p: RegistrationParams) -> float:  # iterations x voxels of each level
        return sum(i / s**3 for i, s in zip(p.syn_iterations, p.syn_shrink, strict=True))

    assert syn_cost(sloppy) < syn_cost(default) / 3
    assert sloppy.syn_iterations[-1] < default.syn_iterations[-1]
    assert sloppy.grid_mm == default.grid_mm and sloppy.cc_radius == default.cc_radius


def test_sidecar_quality_read_back_and_methods_text() -> None:
    from dataclasses import asdict

    reg = {"skipped": False, "parameters": {"RegistrationParams": asdict(SLOPPY_PARAMS)}}
    assert registration_quality(reg) == "sloppy"
    assert registration_quality({"skipped": True}) == "default"
    text = " ".join(_atlas_text({"atlas": "AAL3", **reg["parameters"]}, lambda key: ""))
    assert "--sloppy" in text and "not for publication" in text
    plain = {"atlas": "AAL3", "RegistrationParams": asdict(RegistrationParams())}
    assert "--sloppy" not in " ".join(_atlas_text(plain, lambda key: ""))

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

    assert syn_cost(sloppy) < syn_cost(default) / 1.9
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


def test_box_stage_replaces_the_finest_whole_brain_level_on_fine_data() -> None:
    """With the box stage the whole-brain SyN stops one level earlier and the finest level
    runs in the deep gray matter box; ``dgm_stage=None`` uses it for GRE voxels <= 1.5 mm.
    Off by default (it missed the issue-12 chi targets on the full preset, docs/atlas.md)."""
    from pathlib import Path

    from bids_qsm.atlas.stages import registration_args, use_dgm_stage

    p = RegistrationParams()
    assert not use_dgm_stage(p, 1.0) and not use_dgm_stage(p, 3.0)
    auto = RegistrationParams(dgm_stage=None)
    assert use_dgm_stage(auto, 1.0) and not use_dgm_stage(auto, 2.0)
    assert use_dgm_stage(RegistrationParams(dgm_stage=True), 3.0)
    f = Path("f.nii.gz")
    box = {"fixed": f, "mask": f, "iron_fixed": f, "size_mm": [90.0, 100.0, 80.0], "grid": 2.0}
    for dgm, n_stages, syn_its in ((box, 4, [60, 40]), (None, 3, [60, 40, 10])):
        args, stages = registration_args(f, f, f, "MI", p, 0, "o_", (f, f, {}), dgm)
        assert len(stages) == n_stages and stages[2]["Iterations"] == syn_its
        assert args.count("--transform") == n_stages
    assert stages[2]["GridMM"] == 2.0
    _, stages = registration_args(f, f, f, "MI", p, 0, "o_", None, box)
    assert stages[3]["Iterations"] == [30, 15] and stages[3]["Region"] == "deep gray matter box"


def test_methods_text_names_the_box_stage() -> None:
    stages = [{"Transform": t} for t in ("Rigid[0.1]", "Affine[0.1]", "SyN[0.2,3,0]")]
    at = {"atlas": "AAL3", "TemplateToSubject": {"Stages": stages}}
    assert "restricted" not in " ".join(_atlas_text(at, lambda key: ""))
    box = {"Transform": "SyN[0.2,3,0]", "Region": "deep gray matter box"}
    at["TemplateToSubject"] = {"Stages": [*stages, box]}
    assert "the last restricted to a deep gray matter box" in " ".join(
        _atlas_text(at, lambda k: "")
    )

"""The QSM workflow in three Nipype nodes: same outputs as reconstruct_qsm, per-stage caching."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_qsm.qsm.pipeline import QSMOptions, reconstruct_qsm, stage_options
from bids_qsm.simulate.phantom import gre_signal, sphere_phantom

TE = [0.004, 0.010, 0.016]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    ph = sphere_phantom(
        shape=(32, 36, 30),
        brain_radii_mm=(12.0, 14.0, 11.0),
        spheres=(((-4.0, -3.0, 0.0), 3.0, 0.15),),
        external=(((0.0, -14.0, -13.0), 4.0, -9.0),),
    )
    mag, phase = gre_signal(ph.total_field_ppm, ph.brain, TE)
    folder = tmp_path_factory.mktemp("qsm_stages")
    affine = np.eye(4)
    files = {}
    for name, arr in (("mag", mag), ("phase", phase)):
        files[name] = folder / f"{name}.nii"
        nib.save(nib.Nifti1Image(arr, affine), files[name])
    meta = {
        "echo_times_s": TE,
        "b0_tesla": 3.0,
        "voxel_size_mm": [1.0, 1.0, 1.0],
        "b0_direction_voxel_axes": [0.0, 0.0, 1.0],
    }
    files["meta"] = folder / "meta.json"
    files["meta"].write_text(json.dumps(meta))
    return {"mag": mag, "phase": phase, "files": files, "folder": folder}


def _run(inputs: dict, options: dict, base: Path) -> dict[str, Path]:
    from bids_qsm.workflows.participant_graph import init_qsm_wf

    wf = init_qsm_wf(options=options, threads=1)
    wf.base_dir = str(base)
    node = wf.get_node("inputnode")
    node.inputs.mag_file = str(inputs["files"]["mag"])
    node.inputs.phase_file = str(inputs["files"]["phase"])
    node.inputs.meta_file = str(inputs["files"]["meta"])
    wf.run(plugin="Linear")
    stages = ("qsm_field", "qsm_background", "qsm")
    return {n: base / "qsm_wf" / n / f"result_{n}.pklz" for n in stages}


def test_stage_options_partition_the_options() -> None:
    import dataclasses

    from bids_qsm.qsm.pipeline import BACKGROUND_OPTIONS, FIELD_OPTIONS, INVERSION_OPTIONS

    stages = (*FIELD_OPTIONS, *BACKGROUND_OPTIONS, *INVERSION_OPTIONS)
    assert sorted(stages) == sorted(f.name for f in dataclasses.fields(QSMOptions))
    opts = {"unwrapping": "laplacian", "bg_removal": "pdf", "inversion": "tkd", "phase_sign": -1}
    assert stage_options(opts, "field") == {"unwrapping": "laplacian", "phase_sign": -1}
    assert stage_options(opts, "background") == {"bg_removal": "pdf"}
    assert stage_options(opts, "inversion") == opts  # the sidecar records every option


def test_staged_nodes_equal_reconstruct_qsm_and_reuse_earlier_stages(inputs, tmp_path) -> None:
    base = tmp_path / "work"
    results = _run(inputs, {"inversion": "rts", "bg_removal": "vsharp"}, base)
    ref = reconstruct_qsm(
        inputs["mag"], inputs["phase"], TE, 3.0, np.ones(3), np.array([0.0, 0.0, 1.0]),
        QSMOptions(inversion="rts", bg_removal="vsharp"), threads=1,
    )  # fmt: skip
    node_dir = base / "qsm_wf"
    for name, want in (
        ("qsm/chi.nii", ref.chi_ppm),
        ("qsm/mask.nii", ref.mask),
        ("qsm_background/local_field_ppm.nii", ref.local_field_ppm),
        ("qsm_field/field_hz.nii", ref.field_hz),
        ("qsm_field/r2star.nii", ref.r2star_hz),
        ("qsm_field/brain_mask.nii", ref.brain_mask),
    ):
        got = np.asanyarray(nib.load(node_dir / name).dataobj)
        np.testing.assert_array_equal(got, want.astype(got.dtype), err_msg=name)
    params = json.loads((node_dir / "qsm" / "qsm_params.json").read_text())
    assert params["parameters"] == json.loads(json.dumps(ref.parameters))
    assert params["reference_value_ppm"] == ref.reference_value_ppm

    # another inversion: field preparation and background removal come from the cache
    before = {n: p.stat().st_mtime_ns for n, p in results.items()}
    _run(inputs, {"inversion": "tkd", "bg_removal": "vsharp"}, base)
    after = {n: p.stat().st_mtime_ns for n, p in results.items()}
    assert after["qsm_field"] == before["qsm_field"]
    assert after["qsm_background"] == before["qsm_background"]
    assert after["qsm"] != before["qsm"]
    tkd = json.loads((node_dir / "qsm" / "qsm_params.json").read_text())
    assert tkd["parameters"]["inversion"] == "tkd"

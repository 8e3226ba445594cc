"""Participant-level robustness: parallel jobs into one OUTPUT_DIR, a failing subject, workflows.

The data are the real 3 T sample (tiny field of view: registration is skipped), copied as
two subjects.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bids_qsm.cli.run import execute

pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def two_subjects(tmp_path: Path, real_gre_dir: Path) -> Path:
    from conftest import BidsFactory, wrap_real_sample

    return wrap_real_sample(BidsFactory(tmp_path / "bids"), real_gre_dir, ("01", "02"))


def test_two_parallel_jobs_share_one_output_dir(two_subjects: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    db = tmp_path / "bidsdb"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bids_qsm", str(two_subjects), str(out), "participant",
             "--participant-label", sub, "-w", str(tmp_path / f"work{sub}"), "--nprocs", "1",
             "--skip-bids-validation", "--bids-database-dir", str(db)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        for sub in ("01", "sub-02")
    ]  # fmt: skip
    logs = [p.communicate(timeout=800)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    for sub in ("01", "02"):
        assert (out / f"sub-{sub}" / "anat" / f"sub-{sub}_Chimap.nii.gz").is_file()
        assert (out / f"sub-{sub}.html").is_file()
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_one_failing_subject_does_not_lose_the_others(
    two_subjects: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the in-process Linear plugin, make the second QSM reconstruction fail."""
    import bids_qsm.qsm.stages as qsm_pipeline  # the first stage of the QSM nodes

    real = qsm_pipeline.prepare_inputs
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated numerical failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(qsm_pipeline, "prepare_inputs", flaky)
    plugin = tmp_path / "plugin.yml"
    plugin.write_text("plugin: Linear\n")
    out = tmp_path / "out"
    code = execute(
        [str(two_subjects), str(out), "participant", "-w", str(tmp_path / "work"),
         "--skip-bids-validation", "--use-plugin", str(plugin)]
    )  # fmt: skip
    assert code == 1
    assert (out / "sub-01" / "anat" / "sub-01_Chimap.nii.gz").is_file()
    assert (out / "sub-01.html").is_file()
    assert not (out / "sub-02" / "anat" / "sub-02_Chimap.nii.gz").exists()
    crash = list((out / "sub-02" / "log").rglob("crash-*"))
    assert crash and "simulated numerical failure" in crash[0].read_text()


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"inversion": "tkd", "bg_removal": "pdf", "unwrapping": "laplacian"},
        {"skip_registration": True, "reference": "none"},
        {"sloppy": True},
    ],
)
def test_workflow_graph_over_options(two_subjects: Path, options: dict) -> None:
    """Cheap graph smoke test: the workflow builds and carries the chosen options."""
    from bids_qsm.bids.discovery import discover
    from bids_qsm.config import Config
    from bids_qsm.workflows.participant import init_participant_wf

    config = Config()
    config.execution.bids_dir = two_subjects
    config.execution.output_dir = two_subjects.parent / "out"
    for key, value in options.items():
        setattr(config.workflow, key, value)
    acqs = [a for a in discover(config) if a.subject == "01"]
    wf = init_participant_wf(subject="01", acquisitions=acqs, config=config)
    names = set(wf.list_node_names())
    prefix = "gre_wf."
    for node in ("load", "qsm_wf.qsm", "swi_wf.swi", "atlas_wf.register", "ds"):
        assert prefix + node in names
    qsm = wf.get_node("gre_wf.qsm_wf.qsm")
    for key in ("inversion", "bg_removal", "unwrapping", "reference"):
        if key in options:
            assert qsm.inputs.options[key] == options[key]
    reg = wf.get_node("gre_wf.atlas_wf.register")
    assert reg.inputs.skip is bool(options.get("skip_registration", False))
    assert reg.inputs.sloppy is bool(options.get("sloppy", False))


def test_user_brain_mask_replaces_the_automatic_one(two_subjects: Path, tmp_path: Path) -> None:
    """--brain-mask-source: the susceptibility is computed inside the user's mask."""
    import nibabel as nib
    import numpy as np

    src = two_subjects / "sub-01" / "anat" / "sub-01_echo-1_part-mag_MEGRE.nii.gz"
    ref = nib.load(str(src))
    user = np.zeros(ref.shape, np.uint8)
    user[8:32, 8:32, 4:16] = 1  # a box well inside the 40 x 40 x 20 field of view
    masks = tmp_path / "masks" / "sub-01" / "anat"
    masks.mkdir(parents=True)
    nib.save(nib.Nifti1Image(user, ref.affine), str(masks / "sub-01_desc-brain_mask.nii.gz"))
    out = tmp_path / "out"
    code = execute(
        [str(two_subjects), str(out), "participant", "--participant-label", "01",
         "-w", str(tmp_path / "work"), "--skip-bids-validation",
         "--brain-mask-source", str(tmp_path / "masks")]
    )  # fmt: skip
    assert code == 0
    used = nib.load(str(out / "sub-01/anat/sub-01_desc-brain_mask.nii.gz")).get_fdata() > 0
    assert used.any()
    assert not (used & (user == 0)).any()  # nothing outside the user's mask
    chi = nib.load(str(out / "sub-01/anat/sub-01_Chimap.nii.gz")).get_fdata()
    assert not chi[user == 0].any()

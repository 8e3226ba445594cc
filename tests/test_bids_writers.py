"""Atomic writers, derivative names and the derivatives' top-level files."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_qsm.bids.writers import (
    DEFAULT_BIDSIGNORE,
    atomic_path,
    atomic_save_nifti,
    atomic_write_json,
    build_name,
    dataset_description,
    derivative_path,
    parse_entities,
    update_bidsignore,
    write_dataset_description,
)
from bids_qsm.errors import OutputError


def test_derivative_names_keep_source_entities(tmp_path: Path) -> None:
    path = derivative_path(tmp_path, "sub-01_ses-2_acq-wb_run-1", "Chimap")
    assert path == tmp_path / "sub-01/ses-2/anat/sub-01_ses-2_acq-wb_run-1_Chimap.nii.gz"
    path = derivative_path(tmp_path, "sub-01", "stats", ".tsv", seg="AAL3", desc="iron")
    assert path.name == "sub-01_seg-AAL3_desc-iron_stats.tsv"
    assert build_name({"sub": "1", "label": "T2lesion", "space": "MNI"}, "mask") == (
        "sub-1_space-MNI_label-T2lesion_mask.nii.gz"
    )
    with pytest.raises(ValueError, match="unknown BIDS entities"):
        build_name({"sub": "1", "foo": "x"}, "mask")


def test_parse_entities() -> None:
    ents = parse_entities("sub-01_ses-1_echo-2_part-phase_MEGRE.nii.gz")
    assert ents == {
        "sub": "01", "ses": "1", "echo": "2", "part": "phase",
        "suffix": "MEGRE", "extension": ".nii.gz",
    }  # fmt: skip


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "a" / "x.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half-written")
        raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"v": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.json"]


def test_atomic_nifti(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.eye(4))
    path = atomic_save_nifti(img, tmp_path / "sub-01_Chimap.nii.gz")
    assert path.read_bytes()[:2] == b"\x1f\x8b"  # gzip, despite the temporary name
    np.testing.assert_array_equal(np.asarray(nib.load(str(path)).dataobj), img.get_fdata())


def test_unwritable_target_is_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError) as info:
        atomic_write_json(blocker / "sub" / "x.json", {})
    assert info.value.exit_code == 73


def test_dataset_description_and_bidsignore(tmp_path: Path) -> None:
    src = tmp_path / "bids"
    src.mkdir()
    (src / "dataset_description.json").write_text(json.dumps({"DatasetDOI": "10.1/x"}))
    out = tmp_path / "out"
    write_dataset_description(out, src)
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"][0]["Name"] == "bids-qsm"
    assert desc["SourceDatasets"] == [{"URL": src.resolve().as_uri(), "DOI": "10.1/x"}]
    assert dataset_description(None).get("SourceDatasets") is None
    (out / ".bidsignore").write_text("custom/\n")
    update_bidsignore(out)
    update_bidsignore(out)  # idempotent
    lines = (out / ".bidsignore").read_text().splitlines()
    assert lines[0] == "custom/"
    assert all(lines.count(pattern) == 1 for pattern in DEFAULT_BIDSIGNORE)

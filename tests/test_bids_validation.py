"""BIDS validation with bids-validator-deno, restricted to the selected subjects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import BidsFactory

from bids_qsm.bids.validation import build_subset_tree, find_validator, validate_bids
from bids_qsm.errors import BidsValidationError

pytestmark = pytest.mark.skipif(find_validator() is None, reason="bids-validator-deno missing")


def test_valid_dataset_passes(bids_dataset: Path, tmp_path: Path) -> None:
    warnings = validate_bids(bids_dataset, ["01", "02"], report_dir=tmp_path)
    assert isinstance(warnings, list)
    report = json.loads((tmp_path / "bids_validator.json").read_text())
    assert sorted(report["summary"]["subjects"]) == ["01", "02"]


def test_real_sample_with_units_is_valid(real_gre_bids) -> None:
    validate_bids(real_gre_bids(units="arbitrary"), ["01"])


def test_invalid_file_fails_with_16(bids_factory: BidsFactory) -> None:
    bids_factory.add_gre("01")
    bids_factory.add_gre("02")
    (bids_factory.root / "sub-02" / "anat" / "sub-02_bogus.nii.gz").write_bytes(b"x")
    with pytest.raises(BidsValidationError) as info:
        validate_bids(bids_factory.root, ["01", "02"])
    assert info.value.exit_code == 16
    assert "sub-02_bogus" in str(info.value) and "\n" not in str(info.value)
    # Restricted to sub-01, the bad file of sub-02 is not seen.
    validate_bids(bids_factory.root, ["01"])


def test_subset_tree_links_selected_subjects(bids_dataset: Path, tmp_path: Path) -> None:
    tree = build_subset_tree(bids_dataset, ["02"], tmp_path / "tree")
    names = sorted(p.name for p in tree.iterdir())
    assert "sub-02" in names and "sub-01" not in names and "dataset_description.json" in names
    rows = (tree / "participants.tsv").read_text().splitlines()
    assert rows[0].startswith("participant_id") and [r.split("\t")[0] for r in rows[1:]] == [
        "sub-02"
    ]
    assert (bids_dataset / "participants.tsv").read_text().count("sub-") == 2  # untouched

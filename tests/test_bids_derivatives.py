"""One table of derivatives: the writer and the readers name every file from it."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_qsm.bids.derivatives import (
    IMAGE_KEYS,
    OUTPUTS,
    Derivatives,
    find_tables,
    write_acquisition_derivatives,
)
from bids_qsm.stats.group import find_lesion_tables, find_stats_tables
from bids_qsm.stats.group_swi import find_swi_inputs, source_prefix

SRC = "sub-01_ses-2_acq-iso_run-1"


def test_paths_follow_the_table(tmp_path) -> None:
    d = Derivatives(tmp_path, SRC, "AAL3")
    anat = tmp_path / "sub-01" / "ses-2" / "anat"
    assert d.path("chi") == anat / f"{SRC}_Chimap.nii.gz"
    assert d.path("mask") == anat / f"{SRC}_desc-brain_mask.nii.gz"
    assert d.path("phaseiron") == anat / f"{SRC}_desc-phaseiron_T2starw.nii.gz"
    assert d.path("dseg") == anat / f"{SRC}_seg-AAL3_dseg.nii.gz"
    assert d.path("dseg_table") == anat / f"{SRC}_seg-AAL3_dseg.tsv"
    assert d.path("stats") == anat / f"{SRC}_seg-AAL3_stats.tsv"
    assert d.path("lesions") == anat / f"{SRC}_desc-lesions_stats.tsv"
    assert d.sidecar("stats") == anat / f"{SRC}_seg-AAL3_stats.json"
    assert d.xfm("GRE", "MNI152NLin6Asym") == (
        anat / f"{SRC}_from-GRE_to-MNI152NLin6Asym_mode-image_xfm.h5"
    )
    # every key has a distinct file
    assert len({d.path(k) for k in OUTPUTS}) == len(OUTPUTS)
    # a table found on disk gives back its acquisition, with or without a session level
    for prefix in (SRC, "sub-02_acq-iso"):
        table = Derivatives(tmp_path, prefix, "AAL3").path("stats")
        back = Derivatives.from_table(table, "AAL3")
        assert (back.output_dir, back.source_prefix) == (tmp_path, prefix)
        assert source_prefix(table, "AAL3") == str(table.parent / prefix)
    with pytest.raises(ValueError, match="not a 'stats' derivative"):
        Derivatives.from_table(d.path("chi"), "AAL3")


def test_writer_and_readers_agree(tmp_path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    shape, affine = (4, 5, 3), np.diag([1.0, 1.0, 2.0, 1.0])
    files: dict[str, str | None] = {}
    for key in (*IMAGE_KEYS, "dseg"):
        data = np.ones(shape, np.float32) if key != "dseg" else np.full(shape, 3, np.int16)
        files[key] = str(work / f"{key}.nii.gz")
        nib.save(nib.Nifti1Image(data, affine), files[key])
    regional = work / "regional.tsv"
    pd.DataFrame({"structure": ["thalamus"], "chi_mean_ppm": [0.01]}).to_csv(
        regional, sep="\t", index=False
    )
    out = tmp_path / "out"
    meta = {
        "echo_times_s": [0.004, 0.008],
        "b0_tesla": 3.0,
        "b0_direction_voxel_axes": [0.0, 0.0, 1.0],
        "phase_units_detected": "rad",
    }
    written = write_acquisition_derivatives(
        output_dir=out,
        source_prefix=SRC,
        sources=["bids:raw:x"],
        files=files,
        qsm_params={"parameters": {}, "reference_region": "brain", "reference_value_ppm": 0.0},
        swi_params={"parameters": {}},
        registration={"template": "T", "timings_s": {"a": 1.0}},
        transforms={},
        meta=meta,
        atlas_name="toy",
        atlas_table=pd.DataFrame({"index": [3], "name": ["x"]}),
        regional_tsv=str(regional),
        lesion_tsv=None,
    )
    d = Derivatives(out, SRC, "toy")
    for key, path in written.items():
        assert path == str(d.path(key)) and d.path(key).is_file()
    assert d.path("dseg_table").is_file()
    assert np.asanyarray(nib.load(d.path("mask")).dataobj).dtype == np.uint8
    assert nib.load(d.path("dseg")).get_data_dtype() == np.int16
    side = json.loads(d.sidecar("chi").read_text())
    assert side["Units"] == OUTPUTS["chi"].units and "timings_s" not in side["AtlasRegistration"]
    tables = find_tables(out, "stats", "toy")
    assert tables == find_stats_tables(out, "toy") == [d.path("stats")]
    assert find_lesion_tables(out) == [] and find_tables(out, "stats", "AAL3") == []
    swi = find_swi_inputs(tables[0], "toy")
    assert swi is not None
    assert (swi.phase_iron, swi.dseg, swi.mask) == (
        d.path("phaseiron"),
        d.path("dseg"),
        d.path("mask"),
    )

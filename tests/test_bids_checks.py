"""Input checks: one test per bad input; each gives exit 65 and one line naming the file."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import BidsFactory

from bids_qsm.bids.checks import check_acquisition
from bids_qsm.bids.discovery import discover
from bids_qsm.config import Config
from bids_qsm.errors import ExitCode, InputDataError


def check(bids_dir: Path, **execution: object) -> None:
    config = Config()
    config.execution.bids_dir = bids_dir
    for key, value in execution.items():
        setattr(config.execution, key, value)
    for acq in discover(config):
        check_acquisition(acq)


def expect_error(bids_dir: Path, bad_file: Path, pattern: str, **execution: object) -> str:
    """Assert exit 65 with a single line naming ``bad_file`` and matching ``pattern``."""
    with pytest.raises(InputDataError) as info:
        check(bids_dir, **execution)
    message = str(info.value)
    assert info.value.exit_code == ExitCode.DATA_ERROR == 65
    assert "\n" not in message
    assert bad_file.name in message, message
    assert re.search(pattern, message), message
    return message


def edit_sidecar(nifti: Path, **changes: object) -> None:
    sidecar = nifti.with_name(nifti.name.replace(".nii.gz", ".json"))
    meta = json.loads(sidecar.read_text())
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    sidecar.write_text(json.dumps(meta))


def test_valid_dataset_passes(bids_factory: BidsFactory) -> None:
    bids_factory.add_gre("01")
    check(bids_factory.root)


@pytest.mark.parametrize(
    ("gre", "part", "echo", "echo_time", "pattern"),
    [
        ({}, "mag", 1, None, "missing EchoTime"),
        ({"four_d": True, "n_echoes": 3}, "mag", 0, [0.004, 0.008], "EchoTime lists 2 value"),
        ({}, "mag", 0, 4.0, "milliseconds"),
        ({}, "phase", 1, 0.009, "EchoTime .* differs"),  # phase disagrees with magnitude
    ],
    ids=["missing", "list_length_mismatch_in_4d", "in_milliseconds", "phase_disagrees"],
)
def test_bad_echo_time_in_sidecar(
    bids_factory: BidsFactory, gre: dict, part: str, echo: int, echo_time: object, pattern: str
) -> None:
    files = bids_factory.add_gre("01", **gre)
    edit_sidecar(files[part][echo], EchoTime=echo_time)
    expect_error(bids_factory.root, files[part][echo], pattern)


def test_echoes_with_different_shapes(bids_factory: BidsFactory) -> None:
    files = bids_factory.add_gre("01")
    bad = files["phase"][2]
    BidsFactory.save_nifti(bad, np.ones((8, 8, 5), np.float32))
    expect_error(bids_factory.root, bad, r"shape \(8, 8, 5\) differs")


def test_echoes_with_different_affines(bids_factory: BidsFactory) -> None:
    files = bids_factory.add_gre("01")
    bad = files["mag"][1]
    affine = np.eye(4)
    affine[0, 3] = 2.0
    data = np.asarray(nib.load(str(bad)).dataobj)
    BidsFactory.save_nifti(bad, data, affine)
    expect_error(bids_factory.root, bad, "affine differs")


def test_mag_phase_echo_counts_differ(bids_factory: BidsFactory) -> None:
    files = bids_factory.add_gre("01")
    bad = files["phase"][2]
    bad.unlink()
    bad.with_name(bad.name.replace(".nii.gz", ".json")).unlink()
    expect_error(bids_factory.root, files["phase"][0], "magnitude has 3 echo.*phase has 2")


def test_duplicate_echo_numbers(bids_factory: BidsFactory) -> None:
    files = bids_factory.add_gre("01")
    src = files["mag"][0]
    dup = src.with_name(src.name.replace(".nii.gz", ".nii"))
    nib.save(nib.load(str(src)), str(dup))
    message = expect_error(bids_factory.root, dup, "duplicate echo-1")
    assert src.name in message


def test_non_3d_echo_file(bids_factory: BidsFactory) -> None:
    files = bids_factory.add_gre("01")
    bad = files["mag"][0]
    BidsFactory.save_nifti(bad, np.ones((8, 8, 6, 2), np.float32))
    expect_error(bids_factory.root, bad, r"4D image .* where 3D")


def test_non_3d_t2starw(bids_factory: BidsFactory) -> None:
    files = bids_factory.add_gre("01", suffix="T2starw")
    bad = files["mag"][0]
    BidsFactory.save_nifti(bad, np.ones((8, 8, 6, 2), np.float32))
    expect_error(bids_factory.root, bad, "T2starw is single-echo")


def test_2d_image(bids_factory: BidsFactory) -> None:
    files = bids_factory.add_gre("01", four_d=True)
    bad = files["phase"][0]
    BidsFactory.save_nifti(bad, np.ones((8, 8), np.float32))
    expect_error(bids_factory.root, bad, "2D image")


def test_all_nan_image(bids_factory: BidsFactory) -> None:
    files = bids_factory.add_gre("01")
    bad = files["phase"][1]
    BidsFactory.save_nifti(bad, np.full((8, 8, 6), np.nan, np.float32))
    expect_error(bids_factory.root, bad, "all NaN")


def test_all_zero_image(bids_factory: BidsFactory) -> None:
    files = bids_factory.add_gre("01")
    bad = files["mag"][2]
    BidsFactory.save_nifti(bad, np.zeros((8, 8, 6), np.float32))
    expect_error(bids_factory.root, bad, "all zero")


def test_all_zero_volume_in_4d(bids_factory: BidsFactory) -> None:
    files = bids_factory.add_gre("01", four_d=True)
    bad = files["mag"][0]
    data = np.asarray(nib.load(str(bad)).dataobj).copy()
    data[..., 1] = 0
    BidsFactory.save_nifti(bad, data)
    expect_error(bids_factory.root, bad, r"all zero \(volume 2\)")


def test_truncated_gzip_nifti(bids_factory: BidsFactory) -> None:
    files = bids_factory.add_gre("01", shape=(16, 16, 12))
    bad = files["mag"][1]
    raw = gzip.decompress(bad.read_bytes())
    bad.write_bytes(gzip.compress(raw)[: len(gzip.compress(raw)) // 2])
    expect_error(bids_factory.root, bad, "unreadable|truncated")


def test_truncated_plain_nifti(bids_factory: BidsFactory) -> None:
    files = bids_factory.add_gre("01", shape=(16, 16, 12))
    src = files["phase"][0]
    bad = src.with_name(src.name.replace(".nii.gz", ".nii"))
    BidsFactory.save_nifti(bad, np.asarray(nib.load(str(src)).dataobj))
    src.unlink()
    bad.write_bytes(bad.read_bytes()[: 352 + 100])  # header + a few voxels
    expect_error(bids_factory.root, bad, "unreadable|truncated")


def test_unreadable_nifti(bids_factory: BidsFactory) -> None:
    files = bids_factory.add_gre("01")
    bad = files["phase"][0]
    bad.write_bytes(b"this is not a NIfTI file at all")
    expect_error(bids_factory.root, bad, "unreadable")


def test_missing_field_strength(bids_factory: BidsFactory) -> None:
    files = bids_factory.add_gre("01", b0_tesla=None)
    expect_error(bids_factory.root, files["mag"][0], "MagneticFieldStrength.*--b0-tesla")
    check(bids_factory.root, b0_tesla=3.0)  # the override makes it valid


def test_missing_phase(bids_factory: BidsFactory) -> None:
    files = bids_factory.add_gre("01")
    for path in files["phase"]:
        path.unlink()
    expect_error(bids_factory.root, files["mag"][0], "no phase image")


def test_unreadable_t1w(bids_factory: BidsFactory) -> None:
    bids_factory.add_gre("01")
    t1w = bids_factory.add_t1w("01")
    t1w.write_bytes(b"broken")
    expect_error(bids_factory.root, t1w, "unreadable")


def test_unreadable_lesion_mask(bids_factory: BidsFactory, tmp_path: Path) -> None:
    bids_factory.add_gre("01")
    mask = bids_factory.add_lesion_mask(tmp_path / "lesions", "01")
    mask.write_bytes(gzip.compress(b"x" * 10))
    expect_error(bids_factory.root, mask, "unreadable", lesion_masks=tmp_path / "lesions")

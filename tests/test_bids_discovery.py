"""Input discovery (pybids) on skeleton datasets covering each supported entity combination."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import BidsFactory

from bids_qsm.bids.checks import check_acquisition
from bids_qsm.bids.discovery import discover, find_lesion_masks, get_layout, selected_subjects
from bids_qsm.bids.loading import load_gre
from bids_qsm.config import Config
from bids_qsm.errors import NoDataError


def make_config(bids_dir: Path, **execution: object) -> Config:
    """A config pointing at ``bids_dir`` with ``execution`` overrides."""
    config = Config()
    config.execution.bids_dir = bids_dir
    config.execution.output_dir = bids_dir.parent / "out"
    for key, value in execution.items():
        setattr(config.execution, key, value)
    return config


def discover_checked(bids_dir: Path, **execution: object):
    acquisitions = discover(make_config(bids_dir, **execution))
    for acq in acquisitions:
        check_acquisition(acq)
    return acquisitions


def test_multi_echo_3d_files(bids_factory: BidsFactory) -> None:
    written = bids_factory.add_gre("01", n_echoes=4)
    (acq,) = discover_checked(bids_factory.root)
    assert acq.subject == "01" and acq.session is None and acq.suffix == "MEGRE"
    assert acq.mag_files == written["mag"] and acq.phase_files == written["phase"]
    assert acq.echo_times_s == pytest.approx([0.004, 0.008, 0.012, 0.016])
    assert acq.b0_tesla == 3.0 and acq.phase_units == "rad"
    assert acq.source_prefix == "sub-01"
    assert pickle.loads(pickle.dumps(acq)) == acq  # travels to Nipype worker processes
    data = load_gre(acq)
    assert data.mag.shape == (8, 8, 6, 4) and data.phase.dtype == np.float32
    assert data.te_s == pytest.approx((0.004, 0.008, 0.012, 0.016))
    assert -np.pi <= data.phase.min() and data.phase.max() < np.pi
    np.testing.assert_allclose(data.b0_dir, [0, 0, 1])
    np.testing.assert_allclose(data.voxel_size, [1, 1, 1])


def test_echo_order_is_numeric_not_lexical(bids_factory: BidsFactory) -> None:
    bids_factory.add_gre("01", n_echoes=11, te_s=[0.002 * (i + 1) for i in range(11)])
    (acq,) = discover_checked(bids_factory.root)
    assert [p.name.split("_")[1] for p in acq.mag_files][:3] == ["echo-1", "echo-2", "echo-3"]
    assert acq.echo_times_s == sorted(acq.echo_times_s)


def test_all_echoes_in_one_4d_file(bids_factory: BidsFactory) -> None:
    bids_factory.add_gre("01", four_d=True, n_echoes=5)
    (acq,) = discover_checked(bids_factory.root)
    assert len(acq.mag_files) == 1 and len(acq.phase_files) == 1
    assert acq.echo_times_s == pytest.approx([0.004, 0.008, 0.012, 0.016, 0.020])
    data = load_gre(acq)
    assert data.mag.shape == (8, 8, 6, 5) and len(data.te_s) == 5


def test_real_imag_converted_to_mag_phase(bids_factory: BidsFactory) -> None:
    bids_factory.add_gre("01", complex_parts=True)
    bids_factory.add_gre("02")  # same phantom and seed, stored as mag/phase
    cplx, ref = discover_checked(bids_factory.root)
    assert cplx.is_complex and len(cplx.real_files) == 3 and not cplx.phase_files
    a, b = load_gre(cplx), load_gre(ref)
    np.testing.assert_allclose(a.mag, b.mag, rtol=1e-4, atol=1e-3)
    diff = np.angle(np.exp(1j * (a.phase - b.phase)))
    assert np.abs(diff).max() < 1e-4
    assert a.phase_units == "rad"


def test_t2starw_single_echo(bids_factory: BidsFactory) -> None:
    bids_factory.add_gre("01", suffix="T2starw")
    (acq,) = discover_checked(bids_factory.root)
    assert acq.suffix == "T2starw" and acq.echo_times_s == [0.004]
    assert load_gre(acq).mag.shape == (8, 8, 6, 1)


def test_sessions_acq_run_grouping(bids_factory: BidsFactory) -> None:
    for ses in ("1", "2"):
        bids_factory.add_gre("01", ses, acq="wb", run="1")
        bids_factory.add_gre("01", ses, acq="wb", run="2")
    bids_factory.add_gre("01", "1", acq="slab", rec="norm")
    acquisitions = discover_checked(bids_factory.root)
    prefixes = [a.source_prefix for a in acquisitions]
    assert prefixes == [
        "sub-01_ses-1_acq-slab_rec-norm",
        "sub-01_ses-1_acq-wb_run-1",
        "sub-01_ses-1_acq-wb_run-2",
        "sub-01_ses-2_acq-wb_run-1",
        "sub-01_ses-2_acq-wb_run-2",
    ]
    assert all(len(a.mag_files) == 3 == len(a.phase_files) for a in acquisitions)
    first = acquisitions[1]
    assert (first.session, first.acq, first.run) == ("1", "wb", "1")


def test_session_label_with_or_without_prefix(bids_factory: BidsFactory) -> None:
    bids_factory.add_gre("01", "pre")
    bids_factory.add_gre("01", "post")
    (acq,) = discover(make_config(bids_factory.root, session_label=["post"]))
    assert acq.session == "post"
    with pytest.raises(NoDataError, match="session"):
        discover(make_config(bids_factory.root, session_label=["missing"]))


def test_participant_label_selection(bids_factory: BidsFactory) -> None:
    for sub in ("01", "02", "03"):
        bids_factory.add_gre(sub)
    acquisitions = discover(make_config(bids_factory.root, participant_label=["02", "03"]))
    assert [a.subject for a in acquisitions] == ["02", "03"]
    with pytest.raises(NoDataError, match="sub-99"):
        discover(make_config(bids_factory.root, participant_label=["99"]))
    assert selected_subjects(bids_factory.root, ["03", "99"]) == ["03"]


def test_t1w_same_session_preferred(bids_factory: BidsFactory) -> None:
    bids_factory.add_gre("01", "1")
    bids_factory.add_gre("01", "2")
    bids_factory.add_gre("02", "1")
    t1_ses1 = bids_factory.add_t1w("01", "1")
    t1_sub2 = bids_factory.add_t1w("02", "9")  # only in another session
    ses1, ses2, other = discover(make_config(bids_factory.root))
    assert ses1.t1w == t1_ses1
    assert ses2.t1w == t1_ses1  # no T1w in ses-2: any session of the subject
    assert other.t1w == t1_sub2
    t1_ses2 = bids_factory.add_t1w("01", "2")
    _, ses2, _ = discover(make_config(bids_factory.root))
    assert ses2.t1w == t1_ses2


def test_no_t1w_is_fine(bids_factory: BidsFactory) -> None:
    bids_factory.add_gre("01")
    (acq,) = discover_checked(bids_factory.root)
    assert acq.t1w is None


def test_lesion_masks_matched_by_subject_and_session(
    bids_factory: BidsFactory, tmp_path: Path
) -> None:
    masks = tmp_path / "lesions"
    bids_factory.add_gre("01", "1")
    bids_factory.add_gre("01", "2")
    m_t2_s1 = bids_factory.add_lesion_mask(masks, "01", "1", "T2lesion")
    m_t1_any = bids_factory.add_lesion_mask(masks, "01", None, "T1lesion")
    bids_factory.add_lesion_mask(masks, "02", "1", "T2lesion")  # other subject
    ses1, ses2 = discover_checked(bids_factory.root, lesion_masks=masks)
    assert ses1.lesion_masks == {"T1lesion": m_t1_any, "T2lesion": m_t2_s1}
    assert ses2.lesion_masks == {"T1lesion": m_t1_any}
    # A session-specific mask wins over one without a session.
    m_t1_s2 = bids_factory.add_lesion_mask(masks, "01", "2", "T1lesion")
    assert find_lesion_masks(masks, "01", "2") == {"T1lesion": m_t1_s2}


def test_bids_filter_file(bids_factory: BidsFactory, tmp_path: Path, caplog) -> None:
    bids_factory.add_gre("01", acq="wb")
    bids_factory.add_gre("01", acq="slab")
    bids_factory.add_t1w("01", acq="mprage")
    bids_factory.add_t1w("01")
    filters = {"megre": {"acquisition": "wb"}, "t1w": {"acquisition": "mprage"}, "bold": {}}
    with caplog.at_level("WARNING", logger="bids_qsm"):
        (acq,) = discover(make_config(bids_factory.root, bids_filters=filters))
    assert acq.acq == "wb" and acq.t1w is not None and "acq-mprage" in acq.t1w.name
    assert "bold" in caplog.text  # unknown key ignored with a warning
    # null selects files without the entity
    acquisitions = discover(
        make_config(bids_factory.root, bids_filters={"t1w": {"acquisition": None}})
    )
    assert len(acquisitions) == 2
    assert all(a.t1w is not None and "acq-" not in a.t1w.name for a in acquisitions)
    with pytest.raises(NoDataError, match="filter"):
        discover(make_config(bids_factory.root, bids_filters={"megre": {"acquisition": "x"}}))


def test_no_gre_at_all(bids_factory: BidsFactory) -> None:
    bids_factory.add_t1w("01")
    with pytest.raises(NoDataError, match="no MEGRE or T2starw"):
        discover(make_config(bids_factory.root))


def test_database_dir_created_then_reused(bids_factory: BidsFactory, tmp_path: Path) -> None:
    bids_factory.add_gre("01")
    db = tmp_path / "pybids_db"
    layout = get_layout(bids_factory.root, db)
    assert (db / "layout_index.sqlite").is_file() and layout.get_subjects() == ["01"]
    stamp = (db / "layout_index.sqlite").stat().st_mtime_ns
    bids_factory.add_gre("02")  # not in the stored index: proves the index is reused
    again = get_layout(bids_factory.root, db)
    assert again.get_subjects() == ["01"]
    assert (db / "layout_index.sqlite").stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pybids_db")]
    acquisitions = discover(make_config(bids_factory.root, bids_database_dir=db))
    assert [a.subject for a in acquisitions] == ["01"]


def test_b0_override_and_metadata(bids_factory: BidsFactory) -> None:
    bids_factory.add_gre("01", b0_tesla=None)
    (acq,) = discover_checked(bids_factory.root, b0_tesla=7.0)
    assert acq.b0_tesla == 7.0
    assert acq.metadata["MagneticFieldStrengthSource"] == "--b0-tesla"
    assert load_gre(acq).b0_tesla == 7.0
    assert load_gre(acq, b0_tesla_override=1.5).b0_tesla == 1.5


def test_oblique_affine_b0_direction(bids_factory: BidsFactory) -> None:
    angle = np.deg2rad(20)
    affine = np.eye(4)
    affine[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    affine[:3, :3] *= [0.5, 0.5, 2.0]  # anisotropic voxels
    bids_factory.add_gre("01", affine=affine)
    (acq,) = discover_checked(bids_factory.root)
    expected = [0.0, np.sin(angle), np.cos(angle)]
    np.testing.assert_allclose(acq.metadata["B0Direction"], expected, atol=1e-6)
    data = load_gre(acq)
    np.testing.assert_allclose(data.b0_dir, expected, atol=1e-6)
    np.testing.assert_allclose(data.voxel_size, [0.5, 0.5, 2.0])


def test_arbitrary_phase_units_rescaled(bids_factory: BidsFactory) -> None:
    bids_factory.add_gre("01", phase_units=None, phase_scale=4096)
    (acq,) = discover_checked(bids_factory.root)
    assert acq.phase_units == "arbitrary"
    assert acq.metadata["PhaseUnitsSource"].startswith("detected")
    data = load_gre(acq)
    assert data.phase_units == "arbitrary"
    assert data.phase.min() >= -np.pi and data.phase.max() < np.pi


def test_real_sample_phase_detected_as_arbitrary(real_gre_bids) -> None:
    root = real_gre_bids(units=None)
    (acq,) = discover_checked(root)
    assert acq.phase_units == "arbitrary"
    assert acq.metadata["PhaseUnits"] == "arbitrary"
    data = load_gre(acq)
    assert data.mag.shape == (40, 40, 20, 3)
    assert data.te_s == pytest.approx((0.004, 0.008, 0.012))
    assert data.phase.min() >= -np.pi and data.phase.max() < np.pi
    assert data.phase.max() - data.phase.min() > 6.0  # spans the full circle after rescaling
    np.testing.assert_allclose(data.voxel_size, [0.46875, 0.46875, 1.0], rtol=1e-4)
    assert np.isclose(np.linalg.norm(data.b0_dir), 1.0)


def test_real_sample_4d_matches_3d(real_gre_bids) -> None:
    a = load_gre(discover_checked(real_gre_bids(units="arbitrary", name="a"))[0])
    b = load_gre(discover_checked(real_gre_bids(units="arbitrary", four_d=True, name="b"))[0])
    np.testing.assert_array_equal(a.mag, b.mag)
    np.testing.assert_array_equal(a.phase, b.phase)


def test_sidecar_rad_contradicted_by_data(bids_factory: BidsFactory) -> None:
    bids_factory.add_gre("01", phase_units="rad", phase_scale=4096)
    (acq,) = discover_checked(bids_factory.root)
    assert acq.phase_units == "arbitrary"


def test_inherited_sidecar(bids_factory: BidsFactory) -> None:
    bids_factory.add_gre("01", b0_tesla=None)
    (bids_factory.root / "MEGRE.json").write_text(json.dumps({"MagneticFieldStrength": 7}))
    (acq,) = discover_checked(bids_factory.root)
    assert acq.b0_tesla == 7.0

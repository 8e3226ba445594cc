"""The command-line contract: options, config file, logs and every documented exit code.

The participant and group workflows are replaced by fakes (injected into ``sys.modules``) so
that these tests exercise only the command line, discovery and checks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from conftest import BidsFactory

from bids_qsm import __version__
from bids_qsm.cli.parser import build_parser, parse_args
from bids_qsm.cli.run import execute
from bids_qsm.config import Config
from bids_qsm.errors import ExitCode


class FakeRunner:
    """Stands in for ``run_participant_level`` / ``run_group_level``; records its calls."""

    def __init__(self, result: int = 0, error: BaseException | None = None) -> None:
        self.result = result
        self.error = error
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any) -> int:
        self.calls.append(args)
        if self.error is not None:
            raise self.error
        return self.result


def _fake_runner(monkeypatch: pytest.MonkeyPatch, level: str) -> FakeRunner:
    """Replace ``bids_qsm.workflows.<level>.run_<level>_level`` by a recording fake."""
    runner = FakeRunner()
    module = types.ModuleType(f"bids_qsm.workflows.{level}")
    setattr(module, f"run_{level}_level", runner)
    monkeypatch.setitem(sys.modules, f"bids_qsm.workflows.{level}", module)
    return runner


@pytest.fixture
def fake_participant(monkeypatch: pytest.MonkeyPatch) -> FakeRunner:
    return _fake_runner(monkeypatch, "participant")


@pytest.fixture
def fake_group(monkeypatch: pytest.MonkeyPatch) -> FakeRunner:
    return _fake_runner(monkeypatch, "group")


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = execute([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(err: str, *fragments: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.startswith("bids-qsm: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ---------------------------------------------------------------------- exit 0
def test_participant_ok_saves_config_and_log(
    bids_dataset: Path, tmp_path: Path, fake_participant: FakeRunner, capsys
) -> None:
    out = tmp_path / "out"
    code, _, err = run_cli(
        capsys, bids_dataset, out, "participant", "--participant-label", "sub-01",
        "-w", tmp_path / "work", "--inversion", "tkd", "--nprocs", "2",
    )  # fmt: skip
    assert code == 0, err
    (config, acquisitions), = fake_participant.calls  # fmt: skip
    assert [a.subject for a in acquisitions] == ["01"]
    assert config.workflow.inversion == "tkd" and config.nipype.nprocs == 2
    log_dir = config.execution.log_dirs[0]
    assert log_dir.parent == out / "sub-01" / "log"
    saved = Config.from_toml(log_dir / "bids_qsm.toml")
    assert saved.workflow.inversion == "tkd"
    assert saved.execution.participant_label == ["01"]
    assert saved.execution.run_id == log_dir.name
    log_text = (log_dir / "bids_qsm.log").read_text()
    assert "Discovering GRE acquisitions" in log_text and "DEBUG" in log_text
    assert "Checking 1 acquisition(s) done" in err  # stage progress on the terminal
    assert not (out / "sub-02").exists()
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Version"] == __version__


def test_run_ids_differ_between_runs(
    bids_dataset: Path, tmp_path: Path, fake_participant: FakeRunner, capsys
) -> None:
    args = (bids_dataset, tmp_path / "out", "participant", "--skip-bids-validation")
    assert run_cli(capsys, *args)[0] == 0
    assert run_cli(capsys, *args)[0] == 0
    assert len(list((tmp_path / "out" / "sub-01" / "log").iterdir())) == 2
    ids = {c[0].execution.run_id for c in fake_participant.calls}
    assert len(ids) == 2


def test_group_level_logs_to_group_folder(
    bids_dataset: Path, tmp_path: Path, fake_group: FakeRunner, capsys
) -> None:
    out = tmp_path / "out"
    code, _, err = run_cli(
        capsys, bids_dataset, out, "group", "--covariates", "age", "--no-voxelwise",
        "--control-label", "HC", "--n-permutations", "0",
    )  # fmt: skip
    assert code == 0, err
    ((config,),) = fake_group.calls
    assert config.group.covariates == ["age"] and config.group.voxelwise is False
    assert config.group.n_permutations == 0
    (log_dir,) = config.execution.log_dirs
    assert log_dir.parent == out / "group" / "log"
    assert (log_dir / "bids_qsm.toml").is_file() and (log_dir / "bids_qsm.log").is_file()


def test_version_and_help(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--version"])
    assert info.value.code == 0
    assert __version__ in capsys.readouterr().out
    help_text = build_parser().format_help()
    for option in (
        "--participant-label", "--session-label", "--work-dir", "--nprocs", "--omp-nthreads",
        "--mem-mb", "--bids-filter-file", "--bids-database-dir", "--skip-bids-validation",
        "--config-file", "--stop-on-first-crash", "--use-plugin", "--verbose", "--version",
        "--boilerplate-only", "--reports-only", "--b0-tesla", "--lesion-masks",
        "--unwrapping", "--bg-removal", "--inversion", "--reference", "--phase-sign",
        "--vsharp-radius", "--brain-mask-source", "--swi-highpass", "--swi-mask-power",
        "--minip-thickness", "--apt-threshold", "--atlas", "--atlas-labels", "--atlas-table",
        "--atlas-template", "--atlas-name", "--skip-registration", "--sloppy", "--random-seed",
        "--covariates", "--clinical-columns", "--group-column", "--control-label",
        "--voxelwise", "--n-permutations",
    ):  # fmt: skip
        assert option in help_text, option
    assert "GE" in help_text and "exit codes" in help_text


def test_subprocess_help_version_and_errors(tmp_path: Path) -> None:
    """The real entry point (python -m bids_qsm): exit codes and no traceback."""
    cmd = [sys.executable, "-m", "bids_qsm"]
    done = subprocess.run([*cmd, "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "--participant-label" in done.stdout
    done = subprocess.run(
        [*cmd, str(tmp_path), str(tmp_path / "o"), "banana"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 17 and "Traceback" not in done.stderr
    done = subprocess.run(
        [*cmd, str(tmp_path), str(tmp_path / "o"), "participant", "--nprocs", "zero"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 64 and "Traceback" not in done.stderr
    assert "--nprocs" in done.stderr


# ---------------------------------------------------------------------- config file
def test_config_file_and_command_line_priority(bids_dataset: Path, tmp_path: Path) -> None:
    toml = tmp_path / "settings.toml"
    toml.write_text(
        '[workflow]\ninversion = "tikhonov"\nvsharp_radius_mm = 8\n'
        '[nipype]\nnprocs = 3\n[group]\ncovariates = ["age"]\n'
    )
    base = [str(bids_dataset), str(tmp_path / "o"), "participant", "--config-file", str(toml)]
    config = parse_args(base)
    assert config.workflow.inversion == "tikhonov" and config.workflow.vsharp_radius_mm == 8.0
    assert config.nipype.nprocs == 3 and config.group.covariates == ["age"]
    config = parse_args([*base, "--inversion", "tv", "--nprocs", "1"])
    assert config.workflow.inversion == "tv" and config.nipype.nprocs == 1
    assert config.workflow.vsharp_radius_mm == 8.0
    # defaults when neither gives a value
    assert config.workflow.reference == "brain" and config.workflow.swi_mask_power == 4


def test_saved_toml_round_trips(tmp_path: Path) -> None:
    config = parse_args(
        ["/data", "/out", "participant", "--participant-label", "01", "02", "--phase-sign",
         "-1", "--atlas", "AAL3", "--b0-tesla", "7", "--clinical-columns", "EDSS"]
    )  # fmt: skip
    path = config.save(tmp_path / "c.toml")
    again = Config.from_toml(path)
    assert again.to_dict() == config.to_dict()
    assert again.workflow.phase_sign == -1 and again.execution.b0_tesla == 7.0
    assert again.execution.bids_dir == Path("/data")


def test_labels_with_or_without_prefix() -> None:
    config = parse_args(
        ["/d", "/o", "participant", "--participant-label", "sub-01", "02",
         "--session-label", "ses-pre", "post"]
    )  # fmt: skip
    assert config.execution.participant_label == ["01", "02"]
    assert config.execution.session_label == ["pre", "post"]


def test_plugin_file(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin.yml"
    plugin.write_text("plugin: SLURMGraph\nplugin_args:\n  sbatch_args: --time=1:00:00\n")
    config = parse_args(["/d", "/o", "participant", "--use-plugin", str(plugin)])
    assert config.nipype.get_plugin() == {
        "plugin": "SLURMGraph",
        "plugin_args": {"sbatch_args": "--time=1:00:00"},
    }
    default = parse_args(["/d", "/o", "participant", "--nprocs", "2", "--mem-mb", "2048"])
    assert default.nipype.get_plugin()["plugin_args"]["n_procs"] == 2
    assert default.nipype.get_plugin()["plugin_args"]["memory_gb"] == 2.0


# ---------------------------------------------------------------------- exit 1
def test_unexpected_failure_exit_1(
    bids_dataset: Path, tmp_path: Path, fake_participant: FakeRunner, capsys
) -> None:
    fake_participant.error = RuntimeError("boom\nsecond line")
    code, _, err = run_cli(capsys, bids_dataset, tmp_path / "o", "participant",
                           "--skip-bids-validation")  # fmt: skip
    assert code == ExitCode.FAILURE == 1
    assert_one_error_line(err, "RuntimeError: boom second line", "bids_qsm.log")
    (log,) = (tmp_path / "o" / "sub-01" / "log").glob("*/bids_qsm.log")
    assert "Traceback" in log.read_text()


def test_traceback_on_terminal_with_vv(
    bids_dataset: Path, tmp_path: Path, fake_participant: FakeRunner, capsys
) -> None:
    fake_participant.error = RuntimeError("boom")
    code, _, err = run_cli(capsys, bids_dataset, tmp_path / "o", "participant",
                           "--skip-bids-validation", "-vv")  # fmt: skip
    assert code == 1 and "Traceback" in err


def test_runner_exit_code_is_passed_through(
    bids_dataset: Path, tmp_path: Path, fake_participant: FakeRunner, capsys
) -> None:
    fake_participant.result = 1
    assert run_cli(capsys, bids_dataset, tmp_path / "o", "participant",
                   "--skip-bids-validation")[0] == 1  # fmt: skip


# ---------------------------------------------------------------------- exit 16
def test_validation_failure_exit_16(
    bids_factory: BidsFactory, tmp_path: Path, fake_participant: FakeRunner, capsys
) -> None:
    bids_factory.add_gre("01")
    (bids_factory.root / "sub-01" / "anat" / "sub-01_bogus.nii.gz").write_bytes(b"x")
    code, _, err = run_cli(capsys, bids_factory.root, tmp_path / "o", "participant")
    assert code == ExitCode.BIDS_INVALID == 16
    assert_one_error_line(err, "BIDS validation failed", "--skip-bids-validation")
    assert not fake_participant.calls
    # Skipping validation lets the run go on.
    code, _, _ = run_cli(capsys, bids_factory.root, tmp_path / "o", "participant",
                         "--skip-bids-validation")  # fmt: skip
    assert code == 0


def test_not_a_bids_dataset_exit_16(tmp_path: Path, capsys) -> None:
    (tmp_path / "raw" / "sub-01").mkdir(parents=True)
    code, _, err = run_cli(capsys, tmp_path / "raw", tmp_path / "o", "participant")
    assert code == 16
    assert_one_error_line(err, "dataset_description.json")


# ---------------------------------------------------------------------- exit 17
def test_unknown_level_exit_17(bids_dataset: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, bids_dataset, tmp_path / "o", "session")
    assert code == ExitCode.UNKNOWN_LEVEL == 17
    assert_one_error_line(err, "unknown analysis level 'session'")


# ---------------------------------------------------------------------- exit 18
@pytest.mark.parametrize(
    "extra",
    [
        ["--participant-label", "sub-99"],
        ["--session-label", "ses-9"],
    ],
)
def test_selection_matches_nothing_exit_18(
    bids_dataset: Path, tmp_path: Path, fake_participant: FakeRunner, capsys, extra: list[str]
) -> None:
    code, _, err = run_cli(capsys, bids_dataset, tmp_path / "o", "participant",
                           "--skip-bids-validation", *extra)  # fmt: skip
    assert code == ExitCode.NO_DATA == 18
    assert_one_error_line(err, str(bids_dataset))
    assert not fake_participant.calls


def test_filter_file_matches_nothing_exit_18(
    bids_dataset: Path, tmp_path: Path, fake_participant: FakeRunner, capsys
) -> None:
    filters = tmp_path / "filters.json"
    filters.write_text(json.dumps({"megre": {"acquisition": "nope"}}))
    code, _, err = run_cli(capsys, bids_dataset, tmp_path / "o", "participant",
                           "--skip-bids-validation", "--bids-filter-file", filters)  # fmt: skip
    assert code == 18
    assert_one_error_line(err, "BIDS filter file")


# ---------------------------------------------------------------------- exit 64
@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--no-such-option"], "unrecognized arguments"),
        (["--inversion", "magic"], "invalid choice"),
        (["--phase-sign", "2"], "expected 1 or -1"),
        (["--nprocs", "0"], "positive integer"),
        (["--participant-label", "sub-0/1"], "invalid label"),
        (["--atlas-labels", "labels.nii.gz"], "custom atlas needs all"),
        (["--nprocs", "1", "--omp-nthreads", "2"], "cannot exceed"),
    ],
)
def test_usage_errors_exit_64(
    bids_dataset: Path, tmp_path: Path, capsys, extra: list[str], fragment: str
) -> None:
    code, _, err = run_cli(capsys, bids_dataset, tmp_path / "o", "participant", *extra)
    assert code == ExitCode.USAGE == 64
    assert_one_error_line(err, fragment)


def test_missing_positional_exit_64(capsys) -> None:
    code, _, err = run_cli(capsys, "only-one-arg")
    assert code == 64
    assert_one_error_line(err, "required")


def test_work_dir_inside_bids_dir_exit_64(bids_dataset: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, bids_dataset, tmp_path / "o", "participant",
                           "-w", bids_dataset / "work")  # fmt: skip
    assert code == 64
    assert_one_error_line(err, "work dir must not be inside BIDS_DIR")
    assert not (bids_dataset / "work").exists()


@pytest.mark.parametrize(
    ("option", "name", "text", "message"),
    [
        ("--config-file", "bad.toml", "[workflow]\ninversoin = 'tv'\n",
         "unknown setting workflow.inversoin"),
        ("--config-file", "bad.toml", "[workflow\n", None),
        ("--bids-filter-file", "filters.json", "{not json", "invalid JSON"),
    ],
)  # fmt: skip
def test_bad_settings_file_exit_64(
    bids_dataset: Path, tmp_path: Path, capsys, option: str, name: str, text: str, message
) -> None:
    bad = tmp_path / name
    bad.write_text(text)
    code, _, err = run_cli(capsys, bids_dataset, tmp_path / "o", "participant", option, bad)
    assert code == 64
    if message:
        assert_one_error_line(err, message, str(bad))


# ---------------------------------------------------------------------- exit 65
def test_bad_input_data_exit_65(
    bids_factory: BidsFactory, tmp_path: Path, fake_participant: FakeRunner, capsys
) -> None:
    files = bids_factory.add_gre("01")
    bids_factory.add_gre("02")
    sidecar = files["mag"][0].with_name(files["mag"][0].name.replace(".nii.gz", ".json"))
    meta = json.loads(sidecar.read_text())
    del meta["EchoTime"]
    sidecar.write_text(json.dumps(meta))
    code, _, err = run_cli(capsys, bids_factory.root, tmp_path / "o", "participant",
                           "--skip-bids-validation")  # fmt: skip
    assert code == ExitCode.DATA_ERROR == 65
    assert_one_error_line(err, files["mag"][0].name, "missing EchoTime")
    assert not fake_participant.calls  # checked before any processing


def test_missing_field_strength_cli_exit_65_then_b0_option(
    bids_factory: BidsFactory, tmp_path: Path, fake_participant: FakeRunner, capsys
) -> None:
    bids_factory.add_gre("01", b0_tesla=None)
    args = (bids_factory.root, tmp_path / "o", "participant", "--skip-bids-validation")
    code, _, err = run_cli(capsys, *args)
    assert code == 65
    assert_one_error_line(err, "MagneticFieldStrength")
    code, _, _ = run_cli(capsys, *args, "--b0-tesla", "3")
    assert code == 0
    assert fake_participant.calls[0][1][0].b0_tesla == 3.0


# ---------------------------------------------------------------------- exit 66
def test_bids_dir_missing_exit_66(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, tmp_path / "nowhere", tmp_path / "o", "participant")
    assert code == ExitCode.INPUT_MISSING == 66
    assert_one_error_line(err, "nowhere", "BIDS_DIR not found")


def test_option_file_missing_exit_66(bids_dataset: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, bids_dataset, tmp_path / "o", "participant",
                           "--bids-filter-file", tmp_path / "none.json")  # fmt: skip
    assert code == 66
    assert_one_error_line(err, "none.json")
    code, _, err = run_cli(capsys, bids_dataset, tmp_path / "o", "participant",
                           "--lesion-masks", tmp_path / "no-masks")  # fmt: skip
    assert code == 66
    assert_one_error_line(err, "no-masks")


# ---------------------------------------------------------------------- exit 73
def test_output_dir_cannot_be_created_exit_73(bids_dataset: Path, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, _, err = run_cli(capsys, bids_dataset, blocker / "out", "participant")
    assert code == ExitCode.CANNOT_CREATE_OUTPUT == 73
    assert_one_error_line(err, "cannot create OUTPUT_DIR", str(blocker / "out"))


def test_work_dir_cannot_be_created_exit_73(bids_dataset: Path, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, _, err = run_cli(capsys, bids_dataset, tmp_path / "o", "participant",
                           "-w", blocker / "work")  # fmt: skip
    assert code == 73
    assert_one_error_line(err, "cannot create work dir")


def test_output_dir_inside_bids_dir_is_not_indexed(
    bids_dataset: Path, fake_participant: FakeRunner, capsys
) -> None:
    out = bids_dataset / "qsm-out"
    fake = out / "sub-01" / "anat" / "sub-01_desc-swi_T2starw.nii.gz"
    fake.parent.mkdir(parents=True)
    fake.write_bytes((bids_dataset / "sub-01" / "anat" / "sub-01_T1w.nii.gz").read_bytes())
    code, _, err = run_cli(capsys, bids_dataset, out, "participant", "--participant-label", "01")
    assert code == 0, err
    ((_, acquisitions),) = fake_participant.calls
    assert [a.suffix for a in acquisitions] == ["MEGRE"]


def test_real_sample_through_cli(
    real_gre_bids, tmp_path: Path, fake_participant: FakeRunner, capsys
) -> None:
    root = real_gre_bids(units="arbitrary")
    code, _, err = run_cli(capsys, root, tmp_path / "o", "participant")  # validated
    assert code == 0, err
    ((config, (acq,)),) = fake_participant.calls
    assert acq.phase_units == "arbitrary" and acq.echo_times_s == [0.004, 0.008, 0.012]
    assert "arbitrary units" in err  # reported on the terminal
    saved = Config.from_toml(config.execution.log_dirs[0] / "bids_qsm.toml")
    assert saved.execution.skip_bids_validation is False


def test_help_and_version_through_execute(capsys) -> None:
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0 and "exit codes" in out
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.strip() == f"bids-qsm {__version__}"


def test_saved_config_replays_with_a_new_run_id(
    bids_dataset: Path, tmp_path: Path, fake_participant: FakeRunner, capsys
) -> None:
    args = [bids_dataset, tmp_path / "o", "participant", "--skip-bids-validation"]
    assert run_cli(capsys, *args, "--inversion", "tv", "--participant-label", "01")[0] == 0
    first = fake_participant.calls[0][0]
    saved = first.execution.log_dirs[0] / "bids_qsm.toml"
    assert run_cli(capsys, *args, "--config-file", saved)[0] == 0
    second = fake_participant.calls[1][0]
    assert second.workflow.inversion == "tv"
    assert second.execution.participant_label == ["01"]
    assert second.execution.run_id != first.execution.run_id
    assert second.execution.log_dirs[0] != first.execution.log_dirs[0]


def test_database_dir_reused_across_runs(
    bids_dataset: Path, tmp_path: Path, fake_participant: FakeRunner, capsys
) -> None:
    db = bids_dataset / "pybids_db"  # inside the dataset: kept out of validation and index
    args = [bids_dataset, tmp_path / "o", "participant", "--bids-database-dir", db]
    code, _, err = run_cli(capsys, *args, "--participant-label", "01")
    assert code == 0, err
    assert (db / "layout_index.sqlite").is_file()
    code, _, err = run_cli(capsys, *args, "--participant-label", "02")
    assert code == 0, err
    assert "Reusing the pybids index" in err
    assert [c[1][0].subject for c in fake_participant.calls] == ["01", "02"]


@pytest.mark.parametrize(
    "toml_text",
    [
        '[nipype]\nnprocs = "many"\n',
        "[workflow]\nskip_registration = 1\n",
        '[workflow]\ninversion = "magic"\n',
        "[workflow]\nphase_sign = 2\n",
        "[nosuchsection]\nx = 1\n",
        "[group]\ncovariates = 3\n",
    ],
)
def test_config_file_type_errors_exit_64(
    bids_dataset: Path, tmp_path: Path, capsys, toml_text: str
) -> None:
    toml = tmp_path / "settings.toml"
    toml.write_text(toml_text)
    code, _, err = run_cli(capsys, bids_dataset, tmp_path / "o", "participant",
                           "--config-file", toml)  # fmt: skip
    assert code == 64, err
    assert_one_error_line(err)


def test_stage_logging_and_log_file_replay(tmp_path: Path, capsys) -> None:
    from bids_qsm.logging_setup import add_log_dir, setup_logging, stage, teardown_logging

    logger = setup_logging(0)
    try:
        logger.debug("early detail")
        with stage("Doing things", logger):
            pass
        path = add_log_dir(tmp_path / "log")  # replays what was logged before
        logger.info("late line")
        with pytest.raises(ValueError), stage("Failing", logger):
            raise ValueError("x")
    finally:
        teardown_logging()
    text = path.read_text()
    assert "early detail" in text and "Doing things done" in text and "late line" in text
    assert "Failing failed" in text
    err = capsys.readouterr().err
    assert "Doing things done (" in err and "early detail" not in err  # DEBUG: file only

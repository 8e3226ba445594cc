"""Errors that keep their meaning (issue 14): each bad input or fault, through the command line.

Every case checks the exit code and the single ``bids-qsm: error:`` line naming the file. The
checks that run before processing use a fake workflow (as in ``test_cli.py``); the failures
inside a processing step run the real workflow (in-process Linear plugin, registration
skipped, tiny images), and the demo-style command line runs the real MultiProc workflow on
the tiny simulated dataset.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import TINY_PAIR_ARGS, BidsFactory

from bids_qsm.cli.run import execute
from bids_qsm.errors import BidsQsmError, ExitCode, InputDataError, OutputError

pytestmark = pytest.mark.timeout(600)


# ---------------------------------------------------------------------- helpers
@pytest.fixture
def fake_participant(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    calls: list[tuple] = []
    module = types.ModuleType("bids_qsm.workflows.participant")
    module.run_participant_level = lambda *a: calls.append(a) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bids_qsm.workflows.participant", module)
    return calls


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    code = execute([str(a) for a in args])
    return code, capsys.readouterr().err


def error_line(err: str, *fragments: str) -> str:
    """The one error line (no traceback on the terminal), holding every fragment."""
    lines = [ln for ln in err.splitlines() if ln.startswith("bids-qsm: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def cli_error(
    capsys: pytest.CaptureFixture[str], code: int, fragments: tuple[str, ...], *args: object
) -> str:
    """Run the command line with ``args``; assert the exit ``code`` and the one error line
    holding every fragment (returned)."""
    got, err = run_cli(capsys, *args)
    assert got == code, err
    return error_line(err, *fragments)


def sidecar(nifti: Path) -> Path:
    return nifti.with_name(nifti.name.replace(".nii.gz", ".json"))


def set_echo_time(nifti: Path, te: object) -> None:
    path = sidecar(nifti)
    meta = json.loads(path.read_text())
    meta["EchoTime"] = te
    path.write_text(json.dumps(meta))


LINEAR = "plugin: Linear\n"


def run_real(capsys, tmp_path: Path, bids: Path, *extra: object) -> tuple[int, str]:
    """The real workflow, in process (Linear plugin), registration skipped."""
    plugin = tmp_path / "linear.yml"
    plugin.write_text(LINEAR)
    return run_cli(
        capsys, bids, tmp_path / "out", "participant", "--skip-bids-validation",
        "--skip-registration", "--use-plugin", plugin, "-w", tmp_path / "work", *extra,
    )  # fmt: skip


# ---------------------------------------------------------------------- item 1 and 9
@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """`make demo`'s command line with relative paths (tiny preset), then a re-run.

    The re-run (same command line) goes into the same OUTPUT_DIR after the work dir was
    deleted (every step recomputed) and the temporary file a killed run leaves was planted.
    """
    root = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1"}
    sim = [sys.executable, "-m", "bids_qsm.simulate.cli", "demo/bids", *TINY_PAIR_ARGS,
           "--lesions", "--seed", "1"]  # fmt: skip
    subprocess.run(sim, cwd=root, env=env, check=True, capture_output=True)
    args = ["demo/bids", "demo/derivatives", "participant", "--lesion-masks",
            "demo/bids/derivatives/lesions", "--nprocs", "2", "--omp-nthreads", "1",
            "--participant-label", "02", "--skip-bids-validation",
            "--skip-registration"]  # fmt: skip
    cmd = [sys.executable, "-m", "bids_qsm"]
    first = subprocess.run(
        [*cmd, *args, "-w", "demo/work"], cwd=root, env=env, capture_output=True, text=True
    )
    out = root / "demo" / "derivatives"
    snapshot = {
        p.relative_to(out): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and "log" not in p.relative_to(out).parts
    }
    stale = out / "sub-02" / "anat" / ".sub-02_Chimap.nii.gz.k3j2h1g0.tmp.nii.gz"
    stale.write_bytes(b"left by a killed run")
    shutil.rmtree(root / "demo" / "work")  # every step recomputed
    second = subprocess.run(
        [*cmd, *args, "-w", "demo/work"], cwd=root, env=env, capture_output=True, text=True
    )
    return {"root": root, "out": out, "first": first, "second": second, "snapshot": snapshot}


@pytest.mark.slow
def test_relative_paths_of_the_demo_command_line(demo_runs: dict) -> None:
    first = demo_runs["first"]
    assert first.returncode == 0, first.stderr
    out: Path = demo_runs["out"]
    lesions = out / "sub-02" / "anat" / "sub-02_desc-lesions_stats.tsv"
    assert lesions.is_file(), first.stderr
    assert {"T1lesion", "T2lesion"} <= set(lesions.read_text().split())
    (log_dir,) = sorted((out / "sub-02" / "log").iterdir())[:1]
    saved = (log_dir / "bids_qsm.toml").read_text()
    assert f'lesion_masks = "{demo_runs["root"] / "demo/bids/derivatives/lesions"}"' in saved
    assert f'work_dir = "{demo_runs["root"] / "demo/work"}"' in saved


@pytest.mark.slow
def test_rerun_rewrites_identical_bytes_and_removes_stale_temporaries(demo_runs: dict) -> None:
    second = demo_runs["second"]
    assert second.returncode == 0, second.stderr
    out: Path = demo_runs["out"]
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    now = {
        p.relative_to(out): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and "log" not in p.relative_to(out).parts
    }
    assert sorted(now) == sorted(demo_runs["snapshot"])
    changed = [str(k) for k, v in now.items() if v != demo_runs["snapshot"][k]]
    assert not changed, changed
    chimap = json.loads((out / "sub-02" / "anat" / "sub-02_Chimap.json").read_text())
    assert "StageTimings" not in chimap
    timings = sorted((out / "sub-02" / "log").glob("*/stage_timings.json"))
    assert len(timings) == 2
    stages = json.loads(timings[0].read_text())
    assert any(k.endswith("qsm_wf.qsm") for k in stages)


# ---------------------------------------------------------------------- item 2
def test_error_inside_a_step_keeps_code_and_names_the_file(
    bids_factory: BidsFactory, tmp_path: Path, capsys
) -> None:
    """A brain too thin for background removal: the step's 65 reaches the exit code."""
    files = bids_factory.add_gre("01", shape=(16, 16, 3))
    code, err = run_real(capsys, tmp_path, bids_factory.root)
    assert code == ExitCode.DATA_ERROR == 65, err
    error_line(err, str(files["mag"][0]), "empty mask")
    crash = list((tmp_path / "out" / "sub-01" / "log").rglob("crash-*.txt"))
    assert crash and "Traceback" in crash[0].read_text()
    log = next((tmp_path / "out" / "sub-01" / "log").rglob("bids_qsm.log")).read_text()
    assert "Traceback" in log


def test_traceback_on_the_terminal_only_with_vv(
    bids_factory: BidsFactory, tmp_path: Path, capsys
) -> None:
    bids_factory.add_gre("01", shape=(16, 16, 3))
    code, err = run_real(capsys, tmp_path, bids_factory.root, "-vv")
    assert code == 65 and "Traceback" in err


def test_several_subjects_exit_with_the_most_severe_failure(
    bids_factory: BidsFactory, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sub-01 has bad data (65), sub-02 an unexpected failure (1): 1 wins, both are named."""
    import bids_qsm.qsm.stages as qsm_pipeline  # the first stage of the QSM nodes

    bids_factory.add_gre("01", shape=(16, 16, 3))
    bids_factory.add_gre("02", shape=(16, 16, 12))
    real = qsm_pipeline.prepare_inputs

    def failing(mag, *args, **kwargs):
        if mag.shape[2] == 12:
            raise RuntimeError("simulated bug")
        return real(mag, *args, **kwargs)

    monkeypatch.setattr(qsm_pipeline, "prepare_inputs", failing)
    code, err = run_real(capsys, tmp_path, bids_factory.root)
    assert code == ExitCode.FAILURE == 1, err
    error_line(err, "sub-02_echo-1_part-mag_MEGRE.nii.gz", "RuntimeError: simulated bug",
               "also failed: sub-01")  # fmt: skip
    assert "sub-01 failed:" in err and "empty mask" in err  # the other failure is logged


def test_severity_order() -> None:
    from bids_qsm.workflows.errors_bridge import run_error

    found = {"01": InputDataError("bad"), "02": OutputError("no space"), "03": BidsQsmError("x")}
    assert run_error(found, 3).exit_code == 73
    del found["02"]
    assert run_error(found, 3).exit_code == 1
    assert run_error({"01": InputDataError("bad")}, 3).exit_code == 65


def test_output_folder_not_writable_during_the_run_exit_73(
    bids_factory: BidsFactory, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The OS refuses the writes into OUTPUT_DIR/sub-01/anat (works as root too)."""
    import tempfile

    bids_factory.add_gre("01", shape=(16, 16, 12))
    anat = tmp_path / "out" / "sub-01" / "anat"
    real = tempfile.mkstemp

    def refuse(*args, **kwargs):
        if Path(kwargs.get("dir") or args[2]) == anat:
            raise PermissionError(13, "Permission denied")
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    code, err = run_real(capsys, tmp_path, bids_factory.root)
    assert code == ExitCode.CANNOT_CREATE_OUTPUT == 73, err
    error_line(err, str(anat), "Permission denied")


def test_output_folder_not_writable_fails_before_processing_73(
    bids_dataset: Path, tmp_path: Path, capsys, fake_participant: list
) -> None:
    anat = tmp_path / "out" / "sub-01" / "anat"
    anat.parent.mkdir(parents=True)
    anat.write_text("a file where the folder should be")
    cli_error(
        capsys,
        73,
        (str(anat), "not a folder"),
        bids_dataset,
        tmp_path / "out",
        "participant",
        "--skip-bids-validation",
    )
    assert not fake_participant
    if os.geteuid() != 0:  # permissions do not stop root
        anat.unlink()
        anat.mkdir(mode=0o500)
        cli_error(
            capsys,
            73,
            (str(anat), "not writable"),
            bids_dataset,
            tmp_path / "out",
            "participant",
            "--skip-bids-validation",
        )


# ---------------------------------------------------------------------- items 3 and 4
def test_malformed_sidecar_json_exit_65(
    bids_factory: BidsFactory, tmp_path: Path, capsys, fake_participant: list
) -> None:
    bids_factory.add_gre("01")
    files = bids_factory.add_gre("02")
    bad = sidecar(files["phase"][1])
    bad.write_text('{"EchoTime": 0.008, "Units": "rad",')  # truncated
    # sub-02 not selected: pybids still reads it
    cli_error(
        capsys,
        ExitCode.DATA_ERROR,
        (str(bad), "malformed JSON"),
        bids_factory.root,
        tmp_path / "o",
        "participant",
        "--participant-label",
        "01",
        "--skip-bids-validation",
    )
    assert not fake_participant
    # selected: found before pybids
    cli_error(
        capsys,
        ExitCode.DATA_ERROR,
        (str(bad), "malformed JSON", "line 1 column"),
        bids_factory.root,
        tmp_path / "o",
        "participant",
        "--participant-label",
        "02",
        "--skip-bids-validation",
    )


def test_group_level_corrupt_stats_table_exit_65(tmp_path: Path, capsys) -> None:
    from bids_qsm.simulate.group_fixtures import fabricate_cohort

    c = fabricate_cohort(tmp_path / "c", n_controls=2, n_patients=2, transforms=False)
    table = sorted(c.output_dir.glob("sub-*/anat/*_stats.tsv"))[1]
    table.write_bytes(b"\xff\xfe\x00\x81garbage\x00\n\x93\x94")
    cli_error(
        capsys,
        65,
        (str(table), "corrupt table"),
        c.bids_dir,
        c.output_dir,
        "group",
        "--no-voxelwise",
    )


# ---------------------------------------------------------------------- item 5
def test_non_binary_lesion_mask_is_refused_65(
    bids_factory: BidsFactory, tmp_path: Path, capsys, fake_participant: list
) -> None:
    bids_factory.add_gre("01")
    bids_factory.add_gre("02")
    masks = tmp_path / "lesions"
    flair = bids_factory.add_lesion_mask(masks, "02")
    image = np.random.default_rng(0).uniform(0, 900, (8, 8, 6)).astype(np.float32)
    BidsFactory.save_nifti(flair, image)  # a FLAIR-like image given as mask
    ok = bids_factory.add_lesion_mask(masks, "01")
    BidsFactory.save_nifti(ok, (np.asarray(nib.load(ok).dataobj) * 255).astype(np.uint8))
    cli_error(
        capsys,
        65,
        (str(flair), "not binary"),
        bids_factory.root,
        tmp_path / "o",
        "participant",
        "--skip-bids-validation",
        "--lesion-masks",
        masks,
    )
    assert not fake_participant
    code, err = run_cli(capsys, bids_factory.root, tmp_path / "o", "participant",
                        "--skip-bids-validation", "--lesion-masks", masks,
                        "--participant-label", "01")  # fmt: skip
    assert code == 0, err  # 0/255 is binary


# ---------------------------------------------------------------------- item 6
def test_single_slice_image_exit_65(
    bids_factory: BidsFactory, tmp_path: Path, capsys, fake_participant: list
) -> None:
    files = bids_factory.add_gre("01", shape=(16, 16, 1))
    cli_error(
        capsys,
        65,
        (str(files["mag"][0]), "only 1 voxel(s)", "3D volume"),
        bids_factory.root,
        tmp_path / "o",
        "participant",
        "--skip-bids-validation",
    )


def test_thick_slices_keep_a_usable_mask() -> None:
    """0.5 x 0.5 x 5 mm on a small head: erosion and V-SHARP radii in mm.

    Before: V-SHARP kept 100 of 24876 brain voxels (one 12 mm radius, 10 mm erosion along z).
    """
    from bids_qsm.qsm.pipeline import QSMOptions, reconstruct_qsm
    from bids_qsm.simulate.phantom import gre_signal, sphere_phantom

    vs, shape, te = (0.5, 0.5, 5.0), (96, 112, 9), [0.004, 0.010, 0.016, 0.022]
    ph = sphere_phantom(shape=shape, voxel_size=vs)
    mag, phase = gre_signal(ph.total_field_ppm, ph.brain, te, 3.0, snr=100)
    res = reconstruct_qsm(mag, phase, te, 3.0, vs, (0, 0, 1), options=QSMOptions(), threads=1)
    assert res.mask.sum() >= 0.35 * ph.brain.sum()  # measured 0.41
    axes = [(np.arange(n) - (n - 1) / 2) * d for n, d in zip(shape, vs, strict=True)]
    grid = np.meshgrid(*axes, indexing="ij")
    for (cx, cy, cz), radius, chi in ph.spheres:
        dist2 = sum((g - c) ** 2 for g, c in zip(grid, (cx, cy, cz), strict=True))
        core = dist2 <= (0.7 * radius) ** 2
        core &= res.mask
        assert core.sum() > 50
        mean = float(res.chi_ppm[core].mean())
        # 5 mm slices underestimate small spheres (measured 52-58 % of the truth)
        assert 0.3 * abs(chi) < abs(mean) < 1.2 * abs(chi) and np.sign(mean) == np.sign(chi)


# ---------------------------------------------------------------------- items 7 and 8
def test_echoes_out_of_order_exit_65(
    bids_factory: BidsFactory, tmp_path: Path, capsys, fake_participant: list
) -> None:
    files = bids_factory.add_gre("01")
    set_echo_time(files["mag"][1], 0.002)
    set_echo_time(files["phase"][1], 0.002)
    cli_error(
        capsys,
        65,
        (str(files["mag"][1]), "shorter than 0.004 s", files["mag"][0].name, "increasing EchoTime"),
        bids_factory.root,
        tmp_path / "o",
        "participant",
        "--skip-bids-validation",
    )
    assert not fake_participant


def test_duplicated_echo_time_names_the_duplicate(
    bids_factory: BidsFactory, tmp_path: Path, capsys, fake_participant: list
) -> None:
    files = bids_factory.add_gre("01")
    set_echo_time(files["mag"][2], 0.008)  # same as echo-2
    set_echo_time(files["phase"][2], 0.008)
    line = cli_error(
        capsys,
        65,
        (str(files["mag"][2]), "repeats that of", files["mag"][1].name),
        bids_factory.root,
        tmp_path / "o",
        "participant",
        "--skip-bids-validation",
    )
    assert str(files["mag"][0]) not in line


def test_duplicated_echo_time_in_a_4d_file_names_the_volumes(
    bids_factory: BidsFactory, tmp_path: Path, capsys, fake_participant: list
) -> None:
    files = bids_factory.add_gre("01", four_d=True)
    set_echo_time(files["mag"][0], [0.004, 0.008, 0.008])
    cli_error(
        capsys,
        65,
        (str(files["mag"][0]), "(volume 2)"),
        bids_factory.root,
        tmp_path / "o",
        "participant",
        "--skip-bids-validation",
    )


# ---------------------------------------------------------------------- item 9 (unit)
def test_only_stale_temporaries_are_removed(tmp_path: Path) -> None:
    from bids_qsm.bids.writers import _TMP_WRITER, atomic_path
    from bids_qsm.workflows.outputs import clean_stale_temporaries

    folder = tmp_path / "sub-01" / "anat"
    folder.mkdir(parents=True)
    old_style = folder / ".x.nii.gz.abcd1234.tmp.nii.gz"
    old_style.write_bytes(b"")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    with atomic_path(folder / "y.json") as live:  # this process is writing it right now
        host_tag = _TMP_WRITER.search(live.name).group(1)
        killed = folder / f".z.json.{host_tag}-{dead}.qwerty12.tmp.json"
        killed.write_bytes(b"")
        assert clean_stale_temporaries(tmp_path) == 2
        assert live.exists() and not killed.exists() and not old_style.exists()
        live.write_text("{}")
    assert (folder / "y.json").read_text() == "{}"


def test_crash_file_parsing(tmp_path: Path) -> None:
    """The last traceback line of a Nipype crash file gives the class, code and message."""
    from bids_qsm.workflows.errors_bridge import failure_to_error, read_crash_file

    head = "Node: sub_01_wf.gre_wf.qsm_wf.qsm\nWorking directory: /w/qsm\n\nNode inputs:\n\n"
    head += "options = {'bg_removal': 'vsharp'}\n\nTraceback (most recent call last):\n"
    head += '\t  File "x.py", line 1, in f\n'
    src = {"gre_wf": Path("/data/sub-01/anat/sub-01_echo-1_part-mag_MEGRE.nii.gz")}
    cases = {
        "\tbids_qsm.errors.InputDataError: the brain mask is empty\n": (65, str(src["gre_wf"])),
        "\tOSError: [Errno 28] No space left on device: '/w/qsm/chi.nii'\n": (73, "No space"),
        "\tValueError: mask is empty: nothing to reconstruct\n": (1, "step qsm"),
    }
    for i, (last, (code, fragment)) in enumerate(cases.items()):
        crash = tmp_path / f"crash-{i}.txt"
        crash.write_text(head + last)
        error = failure_to_error(read_crash_file(crash), src)
        assert error.exit_code == code and fragment in str(error), str(error)
        assert "\n" not in str(error)


def test_every_path_option_is_made_absolute(tmp_path: Path, monkeypatch) -> None:
    from bids_qsm.cli.parser import parse_args

    monkeypatch.chdir(tmp_path)
    for folder in ("bids", "lesions", "masks"):
        (tmp_path / folder).mkdir()
    for name in ("labels.nii.gz", "table.tsv", "template.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "filter.json").write_text('{"megre": {}}')
    (tmp_path / "plugin.yml").write_text(LINEAR)
    (tmp_path / "settings.toml").write_text('[execution]\nbids_database_dir = "db"\n')
    config = parse_args([
        "bids", "out", "participant", "-w", "work", "--lesion-masks", "lesions",
        "--brain-mask-source", "masks", "--bids-filter-file", "filter.json",
        "--use-plugin", "plugin.yml", "--config-file", "settings.toml",
        "--atlas-labels", "labels.nii.gz", "--atlas-table", "table.tsv",
        "--atlas-template", "template.nii.gz", "--atlas-name", "Mine",
    ])  # fmt: skip
    ex, wf = config.execution, config.workflow
    paths = [ex.bids_dir, ex.output_dir, ex.work_dir, ex.lesion_masks, ex.brain_mask_source,
             ex.bids_filter_file, ex.bids_database_dir, ex.config_file, config.nipype.use_plugin,
             wf.atlas_labels, wf.atlas_table, wf.atlas_template]  # fmt: skip
    for path in paths:
        assert path.is_absolute() and path.parent == tmp_path, path

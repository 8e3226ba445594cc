"""SLURM batch scripts: ``scripts/slurm-array.sh`` and ``scripts/slurm-group.sh``.

Two kinds of tests:

* fast ones (always run) execute the array/group scripts outside SLURM with a fake
  ``SLURM_*`` environment and a stand-in ``bids-qsm`` that records its arguments, to check the
  subject picked from participants.tsv, the resources, the scratch work dir and the errors;
* ``@pytest.mark.slurm``: a real single-node SLURM (Debian ``slurm-wlm`` + ``munge``) started on
  localhost by ``scripts/slurm-local.sh``, a job array over two simulated subjects and the group
  job submitted with ``--dependency=afterok``. Skipped, with the reason, where SLURM cannot start
  (not root, packages missing, daemons refusing to run); ``make test`` deselects it with
  ``-m "not slurm"`` and ``.ci/run`` runs it with ``pytest -m slurm``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_PAIR_ARGS

REPO = Path(__file__).resolve().parents[1]
ARRAY = REPO / "scripts" / "slurm-array.sh"
GROUP = REPO / "scripts" / "slurm-group.sh"
LOCAL = REPO / "scripts" / "slurm-local.sh"
VENV_BIN = Path(sys.executable).parent

TERMINAL = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
}


# ============================================================== fast tests (no SLURM needed)
@pytest.fixture
def fake_env(tmp_path):
    """A BIDS dir with participants.tsv, a recording stand-in for bids-qsm, a SLURM-like env."""
    bids = tmp_path / "bids"
    bids.mkdir()
    (bids / "participants.tsv").write_text(
        "participant_id\tgroup\tage\nsub-01\tHC\t30\nsub-02\tMS\t41\n\nsub-P03\tMS\t52\n"
    )
    record = tmp_path / "args.txt"
    fake = tmp_path / "bin" / "bids-qsm"
    fake.parent.mkdir()
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'printf "%s\\n" "$@" > {record}\n'
        'for a in "$@"; do [[ -d $a && $a == */bids-qsm_* ]] && touch "$a/marker"; done\n'
        'exit "${FAKE_RC:-0}"\n'
    )
    fake.chmod(0o755)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "BIDS_QSM_"))}
    env.update(
        PATH=f"{fake.parent}:{env.get('PATH', '/usr/bin:/bin')}",
        SLURM_ARRAY_JOB_ID="77",
        SLURM_JOB_ID="78",
        SLURM_CPUS_PER_TASK="3",
        SLURM_MEM_PER_NODE="8000",
        SLURM_TMPDIR=str(scratch),
        BIDS_QSM_RUNNER="native",
    )
    return bids, tmp_path / "out", record, scratch, env


def _run(script, args, env, **kw):
    return subprocess.run(
        ["bash", str(script), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        **kw,
    )


@pytest.mark.parametrize(("task", "label"), [("1", "01"), ("2", "02"), ("3", "P03")])
def test_array_picks_subject_and_resources(fake_env, task, label):
    bids, out, record, scratch, env = fake_env
    env["SLURM_ARRAY_TASK_ID"] = task
    proc = _run(ARRAY, [bids, out, "--omp-nthreads", "1"], env)
    assert proc.returncode == 0, proc.stderr
    args = record.read_text().splitlines()
    assert args[:3] == [str(bids), str(out), "participant"]
    opts = dict(zip(args[3:-2:2], args[4:-2:2], strict=True))
    assert opts["--participant-label"] == label
    assert opts["--nprocs"] == "3"
    assert opts["--mem-mb"] == "7200"  # 90 % of SLURM_MEM_PER_NODE
    assert opts["--bids-database-dir"] == str(out / ".bids-qsm-bidsdb")
    work = Path(opts["-w"])
    assert work.parent == scratch and work.name == f"bids-qsm_77_{task}_sub-{label}"
    assert args[-2:] == ["--omp-nthreads", "1"]  # extra options passed through unchanged
    assert not work.exists(), "the scratch work dir must be removed after a successful run"


def test_array_keeps_work_dir_and_exit_code_on_failure(fake_env):
    bids, out, _, scratch, env = fake_env
    env.update(
        SLURM_ARRAY_TASK_ID="2", FAKE_RC="65", SLURM_MEM_PER_NODE="", SLURM_MEM_PER_CPU="1000"
    )
    proc = _run(ARRAY, [bids, out], env)
    assert proc.returncode == 65
    kept = scratch / "bids-qsm_77_2_sub-02"
    assert (kept / "marker").exists() and str(kept) in proc.stderr


def test_array_mem_per_cpu(fake_env):
    bids, out, record, _, env = fake_env
    env.update(SLURM_ARRAY_TASK_ID="1", SLURM_MEM_PER_NODE="", SLURM_MEM_PER_CPU="1000")
    del env["SLURM_MEM_PER_NODE"]
    assert _run(ARRAY, [bids, out], env).returncode == 0
    args = record.read_text().splitlines()
    assert args[args.index("--mem-mb") + 1] == "2700"  # 3 cpus x 1000 MB x 0.9


@pytest.mark.parametrize(
    ("task", "code", "message"),
    [("4", 65, "has no row"), ("0", 64, "must be >= 1"), (None, 64, "SLURM_ARRAY_TASK_ID")],
)
def test_array_bad_task_id(fake_env, task, code, message):
    bids, out, record, _, env = fake_env
    if task is not None:
        env["SLURM_ARRAY_TASK_ID"] = task
    proc = _run(ARRAY, [bids, out], env)
    assert proc.returncode == code and message in proc.stderr
    assert not record.exists()


def test_array_errors_name_the_problem(fake_env):
    bids, out, _, _, env = fake_env
    env["SLURM_ARRAY_TASK_ID"] = "1"
    (bids / "participants.tsv").unlink()
    proc = _run(ARRAY, [bids, out], env)
    assert proc.returncode == 66 and "participants.tsv" in proc.stderr
    env["BIDS_QSM_RUNNER"] = "apptainer"
    (bids / "participants.tsv").write_text("participant_id\nsub-01\n")
    proc = _run(ARRAY, [bids, out], env)
    assert proc.returncode == 1 and "BIDS_QSM_IMAGE" in proc.stderr


def test_array_container_runner_binds_paths(fake_env, tmp_path):
    """With an image, the task runs `apptainer run --cleanenv --bind ...` on the same paths."""
    bids, out, record, _, env = fake_env
    fake_apptainer = tmp_path / "bin" / "apptainer"
    fake_apptainer.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {record}\n')
    fake_apptainer.chmod(0o755)
    image = tmp_path / "bids-qsm.sif"
    image.touch()
    env.update(SLURM_ARRAY_TASK_ID="1", BIDS_QSM_RUNNER="auto", BIDS_QSM_IMAGE=str(image))
    assert _run(ARRAY, [bids, out], env).returncode == 0
    args = record.read_text().splitlines()
    assert args[:3] == ["run", "--cleanenv", "--bind"]
    binds = args[3].split(",")
    assert f"{bids}:{bids}:ro" in binds and str(out) in binds
    assert args[4] == str(image) and args[5:8] == [str(bids), str(out), "participant"]


def test_group_script_arguments(fake_env):
    bids, out, record, scratch, env = fake_env
    out.mkdir()
    proc = _run(GROUP, [bids, out, "--n-permutations", "10"], env)
    assert proc.returncode == 0, proc.stderr
    args = record.read_text().splitlines()
    assert args[:3] == [str(bids), str(out), "group"]
    assert args[args.index("--nprocs") + 1] == "3"
    assert args[args.index("--bids-database-dir") + 1] == str(out / ".bids-qsm-bidsdb")
    assert Path(args[args.index("-w") + 1]).parent == scratch
    assert args[-2:] == ["--n-permutations", "10"]
    assert _run(GROUP, [bids, out.parent / "missing"], env).returncode == 66


# ============================================================== real SLURM
def _slurm_unavailable() -> str | None:
    if sys.platform != "linux":
        return "SLURM test needs Linux"
    if os.geteuid() != 0:
        return "a private slurmd needs root (run as root, e.g. in CI)"
    missing = [
        b
        for b in ("munged", "slurmctld", "slurmd", "sbatch", "scontrol")
        if not (shutil.which(b) or Path("/usr/sbin", b).exists())
    ]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install slurm-wlm munge)"
    if not (VENV_BIN / "bids-qsm").exists() or not (VENV_BIN / "bids-qsm-simulate").exists():
        return f"bids-qsm is not installed in {VENV_BIN}"
    return None


def _local_cluster(action: str, root: Path, env: dict) -> subprocess.CompletedProcess:
    """``scripts/slurm-local.sh start|stop ROOT`` (a private single-node SLURM)."""
    cmd = ["bash", str(LOCAL), action, str(root)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    reason = _slurm_unavailable()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("slurm")
    env = dict(os.environ, PATH=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    start = _local_cluster("start", root, env)
    if start.returncode != 0:
        pytest.skip(f"SLURM could not start on this machine: {start.stderr.strip()[-800:]}")
    env["SLURM_CONF"] = str(root / "etc" / "slurm.conf")
    try:
        yield root, env
    finally:
        subprocess.run(["scancel", "--user", "root"], env=env, capture_output=True)
        stop = _local_cluster("stop", root, env)
        assert stop.returncode == 0, stop.stderr
        for pidfile in ("run/slurmd.pid", "run/slurmctld.pid", "munge/munged.pid"):
            assert not (root / pidfile).exists(), f"{pidfile} left behind"


def _job_states(job_id: str, env) -> dict[str, dict[str, str]]:
    """JobId -> fields of `scontrol -o show job` (array tasks are listed one per line)."""
    proc = subprocess.run(
        ["scontrol", "-o", "show", "job", job_id], env=env, capture_output=True, text=True
    )
    jobs = {}
    for line in proc.stdout.splitlines():
        fields = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
        if "JobId" in fields:
            jobs[fields["JobId"]] = fields
    return jobs


def _wait(job_ids, env, timeout):
    deadline = time.monotonic() + timeout
    while True:
        states = {}
        for jid in job_ids:
            states.update(_job_states(jid, env))
        never = [j for j in states.values() if "DependencyNeverSatisfied" in j.get("Reason", "")]
        if states and (all(j["JobState"] in TERMINAL for j in states.values()) or never):
            return states
        if time.monotonic() > deadline:
            return states
        time.sleep(5)


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_slurm_array_and_dependent_group_job(slurm_cluster, tmp_path):
    root, env = slurm_cluster
    bids, out, scratch, logs = (tmp_path / d for d in ("bids", "out", "scratch", "logs"))
    scratch.mkdir()
    logs.mkdir()
    sim = subprocess.run(
        [
            str(VENV_BIN / "bids-qsm-simulate"),
            str(bids),
            *TINY_PAIR_ARGS,
            "--seed",
            "11",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert sim.returncode == 0, sim.stderr[-2000:]
    n_subjects = len((bids / "participants.tsv").read_text().strip().splitlines()) - 1
    assert n_subjects == 2

    job_env = dict(
        env, PATH=f"{VENV_BIN}:{env['PATH']}", TMPDIR=str(scratch), BIDS_QSM_RUNNER="native"
    )

    def sbatch(*args: str) -> str:
        """Submit with ``sbatch --parsable``; the job id."""
        proc = subprocess.run(["sbatch", "--parsable", *args], env=job_env,
                              capture_output=True, text=True, check=True)  # fmt: skip
        return proc.stdout.strip().split(";")[0]

    limits = ("--cpus-per-task=1", "--mem=3000", "--time=60")
    array = sbatch(f"--array=1-{n_subjects}", *limits, f"--output={logs}/array_%A_%a.log",
                   str(ARRAY), str(bids), str(out), "--omp-nthreads", "1")  # fmt: skip
    group = sbatch(f"--dependency=afterok:{array}", *limits, f"--output={logs}/group_%j.log",
                   str(GROUP), str(bids), str(out))  # fmt: skip

    # The group job must wait for the array
    pending = _job_states(group, env)[group]
    assert pending["JobState"] in {"PENDING", "RUNNING", "COMPLETED"}

    states = _wait([array, group], env, timeout=3000)

    def logs_text():
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.glob("*")))

    tasks = {k: v for k, v in states.items() if v.get("ArrayJobId") == array}
    assert len(tasks) == n_subjects, f"{states}\n{logs_text()}"
    for task in tasks.values():
        assert (task["JobState"], task["ExitCode"]) == ("COMPLETED", "0:0"), logs_text()
    g = states[group]
    assert (g["JobState"], g["ExitCode"]) == ("COMPLETED", "0:0"), logs_text()
    # afterok: the group job started only after every task ended
    ends = [time.strptime(t["EndTime"], "%Y-%m-%dT%H:%M:%S") for t in tasks.values()]
    assert time.strptime(g["StartTime"], "%Y-%m-%dT%H:%M:%S") >= max(ends)

    # Outputs of the map step, one per subject, and the shared pybids index
    for label in ("01", "02"):
        chimaps = list((out / f"sub-{label}" / "anat").glob("*_Chimap.nii.gz"))
        assert chimaps, f"no Chimap for sub-{label}\n{logs_text()}"
        assert list((out / f"sub-{label}" / "anat").glob("*_stats.tsv")), logs_text()
    assert (out / ".bids-qsm-bidsdb").is_dir()
    assert (out / "dataset_description.json").is_file()
    # Outputs of the reduce step
    assert list((out / "group").glob("*.tsv")), f"no group tables\n{logs_text()}"
    # Each task logged its subject; the scratch work dirs were cleaned up after success
    array_logs = sorted(logs.glob("array_*.log"))
    assert len(array_logs) == n_subjects
    assert {"sub-01", "sub-02"} <= {
        w for p in array_logs for w in p.read_text().split() if w.startswith("sub-0")
    }
    assert not list(scratch.glob("bids-qsm_*")), "work dirs left on scratch"

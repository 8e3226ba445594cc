"""Subject scheduling: threads/processes plan, per-subject logs, heartbeat, failure pages."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from nipype.interfaces.base import BaseInterface, BaseInterfaceInputSpec, TraitedSpec, traits
from nipype.pipeline import engine as pe

from bids_qsm import logging_setup as L
from bids_qsm.config import Config
from bids_qsm.workflows import scheduler as SCH
from bids_qsm.workflows.scheduler import plan_parallelism


@pytest.mark.parametrize(
    ("nprocs", "omp", "n_subjects", "mem_mb", "expected"),
    [
        (2, None, 12, None, (2, 1)),  # two subjects at once, one thread each
        (2, None, 1, None, (1, 2)),  # one subject: both CPUs to it
        (8, None, 3, None, (3, 2)),
        (8, 4, 12, None, (2, 4)),  # --omp-nthreads 4: 8 // 4 subjects at once
        (2, 1, 12, None, (2, 1)),
        (16, 1, 12, 8000, (2, 1)),  # --mem-mb caps the subjects at once
        (4, 8, 2, None, (1, 4)),  # never more threads than CPUs
    ],
)
def test_plan_parallelism(nprocs, omp, n_subjects, mem_mb, expected) -> None:
    assert plan_parallelism(nprocs, omp, n_subjects, mem_mb) == expected


def test_subject_log_keeps_only_its_own_lines(tmp_path: Path) -> None:
    L.setup_logging(0)
    try:
        log = logging.getLogger("bids_qsm.test")
        log.info("run-wide line")
        paths = [L.add_log_dir(tmp_path / f"sub-{s}" / "log" / "run1") for s in ("01", "02")]
        group = L.add_log_dir(tmp_path / "group" / "log" / "run1")
        L.release_buffer()
        log.info("sub-01: QSM done")
        log.warning("sub-02/anat/sub-02_T2starw.json: missing key EchoTime")
        log.info("comparing sub-01 with sub-02")
    finally:
        L.teardown_logging()
    one, two = (p.read_text() for p in paths)
    assert "run-wide line" in one and "run-wide line" in two
    assert "QSM done" in one and "QSM done" not in two
    assert "EchoTime" in two and "EchoTime" not in one
    assert "comparing" in one and "comparing" in two
    assert "QSM done" in group.read_text()  # the group log has no owner filter


class _SleepInputSpec(BaseInterfaceInputSpec):
    subject = traits.Str(mandatory=True)
    seconds = traits.Float(0.8, usedefault=True)


class _Sleep(BaseInterface):
    """Stands in for a silent node (ANTs); fails for subject 02."""

    input_spec = _SleepInputSpec
    output_spec = TraitedSpec

    def _run_interface(self, runtime):
        time.sleep(self.inputs.seconds)
        if self.inputs.subject == "02":
            raise RuntimeError("boom: simulated registration failure")
        return runtime

    def _list_outputs(self):
        return {}


def _fake_wf(*, subject, acquisitions, config, threads=None):
    wf = pe.Workflow(name=f"sub_{subject}_wf")
    wf.add_nodes([pe.Node(_Sleep(subject=subject), name="register")])
    return wf


def test_run_subjects_in_parallel_with_heartbeat_logs_and_failure_page(
    tmp_path: Path, monkeypatch
) -> None:
    from bids_qsm.workflows import participant_graph as participant
    from bids_qsm.workflows import reporting

    out = tmp_path / "out"
    cfg = Config()
    cfg.execution.output_dir, cfg.execution.work_dir = out, tmp_path / "work"
    cfg.execution.run_id = "run1"
    cfg.nipype.nprocs = 2
    subjects = ("01", "02", "03")
    by_subject = {
        s: [
            SimpleNamespace(
                subject=s,
                session=None,
                acq=None,
                run=None,
                source_prefix=f"sub-{s}",
                all_files=lambda s=s: [tmp_path / f"sub-{s}_echo-1_part-mag_MEGRE.nii.gz"],
            )
        ]
        for s in subjects
    }
    monkeypatch.setattr(participant, "init_participant_wf", _fake_wf)

    def fake_report(config, subject, acqs, out_dir):
        path = Path(out_dir) / f"sub-{subject}.html"
        path.write_text("ok")
        return path

    monkeypatch.setattr(reporting, "write_subject_report", fake_report)
    monkeypatch.setattr(SCH, "HEARTBEAT_S", 0.2)
    L.setup_logging(0)
    try:
        for s in subjects:
            L.add_log_dir(out / f"sub-{s}" / "log" / "run1")
        L.release_buffer()
        results = SCH.run_subjects(cfg, by_subject)
    finally:
        L.teardown_logging()
    assert [(r.subject, r.ok) for r in results] == [("01", True), ("02", False), ("03", True)]
    # the error bridge names the source file, the cause and the step (exit code 1)
    assert "RuntimeError: boom: simulated registration failure" in results[1].message
    assert "sub-02_echo-1_part-mag_MEGRE.nii.gz" in results[1].message
    assert "step register" in results[1].message and results[1].exit_code == 1
    logs = {s: (out / f"sub-{s}" / "log" / "run1" / "bids_qsm.log").read_text() for s in subjects}
    for s in subjects:
        others = [o for o in subjects if o != s]
        assert f"sub-{s}" in logs[s]
        assert not any(f"sub-{o}" in logs[s] for o in others), s
        assert f"still running atlas registration (ANTs) of sub-{s}" in logs[s]
        assert logs[s].count('[Node] Executing "register"') == 1, s
    assert "boom" in logs["02"] and "boom" not in logs["01"]
    page = (out / "sub-02.html").read_text()
    assert "Processing failed" in page and "boom: simulated registration failure" in page
    assert (out / "sub-01.html").read_text() == "ok"


def test_citation_is_the_same_whichever_subject_writes_it(tmp_path: Path) -> None:
    import json

    from bids_qsm.workflows.reporting import write_citation

    cfg = Config()

    def sidecar(label: str, ref: float, dice: float) -> None:
        anat = tmp_path / f"sub-{label}" / "anat"
        anat.mkdir(parents=True)
        (anat / f"sub-{label}_Chimap.json").write_text(
            json.dumps(
                {
                    "ReferenceValue": ref,
                    "ReferenceRegion": "brain",
                    "AtlasRegistration": {"brain_dice": dice, "template": "MNI152NLin6Asym"},
                    "StageTimings": {"total": ref * 1000},
                }
            )
        )

    sidecar("02", 0.0123, 0.91)
    first = write_citation(cfg, tmp_path).read_bytes()
    sidecar("01", -0.0456, 0.87)  # now the first subject found: different values
    second = write_citation(cfg, tmp_path).read_bytes()
    assert first == second
    assert b"0.0123" not in first and b"0.012" not in first


def test_longitudinal_step_is_published_for_the_heartbeat(tmp_path: Path, monkeypatch) -> None:
    """The longitudinal step (subject space + one ANTs registration, outside Nipype's graph)
    is published as the running stage, so the parent's heartbeat keeps printing."""
    import types

    import bids_qsm.workflows.longitudinal as L
    from bids_qsm.workflows import scheduler as S

    status = tmp_path / "01"
    tracker = S.StageTracker("01", status)
    seen: list[str] = []

    def fake_run(config, subject, acquisitions, threads):
        seen.append(status.read_text(encoding="utf-8"))
        return None

    monkeypatch.setattr(L, "run_longitudinal", fake_run)
    acqs = [types.SimpleNamespace(session=s, source_prefix=f"sub-01_ses-{s}") for s in "12"]
    S._run_longitudinal_step(None, "01", acqs, 1, tracker, status)
    assert len(seen) == 1 and seen[0].startswith("longitudinal subject space")
    assert status.read_text(encoding="utf-8") == "" and tracker.current is None
    # one session: nothing runs, nothing is published
    S._run_longitudinal_step(None, "01", acqs[:1], 1, tracker, status)
    assert len(seen) == 1


def test_stage_tracker_counts_the_cpu_time_of_each_node(tmp_path: Path) -> None:
    """CPU seconds of the process while a node runs are kept per node full name (issue 12)."""
    tracker = SCH.StageTracker("01", measure_cpu=True)
    log = logging.getLogger("nipype.workflow")

    def say(msg: str) -> None:
        tracker.emit(log.makeRecord(log.name, logging.INFO, __file__, 0, msg, (), None))

    say('[Node] Setting-up "sub_01_wf.gre_wf.qsm_wf.qsm" in "/tmp/x".')
    say('[Node] Executing "qsm" <bids_qsm.interfaces.qsm.InvertField>')
    t0 = time.process_time()
    while time.process_time() - t0 < 0.3:  # busy: CPU, not sleep
        sum(range(1000))
    say('[Node] Finished "qsm", elapsed time 0.3s.')
    assert set(tracker.cpu_s) == {"sub_01_wf.gre_wf.qsm_wf.qsm"}
    assert 0.25 <= tracker.cpu_s["sub_01_wf.gre_wf.qsm_wf.qsm"] < 5.0
    # a node whose work ran elsewhere (another plugin) gets no CPU figure
    other = SCH.StageTracker("01")
    other.emit(
        log.makeRecord(log.name, logging.INFO, __file__, 0, 'x [Node] Finished "qsm"', (), None)
    )
    assert other.cpu_s == {}

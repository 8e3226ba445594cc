"""Participant level: schedule the subjects, several at a time when ``--nprocs`` allows.

Threads and processes (:func:`plan_parallelism`): with ``P = --nprocs`` (default: the CPU count)
and ``T = --omp-nthreads`` threads per subject (default: ``P // min(P, n_subjects)``, so that
several subjects share the CPUs before one subject gets several threads, because ANTs and the
FFT-based QSM scale sub-linearly), ``max(1, P // T)`` subjects run at once, each in its own
worker process with its graph run by Nipype's ``Linear`` plugin and ``T`` threads for ANTs,
numpy/BLAS and ITK. ``--mem-mb`` further caps the number of subjects at once to
``--mem-mb / MEM_MB_PER_SUBJECT``. A Nipype plugin chosen with ``--use-plugin`` (e.g. SLURM)
keeps its own scheduling: subjects are then submitted one after the other.

Each worker writes only its own subject's log file (``sub-<label>/log/<run-id>/bids_qsm.log``)
and its report; a stage line is printed when a node starts and ends, and a heartbeat every
15 s while it runs (``still running atlas registration (ANTs) of sub-01, 95 s``). A failing
subject gets a report page saying that it failed and why, and the others go on (unless
``--stop-on-first-crash``).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import re
import resource
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bids_qsm.config import Config
from bids_qsm.errors import BidsQsmError, ExitCode
from bids_qsm.logging_setup import HEARTBEAT_S, heartbeat, keep_only_log_dir
from bids_qsm.workflows import participant_graph as pgraph
from bids_qsm.workflows import reporting
from bids_qsm.workflows.errors_bridge import subject_error

LOGGER = logging.getLogger("bids_qsm.participant")

#: Peak memory of one subject (MB) assumed when ``--mem-mb`` limits the subjects at once.
MEM_MB_PER_SUBJECT = 4000


@dataclass(frozen=True)
class SubjectResult:
    """Outcome of one subject: ``ok``, the one-line error and its exit code, seconds taken.

    The error travels as (message, exit code) rather than as an exception object, so that it
    crosses the worker-process boundary unchanged (see :mod:`bids_qsm.workflows.errors_bridge`).
    """

    subject: str
    ok: bool
    message: str = ""
    seconds: float = 0.0
    exit_code: int = 0

    def as_error(self) -> BidsQsmError:
        """The product error of a failed subject (exit code 1 when none was recorded)."""
        error = BidsQsmError(self.message or f"sub-{self.subject} failed")
        error.exit_code = ExitCode(self.exit_code or ExitCode.FAILURE)
        return error


def plan_parallelism(
    nprocs: int | None, omp_nthreads: int | None, n_subjects: int, mem_mb: int | None = None
) -> tuple[int, int]:
    """(subjects at once, threads per subject) for ``nprocs`` CPUs (see the module docstring)."""
    cpus = max(1, int(nprocs or os.cpu_count() or 1))
    n_subjects = max(1, int(n_subjects))
    if omp_nthreads:
        threads = max(1, min(int(omp_nthreads), cpus))
    else:
        threads = max(1, cpus // min(cpus, n_subjects))
    n_parallel = max(1, min(n_subjects, cpus // threads))
    if mem_mb:
        n_parallel = max(1, min(n_parallel, int(mem_mb) // MEM_MB_PER_SUBJECT))
    return n_parallel, threads


_SETUP_RE = re.compile(r'\[Node\] Setting-up "([^"]+)"')


def _process_cpu_s() -> float:
    """CPU seconds (user + system, all threads) used so far by this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class StageTracker(logging.Handler):
    """Relays Nipype's node messages as stage lines and remembers the running stage.

    ``measure_cpu`` (nodes run in this process, Nipype's ``Linear`` plugin): the CPU seconds of
    this process (all threads, ANTs included) spent in each node are kept in ``cpu_s`` (node
    full name -> s) and appended to the stage line.
    """

    def __init__(
        self, subject: str, status_file: Path | None = None, measure_cpu: bool = False
    ) -> None:
        super().__init__(logging.INFO)
        self.subject = subject
        self.current: str | None = None
        self.status_file = status_file
        self.measure_cpu = measure_cpu
        self.cpu_s: dict[str, float] = {}
        self._fullname = ""
        self._cpu0 = 0.0
        self._re = pgraph._NODE_RE
        self._labels = pgraph.STAGE_LABELS

    def _publish(self) -> None:
        """Tell the parent process (its heartbeat) what runs: ``<label>\t<start epoch s>``."""
        if self.status_file is None:
            return
        text = f"{self.current}\t{time.time():.1f}" if self.current else ""
        tmp = self.status_file.with_suffix(".tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.status_file)
        except OSError:
            pass

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        setup = _SETUP_RE.search(message)
        if setup:
            self._fullname = setup.group(1)
            return
        m = self._re.search(message)
        if not m:
            return
        event, node, elapsed = m.groups()
        label = self._labels.get(node, node)
        if event == "Executing":
            self.current = label
            self._cpu0 = _process_cpu_s()
            self._publish()
            LOGGER.info("sub-%s: %s ...", self.subject, label)
            return
        self.current = None
        self._publish()
        cpu = ""
        if self.measure_cpu:
            used = _process_cpu_s() - self._cpu0
            self.cpu_s[self._fullname or node] = round(used, 2)
            cpu = f", CPU {used:.1f} s"
        LOGGER.info("sub-%s: %s done (%.1f s%s)", self.subject, label, float(elapsed or 0), cpu)

    def set_stage(self, label: str | None) -> None:
        """Mark a stage outside Nipype's graph (e.g. the longitudinal step) as running."""
        self.current = label
        self._publish()

    def activity(self) -> str | None:
        """What the heartbeat says: the running stage of this subject (None between nodes)."""
        return f"{self.current} of sub-{self.subject}" if self.current else None


def _run_longitudinal_step(
    config: Config,
    subject: str,
    acquisitions: Sequence[Any],
    threads: int,
    tracker: StageTracker,
    status_file: Path | None,
) -> None:
    """Subject space and the one atlas registration of a subject with several sessions, with
    the same heartbeat as the graph's stages (nothing to do for one session)."""
    from bids_qsm.workflows.longitudinal import run_longitudinal, session_acquisitions

    if not session_acquisitions(list(acquisitions)):
        return
    tracker.set_stage("longitudinal subject space and atlas registration (ANTs)")
    try:
        with heartbeat(tracker.activity if status_file is None else (lambda: None), LOGGER):
            run_longitudinal(config, subject, list(acquisitions), threads)
    finally:
        tracker.set_stage(None)


def _limit_blas_threads(threads: int) -> None:
    """Apply ``threads`` to the BLAS/OpenMP pools already loaded in this process."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: the environment variables still apply to new pools
        return
    threadpool_limits(threads)


def _log_dir(config: Config, subject: str) -> Path:
    return Path(config.execution.output_dir) / f"sub-{subject}" / "log" / config.execution.run_id


def run_one_subject(
    config: Config,
    subject: str,
    acquisitions: Sequence[Any],
    *,
    threads: int,
    plugin: dict[str, Any],
    label: str = "",
    status_file: Path | None = None,
) -> SubjectResult:
    """Run one subject's workflow and write its report (a failure page when it failed).

    ``status_file``: where the running stage is published for the parent's heartbeat (in a
    pool worker, whose own threads are starved while ANTs holds the GIL); without it, a
    heartbeat thread of this process does the job.
    """
    t0 = time.monotonic()
    out_dir = Path(config.execution.output_dir)
    log_dir = _log_dir(config, subject)
    log_dir.mkdir(parents=True, exist_ok=True)
    if not config.execution.reports_only:
        LOGGER.info("%ssub-%s: %d acquisition(s)", label, subject, len(acquisitions))
        pgraph._configure_nipype(log_dir, config)
        work_dir = Path(config.execution.work_dir or out_dir.parent / "work" / out_dir.name)
        wf = pgraph.init_participant_wf(
            subject=subject, acquisitions=list(acquisitions), config=config, threads=threads
        )
        wf.base_dir = str(work_dir)
        tracker = StageTracker(subject, status_file, measure_cpu=plugin.get("plugin") == "Linear")
        nlog = logging.getLogger("nipype.workflow")
        nlog.addHandler(tracker)
        try:
            with heartbeat(tracker.activity if status_file is None else (lambda: None), LOGGER):
                graph = wf.run(**plugin)
            pgraph.write_stage_timings(graph, log_dir, tracker.cpu_s)
            _run_longitudinal_step(config, subject, acquisitions, threads, tracker, status_file)
        except Exception as exc:  # a failing subject must not stop the others
            sources = {pgraph._wf_name(a): a.all_files()[0] for a in acquisitions}
            error = subject_error(subject, log_dir, sources, exc)
            message = str(error)
            LOGGER.error("sub-%s failed: %s (crash files in %s)", subject, message, log_dir)
            LOGGER.debug("sub-%s traceback", subject, exc_info=True)
            _failure_page(reporting.write_failure_report, config, subject, acquisitions, message)
            return SubjectResult(
                subject, False, message, time.monotonic() - t0, int(error.exit_code)
            )
        finally:
            nlog.removeHandler(tracker)
    try:
        report = reporting.write_subject_report(config, subject, list(acquisitions), out_dir)
        from bids_qsm.reports.longitudinal import add_subject_section  # issue 17

        add_subject_section(out_dir, subject, report)  # issue 17
    except Exception as exc:
        LOGGER.error("sub-%s: report failed: %s", subject, exc)
        LOGGER.debug("report traceback", exc_info=True)
        _failure_page(
            reporting.write_failure_report, config, subject, acquisitions, f"report: {exc}"
        )
        return SubjectResult(subject, False, f"report failed: {exc}", time.monotonic() - t0)
    seconds = time.monotonic() - t0
    LOGGER.info("sub-%s done in %.1f s; report: %s", subject, seconds, report)
    return SubjectResult(subject, True, "", seconds)


def _failure_page(
    writer: Callable[..., Path], config: Config, subject: str, acqs: Sequence[Any], why: str
) -> None:
    try:
        page = writer(config, subject, list(acqs), Path(config.execution.output_dir), why)
        LOGGER.info("sub-%s: failure report: %s", subject, page)
    except Exception:  # never hide the original failure
        LOGGER.debug("sub-%s: could not write the failure report", subject, exc_info=True)


# ----------------------------------------------------------------------------- process pool
#: (config, {subject: acquisitions}, threads, status dir) of the running pool (fork-inherited).
_POOL_JOB: tuple[Any, dict[str, list[Any]], int, Path] | None = None


def _worker(subject: str, label: str) -> SubjectResult:
    """Body of a pool worker process: one subject, its own log file, ``threads`` threads."""
    assert _POOL_JOB is not None
    config, by_subject, threads, status_dir = _POOL_JOB
    keep_only_log_dir(_log_dir(config, subject))
    _limit_blas_threads(threads)
    return run_one_subject(
        config, subject, by_subject[subject], threads=threads, plugin={"plugin": "Linear"},
        label=label, status_file=status_dir / subject,
    )  # fmt: skip


def running_stages(status_dir: Path, now: float | None = None) -> list[str]:
    """``"<stage> of sub-<label>, N s"`` for every worker that is inside a node."""
    now = time.time() if now is None else now
    out = []
    for path in sorted(Path(status_dir).glob("*")):
        if path.suffix == ".tmp":
            continue
        try:
            stage, start = path.read_text(encoding="utf-8").rsplit("\t", 1)
        except (OSError, ValueError):
            continue
        out.append(f"{stage} of sub-{path.name}, {int(now - float(start))} s")
    return out


def _pool_heartbeat(status_dir: Path, stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        for line in running_stages(status_dir):
            LOGGER.info("still running %s", line)


def run_subjects(config: Config, by_subject: dict[str, list[Any]]) -> list[SubjectResult]:
    """Run every subject (sorted by label); return one result per subject that was started."""

    subjects = sorted(by_subject)
    nx = config.nipype
    n_parallel, threads = plan_parallelism(nx.nprocs, nx.omp_nthreads, len(subjects), nx.mem_mb)
    # the thread variables are inherited by the workers (and by ANTs/ITK started there)
    pgraph.set_thread_limits(threads, force=True)
    custom_plugin = nx.plugin != "MultiProc"
    if config.execution.reports_only or custom_plugin:
        plugin = nx.get_plugin() if custom_plugin else {"plugin": "Linear"}
        LOGGER.info(
            "%d subject(s), one at a time, %d thread(s) each%s",
            len(subjects),
            threads,
            f" (Nipype plugin {nx.plugin})" if custom_plugin else "",
        )
        _limit_blas_threads(threads)
        results = []
        for i, sub in enumerate(subjects, start=1):
            res = run_one_subject(
                config,
                sub,
                by_subject[sub],
                threads=threads,
                plugin=plugin,
                label=f"[{i}/{len(subjects)}] ",
            )
            results.append(res)
            if not res.ok and nx.stop_on_first_crash:
                break
        return results
    LOGGER.info(
        "%d subject(s), %d at a time (worker processes), %d thread(s) each (--nprocs, "
        "--omp-nthreads)",
        len(subjects),
        n_parallel,
        threads,
    )
    return _run_pool(config, by_subject, subjects, n_parallel, threads)


def _run_pool(
    config: Config,
    by_subject: dict[str, list[Any]],
    subjects: list[str],
    n_parallel: int,
    threads: int,
) -> list[SubjectResult]:
    global _POOL_JOB
    status_dir = Path(tempfile.mkdtemp(prefix="bids_qsm_progress_"))
    _POOL_JOB = (config, by_subject, threads, status_dir)
    results: dict[str, SubjectResult] = {}
    stop = threading.Event()
    beat = threading.Thread(
        target=_pool_heartbeat, args=(status_dir, stop, HEARTBEAT_S), daemon=True
    )
    try:
        with ProcessPoolExecutor(n_parallel, mp_context=mp.get_context("fork")) as pool:
            futures: dict[Future, str] = {}
            for i, sub in enumerate(subjects, start=1):
                futures[pool.submit(_worker, sub, f"[{i}/{len(subjects)}] ")] = sub
            beat.start()  # after the workers are forked: they inherit no thread of ours
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    sub = futures[fut]
                    try:
                        res = fut.result()
                    except BrokenProcessPool as exc:
                        res = SubjectResult(sub, False, f"worker process died ({exc})")
                        LOGGER.error("sub-%s failed: %s", sub, res.message)
                    except Exception as exc:  # e.g. an unpicklable error
                        res = SubjectResult(sub, False, f"{type(exc).__name__}: {exc}")
                        LOGGER.error("sub-%s failed: %s", sub, res.message)
                    results[sub] = res
                    n_done = len(results)
                    LOGGER.info(
                        "%d of %d subject(s) finished (%d failed)",
                        n_done,
                        len(subjects),
                        sum(not r.ok for r in results.values()),
                    )
                    if not res.ok and config.nipype.stop_on_first_crash:
                        for other in pending:
                            other.cancel()
    finally:
        stop.set()
        if beat.is_alive():
            beat.join(timeout=5)
        shutil.rmtree(status_dir, ignore_errors=True)
        _POOL_JOB = None
    return [results[s] for s in subjects if s in results]

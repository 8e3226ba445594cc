"""Benchmark: one ``full``-preset subject (1 mm whole head, 4 echoes) through the participant level.

Simulates the subject (not timed), then runs ``bids-qsm BIDS OUT participant`` in a fresh
work directory (or ``--work DIR``: a second run with the same folder measures a re-run) and
prints: the steps before the Nipype graph (discovery, input checks; from the log), one row per
node with its wall time and CPU time (``stage_timings.json`` of the run: the CPU of the subject's
worker process, all threads, while the node ran), the whole process wall time, the peak
resident memory of the process tree (sampled from /proc every 0.2 s), the CPU time of the tree
(two ways: ``getrusage(RUSAGE_CHILDREN)``, which counts only waited-for processes, and the sum
of the last /proc sample of every process seen) and the load average at the start and the end.
Issue-12 target on the 2-core machine (quiet): <= 120 s wall and <= 4 GB peak.

    .venv/bin/python benchmarks/bench_participant.py [--preset full] [--keep DIR] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _proc_tree() -> tuple[dict[int, list[int]], dict[int, tuple[int, float]]]:
    """(children of every pid, {pid: (resident kB, CPU s of the process itself)}) from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    info: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
            with open(f"/proc/{entry}/statm") as fh:
                rss_pages = int(fh.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        ppid, utime, stime = int(fields[1]), int(fields[11]), int(fields[12])
        children.setdefault(ppid, []).append(int(entry))
        info[int(entry)] = (rss_pages * os.sysconf("SC_PAGE_SIZE") // 1024, (utime + stime) / tick)
    return children, info


class TreeSampler:
    """Samples the process tree of ``root_pid`` every ``interval`` s: peak resident memory (sum
    over the tree) and the CPU time of every process seen (its last sample, threads included),
    so that worker processes that are never waited for are counted too."""

    def __init__(self, root_pid: int, interval: float = 0.2) -> None:
        self.root_pid, self.interval = root_pid, interval
        self.peak_mb = 0.0
        self.cpu_by_pid: dict[int, float] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        children, info = _proc_tree()
        total_kb, stack = 0, [self.root_pid]
        while stack:
            pid = stack.pop()
            if pid in info:
                total_kb += info[pid][0]
                self.cpu_by_pid[pid] = info[pid][1]
            stack.extend(children.get(pid, []))
        self.peak_mb = max(self.peak_mb, total_kb / 1024.0)

    def _run(self) -> None:
        while not self._done.is_set():
            self._sample()
            time.sleep(self.interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    @property
    def cpu_s(self) -> float:
        return sum(self.cpu_by_pid.values())


def _latest_timings(out: Path) -> dict:
    """The ``stage_timings.json`` of the newest run log below ``out``."""
    found = sorted(out.glob("sub-*/log/*/stage_timings.json"), key=lambda p: p.parent.name)
    return json.loads(found[-1].read_text()) if found else {}


def _print_tables(log: str, out: Path, preset: str, nprocs: int, wall: float) -> None:
    """Steps before the graph (from the log), then one row per Nipype node (wall and CPU)."""
    print()
    print(f"| step ({preset} preset, --nprocs {nprocs}) | wall (s) | CPU (s) |")
    print("|---|---:|---:|")
    from bids_qsm.workflows.participant_graph import STAGE_LABELS

    for what, secs in re.findall(r"^\[[^\]]*\] ([^:\n]+?) done \(([0-9.]+) s\)$", log, re.M):
        print(f"| {what} | {float(secs):.1f} | |")
    order = list(STAGE_LABELS)
    timings = _latest_timings(out)
    nodes = sorted(timings, key=lambda n: (order.index(n.rsplit(".", 1)[-1]), n))
    for node in nodes:
        row = timings[node]
        cpu = row.get("cpu_s")
        cpu_txt = f"{cpu:.1f}" if cpu is not None else "(cached)"
        print(f"| node {node.split('.', 1)[-1]} | {row['elapsed_s']:.1f} | {cpu_txt} |")
    subject = re.search(r"sub-\w+ done in ([0-9.]+) s", log)
    if subject:
        total = float(subject.group(1))
        rest = total - sum(timings[n]["elapsed_s"] for n in nodes if "cpu_s" in timings[n])
        print(f"| report and between nodes (subject total minus nodes) | {rest:.1f} | |")
        print(f"| subject total incl. scheduling and report | {total:.1f} | |")
        print(f"| before the subject (start-up, discovery, checks) | {wall - total:.1f} | |")
    cpu = sum(t.get("cpu_s", 0.0) for t in timings.values())
    print(f"| **whole participant level (process wall)** | **{wall:.1f}** | {cpu:.1f} (nodes) |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", default="full")
    ap.add_argument("--keep", type=Path, help="keep the data and outputs in this folder")
    ap.add_argument("--nprocs", type=int, default=2)
    ap.add_argument("--work", type=Path, help="work directory (default: a new one in the folder)")
    ap.add_argument("--show-log", action="store_true", help="print the run's log")
    args = ap.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_participant_"))
    root.mkdir(parents=True, exist_ok=True)
    bids = root / "bids"
    if not (bids / "dataset_description.json").is_file():
        t0 = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "bids_qsm.simulate.cli", str(bids), "--preset", args.preset,
             "--n-subjects", "1", "--seed", "3"],
            check=True,
        )  # fmt: skip
        print(f"simulated {args.preset} subject in {time.monotonic() - t0:.1f} s")
    out = root / "out"
    work = args.work or root / f"work_{int(time.time())}"
    cmd = [sys.executable, "-m", "bids_qsm", str(bids), str(out), "participant", "-w", str(work),
           "--nprocs", str(args.nprocs), "--skip-bids-validation"]  # fmt: skip
    load0 = os.getloadavg()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the simulation, if run above
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    log, _ = proc.communicate()
    wall = time.monotonic() - t0
    sampler.stop()
    if proc.returncode != 0:
        print(log)
        raise SystemExit(f"bids-qsm failed with exit code {proc.returncode}")
    if args.show_log:
        print(log)
    _print_tables(log, out, args.preset, args.nprocs, wall)
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)  # the waited-for process tree
    cpu = ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime
    load1 = os.getloadavg()
    print()
    print(f"peak resident memory of the process tree: {sampler.peak_mb / 1024:.2f} GB")
    print(
        f"CPU time of the process tree: {cpu:.1f} s waited-for (getrusage children), "
        f"{sampler.cpu_s:.1f} s sampled from /proc ({len(sampler.cpu_by_pid)} processes)"
    )
    print(
        "load average (1, 5, 15 min): "
        f"{' '.join(f'{v:.1f}' for v in load0)} at the start, "
        f"{' '.join(f'{v:.1f}' for v in load1)} at the end"
    )
    print("targets (issue 12, quiet machine): <= 120 s wall, <= 4 GB peak")


if __name__ == "__main__":
    main()

"""Benchmark: one ``full``-preset subject (1 mm whole head, 4 echoes) through the participant level.

Simulates the subject (not timed), then runs ``bids-qsm BIDS OUT participant`` in a fresh
work directory and prints a table of wall time per stage (from the run's log) and the peak
resident memory of the whole process tree (sampled from /proc every 0.2 s: the sum over
bids-qsm and its Nipype worker processes). Target on the 2-core machine: <= 3 min wall and
<= 6 GB peak.

    .venv/bin/python benchmarks/bench_participant.py [--preset full] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _tree_rss_mb(root_pid: int) -> float:
    """Resident memory (MB) of ``root_pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as fh:
                text = fh.read()
        except OSError:
            continue
        ppid = int(re.search(r"^PPid:\s+(\d+)", text, re.M).group(1))
        m = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = int(m.group(1)) if m else 0
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", default="full")
    ap.add_argument("--keep", type=Path, help="keep the data and outputs in this folder")
    ap.add_argument("--nprocs", type=int, default=2)
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
    out, work = root / "out", root / f"work_{int(time.time())}"
    cmd = [sys.executable, "-m", "bids_qsm", str(bids), str(out), "participant", "-w", str(work),
           "--nprocs", str(args.nprocs), "--skip-bids-validation"]  # fmt: skip
    peak = 0.0
    load0 = os.getloadavg()[0]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the simulation, if run above
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss_mb(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    log, _ = proc.communicate()
    wall = time.monotonic() - t0
    done.set()
    sampler.join()
    if proc.returncode != 0:
        print(log)
        raise SystemExit(f"bids-qsm failed with exit code {proc.returncode}")

    rows = re.findall(r"sub-\w+: (.+?) done \(([0-9.]+) s\)", log)
    print()
    print(f"| stage ({args.preset} preset, {args.nprocs} processes) | wall time (s) |")
    print("|---|---:|")
    for stage, secs in rows:
        print(f"| {stage} | {float(secs):.1f} |")
    report = re.search(r"sub-\w+ done in ([0-9.]+) s", log)
    if report:
        print(f"| subject total incl. scheduling and report | {float(report.group(1)):.1f} |")
    print(f"| **whole participant level (process wall)** | **{wall:.1f}** |")
    print()
    print(f"peak resident memory of the process tree: {peak / 1024:.2f} GB")
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)  # the waited-for process tree
    cpu = ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime
    print(f"CPU time of the process tree: {cpu:.1f} s; load average "
          f"{load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")  # fmt: skip
    print("targets: <= 180 s wall, <= 6 GB peak")


if __name__ == "__main__":
    main()

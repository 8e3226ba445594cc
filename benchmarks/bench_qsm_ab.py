"""The QSM stage of two (or more) source trees on the same simulated head, run alternately.

On a shared machine the wall time of one run depends on the load of the moment; running the
trees in turn on the same subject (simulated once) and comparing them under the same load is
the fairest comparison available. Every run is a subprocess with ``PYTHONPATH=<tree>``, so each
tree's own ``bids_qsm`` is timed. Prints per run: wall and CPU time (s), pair equivalents (wall
and CPU time over one rfftn+irfftn pair on the acquisition grid, timed before and after the
run), the stage timings of ``QSMResult.timings_s`` and the accuracy (NRMSE, DGM slope), then
the minimum over the rounds per tree.

Usage: python benchmarks/bench_qsm_ab.py --trees /work/main /work/wt/q13 [--preset full]
       [--seed 1] [--rounds 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(subject_path: str, threads: int) -> None:
    """One timed reconstruction of the pickled subject; prints one JSON line."""
    sys.path.insert(0, str(HERE))
    from bench_qsm import accuracy, cpu_s, fft_pair_times

    from bids_qsm.qsm.pipeline import QSMOptions, reconstruct_qsm

    with open(subject_path, "rb") as f:
        sub = pickle.load(f)
    shape = sub.mag.shape[:3]
    before, load0 = fft_pair_times(shape, threads), os.getloadavg()[0]
    t0, c0 = time.perf_counter(), cpu_s()
    res = reconstruct_qsm(
        sub.mag,
        sub.phase,
        sub.te_s,
        sub.b0_tesla,
        sub.voxel_size,
        sub.b0_dir,
        QSMOptions(),
        threads=threads,
    )
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    after = fft_pair_times(shape, threads)
    acc = accuracy(res.chi_ppm, sub, res.mask)
    out = {
        "wall s": wall,
        "CPU s": cpu,
        "FFTpairs": wall / (0.5 * (before[0] + after[0])),
        "CPU pairs": cpu / (0.5 * (before[1] + after[1])),
        "load1": 0.5 * (load0 + os.getloadavg()[0]),
        **{k: v for k, v in res.timings_s.items() if k != "total"},
        "NRMSE%": acc["NRMSE%"],
        "DGMslope": acc["DGMslope"],
    }
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", nargs="+", required=True, help="source trees (PYTHONPATH)")
    ap.add_argument("--preset", default="full")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.threads)
        return
    from bids_qsm.simulate import simulate_subject

    tmp = Path(tempfile.mkdtemp(prefix="bench_qsm_ab_"))
    path = tmp / "subject.pkl"
    with open(path, "wb") as f:
        pickle.dump(simulate_subject(args.preset, seed=args.seed, workers=args.threads), f)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    rows = []
    for rnd in range(args.rounds):
        for tree in args.trees:
            env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve())}
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--trees",
                    tree,
                    "--child",
                    str(path),
                    "--threads",
                    str(args.threads),
                ],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            row = {"tree": tree, "round": rnd, **json.loads(out.strip().splitlines()[-1])}
            rows.append(row)
            print(row, flush=True)
    path.unlink()
    print(f"\nPreset {args.preset!r}, seed {args.seed}, {args.threads} threads")
    sys.path.insert(0, str(HERE))
    from bench_qsm import print_tables

    print_tables(rows, "tree", "round", "Minimum over the rounds", min)
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()

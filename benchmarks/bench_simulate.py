"""Benchmark bids-qsm-simulate: generation time and peak memory per preset.

Each preset runs in a fresh process (cold start: packaged anatomy loaded and the 1 mm head
model built) and writes one subject (GRE, T1w, lesions, truth) to a temporary BIDS folder.

    python benchmarks/bench_simulate.py [--presets tiny small full] [--nthreads 2]

Targets on the 2-core reference machine: tiny < 10 s; full < 90 s and < 8 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time


def run_one(preset: str, nthreads: int) -> dict:
    """Simulate and write one subject in this process; return timings and peak memory."""
    t0 = time.perf_counter()
    from bids_qsm.simulate.anatomy import build_head_model
    from bids_qsm.simulate.bids_writer import write_subject
    from bids_qsm.simulate.subject import simulate_subject

    build_head_model()
    t_head = time.perf_counter() - t0
    sub = simulate_subject(
        preset,
        0,
        oblique_deg=10.0,
        lesions=True,
        t1w=True,
        group="MS",
        edss=3.0,
        workers=nthreads,
    )
    t_sim = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        write_subject(__import__("pathlib").Path(tmp), sub)
    t_total = time.perf_counter() - t0
    return {
        "preset": preset,
        "grid": "x".join(str(n) for n in sub.mag.shape),
        "voxel_mm": float(sub.voxel_size[0]),
        "head_model_s": round(t_head, 2),
        "simulate_s": round(t_sim, 2),
        "total_with_write_s": round(t_total, 2),
        "peak_mem_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["tiny", "small", "full"])
    p.add_argument("--nthreads", type=int, default=2)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(run_one(args.child, args.nthreads)))
        return 0
    rows = []
    for preset in args.presets:
        out = subprocess.run(
            [sys.executable, __file__, "--child", preset, "--nthreads", str(args.nthreads)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    head = f"{'preset':<7}{'grid (X,Y,Z,E)':<18}{'head model s':>13}{'simulate s':>12}"
    head += f"{'+ write s':>11}{'peak MB':>10}"
    print(head)
    for r in rows:
        print(
            f"{r['preset']:<7}{r['grid']:<18}{r['head_model_s']:>13.1f}{r['simulate_s']:>12.1f}"
            f"{r['total_with_write_s']:>11.1f}{r['peak_mem_mb']:>10.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

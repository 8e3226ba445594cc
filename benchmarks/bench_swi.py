"""Benchmark of the SWI branch on the simulator's full preset.

Usage: ``.venv/bin/python benchmarks/bench_swi.py [--preset full] [--threads 2] [--json out.json]``

Prints a Markdown table (stage, time s, peak memory MB). Peak memory is the tracemalloc peak of
the numpy/Python allocations made *during* the stage (inputs already in memory excluded).
Timings are wall-clock on whatever else the machine is doing: quote the load with them.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import tracemalloc
from collections.abc import Callable
from typing import Any


def _get(obj: Any, name: str) -> Any:
    return obj[name] if isinstance(obj, dict) else getattr(obj, name)


def _measure(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    peak = (tracemalloc.get_traced_memory()[1] - base) / 2**20
    return out, dt, peak


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="full")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))

    import numpy as np

    from bids_qsm.atlas.structures import aal3_structures
    from bids_qsm.qsm.geometry import ppm_to_hz
    from bids_qsm.simulate import simulate_subject
    from bids_qsm.swi import (
        SWIOptions,
        combine_magnitude,
        compute_swi,
        field_from_phase,
        gaussian_highpass,
        homodyne_highpass,
        minip,
        regional_phase_measures,
        swi_image,
    )

    t0 = time.perf_counter()
    sim = simulate_subject(preset=args.preset)
    t_sim = time.perf_counter() - t0
    mag = np.asarray(_get(sim, "mag"), np.float32)
    phase = np.asarray(_get(sim, "phase"), np.float32)
    te = np.asarray(_get(sim, "te_s"), float)
    vs = np.asarray(_get(sim, "voxel_size"), float)
    mask = np.asarray(_get(sim, "brain_mask"), bool)
    labels = np.asarray(_get(sim, "labels"))
    field_hz = ppm_to_hz(
        np.asarray(_get(sim, "total_field_ppm"), np.float32), _get(sim, "b0_tesla")
    )
    field_hz = np.where(mask, field_hz, 0).astype(np.float32)
    n = args.threads
    ref_te = float(te[np.argmin(np.abs(te - 0.020))])
    e = int(np.argmin(np.abs(te - ref_te)))

    tracemalloc.start()
    rows: list[tuple[str, float, float]] = []

    comb, dt, mb = _measure(lambda: combine_magnitude(mag))
    rows.append(("magnitude combination (RSS)", dt, mb))
    hp, dt, mb = _measure(lambda: gaussian_highpass(field_hz, mask, (4.0, 4.0, 0.0)))
    rows.append(("Gaussian high-pass [4,4,0] vox", dt, mb))
    _, dt, mb = _measure(lambda: homodyne_highpass(mag[..., e], phase[..., e], 64, 2, n))
    rows.append(("homodyne high-pass (64 window)", dt, mb))
    _, dt, mb = _measure(lambda: field_from_phase(mag, phase, te, vs, n))
    rows.append(("fallback field (Laplacian, echo pairs)", dt, mb))
    hp_phase = (np.float32(-2 * np.pi * ref_te) * hp).astype(np.float32)
    swi, dt, mb = _measure(lambda: swi_image(comb, hp_phase, 4))
    rows.append(("phase mask^4 x magnitude", dt, mb))
    _, dt, mb = _measure(lambda: minip(swi, 8.0, vs))
    rows.append(("minIP 8 mm (sliding)", dt, mb))
    _, dt, mb = _measure(
        lambda: regional_phase_measures(
            -hp_phase, labels, aal3_structures(), 0.1, float(np.prod(vs))
        )
    )
    rows.append(("regional measures (20 AAL3 regions)", dt, mb))
    for name, opt in (
        ("compute_swi total, Gaussian (field given)", SWIOptions(n_threads=n)),
        ("compute_swi total, homodyne", SWIOptions(highpass="homodyne", n_threads=n)),
    ):
        _, dt, mb = _measure(
            lambda opt=opt: compute_swi(mag, phase, te, vs, mask, field_hz=field_hz, options=opt)
        )
        rows.append((name, dt, mb))
    tracemalloc.stop()

    print(
        f"SWI benchmark: preset={args.preset} grid={mask.shape} echoes={te.size} "
        f"voxel={tuple(float(v) for v in vs)} mm threads={n} load={os.getloadavg()[0]:.1f} "
        f"(simulation {t_sim:.1f} s, not counted)"
    )
    print("| stage | time s | peak memory MB |\n|---|---:|---:|")
    for name, dt, mb in rows:
        print(f"| {name} | {dt:.2f} | {mb:.0f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "preset": args.preset,
                    "shape": list(mask.shape),
                    "threads": n,
                    "rows": [{"stage": s, "time_s": t, "peak_mb": m} for s, t, m in rows],
                },
                fh,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

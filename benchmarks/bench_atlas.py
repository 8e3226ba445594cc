"""Benchmark the atlas registration on the simulator's ``full`` preset (1 mm GRE).

Prints, per case (axial / oblique acquisition, with / without T1w), the wall and CPU time
of :func:`bids_qsm.atlas.registration.register_atlas` and the Dice of every structure
against the simulator's true AAL3 labels, with the issue's thresholds.

Usage: ``.venv/bin/python benchmarks/bench_atlas.py [--preset full] [--threads 2]``
(the ITK thread count is fixed before ANTs is first used, so pass it here).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="full", choices=["tiny", "small", "full"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--oblique-deg", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--figures", type=Path, default=None, help="write QC figures here")
    args = ap.parse_args(argv)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)

    import nibabel as nib
    import numpy as np

    from bids_qsm.atlas.qc import registration_figure, structure_dice
    from bids_qsm.atlas.registration import register_atlas
    from bids_qsm.atlas.registry import load_atlas
    from bids_qsm.simulate.subject import simulate_subject

    thresholds = {
        "thalamus": 0.80,
        "putamen": 0.80,
        "caudate": 0.80,
        "globus_pallidus": 0.70,
        "red_nucleus": 0.55,
        "substantia_nigra": 0.55,
    }
    atlas = load_atlas()
    cases = [(o, t) for o in (0.0, args.oblique_deg) for t in (False, True)]
    results = []
    for oblique, with_t1w in cases:
        sim = simulate_subject(args.preset, seed=args.seed, oblique_deg=oblique, t1w=with_t1w)
        mag = nib.Nifti1Image(sim.mag, sim.affine)
        mask = nib.Nifti1Image(sim.brain_mask.astype(np.uint8), sim.affine)
        t1 = nib.Nifti1Image(*sim.t1w) if with_t1w else None
        with tempfile.TemporaryDirectory() as tmp:
            c0, w0 = time.process_time(), time.perf_counter()
            reg = register_atlas(
                mag, mask, atlas, Path(tmp), "sub-bench", t1w=t1, threads=args.threads
            )
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        d = structure_dice(reg.labels, sim.labels, atlas.structures)
        name = f"{'oblique' if oblique else 'axial'}{'+T1w' if with_t1w else ''}"
        if args.figures:
            registration_figure(
                mag, reg, args.figures / f"atlas_{name}.png", structures=atlas.structures
            )
        results.append((name, wall, cpu, reg.brain_dice, reg.timings_s, d))
        print(f"{name}: wall {wall:.1f} s, cpu {cpu:.1f} s, steps {reg.timings_s}", flush=True)

    print(f"\npreset={args.preset} grid={sim.mag.shape[:3]} threads={args.threads} "
          f"load={os.getloadavg()[0]:.1f}")  # fmt: skip
    header = f"{'structure':22s}" + "".join(f"{r[0]:>14s}" for r in results) + "   min"
    print(header)
    ok = True
    for key in results[0][5]:
        vals = [r[5][key] for r in results]
        base = key.rsplit("_", 1)[0]
        need = thresholds.get(base)
        flag = ""
        if need is not None:
            flag = f"  >= {need:.2f} {'ok' if min(vals) >= need else 'FAIL'}"
            ok &= min(vals) >= need
        print(f"{key:22s}" + "".join(f"{v:14.3f}" for v in vals) + flag)
    print(f"{'brain mask Dice':22s}" + "".join(f"{r[3]:14.3f}" for r in results))
    print(f"{'wall time (s)':22s}" + "".join(f"{r[1]:14.1f}" for r in results))
    print(f"{'CPU time (s)':22s}" + "".join(f"{r[2]:14.1f}" for r in results))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

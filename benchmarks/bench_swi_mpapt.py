"""Which abnormal-phase statistic follows iron? MP-APT variants on a ``bench_swi.py`` cohort.

Usage::

    .venv/bin/python benchmarks/bench_swi.py --preset small --cache DIR ...   # first
    .venv/bin/python benchmarks/bench_swi_mpapt.py --cache DIR [--preset small] [--seed 0]
        [--n-controls 20] [--tag _rc-0p5]

Reads the per-subject measures that ``bench_swi.py --cache DIR`` stored (the newest ``.pkl``
of each control) and prints, for ours, the peer (``phase-unwrap``) and the noise-free oracle,
the Pearson r across the controls between the true regional chi and each statistic of a
structure's phase-iron voxels (whole structure, both hemispheres):

- ``MP-APT, control mean + n SD``: mean of the voxels above the pooled controls' mean + n SD
  (n = 0 is the bids-qsm group default; Buffalo uses 2);
- ``mean excess over the control mean``: mean over all voxels of max(v - threshold, 0), a
  phase-weighted abnormal volume per voxel;
- ``upper q % mean``: mean of the subject's own top q % of voxels (no control threshold);
- ``mean``: plain mean over the structure.

Also the fraction of voxels above the control mean (min / median / max over the controls), to
see whether the count saturates, and a paired bootstrap (2000 resamples) of r(ours variant) -
r(peer MP-APT at the control mean) in the pallidum.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cli import cached_cohort_parser
from bench_swi import KEY, _r

Stat = Callable[[list[np.ndarray]], list[float]]


def _tail_mean(v: np.ndarray, q: float) -> float:
    return float(v[v >= np.percentile(v, 100.0 - q)].mean())


def _above(vals: list[np.ndarray], n_sd: float) -> float:
    pooled = np.concatenate(vals)
    return float(pooled.mean() + n_sd * pooled.std())


VARIANTS: dict[str, Stat] = {
    "MP-APT, control mean + 0 SD (default)": lambda vals: [
        float(v[v > _above(vals, 0.0)].mean()) for v in vals
    ],
    "MP-APT, control mean - 0.5 SD": lambda vals: [
        float(v[v > _above(vals, -0.5)].mean()) for v in vals
    ],
    "MP-APT, control mean - 1 SD": lambda vals: [
        float(v[v > _above(vals, -1.0)].mean()) for v in vals
    ],
    "MP-APT, control mean + 1 SD": lambda vals: [
        float(np.mean(v[v > _above(vals, 1.0)])) if (v > _above(vals, 1.0)).any() else np.nan
        for v in vals
    ],
    "mean excess over the control mean": lambda vals: [
        float(np.clip(v - _above(vals, 0.0), 0, None).mean()) for v in vals
    ],
    "upper 25 % mean": lambda vals: [_tail_mean(v, 25.0) for v in vals],
    "upper 10 % mean": lambda vals: [_tail_mean(v, 10.0) for v in vals],
    "mean": lambda vals: [float(v.mean()) for v in vals],
}


def load_controls(cache: Path, preset: str, seed: int, n: int, tag: str = "") -> list[dict]:
    """The newest cached measures of controls 0..n-1 (``bench_swi.py`` pickles; ``tag`` as in
    their names, e.g. ``_rc-0p5`` for ``--iron-correlation 0.5``)."""
    out = []
    for i in range(n):
        pat = f"{preset}_HC_{seed}_{i:02d}{tag}_m-*.pkl"
        paths = sorted(cache.glob(pat), key=os.path.getmtime)
        if not paths:
            raise SystemExit(f"{cache}: no measures of control {i} (run bench_swi.py first)")
        with open(paths[-1], "rb") as fh:
            out.append(pickle.load(fh))
    return out


def _values(s: dict, who: str, name: str) -> np.ndarray:
    v = np.asarray(s[who][name], float)
    return v[np.isfinite(v)]


def main(argv: list[str] | None = None) -> int:
    ap = cached_cohort_parser(__doc__)
    ap.add_argument("--tag", default="", help="cache name tag, e.g. _rc-0p5")
    args = ap.parse_args(argv)
    hc = load_controls(Path(args.cache), args.preset, args.seed, args.n_controls, args.tag)
    print(
        f"MP-APT variants: preset={args.preset} seed={args.seed} controls={len(hc)} "
        f"load={os.getloadavg()[0]:.1f}\n"
    )
    stats: dict[tuple[str, str, str], np.ndarray] = {}
    for who in ("ours", "peer", "oracle"):
        if any(s.get(who) is None for s in hc):
            continue
        print(f"r(statistic, true chi), {who}\n\n| statistic | " + " | ".join(KEY) + " |")
        print("|---|" + "---:|" * len(KEY))
        for label, fn in VARIANTS.items():
            row = []
            for name in KEY:
                chi = [s["truth"][name] for s in hc]
                stats[who, label, name] = np.asarray(fn([_values(s, who, name) for s in hc]))
                row.append(_r(chi, stats[who, label, name]))
            print(f"| {label} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
        print()
    print("| fraction of voxels above the control mean (min / median / max) | ours | peer |")
    print("|---|---:|---:|")
    for name in KEY:
        cells = []
        for who in ("ours", "peer"):
            vals = [_values(s, who, name) for s in hc]
            thr = _above(vals, 0.0)
            fr = [float((v > thr).mean()) for v in vals]
            cells.append(f"{min(fr):.2f} / {np.median(fr):.2f} / {max(fr):.2f}")
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    name = "globus_pallidus"
    chi = np.array([s["truth"][name] for s in hc])
    peer = stats["peer", "MP-APT, control mean + 0 SD (default)", name]
    rng = np.random.default_rng(0)
    boots = [rng.integers(0, len(hc), len(hc)) for _ in range(2000)]
    print(
        "\nPallidum: r(ours statistic) - r(peer MP-APT at the control mean), paired bootstrap"
        "\n\n| ours statistic | median [95 % interval] |\n|---|---:|"
    )
    for label in VARIANTS:
        ours = stats["ours", label, name]
        d = [_r(chi[i], ours[i]) - _r(chi[i], peer[i]) for i in boots]
        lo, med, hi = np.nanpercentile(d, (2.5, 50, 97.5))
        print(f"| {label} | {med:+.2f} [{lo:+.2f}, {hi:+.2f}] |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Command-line options shared by the simulator benchmarks (imported by the bench_*.py scripts,
which run with this folder first on ``sys.path``)."""

from __future__ import annotations

import argparse


def seeds_parser(doc: str, preset: str = "full", threads: int = 2) -> argparse.ArgumentParser:
    """A parser described by the first line of ``doc``, with ``--preset`` (simulator preset),
    ``--seeds`` (one simulated subject per seed) and ``--threads``."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--preset", default=preset)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=threads)
    return ap


def cached_cohort_parser(doc: str) -> argparse.ArgumentParser:
    """A parser for the benchmarks that re-read a ``bench_swi.py --cache`` cohort: ``--cache``
    (required), ``--preset``, ``--seed`` and ``--n-controls``."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--cache", required=True, help="the --cache DIR of bench_swi.py")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-controls", type=int, default=20)
    return ap

"""Benchmark of the QSM core on the simulator's digital head phantom.

Prints per-stage wall time and peak memory of the default pipeline (magnitude + phase ->
referenced Chimap), the time of one forward+inverse real FFT pair on the same grid (the floor),
and accuracy against the ground truth for each inversion: NRMSE, HFEN, XSIM (QSM challenge
definitions, cross-checked against qsm-ci's scorer in tests/test_qsm_metrics.py), deep gray
matter (thalamus, caudate, putamen, pallidum, substantia nigra, red nucleus; left and right)
mean absolute regional error in ppb and the slope of regional means against the truth.

Peak memory is the process resident set size (RSS) sampled every 5 ms from /proc/self/statm
by a background thread, reported as the peak during each stage and the increase over the
RSS before the reconstruction (which holds the simulated input).

The whole pipeline is also run with the LBV background removal option and scored the same way.

Usage: python benchmarks/bench_qsm.py [--preset full] [--seed 0] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import numpy as np
import scipy.fft as sfft

from bids_qsm.qsm import metrics
from bids_qsm.qsm.inversion import rts, tikhonov, tkd, tv_admm
from bids_qsm.qsm.pipeline import QSMOptions, reconstruct_qsm
from bids_qsm.qsm.reference import reference_chi

PAGE = os.sysconf("SC_PAGE_SIZE")


class RssSampler:
    """Samples the resident set size (bytes) of this process in a background thread."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self.rss()))
            time.sleep(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, t0: float, t1: float) -> int:
        vals = [r for t, r in self.samples if t0 <= t <= t1]
        return max(vals) if vals else self.rss()


def fft_pair_time(shape: tuple[int, ...], threads: int, repeats: int = 3) -> float:
    """Median wall time (s) of one rfftn + irfftn pair of float32 on ``shape``."""
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        sfft.irfftn(sfft.rfftn(x, workers=threads), s=shape, workers=threads)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def accuracy(chi: np.ndarray, sub, mask: np.ndarray) -> dict[str, float]:
    truth = np.where(mask, sub.chi_ppm - sub.chi_ppm[mask].mean(), 0).astype(np.float32)
    ag = metrics.regional_agreement(
        chi, truth, sub.labels, mask, metrics.deep_gray_matter_regions()
    )
    return {
        "NRMSE %": metrics.nrmse(chi, truth, mask),
        "HFEN %": metrics.hfen(chi, truth, mask),
        "XSIM": metrics.xsim(chi, truth, mask),
        "DGM MAE ppb": ag["mae_ppb"],
        "DGM slope": ag["slope"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="full")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from bids_qsm.simulate import simulate_subject

    t = time.perf_counter()
    sub = simulate_subject(args.preset, seed=args.seed, workers=args.threads)
    print(f"simulated preset {args.preset!r} in {time.perf_counter() - t:.1f} s: grid "
          f"{sub.mag.shape}, voxel {sub.voxel_size.tolist()} mm, TE {list(sub.te_s)} s, "
          f"B0 dir {np.round(sub.b0_dir, 3).tolist()}")  # fmt: skip
    grid = sub.mag.shape[:3]
    pair = fft_pair_time(grid, args.threads)

    base = RssSampler.rss()
    with RssSampler() as sampler:
        t0 = time.perf_counter()
        res = reconstruct_qsm(
            sub.mag, sub.phase, sub.te_s, sub.b0_tesla, sub.voxel_size, sub.b0_dir,
            QSMOptions(), threads=args.threads,
        )  # fmt: skip
        t_end = time.perf_counter()
    # The LBV background removal option (same pipeline otherwise), for comparison.
    with RssSampler() as sampler_lbv:
        t1 = time.perf_counter()
        res_lbv = reconstruct_qsm(
            sub.mag, sub.phase, sub.te_s, sub.b0_tesla, sub.voxel_size, sub.b0_dir,
            QSMOptions(bg_removal="lbv"), threads=args.threads,
        )  # fmt: skip
        t1_end = time.perf_counter()
    pair_after = fft_pair_time(grid, args.threads)
    pair = min(pair, pair_after)  # the least loaded measurement of the floor

    print(f"\nDefault pipeline (V-SHARP + RTS), {args.threads} threads; machine shared, "
          "timings inflated by load")  # fmt: skip
    print(f"{'stage':<12}{'wall s':>9}{'FFT pairs':>11}{'peak RSS GB':>13}")
    t = t0
    for stage, dt in res.timings_s.items():
        if stage == "total":
            continue
        peak = sampler.peak(t, t + dt)
        print(f"{stage:<12}{dt:>9.2f}{dt / pair:>11.1f}{peak / 1e9:>13.2f}")
        t += dt
    total = t_end - t0
    peak_all = sampler.peak(t0, t_end)
    print(f"{'total':<12}{total:>9.2f}{total / pair:>11.1f}{peak_all / 1e9:>13.2f}")
    print(f"one FFT pair (rfftn+irfftn, float32, {grid}): {pair:.3f} s")
    print(f"RSS before reconstruction {base / 1e9:.2f} GB (input arrays); peak increase "
          f"{(peak_all - base) / 1e9:.2f} GB")  # fmt: skip

    mask = res.mask
    rows = {}
    local = res.local_field_ppm
    solvers = {
        "rts (default)": (rts, {}),
        "rts rho=1": (rts, {"rho": 1.0}),
        "tikhonov": (tikhonov, {}),
        "tv": (tv_admm, {}),
        "tkd": (tkd, {}),
    }
    for name, (fn, kw) in solvers.items():
        t = time.perf_counter()
        chi = fn(local, mask, sub.voxel_size, sub.b0_dir, threads=args.threads, **kw)
        dt = time.perf_counter() - t
        chi, _ = reference_chi(chi, mask, "brain")
        rows[name] = {"inversion s": dt, **accuracy(chi, sub, mask)}
    # The pipeline's own Chimap equals the RTS row (same local field, mask and reference).
    assert np.allclose(
        rows["rts (default)"]["NRMSE %"], accuracy(res.chi_ppm, sub, mask)["NRMSE %"]
    )

    cols = list(next(iter(rows.values())))
    print("\nAccuracy against ground truth (V-SHARP local field, final mask, truth referenced "
          "to the same mask mean)")  # fmt: skip
    print(f"{'inversion':<15}" + "".join(f"{c:>13}" for c in cols))
    for name, row in rows.items():
        print(f"{name:<15}" + "".join(f"{row[c]:>13.3f}" for c in cols))

    lb = accuracy(res_lbv.chi_ppm, sub, res_lbv.mask)
    t_lbv = t1_end - t1
    peak_lbv = sampler_lbv.peak(t1, t1_end)
    print("\nOption bg_removal='lbv' (LBV + RTS, whole pipeline; truth referenced to its mask)")
    print(f"  wall {t_lbv:.1f} s ({t_lbv / pair:.0f} FFT pairs), background "
          f"{res_lbv.timings_s['background']:.2f} s, peak RSS {peak_lbv / 1e9:.2f} GB; "
          + ", ".join(f"{k} {v:.3f}" for k, v in lb.items()))  # fmt: skip

    d = rows["rts (default)"]
    print("\nTargets (default pipeline):")
    print(f"  wall time {total:.1f} s (<= 30 s): {'met' if total <= 30 else 'MISSED'}")
    print(f"  FFT-pair equivalents {total / pair:.0f} (<= 150): "
          f"{'met' if total / pair <= 150 else 'MISSED'}")  # fmt: skip
    print(f"  peak RSS {peak_all / 1e9:.2f} GB (<= 4 GB): {'met' if peak_all <= 4e9 else 'MISSED'}")
    print(f"  DGM MAE {d['DGM MAE ppb']:.1f} ppb (<= 10): "
          f"{'met' if d['DGM MAE ppb'] <= 10 else 'MISSED'}")  # fmt: skip
    print(f"  DGM slope {d['DGM slope']:.3f} (0.85-1.15): "
          f"{'met' if 0.85 <= d['DGM slope'] <= 1.15 else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()

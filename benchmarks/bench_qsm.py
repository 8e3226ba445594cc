"""Benchmark of the QSM methods on the simulator's heads and on the qsm-forward ``simple`` phantom.

For every method (a full pipeline run, magnitude + phase -> referenced Chimap) and every seed it
prints: wall time, FFT-pair equivalents (wall time / one rfftn+irfftn pair on the acquisition
grid, timed just before and after the run), the same by CPU time (process CPU time over that of
one pair: less load-dependent), the transform pairs counted (every scipy.fft
transform of the run weighted by n log n relative to the acquisition grid), peak RSS increase,
and accuracy against the ground truth inside the method's Chimap mask: NRMSE, HFEN, XSIM (QSM
challenge 2.0 definitions, cross-checked against qsm-ci's scorer in tests/test_qsm_metrics.py;
``--qsm-ci`` also scores with qsm-ci itself), deep gray matter (thalamus, caudate, putamen,
pallidum, substantia nigra, red nucleus; left and right) slope of regional means and mean
absolute regional error (ppb), the rim (outer 5 mm) minus centre mean error (ppb), and the
qsm-forward ``simple`` phantom's slope of cylinder means against truth (3 T, TE 4/9/14/19 ms, peak
SNR 100, phase offset and shim field on; the seed is its random seed). Truth is referenced to
the mean over the same mask as the reconstruction.

Peak memory is the process resident set size sampled every 5 ms from /proc/self/statm by a
background thread, reported as the increase over the RSS before the reconstruction.

Usage: python benchmarks/bench_qsm.py [--preset full] [--seeds 0 1 2] [--methods ...]
       [--no-forward] [--threads 2]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import scipy.fft as sfft
from _cli import seeds_parser

from bids_qsm.qsm import metrics
from bids_qsm.qsm.pipeline import QSMOptions, reconstruct_qsm
from bids_qsm.qsm.reference import reference_chi

PAGE = os.sysconf("SC_PAGE_SIZE")

#: name -> QSMOptions fields. "default" is LBV + weighted-data-term TV (wtv, since issue 13;
#: 25 iterations);
#: "lbv+rts" the default before it; "previous" the release before issue 13 (V-SHARP, RTS with 4
#: LSMR iterations over the whole kernel, Gaussian-only MCPC-3D-S offset, no Chimap erosion).
METHODS: dict[str, dict] = {
    "default": {},
    "lbv+rts": {"inversion": "rts"},
    "vsharp+rts": {"bg_removal": "vsharp", "inversion": "rts"},
    "vsharp+wtv": {"bg_removal": "vsharp"},
    "pdf+rts": {"bg_removal": "pdf", "inversion": "rts"},
    "pdf+wtv": {"bg_removal": "pdf"},
    "lbv+tikhonov": {"inversion": "tikhonov"},
    "lbv+tv": {"inversion": "tv"},
    "lbv+tkd": {"inversion": "tkd"},
    "lbv+wtv-mag": {"wtv_weight": "magnitude"},
    "lbv+wtv10": {"wtv_max_iter": 10},
    "lbv+wtv14": {"wtv_max_iter": 14},
    "lbv+wtv20": {"wtv_max_iter": 20},
    "lbv+wtv40": {"wtv_max_iter": 40},
    "lbv+wtv-mu0.1": {"wtv_mu2": 0.1},
    "lbv+wtv-rts5": {"rts_max_iter": 5},
    "lbv+wtv-rts0": {"rts_max_iter": 0},
    "lbv+wtv-relax": {"wtv_relax": 1.7, "wtv_max_iter": 12},
    # the field preparation before issue 13's edge fixes (coarse-grid rounding at the mask
    # edge, no repair of failed echo fits, no magnitude criterion)
    "nofix": {"unwrap_edge_grow": False, "unwrap_repair": False, "mask_magnitude_min": 0.0},
    "previous": {
        "bg_removal": "vsharp",
        "inversion": "rts",
        "rts_lsmr_iter": 4,
        "mcpc_poly_degree": 0,
        "chimap_erosion_mm": 0.0,
    },
}


class RssSampler:
    """Samples the resident set size (bytes) of this process in a background thread."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def cpu_s() -> float:
    """CPU time (s, user + system, all threads) of this process so far."""
    t = os.times()
    return t.user + t.system


def fft_pair_time(shape: tuple[int, ...], threads: int, repeats: int = 3) -> float:
    """Median wall time (s) of one rfftn + irfftn pair of float32 on ``shape``."""
    return fft_pair_times(shape, threads, repeats)[0]


def fft_pair_times(shape: tuple[int, ...], threads: int, repeats: int = 3) -> tuple[float, float]:
    """Median wall and CPU time (s) of one rfftn + irfftn pair of float32 on ``shape``."""
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    walls, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), cpu_s()
        sfft.irfftn(sfft.rfftn(x, workers=threads), s=shape, workers=threads)
        walls.append(time.perf_counter() - t)
        cpus.append(cpu_s() - c)
    return float(np.median(walls)), float(np.median(cpus))


class FftCounter:
    """Counts the transforms of ``scipy.fft`` (patched module attributes) during a run.

    Every call is weighted by its size relative to one transform on the acquisition grid,
    ``n log n / (n0 log n0)`` (real transforms of either direction and DST/DCT alike), and the
    sum is halved: transform-pair equivalents counted, independent of the machine's load.
    """

    NAMES = ("rfftn", "irfftn", "fftn", "ifftn", "dstn", "idstn", "dctn", "idctn")

    def __init__(self, shape: tuple[int, ...]) -> None:
        n0 = float(np.prod(shape))
        self.unit = n0 * np.log(n0)
        self.pairs = 0.0
        self.calls = 0
        self._saved: dict[str, object] = {}

    def _wrap(self, fn):
        def counted(x, *a, **kw):
            n = float(np.prod(np.shape(x)))
            if fn.__name__ == "irfftn" and kw.get("s") is not None:
                n = float(np.prod(kw["s"]))
            self.pairs += 0.5 * n * np.log(max(n, 2.0)) / self.unit
            self.calls += 1
            return fn(x, *a, **kw)

        return counted

    def __enter__(self) -> FftCounter:
        for name in self.NAMES:
            self._saved[name] = getattr(sfft, name)
            setattr(sfft, name, self._wrap(self._saved[name]))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, fn in self._saved.items():
            setattr(sfft, name, fn)


def accuracy(chi: np.ndarray, sub, mask: np.ndarray) -> dict[str, float]:
    """Challenge metrics, DGM agreement and rim bias of a referenced map against the truth."""
    chi, _ = reference_chi(chi, mask, "brain")
    truth = np.where(mask, sub.chi_ppm - sub.chi_ppm[mask].mean(), 0).astype(np.float32)
    ag = metrics.regional_agreement(
        chi, truth, sub.labels, mask, metrics.deep_gray_matter_regions()
    )
    return {
        "NRMSE%": metrics.nrmse(chi, truth, mask),
        "HFEN%": metrics.hfen(chi, truth, mask),
        "XSIM": metrics.xsim(chi, truth, mask),
        "DGMslope": ag["slope"],
        "DGMerr": ag["mae_ppb"],
        "rim-ctr": metrics.rim_centre_bias(chi, truth, mask, sub.voxel_size),
    }


def qsm_ci_scores(chi: np.ndarray, sub, mask: np.ndarray, tmp: Path) -> dict[str, float]:
    """NRMSE / HFEN / XSIM from qsm-ci's own scorer (``python -m qsm_ci.qsm_eval``)."""
    import nibabel as nib

    truth = np.where(mask, sub.chi_ppm - sub.chi_ppm[mask].mean(), 0).astype(np.float32)
    files = {}
    for name, arr in (("recon", chi), ("truth", truth), ("mask", mask.astype(np.uint8))):
        files[name] = tmp / f"{name}.nii"
        nib.save(nib.Nifti1Image(arr, sub.affine), files[name])
    out = subprocess.run(
        [sys.executable, "-m", "qsm_ci.qsm_eval", "--recon", str(files["recon"]), "--truth",
         str(files["truth"]), "--mask", str(files["mask"])],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return {"qsm-ci": out.strip().replace("\n", "; ")[:200]}


def forward_phantom(seed: int, folder: Path) -> dict:
    """qsm-forward ``simple`` phantom (3 T, TE 4/9/14/19 ms, SNR 100) as arrays."""
    import nibabel as nib

    bids = folder / f"simple_seed{seed}"
    if not bids.exists():
        subprocess.run(
            [sys.executable, "-m", "qsm_forward.main", "simple", str(bids), "--TEs", "0.004",
             "0.009", "0.014", "0.019", "--B0", "3", "--peak-snr", "100", "--random-seed",
             str(seed)],
            check=True, capture_output=True,
        )  # fmt: skip
    anat = bids / "sub-1" / "anat"
    deriv = bids / "derivatives" / "qsm-forward" / "sub-1" / "anat"
    mag = [nib.load(anat / f"sub-1_echo-{e}_part-mag_MEGRE.nii") for e in range(1, 5)]
    phs = [nib.load(anat / f"sub-1_echo-{e}_part-phase_MEGRE.nii") for e in range(1, 5)]
    te = [json.loads((anat / f"sub-1_echo-{e}_part-phase_MEGRE.json").read_text())["EchoTime"]
          for e in range(1, 5)]  # fmt: skip
    return {
        "mag": np.stack([m.get_fdata(dtype=np.float32) for m in mag], -1),
        "phase": np.stack([p.get_fdata(dtype=np.float32) for p in phs], -1),
        "te": te,
        "affine": phs[0].affine,
        "chi": nib.load(deriv / "sub-1_Chimap.nii").get_fdata(dtype=np.float32),
    }


def sphere_slope(ph: dict, options: QSMOptions, threads: int) -> float:
    """Slope of the phantom's cylinder means (eroded 1 mm) against their true values."""
    from bids_qsm.qsm.geometry import b0_direction_from_affine, voxel_sizes
    from bids_qsm.qsm.mask import erode_mask

    vs = voxel_sizes(ph["affine"])
    b0 = b0_direction_from_affine(ph["affine"])
    res = reconstruct_qsm(ph["mag"], ph["phase"], ph["te"], 3.0, vs, b0, options, threads=threads)
    true_vals, means = [], []
    for v in sorted(set(np.round(ph["chi"][ph["chi"] != 0], 4).tolist())):
        sel = erode_mask(np.isclose(ph["chi"], v, atol=1e-4), vs, 1.0) & res.mask
        if sel.sum() >= 10:
            true_vals.append(v)
            means.append(float(res.chi_ppm[sel].mean()))
    return float(np.polyfit(true_vals, means, 1)[0])


def main() -> None:
    ap = seeds_parser(__doc__)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--no-forward", action="store_true", help="skip the qsm-forward phantom")
    ap.add_argument("--qsm-ci", action="store_true", help="also print qsm-ci's own scores")
    args = ap.parse_args()

    from bids_qsm.simulate import simulate_subject

    tmp = Path(tempfile.mkdtemp(prefix="bench_qsm_"))
    print(f"load average at start: {os.getloadavg()}")
    rows = []
    for seed in args.seeds:
        sub = simulate_subject(args.preset, seed=seed, workers=args.threads)
        pair = fft_pair_time(sub.mag.shape[:3], args.threads)
        ph = None if args.no_forward else forward_phantom(seed, tmp)
        for name in args.methods:
            opt = QSMOptions(**METHODS[name])
            base = RssSampler.rss()
            before = fft_pair_times(sub.mag.shape[:3], args.threads)
            with RssSampler() as sampler, FftCounter(sub.mag.shape[:3]) as counter:
                t0, c0 = time.perf_counter(), cpu_s()
                res = reconstruct_qsm(
                    sub.mag, sub.phase, sub.te_s, sub.b0_tesla, sub.voxel_size, sub.b0_dir,
                    opt, threads=args.threads,
                )  # fmt: skip
                wall, cpu = time.perf_counter() - t0, cpu_s() - c0
            # The pair time around the run (mean of before and after): under a varying load
            # one measurement per seed gave pair equivalents off by 30 % and more. CPU time
            # (all threads, includes the RSS sampler's small share) is less load-dependent.
            after = fft_pair_times(sub.mag.shape[:3], args.threads)
            pair, pair_cpu = 0.5 * (before[0] + after[0]), 0.5 * (before[1] + after[1])
            row = {"method": name, "seed": seed, "wall s": wall, "FFTpairs": wall / pair,
                   "CPU s": cpu, "CPU pairs": cpu / pair_cpu, "counted pairs": counter.pairs,
                   "RSS+GB": (sampler.peak - base) / 1e9}  # fmt: skip
            row.update(accuracy(res.chi_ppm, sub, res.mask))
            row["fwd slope"] = np.nan if ph is None else sphere_slope(ph, opt, args.threads)
            row["load1"] = os.getloadavg()[0]
            rows.append(row)
            print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in row.items()), flush=True)  # fmt: skip
            if args.qsm_ci:
                print("   ", qsm_ci_scores(res.chi_ppm, sub, res.mask, tmp))
        print(f"seed {seed}: one FFT pair on {sub.mag.shape[:3]} took {pair:.3f} s", flush=True)

    print(f"\nPreset {args.preset!r}, {args.threads} threads; targets (default): DGM slope "
          "0.95-1.05, DGM error <= 5 ppb, |rim-ctr| <= 5 ppb, NRMSE <= 55 %, fwd slope "
          "0.95-1.05, <= 20 s, <= 150 FFT pairs, <= 3 GB")  # fmt: skip
    print_tables(rows, "method", "seed", "Mean over seeds", np.mean)
    print(f"load average at end: {os.getloadavg()}")


def print_tables(rows: list[dict], group: str, item: str, title: str, summary) -> None:
    """Markdown tables of benchmark rows: one line per row (``group``, ``item`` first), then
    ``summary`` (e.g. ``np.mean``, ``min``) of every column per group, under ``title``."""
    cols = [c for c in rows[0] if c not in (group, item)]
    print(f"| {group} | {item} | {' | '.join(cols)} |")
    print("|---|---:|" + "---:|" * len(cols))
    for r in rows:
        print(f"| {r[group]} | {r[item]} | " + " | ".join(f"{r[c]:.2f}" for c in cols) + " |")
    print(f"\n{title}")
    print(f"| {group} | {' | '.join(cols)} |")
    print("|---|" + "---:|" * len(cols))
    for name in dict.fromkeys(r[group] for r in rows):
        sel = [r for r in rows if r[group] == name]
        values = [f"{summary([r[c] for r in sel]):.2f}" for c in cols]
        print(f"| {name} | " + " | ".join(values) + " |")


if __name__ == "__main__":
    main()

"""Validity (and speed) of the SWI phase-iron measures against the simulator's true susceptibility.

Usage::

    .venv/bin/python benchmarks/bench_swi.py [--preset small] [--n-controls 20] [--n-patients 10]
        [--iron-sd literature] [--cache DIR] [--json out.json]
    .venv/bin/python benchmarks/bench_swi.py --timing [--preset full]   # stage timings only

Validity mode simulates a cohort (controls with planted between-subject regional iron
variation, ``--iron-sd``; MS patients with the seed-study basal ganglia effect at EDSS 3;
random head rotation SD 3 deg) and computes the SWI measures directly with the core functions
(no Nipype, no registration: the true labels): the field by Laplacian unwrapping of the echo
differences, V-SHARP (12 mm) as in the QSM core, :func:`bids_qsm.swi.compute_swi` with its
defaults, the self-positive ROIs and control-derived thresholds. The peer baseline is the
``phase-unwrap`` package (PyPI, Dewey 2022: Laplacian unwrapping + Gaussian k-space high-pass
per slice) on the echo closest to 20 ms, over the plain labels, with the same thresholds rule.
It prints, per structure, the correlation across the controls of the regional phase-iron mean
and of MP-APT with the true regional chi (bilateral), the minimum over subjects of the mean
phase-iron (sign), the controls' whole-brain abnormal-phase volume and the MS - HC difference
of basal-ganglia MP-APT (first ``n_patients`` controls vs the patients).

Noise-free check ("oracle"): the simulation's true local field (the field of the sources inside
the brain) through the same Gaussian high-pass, phase-quality mask and ROI
(:func:`bids_qsm.swi.validation.oracle_phase_iron`). Its sign is the physical sign of a
structure's filtered phase, i.e. of its susceptibility contrast to its surroundings: where it is
negative (e.g. a pulvinar less paramagnetic than the thalamus around it) no filtered phase can
honestly be positive. The table gives its minimum over subjects, how often it is negative and
how often our mean has its sign.

``--cache DIR`` keeps each simulated subject (``.npz``) and its measures (``.pkl``, keyed by the
options and the source of ``bids_qsm.swi``), so a rerun with other table options is fast.

Needs the peer package: ``pip install phase-unwrap==2.0.0`` (GPL-3.0; benchmark only, not a
dependency of bids-qsm).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

KEY = ("globus_pallidus", "putamen", "caudate", "substantia_nigra", "red_nucleus", "pulvinar")
OTHER = ("thalamus", "nucleus_accumbens", "hippocampus", "amygdala")
BG = ("caudate", "putamen", "globus_pallidus")


def _simulate(
    preset: str, i: int, group: str, sd: Any, seed: int, cache: Path | None, tag: str = ""
) -> dict:
    """One simulated subject as a dict of arrays (cached as .npz when ``cache`` is given)."""
    from bids_qsm.simulate import simulate_subject
    from bids_qsm.simulate.acquisition import HeadPose

    name = f"{preset}_{group}_{seed}_{i:02d}{tag}.npz"
    path = None if cache is None else cache / name
    if path is not None and path.is_file():
        return dict(np.load(path, allow_pickle=True))
    rng = np.random.default_rng([seed, i, 1 if group == "MS" else 0])
    pose = HeadPose(tuple(float(v) for v in np.clip(rng.normal(0, 3.0, 3), -8, 8)))
    sim = simulate_subject(
        preset,
        seed=int(rng.integers(2**31)),
        group=group,
        edss=3.0 if group == "MS" else 0.0,
        between_subject_sd_ppm=sd,
        pose=pose,
        workers=1,
    )
    rt = sim.regional_truth
    rt = rt[rt.hemisphere == "bilateral"]
    d = {
        "mag": sim.mag,
        "phase": sim.phase,
        "te": np.asarray(sim.te_s),
        "vs": sim.voxel_size,
        "mask": sim.brain_mask,
        "labels": sim.labels,
        "b0dir": sim.b0_dir,
        "b0": np.float64(sim.b0_tesla),
        "truth_names": np.asarray(rt.structure, dtype=str),
        "truth_chi": np.asarray(rt.chi_mean_ppm, float),
        # true field of the sources inside the brain (ppm): the noise-free "oracle" phase
        "local_true_ppm": sim.local_field_ppm.astype(np.float32),
    }
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **d)
    return d


def swi_code_digest(key: str) -> str:
    """12 hex digits of SHA-1 over ``key`` and the source of ``bids_qsm.swi``: a cache name
    that changes with the options and with the code."""
    import hashlib

    import bids_qsm.swi as swi_pkg

    src = b"".join(p.read_bytes() for p in sorted(Path(swi_pkg.__file__).parent.glob("*.py")))
    return hashlib.sha1(key.encode() + src).hexdigest()[:12]


def pickle_cached(path: Path | None, compute: Callable[[], dict]) -> dict:
    """``compute()``, read from / written to the pickle ``path`` when one is given."""
    import pickle

    if path is not None and path.is_file():
        with open(path, "rb") as fh:
            return pickle.load(fh)
    out = compute()
    if path is not None:
        with open(path, "wb") as fh:
            pickle.dump(out, fh)
    return out


def _measured(
    preset: str, i: int, group: str, sd: Any, seed: int, cache: Path | None, tag: str,
    options: Any, dominance: float | None, mpapt_roi: bool,
) -> dict:  # fmt: skip
    """:func:`subject_measures` of one simulated subject, cached beside the simulation (pickle
    keyed by the options and the code version of bids_qsm.swi) when ``cache`` is given."""
    key = json.dumps([options.to_dict(), dominance, mpapt_roi], sort_keys=True, default=str)
    digest = swi_code_digest(key)
    path = None if cache is None else cache / f"{preset}_{group}_{seed}_{i:02d}{tag}_m-{digest}.pkl"

    def compute() -> dict:
        sim = _simulate(preset, i, group, sd, seed, cache, tag)
        return subject_measures(sim, options, dominance, mpapt_roi)

    return pickle_cached(path, compute)


def _peer_phase_iron(phase: np.ndarray, te_echo: float, ref_te: float) -> np.ndarray:
    """``phase-unwrap`` filtered phase of one echo -> phase iron (rad at ref TE, iron > 0)."""
    import nibabel as nib
    from phase_unwrap.cli import unwrap_phase

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints progress
        out = unwrap_phase(nib.Nifti1Image(phase.astype(np.float32), np.eye(4))).get_fdata()
    # phase-unwrap negates its output (paramagnetic negative, SWI sign): flip back.
    return (-out * (ref_te / te_echo)).astype(np.float32)


def subject_measures(
    d: dict, options: Any = None, dominance: float | None = 2.0, mpapt_roi: bool = False
) -> dict:
    """Voxel values per bilateral structure: ours (mean over the self-positive ROI, MP-APT
    over the whole structure, or over the ROI with ``mpapt_roi``) and the peer (labels)."""
    from bids_qsm.atlas.structures import aal3_structures
    from bids_qsm.swi.phase_iron import participant_threshold
    from bids_qsm.swi.validation import oracle_phase_iron, phase_iron_scan, structure_values

    structs = aal3_structures()
    mask = d["mask"]
    scan = phase_iron_scan(
        d["mag"], d["phase"], d["te"], d["vs"], mask, d["labels"], d["b0dir"], float(d["b0"]),
        structs, options, dominance,
    )  # fmt: skip
    res = scan.result
    ref_te = float(res.parameters["ReferenceEchoTime_s"])
    e = int(np.argmin(np.abs(d["te"] - ref_te)))
    peer = _peer_phase_iron(d["phase"][..., e], float(d["te"][e]), ref_te)
    ours_mean = structure_values(res.phase_iron_rad, scan.roi_labels, mask, structs)
    ours = (
        ours_mean if mpapt_roi else structure_values(res.phase_iron_rad, d["labels"], mask, structs)
    )
    theirs = structure_values(peer, d["labels"], mask, structs)
    oracle = oracle_all = None
    if "local_true_ppm" in d:  # noise-free: the true local field through the same filter
        orc = oracle_phase_iron(scan, d["local_true_ppm"], d["vs"], float(d["b0"]), options)
        oracle = structure_values(orc, scan.roi_labels, mask, structs)
        oracle_all = structure_values(orc, d["labels"], mask, structs)  # for MP-APT
    for who in (ours, theirs, ours_mean):
        who["basal_ganglia"] = np.concatenate([who[n] for n in BG])
    wb = res.phase_iron_rad[mask]
    truth = dict(zip(d["truth_names"].tolist(), d["truth_chi"].tolist(), strict=True))
    return {
        "ours": ours,
        "ours_mean": ours_mean,
        "oracle_mean": oracle,
        "oracle": oracle_all,
        "peer": theirs,
        "peer_mean": theirs,
        "ours_wb": wb[np.isfinite(wb)],
        "peer_wb": peer[mask],
        "nbrain": int(mask.sum()),
        "ours_default_thr": float(res.parameters["AbnormalPhaseThreshold_rad"]),
        "peer_default_thr": participant_threshold(peer, mask),
        "truth": truth,
        "params": res.parameters,
    }


def _threshold(values: list[np.ndarray], n_sd: float) -> float:
    from bids_qsm.swi import phase_iron_threshold

    return phase_iron_threshold(values, n_sd)


def _mpapt(v: np.ndarray, thr: float) -> float:
    ab = v[v > thr]
    return float(ab.mean()) if ab.size else float("nan")


def _r(x: list[float], y: list[float]) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    return float(np.corrcoef(x[ok], y[ok])[0, 1]) if ok.sum() > 2 else float("nan")


def _bootstrap_r_diff(hc: list[dict], n_sd: float) -> dict[str, list[float]]:
    """Paired bootstrap over the controls of r(ours, chi) - r(peer, chi): 2.5/50/97.5 %."""
    rng = np.random.default_rng(0)
    boot = {}
    for name in KEY:  # paired bootstrap over subjects: r(ours) - r(peer)
        chi = np.array([s["truth"][name] for s in hc])
        per = {}
        for who in ("ours", "peer"):
            vals = [s[who][name] for s in hc]
            thr = _threshold(vals, n_sd)
            per[who, "mpapt"] = np.array([_mpapt(v, thr) for v in vals])
            per[who, "mean"] = np.array([float(s[f"{who}_mean"][name].mean()) for s in hc])
        for what in ("mean", "mpapt"):
            d = []
            for _ in range(2000):
                i = rng.integers(0, len(hc), len(hc))
                d.append(_r(chi[i], per["ours", what][i]) - _r(chi[i], per["peer", what][i]))
            boot[f"{name}|{what}"] = [float(np.nanpercentile(d, q)) for q in (2.5, 50, 97.5)]
    return boot


def validity(hc: list[dict], ms: list[dict], n_sd: float, wb_n_sd: float) -> dict[str, Any]:
    """Correlations, signs, whole-brain abnormal volume and MS - HC difference."""
    rows = []
    for name in (*KEY, *OTHER):
        chi = [s["truth"][name] for s in hc]
        row: dict[str, Any] = {"structure": name, "chi_mean_ppb": 1000 * float(np.mean(chi))}
        for who in ("ours", "peer"):
            vals = [s[who][name] for s in hc]
            thr = _threshold(vals, n_sd)
            means = [float(s[f"{who}_mean"][name].mean()) for s in hc]
            # sign: every subject, controls and patients
            row[f"{who}_min_mean_rad"] = min(float(s[f"{who}_mean"][name].mean()) for s in hc + ms)
            row[f"{who}_r_mean"] = _r(chi, means)
            row[f"{who}_r_mpapt"] = _r(chi, [_mpapt(v, thr) for v in vals])
            row[f"{who}_r_aptvol"] = _r(chi, [float((v > thr).sum()) for v in vals])
            row[f"{who}_r_mpapt_default"] = _r(
                chi, [_mpapt(s[who][name], s[f"{who}_default_thr"]) for s in hc]
            )
        if all(s["oracle_mean"] is not None for s in hc + ms):
            orc = [float(s["oracle_mean"][name].mean()) for s in hc + ms]
            ours = [float(s["ours_mean"][name].mean()) for s in hc + ms]
            row["oracle_min_mean_rad"] = min(orc)
            row["oracle_n_negative"] = int(sum(o < 0 for o in orc))
            row["sign_agree"] = int(sum((o > 0) == (v > 0) for o, v in zip(orc, ours, strict=True)))
            row["n_subjects"] = len(orc)
            row["oracle_r_mean"] = _r(chi, orc[: len(hc)])
        if all(s.get("oracle") is not None for s in hc):
            vals = [s["oracle"][name] for s in hc]
            thr = _threshold(vals, n_sd)
            row["oracle_r_mpapt"] = _r(chi, [_mpapt(v, thr) for v in vals])
        rows.append(row)
    sweep = {}
    for who in ("ours", "peer"):
        for k in (0.0, 0.5, 1.0, 2.0):
            for name in KEY:
                chi = [s["truth"][name] for s in hc]
                vals = [s[who][name] for s in hc]
                thr = _threshold(vals, k)
                sweep[f"{who}|{k:g}|{name}"] = _r(chi, [_mpapt(v, thr) for v in vals])
    wb = {}
    for who in ("ours", "peer"):
        thr = _threshold([s[f"{who}_wb"] for s in hc], wb_n_sd)
        fr = [float((s[f"{who}_wb"] > thr).sum() / s["nbrain"]) for s in hc]
        wb[who] = {"threshold_rad": thr, "max_fraction": max(fr), "mean_fraction": np.mean(fr)}
        fr = [float((s[f"{who}_wb"] > s[f"{who}_default_thr"]).sum() / s["nbrain"]) for s in hc]
        wb[who]["max_fraction_participant_default"] = max(fr)
    effect = {}
    if ms:
        ref = hc[: len(ms)]
        for who in ("ours", "peer"):
            diffs = {}
            for name in (*BG, "basal_ganglia"):
                thr = _threshold([s[who][name] for s in ref], n_sd)
                a = [_mpapt(s[who][name], thr) for s in ms]
                b = [_mpapt(s[who][name], thr) for s in ref]
                diffs[name] = float(np.nanmean(a) - np.nanmean(b))
                sd = np.sqrt((np.nanvar(a, ddof=1) + np.nanvar(b, ddof=1)) / 2)
                diffs[name + "_d"] = diffs[name] / sd if sd > 0 else float("nan")
            effect[who] = diffs
        # the true difference of this sample (planted effect + between-subject variation)
        effect["truth_ppb"] = {
            name: 1000
            * float(
                np.mean([s["truth"][name] for s in ms]) - np.mean([s["truth"][name] for s in ref])
            )
            for name in BG
        }
    boot = _bootstrap_r_diff(hc, n_sd)
    below = sum(s["truth"]["pulvinar"] < s["truth"]["thalamus"] for s in hc + ms)
    return {
        "rows": rows,
        "bootstrap_r_diff": boot,
        "pulvinar_below_thalamus": int(below),
        "whole_brain": wb,
        "ms_minus_hc_mpapt": effect,
        "n_sd_sweep": sweep,
    }


def print_validity(out: dict[str, Any], header: str) -> None:
    """Markdown tables of :func:`validity`."""
    print(header)
    print(
        "| structure | true chi ppb | ours min mean rad (all subjects) | ours r(mean) "
        "| ours r(MP-APT) "
        "| ours r(APT vol) | ours r(MP-APT, participant default) "
        "| peer min mean rad | peer r(mean) | peer r(MP-APT) |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for r in out["rows"]:
        print(
            f"| {r['structure']} | {r['chi_mean_ppb']:.0f} | {r['ours_min_mean_rad']:+.3f} "
            f"| {r['ours_r_mean']:.2f} | {r['ours_r_mpapt']:.2f} | {r['ours_r_aptvol']:.2f} "
            f"| {r['ours_r_mpapt_default']:.2f} | {r['peer_min_mean_rad']:+.3f} "
            f"| {r['peer_r_mean']:.2f} | {r['peer_r_mpapt']:.2f} |"
        )
    if "oracle_min_mean_rad" in out["rows"][0]:
        print(
            "\nNoise-free check (the true local field of the simulation through the same "
            "high-pass, same ROI): the physical sign of each structure's filtered phase.\n\n"
            "| structure | oracle min mean rad | subjects with oracle < 0 "
            "| ours sign = oracle sign "
            "| oracle r(mean) | oracle r(MP-APT) |\n|---|---:|---:|---:|---:|---:|"
        )
        for r in out["rows"]:
            print(
                f"| {r['structure']} | {r['oracle_min_mean_rad']:+.4f} "
                f"| {r['oracle_n_negative']}/{r['n_subjects']} "
                f"| {r['sign_agree']}/{r['n_subjects']} | {r['oracle_r_mean']:.2f} "
                f"| {r.get('oracle_r_mpapt', float('nan')):.2f} |"
            )
        print(
            f"\nSubjects whose true pulvinar chi is below their true thalamus chi: "
            f"{out['pulvinar_below_thalamus']}/{out['rows'][0]['n_subjects']}"
        )
    print(
        "\nOurs - peer correlation with true chi, paired bootstrap over the controls (2000 "
        "resamples): median [95 % interval]\n\n| structure | r(mean) ours - peer "
        "| r(MP-APT) ours - peer |\n|---|---:|---:|"
    )
    for name in KEY:
        a, b = out["bootstrap_r_diff"][f"{name}|mean"], out["bootstrap_r_diff"][f"{name}|mpapt"]
        print(
            f"| {name} | {a[1]:+.2f} [{a[0]:+.2f}, {a[2]:+.2f}] "
            f"| {b[1]:+.2f} [{b[0]:+.2f}, {b[2]:+.2f}] |"
        )
    print("\n| r(MP-APT, true chi) at threshold control mean + n SD | " + " | ".join(KEY) + " |")
    print("|---|" + "---:|" * len(KEY))
    for who in ("ours", "peer"):
        for k in (0.0, 0.5, 1.0, 2.0):
            vals = [out["n_sd_sweep"][f"{who}|{k:g}|{name}"] for name in KEY]
            print(f"| {who}, n = {k:g} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    print("\n| controls' whole-brain abnormal-phase volume | ours | peer |\n|---|---:|---:|")
    wb = out["whole_brain"]
    print(
        f"| control-derived threshold (rad) | {wb['ours']['threshold_rad']:.3f} "
        f"| {wb['peer']['threshold_rad']:.3f} |\n"
        f"| max over controls, % of brain | {100 * wb['ours']['max_fraction']:.1f} "
        f"| {100 * wb['peer']['max_fraction']:.1f} |\n"
        f"| max over controls at the participant default, % | "
        f"{100 * wb['ours']['max_fraction_participant_default']:.1f} "
        f"| {100 * wb['peer']['max_fraction_participant_default']:.1f} |"
    )
    if out["ms_minus_hc_mpapt"]:
        print(
            "\n| MS - HC MP-APT (rad; Cohen d) | ours | peer | true chi difference (ppb) |"
            "\n|---|---:|---:|---:|"
        )
        eff = out["ms_minus_hc_mpapt"]
        for name in (*BG, "basal_ganglia"):
            o, p = eff["ours"], eff["peer"]
            t = eff["truth_ppb"].get(name)
            print(
                f"| {name} | {o[name]:+.4f} ({o[name + '_d']:+.1f}) "
                f"| {p[name]:+.4f} ({p[name + '_d']:+.1f}) "
                f"| {'' if t is None else f'{t:+.1f}'} |"
            )


def _timing(preset: str, threads: int) -> list[tuple[str, float]]:
    """Wall time of the SWI stages on one simulated subject of ``preset``."""
    from bids_qsm.simulate import simulate_subject
    from bids_qsm.swi import SWIOptions, compute_swi, field_from_phase, self_positive_labels

    sim = simulate_subject(preset=preset)
    from bids_qsm.atlas.structures import aal3_structures

    rows = []

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        rows.append((name, time.perf_counter() - t0))
        return out

    f = timed(
        "fallback field (Laplacian, echo pairs)",
        lambda: field_from_phase(sim.mag, sim.phase, sim.te_s, sim.voxel_size, threads),
    )
    for name, opt in (
        ("compute_swi, Gaussian 2 mm (field given)", SWIOptions(n_threads=threads)),
        ("compute_swi, homodyne 64", SWIOptions(highpass="homodyne", n_threads=threads)),
    ):
        timed(
            name,
            lambda opt=opt: compute_swi(
                sim.mag, sim.phase, sim.te_s, sim.voxel_size, sim.brain_mask, f, opt
            ),
        )
    timed(
        "self-positive ROIs (20 AAL3 regions)",
        lambda: self_positive_labels(
            sim.labels, aal3_structures(), sim.voxel_size, sim.b0_dir, (2, 2, 0), sim.brain_mask
        ),
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--n-controls", type=int, default=20)
    ap.add_argument("--n-patients", type=int, default=10)
    ap.add_argument("--iron-sd", default="literature", help="as --iron-sd-ppb of the simulator")
    ap.add_argument("--iron-correlation", type=float, default=None, help="shared iron factor")
    ap.add_argument("--n-sd", type=float, default=None, help="structure threshold (default: SWI)")
    ap.add_argument("--sigma-mm", type=float, default=None, help="in-plane Gaussian sigma")
    ap.add_argument("--field-source", choices=("local", "total"), default=None)
    ap.add_argument("--highpass", choices=("gaussian", "homodyne"), default=None)
    ap.add_argument("--dominance", type=float, default=None, help="ROI criterion; <0: no ROI")
    ap.add_argument("--mpapt-roi", action="store_true", help="MP-APT over the ROI too")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=None, help="folder caching the simulated subjects")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timing", action="store_true", help="stage timings instead of validity")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    load = os.getloadavg()[0]
    if args.timing:
        rows = _timing(args.preset, args.threads)
        print(f"SWI timings: preset={args.preset} threads={args.threads} load={load:.1f}")
        print("| stage | time s |\n|---|---:|")
        for name, dt in rows:
            print(f"| {name} | {dt:.2f} |")
        return 0

    from bids_qsm.simulate import cohort
    from bids_qsm.simulate.cohort import parse_iron_sd
    from bids_qsm.swi import DEFAULT_DOMINANCE, SWIOptions
    from bids_qsm.swi.phase_iron import DEFAULT_N_SD, WHOLE_BRAIN_N_SD

    sd = parse_iron_sd(args.iron_sd)
    if args.iron_correlation is not None:  # read by structure_offsets_ppm at each draw
        cohort.SHARED_IRON_CORRELATION = args.iron_correlation
    tag = (
        ""
        if args.iron_sd == "literature"
        else "_sd-" + "".join(c if c.isalnum() else "-" for c in args.iron_sd)
    ) + (
        "" if args.iron_correlation is None else f"_rc-{args.iron_correlation:g}".replace(".", "p")
    )
    kw: dict[str, Any] = {}
    if args.sigma_mm is not None:
        kw["gaussian_sigma_mm"] = (args.sigma_mm, args.sigma_mm, 0.0)
    if args.field_source is not None:
        kw["field_source"] = args.field_source
    if args.highpass is not None:
        kw["highpass"] = args.highpass
    opt = SWIOptions(**kw)
    dom = DEFAULT_DOMINANCE if args.dominance is None else args.dominance
    dom = None if dom < 0 else dom
    cache = Path(args.cache) if args.cache else None
    t0 = time.perf_counter()

    def measured(i: int, group: str) -> dict:
        return _measured(args.preset, i, group, sd, args.seed, cache, tag, opt, dom, args.mpapt_roi)

    hc = [measured(i, "HC") for i in range(args.n_controls)]
    ms = [measured(i, "MS") for i in range(args.n_patients)]
    n_sd = DEFAULT_N_SD if args.n_sd is None else args.n_sd
    out = validity(hc, ms, n_sd, WHOLE_BRAIN_N_SD)
    print_validity(
        out,
        f"SWI phase-iron validity: preset={args.preset} controls={args.n_controls} "
        f"patients={args.n_patients} (EDSS 3) iron SD={args.iron_sd} shared iron correlation="
        f"{cohort.SHARED_IRON_CORRELATION:g} structure threshold = "
        f"control mean + {n_sd:g} SD (whole brain {WHOLE_BRAIN_N_SD:g} SD) seed={args.seed} "
        + (
            f"high-pass gaussian ({opt.field_source} field, "
            f"sigma {list(opt.gaussian_sigma_mm)} mm), "
            if opt.highpass == "gaussian"
            else f"high-pass homodyne (window {opt.homodyne_window}), "
        )
        + f"ROI dominance {dom} (MP-APT over {'ROI' if args.mpapt_roi else 'whole structure'}) "
        f"load={load:.1f} ({time.perf_counter() - t0:.0f} s)\n",
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

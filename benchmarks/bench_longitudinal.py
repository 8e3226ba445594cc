"""Benchmark: longitudinal iron on a simulated cohort, through the real participant level.

1. Simulates ``--n`` controls + ``--n`` MS patients with ``--sessions`` sessions each,
   ``--interval-years`` apart (``bids-qsm-simulate --sessions ... --atrophy``; patients get
   the default planted rates: caudate, putamen, pallidum +1.5 ppb/year, thalamus and
   pulvinar -1 ppb/year; controls no change), then runs
   ``bids-qsm BIDS OUT participant --nprocs N`` (subject space + one atlas registration per
   subject).
2. Mixed models (``bids_qsm.stats.longitudinal.mixed_models``, chi, R2*, phase-iron) on the
   written ``sub-<l>_desc-longitudinal_stats.tsv``: the MS-HC rate difference of the four
   planted structures must have the planted sign; no structure without a planted change may
   reach q < 0.05 (any measure, any hemisphere). Rate tests: t against Student's t on
   participant-level df (``bids_qsm.stats.longitudinal.rate_df``). For the null structures'
   chi the per-group rates are printed beside the same models fitted to the simulator's
   truth (``regional_truth.tsv``: true chi and labels of each session at the GRE
   resolution, so partial volume is included).
3. Test-retest: controls have no change planted, so their ses-1 vs ses-2 regional chi
   differences (subject space, same labels) measure the within-subject repeatability:
   mean absolute difference over thalamus, caudate, putamen, pallidum (target <= 3 ppb).
4. Cost of a session beyond the first, from the run's own timings
   (``stage_timings.json``: that session's nodes; ``longitudinal_timings.json``: everything
   of the longitudinal step except the one atlas registration, charged to the N-1 extra
   sessions). Target <= 60 s on 2 cores. ``--wallclock`` also times one subject with one
   and with two sessions end to end (two more runs) and prints the difference.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_longitudinal.py --keep /tmp/bench_long \
        [--n 8] [--sessions 3] [--interval-years 2] [--preset tiny] [--nprocs 2] [--wallclock]

``--labels true`` replaces the one ANTs atlas registration per subject by the simulator's
true labels of ses-1 carried into the subject space with the estimated rigid map (everything
else real: QSM, SWI, subject space, resampling, tables), outputs in ``out_truelabels``: it runs
the whole cohort in minutes, while the registration (about 4-10 min per tiny subject on a
loaded 2-core machine) makes the real run take about an hour.

Re-running with the same ``--keep`` reuses the simulated data and the participant outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

DGM = ("thalamus", "caudate", "putamen", "globus_pallidus")
PLANTED = {"caudate", "putamen", "globus_pallidus", "thalamus", "pulvinar", "basal_ganglia"}
BIN = Path(sys.executable).parent


def _run(cmd: list[str]) -> float:
    t0 = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.monotonic() - t0


def _simulate(bids: Path, args: argparse.Namespace, n_hc: int, n_ms: int, sessions: int,
              extra: list[str]) -> None:  # fmt: skip
    if (bids / "participants.tsv").is_file():
        return
    _run([str(BIN / "bids-qsm-simulate"), str(bids), "--preset", args.preset,
          "--n-controls", str(n_hc), "--n-patients", str(n_ms), "--sessions", str(sessions),
          "--interval-years", str(args.interval_years), "--atrophy", "--seed", str(args.seed),
          "-q", *extra])  # fmt: skip


def _participant(bids: Path, out: Path, work: Path, nprocs: int) -> float:
    return _run([str(BIN / "bids-qsm"), str(bids), str(out), "participant", "-w", str(work),
                 "--nprocs", str(nprocs)])  # fmt: skip


def _participant_true_labels(bids: Path, out: Path, work: Path, nprocs: int) -> float:
    """The participant level in this process with the one atlas registration per subject
    replaced by the simulator's true labels of ses-1 carried into the subject space with the
    estimated rigid map (everything else real). Pool workers are forked: they inherit this."""
    import nibabel as nib
    from scipy import ndimage

    import bids_qsm.atlas.registration as R
    import bids_qsm.atlas.subject_space as SS
    from bids_qsm.cli.run import execute

    original = SS.build_subject_space
    captured: dict[str, object] = {}

    def capture(*a, **k):
        captured["space"] = space = original(*a, **k)
        return space

    def true_labels(gre_mag, gre_mask, atlas, out_dir, prefix, **kwargs):
        sub = prefix.split("_")[0]
        img = nib.load(str(bids / "derivatives/simulation" / sub / "ses-1/anat"
                           / f"{sub}_ses-1_seg-AAL3_dseg.nii.gz"))  # fmt: skip
        vox = np.linalg.inv(img.affine) @ captured["space"].to_session[0] @ gre_mag.affine
        lab = ndimage.affine_transform(np.asarray(img.dataobj), vox[:3, :3], vox[:3, 3],
                                       gre_mag.shape[:3], order=0).astype(np.int32)  # fmt: skip
        return R.AtlasRegistration(lab, {}, 1.0, {}, {"Software": "bench: true labels"},
                                   warped_template=gre_mag)  # fmt: skip

    SS.build_subject_space, R.register_atlas = capture, true_labels
    t0 = time.monotonic()
    try:
        code = execute([str(bids), str(out), "participant", "-w", str(work),
                        "--nprocs", str(nprocs)])  # fmt: skip
    finally:
        SS.build_subject_space, R.register_atlas = original, R.register_atlas
    if code != 0:
        raise RuntimeError(f"participant level failed (exit {code})")
    return time.monotonic() - t0


def _tables(out: Path, bids: Path) -> pd.DataFrame:
    paths = sorted(out.glob("sub-*/anat/*_desc-longitudinal_stats.tsv"))
    frames = [pd.read_csv(p, sep="\t") for p in paths]
    long = pd.concat(frames, ignore_index=True)
    parts = pd.read_csv(bids / "participants.tsv", sep="\t")
    return long.merge(parts[["participant_id", "group"]], on="participant_id")


def _cost(out: Path) -> pd.DataFrame:
    rows = []
    for sub in sorted(out.glob("sub-*/log/*")):
        st, lt = sub / "stage_timings.json", sub / "longitudinal_timings.json"
        if not (st.is_file() and lt.is_file()):
            continue
        stages = json.loads(st.read_text())
        lon = json.loads(lt.read_text())
        per_ses: dict[str, float] = {}
        for name, v in stages.items():
            ses = name.split(".")[1]
            per_ses[ses] = per_ses.get(ses, 0.0) + float(v["elapsed_s"])
        first = sorted(per_ses)[0]
        later = [s for s in sorted(per_ses) if s != first]
        overhead = float(lon["total"]) - float(lon["atlas_registration"])
        for s in later:
            rows.append({
                "subject": sub.parts[-3], "session_wf": s, "nodes_s": per_ses[s],
                "longitudinal_share_s": overhead / len(later),
                "atlas_registration_once_s": float(lon["atlas_registration"]),
            })  # fmt: skip
    df = pd.DataFrame(rows)
    df["extra_cost_s"] = df["nodes_s"] + df["longitudinal_share_s"]
    return df


def _null_diagnostics(res: pd.DataFrame, null: pd.DataFrame, bids: Path, interval: float) -> None:
    """The chi rate differences of the null structures next to the simulator's truth: the
    same mixed models on ``regional_truth.tsv`` (true chi of each session on its GRE grid,
    true labels: partial volume at the GRE resolution included), and each group's rate."""
    from bids_qsm.stats.longitudinal import mixed_models

    truth = pd.read_csv(bids / "derivatives/simulation/regional_truth.tsv", sep="\t")
    parts = pd.read_csv(bids / "participants.tsv", sep="\t")[["participant_id", "group"]]
    truth = truth.merge(parts, on="participant_id")
    truth["years_from_baseline"] = (truth.session_id.str[4:].astype(int) - 1) * interval
    tres = mixed_models(truth, measures=["chi_mean_ppm"])
    tdiff = tres[tres.term == "rate_difference:MS-HC"].set_index(["structure", "hemisphere"])
    chi = null[(null.measure == "chi_mean_ppm") & (null.hemisphere == "bilateral")]
    rates = res[res.measure == "chi_mean_ppm"].set_index(["structure", "hemisphere", "term"])
    from scipy import stats

    from bids_qsm.stats.group import _bh

    normal = res.assign(p=2 * stats.norm.sf(res.t.abs()))  # statsmodels' MixedLM reference
    for _, idx in normal.groupby("term").groups.items():
        normal.loc[idx, "q"] = _bh(normal.loc[idx, "p"])
    nn = normal.loc[null.index]
    first = nn.sort_values("q").iloc[0]
    print(f"with the normal reference instead of t on df: {int((nn.q < 0.05).sum())} of "
          f"{len(nn)} null rate differences at q < 0.05 (min q {first.q:.3g}: "
          f"{first.structure} {first.hemisphere} {first.measure})")  # fmt: skip
    print("\n== null structures, chi, bilateral (ppb/year): measured vs the simulator's truth")
    print(f"{'structure':18s} {'HC':>7s} {'MS':>7s} {'MS-HC':>7s} {'t':>6s} {'df':>4s} "
          f"{'p':>8s} {'q':>8s} {'truth MS-HC':>12s}")  # fmt: skip
    for r in chi.itertuples():
        k = (r.structure, r.hemisphere)
        print(f"{r.structure:18s} {1000 * rates.loc[(*k, 'rate:HC'), 'estimate']:7.2f} "
              f"{1000 * rates.loc[(*k, 'rate:MS'), 'estimate']:7.2f} {1000 * r.estimate:7.2f} "
              f"{r.t:6.2f} {r.df:4.0f} {r.p:8.3g} {r.q:8.3g} "
              f"{1000 * tdiff.loc[k, 'estimate']:12.2f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--keep", type=Path, required=True)
    ap.add_argument("--n", type=int, default=8, help="controls and patients (each)")
    ap.add_argument("--sessions", type=int, default=3)
    ap.add_argument("--interval-years", type=float, default=2.0)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--nprocs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--wallclock", action="store_true", help="also time 1 vs 2 sessions")
    ap.add_argument(
        "--labels",
        choices=("registered", "true"),
        default="registered",
        help="registered: the real atlas registration (once per subject); true: the "
        "simulator's true labels instead (fast; everything else real), outputs in out_truelabels",
    )
    args = ap.parse_args()
    from bids_qsm.stats.longitudinal import mixed_models

    root = args.keep
    bids = root / "bids"
    out = root / ("out" if args.labels == "registered" else "out_truelabels")
    print(f"load average at start: {os.getloadavg()}")
    _simulate(bids, args, args.n, args.n, args.sessions, [])
    if not list(out.glob("sub-*/anat/*_desc-longitudinal_stats.tsv")):
        if args.labels == "true":
            secs = _participant_true_labels(bids, out, root / "work_truelabels", args.nprocs)
        else:
            secs = _participant(bids, out, root / "work", args.nprocs)
        print(f"participant level: {secs:.0f} s wall for {2 * args.n} subjects x "
              f"{args.sessions} sessions ({args.preset}, --nprocs {args.nprocs}, "
              f"atlas labels: {args.labels}); "
              f"load average {os.getloadavg()}")  # fmt: skip
    data = _tables(out, bids)
    t0 = time.monotonic()
    res = mixed_models(data, measures=["chi_mean_ppm", "r2star_mean_hz", "phaseiron_mean_rad"])
    print(f"mixed models: {len(res)} rows in {time.monotonic() - t0:.1f} s\n")

    diff = res[res.term == "rate_difference:MS-HC"]
    chi = diff[diff.measure == "chi_mean_ppm"].set_index(["structure", "hemisphere"])
    rates = (
        res[res.measure == "chi_mean_ppm"]
        .set_index(["structure", "hemisphere", "term"])["estimate"]
        .unstack("term")
    )
    planted = {"thalamus": -1.0, "caudate": 1.5, "putamen": 1.5, "globus_pallidus": 1.5}
    print("== chi rate of change (ppb/year), bilateral; planted MS-HC difference in ()")
    print(f"{'structure':18s} {'HC':>7s} {'MS':>7s} {'MS-HC':>7s} {'95% CI':>17s} {'q':>8s}  sign")
    ok_sign = True
    for s, pl in planted.items():
        r = chi.loc[(s, "bilateral")]
        good = np.sign(r.estimate) == np.sign(pl)
        ok_sign &= bool(good)
        print(f"{s:18s} {1000 * rates.loc[(s, 'bilateral'), 'rate:HC']:7.2f} "
              f"{1000 * rates.loc[(s, 'bilateral'), 'rate:MS']:7.2f} {1000 * r.estimate:7.2f} "
              f"[{1000 * r.ci_low:6.2f},{1000 * r.ci_high:6.2f}] {r.q:8.3g}  "
              f"{'ok' if good else 'WRONG'} ({pl:+.1f})")  # fmt: skip
    null = diff[~diff.structure.isin(PLANTED) & (diff.structure != "whole_brain")]
    false_pos = null[null.q < 0.05]
    print(f"\nstructures without planted change: {null.structure.nunique()} x hemispheres x "
          f"measures = {len(null)} tests, {null.reason.eq('').sum()} tested, "
          f"{len(false_pos)} with q < 0.05 (min q {null.q.min():.3g})")  # fmt: skip
    if len(false_pos):
        print(false_pos[["structure", "hemisphere", "measure", "estimate", "q"]].to_string())
    _null_diagnostics(res, null, bids, args.interval_years)
    untested = diff[diff.reason.ne("")]
    print(f"untested rate differences (reason given): {len(untested)} "
          f"({', '.join(sorted(set(untested.reason)))})")  # fmt: skip

    hc = data[(data.group == "HC") & data.session_id.isin(["ses-1", "ses-2"])]
    p = hc.pivot_table(index=["participant_id", "structure", "hemisphere"], columns="session_id",
                       values="chi_mean_ppm")  # fmt: skip
    d = (p["ses-2"] - p["ses-1"]).abs() * 1000
    d = d[d.index.get_level_values("structure").isin(DGM)]
    bil = d[d.index.get_level_values("hemisphere") == "bilateral"]
    per_sub = bil.groupby(level="participant_id").mean()
    print(
        "\n== test-retest (controls, no change planted): |chi ses-2 - ses-1| (ppb) over "
        "thalamus, caudate, putamen, pallidum"
    )
    print(per_sub.round(2).to_string())
    lr = d[d.index.get_level_values("hemisphere") != "bilateral"]
    print(f"mean absolute difference, bilateral: {bil.mean():.2f} ppb (target <= 3); "
          f"per hemisphere (L, R): {lr.mean():.2f} ppb")  # fmt: skip
    print(bil.groupby(level="structure").mean().round(2).to_string())

    cost = _cost(out)
    print("\n== extra cost of a session beyond the first (s), from the run's timings")
    print(cost.groupby("session_wf")[["nodes_s", "longitudinal_share_s", "extra_cost_s"]]
          .describe().loc[:, (slice(None), ["mean", "max"])].round(1).to_string())  # fmt: skip
    print(
        f"max extra cost: {cost.extra_cost_s.max():.1f} s (target <= 60); the atlas "
        f"registration runs once per subject: mean {cost.atlas_registration_once_s.mean():.0f} s"
    )

    if args.wallclock:
        for n in (1, 2):
            b = root / f"wall{n}" / "bids"
            _simulate(b, args, 0, 1, n, ["--iron-rate-ppb-per-year", "0"])
        t1 = _participant(root / "wall1" / "bids", root / "wall1" / "out", root / "wall1" / "w", 2)
        t2 = _participant(root / "wall2" / "bids", root / "wall2" / "out", root / "wall2" / "w", 2)
        print(f"\n== wall clock, one patient: 1 session {t1:.0f} s, 2 sessions {t2:.0f} s, "
              f"difference {t2 - t1:.0f} s (load average {os.getloadavg()})")  # fmt: skip
    print(
        f"\nsign of planted rate differences: {'ok' if ok_sign else 'NOT MET'}; "
        f"false positives: {len(false_pos)}; load average at end: {os.getloadavg()}"
    )


if __name__ == "__main__":
    main()

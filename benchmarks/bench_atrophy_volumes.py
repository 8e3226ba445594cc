"""Benchmark: do the registered structure volumes follow the simulated atrophy?

The cohort of ``tests/test_atrophy_null.py`` (3 controls, 3 patients at EDSS 4, 5.5, 6.5 with
atrophy and no iron change, simulator seeds 100-105) is simulated, reconstructed and
registered (iron channel). Printed per subject, thalamus/caudate/putamen and hemisphere: the
simulated volume loss, the true volume (true labels on the GRE grid), the registered volume
(registered labels on the GRE grid: the regional table's ``volume_mm3``), the registered
volume with the labels sampled on a grid ``--supersample`` times finer through the same
transform (to separate the GRE grid's quantisation from the registration), the Dice and the
relative errors. Then the largest relative error and the mean error of controls and patients.

    .venv/bin/python benchmarks/bench_atrophy_volumes.py [--preset tiny] [--sloppy] [--threads 1]
        [--cache DIR] [--seed-base 100] [--pve [--pve-params JSON]]
        [--boundary [--boundary-params JSON]]

``--cache DIR`` keeps each subject's arrays (magnitude, chi, R2*, masks, true and registered
labels) and transforms, so a rerun only recomputes the volumes (``--seed-base`` other than 100
adds ``_s<seed>`` to the file names). ``--pve`` adds the experimental partial-volume volume
(:mod:`bids_qsm.stats.volumetry`) per hemisphere and bilateral, with the same summary;
``--boundary`` the experimental template-relative boundary-shift volume
(``benchmarks/boundary_shift.py``; ``--boundary-params`` overrides its ``BoundaryParams``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

COHORT = [("HC", 0.0)] * 3 + [("MS", 4.0), ("MS", 5.5), ("MS", 6.5)]
NAMES = ("thalamus", "caudate", "putamen")


def supersampled_labels(atlas, reg, mask, affine, voxel_mm: float, factor: int):
    """Registered labels on a grid ``factor`` times finer over the brain's bounding box."""
    import nibabel as nib
    import numpy as np
    from boundary_shift import fine_affine

    from bids_qsm.atlas.antsutil import bbox, box_shape, labels_at, template_coords
    from bids_qsm.atlas.registration import KEY_FROM_TEMPLATE
    from bids_qsm.atlas.transforms import nib_to_ants

    sub, saff = bbox(mask, affine, margin_mm=0.0)
    shape = tuple(n * factor for n in box_shape(sub))
    fine = fine_affine(saff, factor)
    ref = nib_to_ants(nib.Nifti1Image(np.zeros(shape, np.float32), fine))
    xfm = [str(reg.transforms[KEY_FROM_TEMPLATE])]
    coords, inside = template_coords(atlas, ref, fine, xfm)
    return labels_at(atlas.labels_img, coords, inside), voxel_mm**3 / factor**3


def registered_subject(preset: str, i: int, group: str, edss: float, args, cache: Path) -> dict:
    """Simulate, reconstruct and register cohort subject ``i``; the arrays the volume estimates
    need are kept in ``cache/<preset>_<sloppy>_<i>.npz`` (and the transforms beside it), so a
    rerun (e.g. of a new volume estimator) skips the simulation, QSM and registration."""
    import json

    import nibabel as nib
    import numpy as np

    seeds = "" if args.seed_base == 100 else f"_s{args.seed_base}"
    path = cache / f"{preset}_{'sloppy' if args.sloppy else 'default'}{seeds}_{i}.npz"
    if path.exists():
        with np.load(path) as z:
            out = {k: z[k] for k in z.files}
        out["loss"] = json.loads(str(out["loss"]))
        out["xfm"] = str(next(path.with_suffix("").glob("*_to-GRE_mode-image_xfm.h5")))
        return out
    from bids_qsm.atlas.registration import KEY_FROM_TEMPLATE, register_atlas
    from bids_qsm.atlas.registry import load_atlas
    from bids_qsm.atlas.stages import registration_params
    from bids_qsm.qsm.pipeline import reconstruct_qsm
    from bids_qsm.simulate import simulate_subject

    atlas = load_atlas()
    sim = simulate_subject(
        preset,
        args.seed_base + i,
        group=group,
        edss=edss,
        atrophy=True,
        null_effect=True,
        participant_label=f"{i + 1:02d}",
    )
    q = reconstruct_qsm(
        sim.mag, sim.phase, sim.te_s, sim.b0_tesla, sim.voxel_size, sim.b0_dir, threads=args.threads
    )
    reg = register_atlas(
        nib.Nifti1Image(sim.mag, sim.affine),
        nib.Nifti1Image(q.brain_mask.astype(np.uint8), sim.affine),
        atlas,
        path.with_suffix(""),
        "s",
        threads=args.threads,
        params=registration_params(args.sloppy),
        iron=nib.Nifti1Image(q.chi_ppm, sim.affine),
    )
    fine, fine_vox = supersampled_labels(
        atlas, reg, q.brain_mask, sim.affine, float(sim.voxel_size[0]), args.supersample
    )
    out = {
        "mag": sim.mag,
        "te_s": np.asarray(sim.te_s),
        "affine": sim.affine,
        "voxel_size": np.asarray(sim.voxel_size),
        "chi_ppm": q.chi_ppm,
        "qsm_mask": q.mask,
        "brain_mask": q.brain_mask,
        "r2star_hz": q.r2star_hz,
        "combined_mag": q.combined_mag,
        "true_labels": sim.labels,
        "true_chi_ppm": sim.chi_ppm,
        "reg_labels": reg.labels,
        "fine_labels": fine,
        "fine_voxel_mm3": np.float64(fine_vox),
        "loss": json.dumps(sim.structure_loss),
    }
    np.savez_compressed(path, **out)
    out["loss"] = dict(sim.structure_loss)
    out["xfm"] = str(reg.transforms[KEY_FROM_TEMPLATE])
    return out


def pve_volumes(d: dict, atlas, params) -> tuple[dict, float]:
    """Partial-volume volumes (mm3, per (structure, hemisphere), bilateral = L + R) of one
    cached subject and the CPU seconds they took."""
    import time

    from bids_qsm.stats.regional import structure_groups
    from bids_qsm.stats.volumetry import structure_volumes

    groups, _ = structure_groups(atlas.structures)
    t0 = time.process_time()
    vols = structure_volumes(
        d["chi_ppm"],
        d["r2star_hz"],
        d["combined_mag"],
        d["reg_labels"],
        d["brain_mask"],
        groups,
        d["voxel_size"],
        chi_mask=d["qsm_mask"],
        params=params,
    )
    return vols, time.process_time() - t0


def subject_rows(i: int, group: str, d: dict, atlas, params, bparams) -> list[dict]:
    """Per structure and hemisphere (L, R, bilateral): loss, true, registered (and
    supersampled) volumes, Dice and, with ``params``, the partial-volume volume, with
    ``bparams`` the boundary-shift volume."""
    import numpy as np
    from boundary_shift import boundary_volumes

    from bids_qsm.stats.regional import structure_groups

    vox = float(np.prod(d["voxel_size"]))
    pve, cpu = pve_volumes(d, atlas, params) if params is not None else ({}, 0.0)
    groups, _ = structure_groups(atlas.structures)
    bsv = boundary_volumes(d, atlas, d["xfm"], NAMES, bparams) if bparams is not None else {}
    if bsv:
        for name in NAMES:
            bsv[(name, "bilateral")] = (np.nan, bsv[(name, "L")][1] + bsv[(name, "R")][1], ())
    nan_fit = (np.nan, np.nan, ())
    rows = []
    for name in NAMES:
        for hemi in ("L", "R", "bilateral"):
            ids = sorted(groups[(name, hemi)])
            t, r = np.isin(d["true_labels"], ids), np.isin(d["reg_labels"], ids)
            fit = bsv.get((name, hemi), nan_fit)
            rows.append(
                {
                    "subject": i + 1,
                    "group": group,
                    "structure": name,
                    "hemisphere": hemi,
                    "loss": d["loss"].get(name, 0.0),
                    "true": t.sum() * vox,
                    "reg": r.sum() * vox,
                    "reg_fine": np.isin(d["fine_labels"], ids).sum() * d["fine_voxel_mm3"],
                    "dice": 2 * (t & r).sum() / (t.sum() + r.sum()),
                    "pve": pve.get((name, hemi), np.nan),
                    "pve_cpu_s": cpu,
                    "shift_mm": fit[0],
                    "bsv": fit[1],
                    "shifts": fit[2],
                }
            )
    return rows


def summary(rows: list[dict], key: str) -> list[str]:
    """Mean and largest error of controls and patients (every row, and per hemisphere only)
    and the MS/HC ratio of the bilateral volumes of ``key`` against the true ratio."""
    import numpy as np

    out = []
    for grp in ("HC", "MS"):
        sel = [r for r in rows if r["group"] == grp]
        err = [r[key] / r["true"] - 1 for r in sel]
        hemi = [r[key] / r["true"] - 1 for r in sel if r["hemisphere"] != "bilateral"]
        out.append(
            f"  {grp}: mean error {np.mean(hemi):+.3f} (per hemisphere), largest |error| "
            f"{max(abs(e) for e in err):.3f}; rows beyond 10 %: "
            f"{sum(abs(e) > 0.10 for e in err)} of {len(err)}"
        )
        bil = [r[key] / r["true"] - 1 for r in sel if r["hemisphere"] == "bilateral"]
        out.append(
            f"      bilateral rows (the test's): mean {np.mean(bil):+.3f}, largest |error| "
            f"{max(abs(e) for e in bil):.3f}, beyond 10 %: {sum(abs(e) > 0.10 for e in bil)} "
            f"of {len(bil)}"
        )
    for name in NAMES:
        bil = [r for r in rows if r["structure"] == name and r["hemisphere"] == "bilateral"]

        def ratio(k: str, bil: list[dict] = bil) -> float:
            ms = np.mean([r[k] for r in bil if r["group"] == "MS"])
            return ms / np.mean([r[k] for r in bil if r["group"] == "HC"])

        out.append(
            f"  MS/HC {name}: {ratio(key):.3f} (true {ratio('true'):.3f}, "
            f"difference {ratio(key) - ratio('true'):+.3f})"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny", choices=["tiny", "small", "full"])
    ap.add_argument("--sloppy", action="store_true", help="the --sloppy registration preset")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--supersample", type=int, default=3)
    ap.add_argument("--cache", type=Path, help="keep each subject's registration here (reused)")
    ap.add_argument("--seed-base", type=int, default=100, help="simulator seed of subject 1")
    ap.add_argument("--pve", action="store_true", help="also the partial-volume volumes")
    ap.add_argument("--pve-params", default="{}", help="PVEParams overrides (JSON)")
    ap.add_argument("--boundary", action="store_true", help="also the boundary-shift volumes")
    ap.add_argument("--boundary-params", default="{}", help="BoundaryParams overrides (JSON)")
    args = ap.parse_args(argv)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)

    import json

    from boundary_shift import BoundaryParams

    from bids_qsm.atlas.registry import load_atlas
    from bids_qsm.stats.volumetry import PVEParams

    atlas = load_atlas()
    params = PVEParams(**json.loads(args.pve_params)) if args.pve else None
    bparams = None
    if args.boundary:
        over = json.loads(args.boundary_params)
        bparams = BoundaryParams(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in over.items()}
        )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        for i, (group, edss) in enumerate(COHORT):
            d = registered_subject(args.preset, i, group, edss, args, cache)
            rows += subject_rows(i, group, d, atlas, params, bparams)
            print(f"subject {i + 1} ({group}) registered", flush=True)
    print(
        f"\npreset={args.preset} sloppy={args.sloppy} supersample={args.supersample} "
        f"seeds={args.seed_base}-{args.seed_base + len(COHORT) - 1}"
    )
    if params is not None:
        print(f"partial-volume parameters: {params.as_dict()}")
    print(
        f"{'sub':>3s} {'grp':3s} {'structure':9s} {'hemi':4s} {'loss':>6s} {'true':>7s} "
        f"{'reg':>7s} {'fine':>7s} {'dice':>6s} {'err':>7s} {'err_fine':>8s} {'pve':>7s} "
        f"{'err_pve':>7s} {'bsv':>7s} {'err_bsv':>7s} {'shift':>6s} shift per channel"
    )
    for r in rows:
        e, ef = r["reg"] / r["true"] - 1, r["reg_fine"] / r["true"] - 1
        print(
            f"{r['subject']:3d} {r['group']:3s} {r['structure']:9s} {r['hemisphere'][:4]:4s} "
            f"{r['loss']:6.3f} {r['true']:7.0f} {r['reg']:7.0f} {r['reg_fine']:7.0f} "
            f"{r['dice']:6.3f} {e:+7.3f} {ef:+8.3f} {r['pve']:7.0f} "
            f"{r['pve'] / r['true'] - 1:+7.3f} {r['bsv']:7.0f} {r['bsv'] / r['true'] - 1:+7.3f} "
            f"{r['shift_mm']:+6.2f} {' '.join(f'{x:+.2f}' for x in r['shifts'])}"
        )
    print("registered labels (volume_mm3):")
    print("\n".join(summary(rows, "reg")))
    if params is not None:
        cpu = sorted({(r["subject"], r["pve_cpu_s"]) for r in rows})
        print(
            f"partial-volume model (CPU {min(c for _, c in cpu):.1f}-"
            f"{max(c for _, c in cpu):.1f} s per subject, all structures):"
        )
        print("\n".join(summary(rows, "pve")))
    if bparams is not None:
        print(f"boundary-shift volumes ({bparams}):")
        print("\n".join(summary(rows, "bsv")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
        [--cache DIR]

``--cache DIR`` keeps each subject's arrays (magnitude, chi, R2*, masks, true and registered
labels) and transforms, so a rerun only recomputes the volumes.
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

    from bids_qsm.atlas.antsutil import bbox, box_shape, labels_at, template_coords
    from bids_qsm.atlas.registration import KEY_FROM_TEMPLATE
    from bids_qsm.atlas.transforms import nib_to_ants

    sub, saff = bbox(mask, affine, margin_mm=0.0)
    shape = tuple(n * factor for n in box_shape(sub))
    fine = saff.copy()
    fine[:3, :3] = saff[:3, :3] / factor
    fine[:3, 3] = saff[:3, 3] - saff[:3, :3] @ np.full(3, (factor - 1) / (2 * factor))
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

    path = cache / f"{preset}_{'sloppy' if args.sloppy else 'default'}_{i}.npz"
    if path.exists():
        with np.load(path) as z:
            out = {k: z[k] for k in z.files}
        out["loss"] = json.loads(str(out["loss"]))
        return out
    from bids_qsm.atlas.registration import register_atlas
    from bids_qsm.atlas.registry import load_atlas
    from bids_qsm.atlas.stages import registration_params
    from bids_qsm.qsm.pipeline import reconstruct_qsm
    from bids_qsm.simulate import simulate_subject

    atlas = load_atlas()
    sim = simulate_subject(preset, 100 + i, group=group, edss=edss, atrophy=True,
                           null_effect=True, participant_label=f"{i + 1:02d}")  # fmt: skip
    q = reconstruct_qsm(sim.mag, sim.phase, sim.te_s, sim.b0_tesla, sim.voxel_size,
                        sim.b0_dir, threads=args.threads)  # fmt: skip
    reg = register_atlas(
        nib.Nifti1Image(sim.mag, sim.affine), nib.Nifti1Image(q.brain_mask.astype(np.uint8),
        sim.affine), atlas, path.with_suffix(""), "s", threads=args.threads,
        params=registration_params(args.sloppy), iron=nib.Nifti1Image(q.chi_ppm, sim.affine),
    )  # fmt: skip
    fine, fine_vox = supersampled_labels(
        atlas, reg, q.brain_mask, sim.affine, float(sim.voxel_size[0]), args.supersample
    )
    out = {
        "mag": sim.mag, "te_s": np.asarray(sim.te_s), "affine": sim.affine,
        "voxel_size": np.asarray(sim.voxel_size), "chi_ppm": q.chi_ppm, "qsm_mask": q.mask,
        "brain_mask": q.brain_mask, "r2star_hz": q.r2star_hz, "combined_mag": q.combined_mag,
        "true_labels": sim.labels, "true_chi_ppm": sim.chi_ppm, "reg_labels": reg.labels,
        "fine_labels": fine, "fine_voxel_mm3": np.float64(fine_vox),
        "loss": json.dumps(sim.structure_loss),
    }  # fmt: skip
    np.savez_compressed(path, **out)
    out["loss"] = dict(sim.structure_loss)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny", choices=["tiny", "small", "full"])
    ap.add_argument("--sloppy", action="store_true", help="the --sloppy registration preset")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--supersample", type=int, default=3)
    ap.add_argument("--cache", type=Path, help="keep each subject's registration here (reused)")
    args = ap.parse_args(argv)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)

    import numpy as np

    from bids_qsm.atlas.registry import load_atlas

    atlas = load_atlas()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        for i, (group, edss) in enumerate(COHORT):
            d = registered_subject(args.preset, i, group, edss, args, cache)
            vox = float(np.prod(d["voxel_size"]))
            for s in atlas.structures:
                if s.name not in NAMES:
                    continue
                t, r = np.isin(d["true_labels"], s.labels), np.isin(d["reg_labels"], s.labels)
                rows.append({
                    "subject": i + 1, "group": group, "structure": s.name,
                    "hemisphere": s.hemisphere, "loss": d["loss"].get(s.name, 0.0),
                    "true": t.sum() * vox, "reg": r.sum() * vox,
                    "reg_fine": np.isin(d["fine_labels"], s.labels).sum() * d["fine_voxel_mm3"],
                    "dice": 2 * (t & r).sum() / (t.sum() + r.sum()),
                })  # fmt: skip
            print(f"subject {i + 1} ({group}) registered", flush=True)
    print(f"\npreset={args.preset} sloppy={args.sloppy} supersample={args.supersample}")
    print(f"{'sub':>3s} {'grp':3s} {'structure':9s} {'hemi':4s} {'loss':>6s} {'true':>7s} "
          f"{'reg':>7s} {'fine':>7s} {'dice':>6s} {'err':>7s} {'err_fine':>8s}")  # fmt: skip
    for r in rows:
        e, ef = r["reg"] / r["true"] - 1, r["reg_fine"] / r["true"] - 1
        r["err"], r["err_fine"] = e, ef
        print(f"{r['subject']:3d} {r['group']:3s} {r['structure']:9s} {r['hemisphere']:4s} "
              f"{r['loss']:6.3f} {r['true']:7.0f} {r['reg']:7.0f} {r['reg_fine']:7.0f} "
              f"{r['dice']:6.3f} {e:+7.3f} {ef:+8.3f}")  # fmt: skip
    for grp in ("HC", "MS"):
        sel = [r for r in rows if r["group"] == grp]
        print(f"{grp}: mean error {np.mean([r['err'] for r in sel]):+.3f}, largest |error| "
              f"{max(abs(r['err']) for r in sel):.3f} (supersampled "
              f"{max(abs(r['err_fine']) for r in sel):.3f}), mean loss "
              f"{np.mean([r['loss'] for r in sel]):.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

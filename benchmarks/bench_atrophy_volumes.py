"""Benchmark: do the structure volumes follow the simulated atrophy?

The cohort of ``tests/test_atrophy_null.py`` (3 controls, 3 patients at EDSS 4, 5.5, 6.5 with
atrophy and no iron change, simulator seeds 100-105) is simulated, reconstructed and
registered (iron channel). Printed per subject, thalamus/caudate/putamen and hemisphere: the
simulated volume loss; the true volume (true labels on the GRE grid) and the true tissue
volume (the same without the labels' CSF fraction); the registered label volume (the regional
table's ``volume_label_mm3``), the same labels sampled on a grid ``--supersample`` times finer
through the same transform (GRE quantisation vs registration), the tissue-fraction volume
(the table's ``volume_mm3``, :mod:`bids_qsm.stats.volumetry`); the Dice and relative errors.
Then, per group, the mean and largest errors of both volumes against both truths, and the
MS/HC volume ratios.

``--cache DIR`` keeps each subject's images, labels and truth (``DIR/s<i>.npz``,
``DIR/s<i>_truth.csv``) so that a rerun only recomputes the volumes.

    .venv/bin/python benchmarks/bench_atrophy_volumes.py [--preset tiny] [--sloppy]
        [--threads 1] [--cache /tmp/atrophy_tiny]
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


def subject_data(args, atlas, i: int, group: str, edss: float, tmp: Path):
    """One subject's maps, registered/true/supersampled labels and truth (cached)."""
    import nibabel as nib
    import numpy as np
    import pandas as pd

    cache = Path(args.cache) if args.cache else None
    if cache and (cache / f"s{i}.npz").exists() and (cache / f"s{i}_truth.csv").exists():
        return dict(np.load(cache / f"s{i}.npz")), pd.read_csv(cache / f"s{i}_truth.csv")
    from bids_qsm.atlas.registration import register_atlas
    from bids_qsm.atlas.stages import registration_params
    from bids_qsm.qsm.pipeline import reconstruct_qsm
    from bids_qsm.simulate import simulate_subject

    sim = simulate_subject(
        args.preset,
        100 + i,
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
        tmp / str(i),
        "s",
        threads=args.threads,
        params=registration_params(args.sloppy),
        iron=nib.Nifti1Image(q.chi_ppm, sim.affine),
    )
    fine, fine_vox = supersampled_labels(
        atlas, reg, q.brain_mask, sim.affine, float(sim.voxel_size[0]), args.supersample
    )
    d = {
        "cmag": q.combined_mag,
        "chi": q.chi_ppm,
        "r2": q.r2star_hz,
        "mask": q.mask,
        "reg": reg.labels,
        "true": sim.labels,
        "vox": sim.voxel_size,
        "fine": fine,
        "fine_vox": fine_vox,
        "group": group,
        "loss_names": np.array(list(sim.structure_loss)),
        "loss_vals": np.array(list(sim.structure_loss.values())),
    }
    if cache:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cache / f"s{i}.npz", **d)
        sim.regional_truth.to_csv(cache / f"s{i}_truth.csv", index=False)
    return d, sim.regional_truth


def subject_rows(atlas, i: int, d, truth) -> list[dict]:
    """Per structure and hemisphere (L, R, bilateral): truths, volumes and Dice."""
    import numpy as np

    from bids_qsm.stats.volumetry import tissue_volumes

    vox = float(np.prod(d["vox"]))
    groups: dict[tuple[str, str], set[int]] = {}
    for s in atlas.structures:
        groups.setdefault((s.name, s.hemisphere), set()).update(s.labels)
        groups.setdefault((s.name, "bilateral"), set()).update(s.labels)
    tissue = tissue_volumes(d["cmag"], d["chi"], d["r2"], d["reg"], groups, d["mask"], vox)
    loss = dict(zip(d["loss_names"].tolist(), d["loss_vals"].tolist(), strict=True))
    rows = []
    for (name, hemi), labs in groups.items():
        if name not in NAMES:
            continue
        labs = sorted(labs)
        t, r = np.isin(d["true"], labs), np.isin(d["reg"], labs)
        tr = truth[(truth.structure == name) & (truth.hemisphere == hemi)].iloc[0]
        rows.append(
            {
                "subject": i + 1,
                "group": str(d["group"]),
                "structure": name,
                "hemisphere": hemi,
                "loss": loss.get(name, 0.0),
                "true": t.sum() * vox,
                "true_tissue": float(tr.get("tissue_volume_mm3", np.nan)),
                "reg": r.sum() * vox,
                "reg_fine": np.isin(d["fine"], labs).sum() * float(d["fine_vox"]),
                "tissue": tissue[(name, hemi)],
                "dice": 2 * (t & r).sum() / (t.sum() + r.sum()),
            }
        )
    return rows


def summary(rows: list[dict]) -> None:
    """Per-group errors of the label and tissue volumes and the MS/HC volume ratios."""
    import numpy as np

    bil = [r for r in rows if r["hemisphere"] == "bilateral"]
    print("\nbilateral thalamus/caudate/putamen (the test's rows):")
    for grp in ("HC", "MS"):
        sel = [r for r in bil if r["group"] == grp]
        for vol, ref in (
            ("reg", "true"),
            ("tissue", "true"),
            ("reg", "true_tissue"),
            ("tissue", "true_tissue"),
        ):
            e = np.array([r[vol] / r[ref] - 1 for r in sel])
            name = "label " if vol == "reg" else "tissue"
            print(
                f"{grp}: {name} volume vs {ref:11s}: mean error {e.mean():+.3f}, "
                f"largest |error| {np.abs(e).max():.3f}"
            )
    for name in NAMES:
        s = [r for r in bil if r["structure"] == name]
        ratios = []
        for key in ("true", "true_tissue", "reg", "tissue"):
            ms = np.mean([r[key] for r in s if r["group"] == "MS"])
            hc = np.mean([r[key] for r in s if r["group"] == "HC"])
            ratios.append(f"{key} {ms / hc:.3f}")
        print(f"MS/HC volume ratio {name:9s}: " + ", ".join(ratios))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny", choices=["tiny", "small", "full"])
    ap.add_argument("--sloppy", action="store_true", help="the --sloppy registration preset")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--supersample", type=int, default=3)
    ap.add_argument("--cache", default=None, help="directory caching each subject's data")
    args = ap.parse_args(argv)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)

    from bids_qsm.atlas.registry import load_atlas

    atlas = load_atlas()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (group, edss) in enumerate(COHORT):
            d, truth = subject_data(args, atlas, i, group, edss, Path(tmp))
            rows += subject_rows(atlas, i, d, truth)
            print(f"subject {i + 1} ({group}) done", flush=True)
    print(f"\npreset={args.preset} sloppy={args.sloppy} supersample={args.supersample}")
    print(
        f"{'sub':>3s} {'grp':3s} {'structure':9s} {'hemi':9s} {'loss':>5s} {'true':>6s} "
        f"{'tissue':>6s} {'label':>6s} {'fine':>6s} {'volume':>6s} {'dice':>5s} "
        f"{'e_label':>7s} {'e_fine':>6s} {'e_vol':>6s} {'e_vol_t':>7s}"
    )
    for r in rows:
        print(
            f"{r['subject']:3d} {r['group']:3s} {r['structure']:9s} {r['hemisphere']:9s} "
            f"{r['loss']:5.3f} {r['true']:6.0f} {r['true_tissue']:6.0f} {r['reg']:6.0f} "
            f"{r['reg_fine']:6.0f} {r['tissue']:6.0f} {r['dice']:5.3f} "
            f"{r['reg'] / r['true'] - 1:+7.3f} {r['reg_fine'] / r['true'] - 1:+6.3f} "
            f"{r['tissue'] / r['true'] - 1:+6.3f} "
            f"{r['tissue'] / r['true_tissue'] - 1:+7.3f}"
        )
    summary(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

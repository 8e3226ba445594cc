"""What the simulator's atlas labels contain, and what borders them (1 mm head model).

The atrophy benchmark's truth is a label count (``bench_atrophy_volumes.py``). This table
shows why a volume measured from the subject's contrast alone cannot match it (docs/atlas.md,
"Structure volumes and atrophy"). Per deep gray matter structure and hemisphere of the
template head model (no deformation, no atrophy):

- ``csf_%``: the CSF share of the labelled volume (mean CSF fraction over the label);
- ``csf>90_%``: the share of the label's voxels that are more than 90 % CSF;
- ``ring_gm/wm/csf_%``: the mean tissue fractions of the unlabelled brain voxels within
  ``--ring-mm`` of the label (outside every AAL3 label);
- ``ring_gm>50_%``: the share of those voxels that are mostly gray matter.

    .venv/bin/python benchmarks/bench_label_tissue.py [--ring-mm 2]
"""

from __future__ import annotations

import argparse
import sys

NAMES = ("thalamus", "caudate", "putamen", "globus_pallidus")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ring-mm", type=float, default=2.0, help="ring width outside the label")
    args = ap.parse_args(argv)

    import numpy as np

    from bids_qsm.atlas.structures import aal3_structures
    from bids_qsm.simulate.anatomy import build_head_model, cropped_distance_mm

    hm = build_head_model()
    unlabelled = hm.brain_mask & (hm.labels == 0)
    print(f"head model 1 mm, ring {args.ring_mm:g} mm outside the label (unlabelled brain)")
    print(
        f"{'structure':16s} {'hemi':4s} {'mL':>6s} {'csf_%':>6s} {'csf>90_%':>8s} "
        f"{'ring_gm_%':>9s} {'ring_wm_%':>9s} {'ring_csf_%':>10s} {'ring_gm>50_%':>12s}"
    )
    for s in aal3_structures():
        if s.name not in NAMES:
            continue
        lab = np.isin(hm.labels, s.labels)
        if not lab.any():
            continue
        ring = unlabelled & (cropped_distance_mm(lab, args.ring_mm) <= args.ring_mm)
        fc = hm.frac_csf[lab]
        gm, wm, csf = (f[ring] for f in (hm.frac_gm, hm.frac_wm, hm.frac_csf))
        print(
            f"{s.name:16s} {s.hemisphere:4s} {lab.sum() / 1000:6.2f} {100 * fc.mean():6.1f} "
            f"{100 * (fc > 0.9).mean():8.1f} {100 * gm.mean():9.1f} {100 * wm.mean():9.1f} "
            f"{100 * csf.mean():10.1f} {100 * (gm > 0.5).mean():12.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

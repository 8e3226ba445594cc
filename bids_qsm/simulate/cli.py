"""``bids-qsm-simulate OUT_DIR [options]``: write a simulated BIDS GRE dataset with truth."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

from bids_qsm import __version__
from bids_qsm.errors import BidsQsmError, ExitCode
from bids_qsm.simulate.cohort import BETWEEN_SUBJECT_SD_PPM, parse_iron_sd
from bids_qsm.simulate.presets import DEFAULT_TE_S, PRESETS

log = logging.getLogger("bids_qsm.simulate")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage errors exit 64 (BEP027), not 2
        self.print_usage(sys.stderr)
        self.exit(int(ExitCode.USAGE), f"{self.prog}: error: {message}\n")


def _positive_float(text: str) -> float:
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return v


def _te_list(text: str) -> tuple[float, ...]:
    try:
        te = tuple(float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of seconds: {text}") from None
    if any(t <= 0 for t in te) or list(te) != sorted(te):
        raise argparse.ArgumentTypeError(f"echo times must be positive and increasing: {text}")
    if max(te) > 1.0:
        raise argparse.ArgumentTypeError(f"echo times are in seconds (e.g. 0.004,0.010): {text}")
    return te


def _iron_sd(text: str) -> dict[str, float]:
    try:
        return parse_iron_sd(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _mm_triplet(text: str) -> tuple[float, float, float]:
    try:
        v = tuple(float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or X,Y,Z in mm: {text}") from None
    if len(v) == 1:
        v = v * 3
    if len(v) != 3 or any(x <= 0 for x in v):
        raise argparse.ArgumentTypeError(f"give one or three positive values in mm: {text}")
    return v  # type: ignore[return-value]


def _rates(text: str) -> dict[str, float]:
    from bids_qsm.simulate.sessions import parse_rates

    try:
        return parse_rates(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _longitudinal_options(p: argparse.ArgumentParser) -> None:
    """--sessions, --interval-years, --iron-rate-ppb-per-year (bids_qsm.simulate.sessions)."""
    p.add_argument("--sessions", type=int, default=1, help="sessions per subject (ses-1..N)")
    p.add_argument(
        "--interval-years", type=_positive_float, default=1.0, help="years between sessions"
    )
    p.add_argument(
        "--iron-rate-ppb-per-year",
        type=_rates,
        default=None,
        metavar="default|PPB|NAME=PPB,...",
        help="patients' planted chi change per year: 'default' (basal ganglia +1.5, thalamus "
        "and pulvinar -1), one number (BG +x, thalamus -x; 0 = no change) or name=ppb,...",
    )


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="bids-qsm-simulate",
        description="Write a BIDS multi-echo GRE dataset of a digital head phantom (or a "
        "HC/MS cohort) with its ground truth in derivatives/simulation.",
    )
    p.add_argument("out_dir", help="output BIDS folder (created if missing)")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="small",
        help="tiny: 3 mm (tests), small: 2 mm (demo), full: 1 mm (benchmarks)",
    )
    p.add_argument("--n-subjects", type=int, default=1, help="controls to write (no cohort)")
    p.add_argument("--n-controls", type=int, default=0, help="cohort: healthy controls (HC)")
    p.add_argument("--n-patients", type=int, default=0, help="cohort: MS patients")
    p.add_argument("--seed", type=int, default=0, help="random seed (deterministic output)")
    p.add_argument(
        "--phase-units",
        choices=("rad", "vendor"),
        default="rad",
        help="phase as float radians or vendor integers -4096..4095",
    )
    p.add_argument(
        "--oblique-deg",
        type=float,
        default=0.0,
        help="tilt of the GRE slab about the left-right axis (degrees)",
    )
    p.add_argument(
        "--te",
        type=_te_list,
        default=DEFAULT_TE_S,
        metavar="TE1,TE2,...",
        help="echo times in seconds (default 0.004,0.010,0.016,0.022)",
    )
    p.add_argument(
        "--voxel-size",
        type=_mm_triplet,
        default=None,
        metavar="MM[,MM,MM]",
        help="GRE voxel size (overrides the preset)",
    )
    p.add_argument(
        "--fov",
        type=_mm_triplet,
        default=None,
        metavar="LR,AP,SI",
        help="GRE field of view in mm (default 192,228,174)",
    )
    p.add_argument("--field-strength", type=_positive_float, default=3.0, metavar="TESLA")
    p.add_argument(
        "--snr",
        type=float,
        default=None,
        help="echo-1 brain SNR (default: the preset's; 0 = noiseless)",
    )
    p.add_argument("--lesions", action="store_true", help="white matter lesions (patients)")
    p.add_argument("--t1w", action="store_true", help="also write a sagittal T1w")
    p.add_argument(
        "--atrophy",
        action="store_true",
        help="patients: thalamus/caudate/putamen volume loss, larger ventricles (EDSS, duration)",
    )
    p.add_argument(
        "--null-effect",
        action="store_true",
        help="patients without deep gray matter iron differences (atrophy is kept)",
    )
    p.add_argument(
        "--rigid-anatomy",
        action="store_true",
        help="every head is the template itself (no random affine / smooth deformation)",
    )
    p.add_argument(
        "--no-random-pose",
        action="store_true",
        help="keep every head MNI-aligned (no random rotation/shift/scale)",
    )
    p.add_argument(
        "--shim-residual-hz",
        type=float,
        default=0.0,
        help="amplitude of a second-order shim residual (Hz at 80 mm)",
    )
    p.add_argument(
        "--between-subject-sd-ppb",
        type=float,
        default=BETWEEN_SUBJECT_SD_PPM * 1000,
        help="SD of per-structure offsets",
    )
    p.add_argument(
        "--iron-sd-ppb",
        type=_iron_sd,
        default=None,
        metavar="literature|PPB|NAME=PPB,...",
        help="planted between-subject regional iron variation: SD per structure (ppb; "
        "'literature' = adult QSM cohort SDs, 5-25 ppb); replaces --between-subject-sd-ppb",
    )
    p.add_argument(
        "--effect-scale",
        type=float,
        default=1.0,
        help="multiply the patients' deep gray matter effect (1 = seed-study magnitudes)",
    )
    p.add_argument(
        "--pose-sd-deg",
        type=float,
        default=3.0,
        help="SD of the random head rotation about each axis (degrees)",
    )
    _longitudinal_options(p)
    p.add_argument("--nthreads", type=int, default=2, help="FFT threads")
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="-v: debug messages; -vv: tracebacks (progress lines are always printed)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


#: :func:`~bids_qsm.simulate.bids_writer.write_bids_dataset` parameters set by the option of
#: the same name, and parameter -> option where the names differ.
_SAME_NAME = (
    "preset",
    "n_subjects",
    "n_controls",
    "n_patients",
    "seed",
    "phase_units",
    "oblique_deg",
    "lesions",
    "t1w",
    "null_effect",
    "atrophy",
    "snr",
    "rigid_anatomy",
    "shim_residual_hz",
    "effect_scale",
    "interval_years",
)
_RENAMED = {
    "te_s": "te",
    "b0_tesla": "field_strength",
    "pose_rotation_sd_deg": "pose_sd_deg",
    "voxel_mm": "voxel_size",
    "fov_mm": "fov",
    "workers": "nthreads",
    "n_sessions": "sessions",
    "iron_rate_ppm_per_year": "iron_rate_ppb_per_year",
}


def _dataset_options(args: argparse.Namespace) -> dict[str, Any]:
    """The write_bids_dataset keyword arguments taken from the options as given."""
    return {
        **{name: getattr(args, name) for name in _SAME_NAME},
        **{name: getattr(args, option) for name, option in _RENAMED.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.sessions < 1:
        parser.error(f"--sessions must be at least 1, got {args.sessions}")
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.verbose and not args.quiet:
        logging.getLogger("bids_qsm").setLevel(logging.DEBUG)
    from bids_qsm.simulate.bids_writer import write_bids_dataset

    t0 = time.perf_counter()
    try:
        root = write_bids_dataset(
            args.out_dir,
            **_dataset_options(args),
            progress=log.info,
            random_pose=not args.no_random_pose,
            between_subject_sd_ppm=(
                args.iron_sd_ppb
                if args.iron_sd_ppb is not None
                else args.between_subject_sd_ppb / 1000.0
            ),
        )
    except BidsQsmError as exc:
        if args.verbose >= 2:
            log.exception("simulation failed")
        print(f"bids-qsm-simulate: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    log.info("wrote %s in %.1f s", root, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())

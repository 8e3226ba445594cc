"""The ``bids-qsm`` argument parser (BIDS Apps contract, NiPreps-style options).

Every option writes to a destination named ``<section>.<field>`` of :class:`bids_qsm.config.Config`
and has no argparse default (``SUPPRESS``), so :func:`parse_args` knows exactly which options the
user gave: those override a ``--config-file``, which overrides the built-in defaults.
Any argparse error is turned into :class:`bids_qsm.errors.UsageError` (exit 64, not argparse's 2).
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence
from typing import Any, NoReturn

from bids_qsm import __version__
from bids_qsm.cli.argtypes import (
    _absolute_path,
    _label,
    _nonnegative_int,
    _path,
    _phase_sign,
    _positive_float,
    _positive_int,
)
from bids_qsm.cli.checks import (  # noqa: F401 (re-exported)
    _check_consistency,
    absolute_paths,
    load_bids_filters,
    load_plugin_file,
)
from bids_qsm.config import (
    BG_REMOVAL_METHODS,
    INVERSION_METHODS,
    REFERENCE_REGIONS,
    SWI_HIGHPASS_METHODS,
    UNWRAPPING_METHODS,
    Config,
    GroupConfig,
    WorkflowConfig,
    load_toml,
)
from bids_qsm.errors import UsageError

#: Settings describing one run, ignored when a saved configuration is given as --config-file.
RUN_IDENTITY_KEYS = ("run_id", "log_dirs", "version", "config_file")

_WF = WorkflowConfig()
_GROUP = GroupConfig()

DESCRIPTION = (
    "bids-qsm: quantitative susceptibility mapping (QSM), R2*/T2*, SWI and regional brain "
    "iron from multi-echo gradient-echo (GRE) MRI in a BIDS dataset. The participant level "
    "processes each subject (run it as many parallel jobs into the same OUTPUT_DIR); the "
    "group level compares groups and correlates iron with clinical scores over what the "
    "participant level wrote."
)

EPILOG = """exit codes:
  0   success                           18  labels or filters matched no data
  1   processing failure                64  usage error (bad option or value)
  16  BIDS validation failed            65  bad or inconsistent input data
  17  unknown analysis level            66  input missing (BIDS_DIR or a given file)
                                        73  OUTPUT_DIR or work dir cannot be created
  several failing subjects: the most severe code, 73 > 1 > 66 > 65
Full documentation: docs/usage.md"""


class BidsQsmArgumentParser(argparse.ArgumentParser):
    """ArgumentParser whose errors raise :class:`UsageError` (exit 64) instead of exiting 2."""

    def error(self, message: str) -> NoReturn:
        """Print the usage line, then raise a one-line usage error."""
        self.print_usage()
        raise UsageError(message)


def build_parser() -> BidsQsmArgumentParser:
    """The complete command-line parser of ``bids-qsm``."""
    parser = BidsQsmArgumentParser(
        prog="bids-qsm",
        description=textwrap.fill(DESCRIPTION, width=92),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
        allow_abbrev=False,
    )
    parser.add_argument(
        "bids_dir",
        metavar="BIDS_DIR",
        type=_path,
        help="root folder of the input BIDS dataset (contains dataset_description.json and sub-*)",
    )
    parser.add_argument(
        "output_dir",
        metavar="OUTPUT_DIR",
        type=_path,
        help="folder of the output BIDS derivatives (created if missing; shared by parallel jobs)",
    )
    parser.add_argument(
        "analysis_level",
        metavar="{participant,group}",
        help="'participant': process subjects (map step); 'group': statistics over the "
        "participant outputs in OUTPUT_DIR (reduce step)",
    )
    parser.add_argument("--version", action="version", version=f"bids-qsm {__version__}")

    # ------------------------------------------------------------------ BIDS filtering
    g = parser.add_argument_group("Options for filtering the BIDS queries")
    g.add_argument(
        "--participant-label",
        "--participant_label",
        dest="execution.participant_label",
        metavar="LABEL",
        nargs="+",
        type=_label("sub-"),
        help="subjects to process, with or without 'sub-' (e.g. 01 sub-02); default: all",
    )
    g.add_argument(
        "--session-label",
        "--session_label",
        dest="execution.session_label",
        metavar="LABEL",
        nargs="+",
        type=_label("ses-"),
        help="sessions to process, with or without 'ses-'; default: all",
    )
    g.add_argument(
        "--bids-filter-file",
        dest="execution.bids_filter_file",
        metavar="FILE",
        type=_path,
        help="JSON file of pybids queries refining the input selection, keyed by input type: "
        '"megre", "t2starw", "t1w" (e.g. {"megre": {"acquisition": "wb"}}); null matches files '
        'without the entity, "*" any value; unknown keys are ignored with a warning',
    )
    g.add_argument(
        "--bids-database-dir",
        dest="execution.bids_database_dir",
        metavar="DIR",
        type=_path,
        help="pybids index folder: created if missing, reused if present, so that many parallel "
        "jobs index the dataset only once (delete it after the dataset changes)",
    )
    g.add_argument(
        "--skip-bids-validation",
        "--skip_bids_validation",
        dest="execution.skip_bids_validation",
        action="store_true",
        help="do not run bids-validator-deno on the selected subjects before processing",
    )
    g.add_argument(
        "--lesion-masks",
        dest="execution.lesion_masks",
        metavar="DIR",
        type=_path,
        help="derivatives folder of lesion masks named sub-<l>[_ses-<l>]_..._label-<name>"
        "_mask.nii[.gz] (e.g. label-T2lesion, label-T1lesion); iron is reported per lesion label",
    )
    g.add_argument(
        "--brain-mask-source",
        dest="execution.brain_mask_source",
        metavar="DIR",
        type=_path,
        help="optional derivatives folder of brain masks in GRE space named "
        "sub-<l>[_ses-<l>]_..._desc-brain_mask.nii[.gz], used instead of the automatic mask",
    )
    # User field maps (issue 13): one block, paths made absolute here.
    for kind, unit in (("total", "Hz, unwrapped, phase offset removed"), ("local", "ppm")):
        g.add_argument(
            f"--{kind}-field-source",
            dest=f"execution.{kind}_field_source",
            metavar="DIR",
            type=_absolute_path,
            help=f"optional derivatives folder of {kind} field maps in GRE space ({unit}) named "
            f"sub-<l>[_ses-<l>]_..._desc-{kind}_fieldmap.nii[.gz], used instead of the phase"
            + (" (no background removal)" if kind == "local" else "")
            + "; see docs/methods_qsm.md",
        )
    g.add_argument(
        "--b0-tesla",
        dest="execution.b0_tesla",
        metavar="T",
        type=_positive_float,
        help="main field strength in tesla; overrides and replaces a missing "
        "MagneticFieldStrength in the sidecars",
    )

    # ------------------------------------------------------------------ performance
    g = parser.add_argument_group("Options to handle performance")
    g.add_argument(
        "--nprocs",
        "--nthreads",
        "--n-cpus",
        dest="nipype.nprocs",
        metavar="N",
        type=_positive_int,
        help="maximum number of processes run in parallel (default: all available CPUs)",
    )
    g.add_argument(
        "--omp-nthreads",
        dest="nipype.omp_nthreads",
        metavar="N",
        type=_positive_int,
        help="maximum threads per process (FFT, ANTs); default: min(8, nprocs)",
    )
    g.add_argument(
        "--mem-mb",
        "--mem_mb",
        dest="nipype.mem_mb",
        metavar="MB",
        type=_positive_int,
        help="upper bound of memory use in MB (the scheduler keeps the jobs under it)",
    )
    g.add_argument(
        "--use-plugin",
        dest="nipype.use_plugin",
        metavar="FILE",
        type=_path,
        help="Nipype plugin YAML file, e.g. 'plugin: SLURMGraph' with 'plugin_args: "
        "{sbatch_args: ...}' (default: MultiProc on this machine)",
    )
    g.add_argument(
        "--stop-on-first-crash",
        dest="nipype.stop_on_first_crash",
        action="store_true",
        help="stop at the first failing step instead of finishing the independent ones",
    )

    # ------------------------------------------------------------------ workflow
    g = parser.add_argument_group("Workflow configuration (QSM)")
    g.add_argument(
        "--unwrapping",
        dest="workflow.unwrapping",
        choices=UNWRAPPING_METHODS,
        help="phase unwrapping: 'quality' = exact quality-guided region growing (consensus "
        "recommendation), 'laplacian' = fast but inexact "
        f"(default: {_WF.unwrapping})",
    )
    g.add_argument(
        "--bg-removal",
        dest="workflow.bg_removal",
        choices=BG_REMOVAL_METHODS,
        help="background field removal: V-SHARP (12 mm max radius), PDF, or LBV (Laplacian "
        "boundary value; the most accurate on the simulator, see docs/methods_qsm.md) "
        f"(default: {_WF.bg_removal})",
    )
    g.add_argument(
        "--inversion",
        dest="workflow.inversion",
        choices=INVERSION_METHODS,
        help="dipole inversion: 'wtv' TV with a data term weighted inside the brain mask only "
        "(ADMM from RTS step 1; the most accurate on the simulator, see docs/methods_qsm.md), "
        "'rts' rapid two-step, 'tikhonov' iterative Tikhonov, 'tv' TV-ADMM, 'tkd' truncated "
        f"k-space division (quick look only) (default: {_WF.inversion})",
    )
    g.add_argument(
        "--reference",
        dest="workflow.reference",
        choices=REFERENCE_REGIONS,
        help="susceptibility reference: mean of the whole 'brain' mask, of 'csf', or 'none' "
        f"(default: {_WF.reference}); always reported in the sidecar",
    )
    g.add_argument(
        "--phase-sign",
        dest="workflow.phase_sign",
        metavar="{1,-1}",
        type=_phase_sign,
        help="multiply the phase by this sign before processing; use -1 for vendors whose "
        "phase runs the other way (e.g. GE), so that veins and the globus pallidus come out "
        f"paramagnetic (positive) (default: {_WF.phase_sign})",
    )
    g.add_argument(
        "--vsharp-radius",
        dest="workflow.vsharp_radius_mm",
        metavar="MM",
        type=_positive_float,
        help=f"largest V-SHARP sphere radius in mm (default: {_WF.vsharp_radius_mm:g})",
    )
    g.add_argument(
        "--random-seed",
        dest="execution.random_seed",
        metavar="N",
        type=_nonnegative_int,
        help="seed of every random step (registration sampling, permutations) for "
        "reproducible results",
    )

    g = parser.add_argument_group("Workflow configuration (SWI and phase iron)")
    g.add_argument(
        "--swi-highpass",
        dest="workflow.swi_highpass",
        choices=SWI_HIGHPASS_METHODS,
        help="phase high-pass filter: 'gaussian' (CLEAR-SWI style, on the unwrapped field) or "
        f"'homodyne' (Haacke, per slice) (default: {_WF.swi_highpass})",
    )
    g.add_argument(
        "--swi-mask-power",
        dest="workflow.swi_mask_power",
        metavar="N",
        type=_positive_int,
        help=f"power of the SWI phase mask (default: {_WF.swi_mask_power})",
    )
    g.add_argument(
        "--minip-thickness",
        dest="workflow.minip_thickness_mm",
        metavar="MM",
        type=_positive_float,
        help="slab thickness of the minimum-intensity projection in mm "
        f"(default: {_WF.minip_thickness_mm:g})",
    )
    g.add_argument(
        "--apt-threshold",
        dest="workflow.apt_threshold_rad",
        metavar="RAD",
        type=float,
        help="abnormal-phase threshold in rad for the phase-iron volume (MP-APT); default: "
        "derived per structure from the healthy controls (mean - 2 SD) at the group level",
    )

    g = parser.add_argument_group("Atlas and registration")
    g.add_argument(
        "--atlas",
        dest="workflow.atlas",
        metavar="NAME",
        help=f"built-in atlas of the deep gray matter structures (default: {_WF.atlas})",
    )
    g.add_argument(
        "--atlas-labels",
        dest="workflow.atlas_labels",
        metavar="NIFTI",
        type=_path,
        help="custom atlas: label image (integers); needs --atlas-table, --atlas-template and "
        "--atlas-name too",
    )
    g.add_argument(
        "--atlas-table",
        dest="workflow.atlas_table",
        metavar="TSV",
        type=_path,
        help="custom atlas: TSV with columns 'index' and 'name'",
    )
    g.add_argument(
        "--atlas-template",
        dest="workflow.atlas_template",
        metavar="NIFTI",
        type=_path,
        help="custom atlas: T1-weighted template in the space of the label image",
    )
    g.add_argument(
        "--atlas-name",
        dest="workflow.atlas_name",
        metavar="NAME",
        help="custom atlas: name used in the output file names (seg-<NAME>)",
    )
    g.add_argument(
        "--skip-registration",
        dest="workflow.skip_registration",
        action="store_true",
        help="do not register the atlas (no regional tables); QSM, R2* and SWI maps only",
    )
    g.add_argument(
        "--sloppy",
        dest="workflow.sloppy",
        action="store_true",
        help="fast, lower-quality atlas registration (fewer iterations; lower Dice of the small "
        "nuclei): for demos and tests only, never for a study; recorded in the sidecars and "
        "flagged in the report",
    )

    # ------------------------------------------------------------------ group level
    g = parser.add_argument_group("Group level")
    g.add_argument(
        "--covariates",
        dest="group.covariates",
        metavar="COLUMN",
        nargs="*",
        help="participants.tsv columns adjusted for in every model "
        f"(default: {' '.join(_GROUP.covariates)}); structure volume is added for iron measures",
    )
    g.add_argument(
        "--clinical-columns",
        dest="group.clinical_columns",
        metavar="COLUMN",
        nargs="*",
        help="participants.tsv columns to correlate with iron (e.g. EDSS disease_duration)",
    )
    g.add_argument(
        "--group-column",
        dest="group.group_column",
        metavar="COLUMN",
        help=f"participants.tsv column holding the group (default: {_GROUP.group_column})",
    )
    g.add_argument(
        "--control-label",
        dest="group.control_label",
        metavar="VALUE",
        help="value of the group column marking healthy controls "
        f"(default: {_GROUP.control_label})",
    )
    g.add_argument(
        "--exclude-participants",
        dest="group.exclude_participants",
        metavar="LABEL_OR_TSV",
        nargs="*",
        help="leave participants out of the group statistics: labels (03 or sub-03) and/or "
        "TSV files with a participant_id column and an optional reason column (shown in the "
        "group report)",
    )
    g.add_argument(
        "--voxelwise",
        dest="group.voxelwise",
        action=argparse.BooleanOptionalAction,
        help="voxel-wise group comparison in template space (default: on)",
    )
    g.add_argument(
        "--n-permutations",
        dest="group.n_permutations",
        metavar="N",
        type=_nonnegative_int,
        help="permutations of the voxel-wise test (default: "
        f"{_GROUP.n_permutations}; 0 = parametric only)",
    )

    # ------------------------------------------------------------------ other
    g = parser.add_argument_group("Other options")
    g.add_argument(
        "-w",
        "--work-dir",
        dest="execution.work_dir",
        metavar="DIR",
        type=_path,
        help="folder for intermediate results (default: a temporary folder); must not be inside "
        "BIDS_DIR; keep it to resume an interrupted run",
    )
    g.add_argument(
        "--config-file",
        dest="execution.config_file",
        metavar="FILE",
        type=_path,
        help="TOML settings file with sections [execution], [nipype], [workflow], [group] "
        "(as saved in each run's log folder); command-line options win",
    )
    g.add_argument(
        "--boilerplate-only",
        "--boilerplate_only",
        dest="execution.boilerplate_only",
        action="store_true",
        help="only write the methods boilerplate (logs/CITATION.md) and exit",
    )
    g.add_argument(
        "--reports-only",
        dest="execution.reports_only",
        action="store_true",
        help="only (re)build the HTML reports from existing outputs in OUTPUT_DIR",
    )
    g.add_argument(
        "-v",
        "--verbose",
        dest="execution.verbosity",
        action="count",
        help="more terminal output: -v debug messages, -vv also Python tracebacks",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> Config:
    """Parse the command line into a :class:`Config` (defaults < --config-file < options).

    Raises :class:`UsageError` (64) for bad options, :class:`InputMissingError` (66) for a
    missing option file. The analysis level is checked by the caller (unknown level -> 17).
    """
    parser = build_parser()
    namespace = parser.parse_args(argv)
    given: dict[str, Any] = vars(namespace)

    config = Config()
    config_file = given.get("execution.config_file")
    if config_file is not None:
        settings = load_toml(config_file)
        # A saved run configuration can be replayed: its run identity is not reused.
        execution = settings.get("execution")
        if isinstance(execution, dict):
            for key in RUN_IDENTITY_KEYS:
                execution.pop(key, None)
        config.update(settings, source=str(config_file))

    sections: dict[str, dict[str, Any]] = {"execution": {}}
    for key, value in given.items():
        if key in ("bids_dir", "output_dir", "analysis_level"):
            sections["execution"][key] = value
            continue
        section, name = key.split(".", 1)
        sections.setdefault(section, {})[name] = value
    config.update(sections, source="command line")
    absolute_paths(config)
    _check_consistency(config)
    return config

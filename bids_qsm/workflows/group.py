"""The group level: ``bids-qsm BIDS_DIR OUTPUT_DIR group``.

Reduces what the participant level wrote into ``OUTPUT_DIR/group/`` (see ``docs/group.md``):
cohort tables, control-derived SWI thresholds with MP-APT recomputed, group differences,
clinical associations, normative z-scores, the voxelwise template-space analysis and
``group.html``. The statistics live in :mod:`bids_qsm.stats.group`,
:mod:`bids_qsm.stats.group_swi` and :mod:`bids_qsm.stats.voxelwise`; this module only finds
the files, calls them in order, writes the tables (TSV + JSON sidecar, atomically) and logs
the time of every step.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import pandas as pd

from bids_qsm.atlas.structures import aal3_structures
from bids_qsm.bids.derivatives import Derivatives
from bids_qsm.bids.writers import atomic_path, atomic_save_nifti, atomic_write_json
from bids_qsm.config import Config, GroupSettings
from bids_qsm.errors import InputMissingError
from bids_qsm.logging_setup import heartbeat
from bids_qsm.reports.longitudinal import add_group_section
from bids_qsm.specs import AtlasSpec
from bids_qsm.stats import group as G
from bids_qsm.stats import group_swi as S
from bids_qsm.stats.columns import column_descriptions
from bids_qsm.stats.effects import read_exclusions
from bids_qsm.stats.regional import COLUMN_DESCRIPTIONS
from bids_qsm.workflows.longitudinal_group import run_longitudinal_group

LOGGER = logging.getLogger("bids_qsm.group")

EXCLUSION_COLUMNS: dict[str, dict[str, str]] = column_descriptions("exclusions")


# ----------------------------------------------------------------------------- helpers
@contextmanager
def _step(name: str, timings: dict[str, float]) -> Iterator[None]:
    t0 = time.perf_counter()
    LOGGER.info("group: %s ...", name)
    with heartbeat(lambda: f"group: {name}", LOGGER):
        yield
    timings[name] = time.perf_counter() - t0
    LOGGER.info("group: %s done in %.1f s", name, timings[name])


def write_table(
    df: pd.DataFrame, path: Path, columns: dict[str, dict[str, str]], description: str
) -> Path:
    """Write a TSV (``n/a`` for missing) and its JSON sidecar describing every column."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format="%.6g")
    sidecar: dict[str, Any] = {"Description": description}
    for col in df.columns:
        sidecar[col] = columns.get(col, {"Description": f"{col} (from participants.tsv)."})
    atomic_write_json(path.with_suffix(".json"), sidecar)
    return path


def _participant_columns(bids_dir: Path, participants: pd.DataFrame) -> dict[str, dict]:
    described: dict[str, dict] = {}
    pj = bids_dir / "participants.json"
    if pj.is_file():
        try:
            described = {k: v for k, v in json.loads(pj.read_text()).items() if isinstance(v, dict)}
        except (OSError, ValueError):
            LOGGER.warning("could not read %s", pj)
    return {
        c: described.get(c, {"Description": f"{c} (from participants.tsv)."})
        for c in participants.columns
    }


def _wide_columns(wide: pd.DataFrame, base: dict[str, dict[str, str]]) -> dict[str, dict]:
    out: dict[str, dict] = dict(base)
    for col in wide.columns:
        if col in out:
            continue
        for m, desc in COLUMN_DESCRIPTIONS.items():
            if col.endswith("_" + m):
                region = col[: -len(m) - 1]
                entry = {"Description": f"{desc['Description']} Region: {region}."}
                if "Units" in desc:
                    entry["Units"] = desc["Units"]
                out[col] = entry
                break
    return out


def _load_atlas(config: Config, name: str):  # -> bids_qsm.atlas.registry.Atlas
    """The configured atlas (:meth:`WorkflowConfig.atlas_spec`), else the built-in ``name``."""
    wf = getattr(config, "workflow", None)
    if wf is not None and getattr(wf, "custom_atlas", False):
        return AtlasSpec.from_workflow_config(wf).load()
    return AtlasSpec(name).load()


def _acq_key(df: pd.DataFrame) -> tuple[str, str, str, str]:
    row = df.iloc[0]
    return (
        G._with_sub(row["participant_id"]),
        str(row["session_id"]),
        str(row["acq"]),
        str(row["run"]),
    )


# ----------------------------------------------------------------------------- main
@dataclass
class _Cohort:
    """What the steps of the group level share: inputs found and the resolved design."""

    settings: GroupSettings
    paths: list[Path]
    participants: pd.DataFrame
    design: G.Design
    exclusions: dict[str, str]
    pcols: dict[str, dict]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def group_dir(self) -> Path:
        return self.settings.output_dir / "group"

    @property
    def prefix(self) -> Path:
        return self.group_dir / f"seg-{self.settings.atlas}"


def _resolve_cohort(s: GroupSettings) -> _Cohort:
    """Participant tables, participants.tsv, the design and the exclusions (logged)."""
    paths = G.find_stats_tables(s.output_dir, s.atlas)
    if not paths:
        raise InputMissingError(
            f"no participant outputs (sub-*/anat/*_seg-{s.atlas}_stats.tsv): run the "
            "participant level before the group level",
            s.output_dir,
        )
    participants = G.read_participants(s.bids_dir, s.group_column)
    ptsv = s.bids_dir / "participants.tsv"
    design = G.resolve_design(
        participants,
        s.covariates,
        s.group_column,
        s.control_label,
        path=ptsv,
        adjust_volume=s.adjust_volume,
    )
    exclusions = read_exclusions(s.exclude_participants, base=s.bids_dir)
    unknown = sorted(set(exclusions) - set(participants["participant_id"]))
    if unknown:
        LOGGER.warning("excluded but not in participants.tsv: %s", ", ".join(unknown))
    if exclusions:
        LOGGER.info(
            "group: %d participant(s) excluded from the statistics: %s",
            len(exclusions),
            ", ".join(f"{k} ({v})" for k, v in exclusions.items()),
        )
    pcols = _participant_columns(s.bids_dir, participants)
    LOGGER.info(
        "group: %d participant tables, groups %s vs %s, covariates %s%s",
        len(paths),
        "+".join(design.case_labels),
        design.control_label,
        design.covariates,
        " + volume" if design.use_volume else "",
    )
    return _Cohort(s, paths, participants, design, exclusions, pcols)


def _swi_thresholds(
    c: _Cohort, long: pd.DataFrame, structures: Any
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Control-derived abnormal-phase thresholds and the long table with MP-APT recomputed."""
    s = c.settings
    inputs = {}
    for path in c.paths:
        found = S.find_swi_inputs(path, s.atlas)
        if found is not None:
            inputs[_acq_key(G.read_tsv(path))] = found
    participants = c.participants
    controls = set(
        participants.loc[
            participants[s.group_column].astype(str) == s.control_label, "participant_id"
        ]
    ) - set(c.exclusions)
    ctrl_inputs = [v for k, v in inputs.items() if k[0] in controls]
    if len(ctrl_inputs) < 2:
        LOGGER.warning(
            "fewer than 2 controls with a phase-iron map: MP-APT kept from "
            "the participant level (fixed threshold)"
        )
        return long, None
    thresholds = S.control_thresholds(ctrl_inputs, structures)
    return S.recompute_mpapt(long, inputs, thresholds, structures), thresholds


def _write_cohort_tables(
    c: _Cohort, long: pd.DataFrame, lesions: pd.DataFrame | None, thresholds: pd.DataFrame | None
) -> None:
    """The long and wide cohort tables, lesions, exclusions and the APT thresholds."""
    long_cols = {**COLUMN_DESCRIPTIONS, **c.pcols}
    prefix = c.prefix
    write_table(
        long,
        Path(f"{prefix}_stats.tsv"),
        long_cols,
        "Regional measures of every participant (long), joined with "
        "participants.tsv; MP-APT recomputed with control-derived thresholds.",
    )
    wide = G.wide_table(long, c.participants)
    write_table(
        wide,
        Path(f"{prefix}_desc-wide_stats.tsv"),
        _wide_columns(wide, long_cols),
        "Regional measures, one row per acquisition, columns <structure>_<hemisphere>_<measure>.",
    )
    if lesions is not None:
        write_table(
            lesions,
            c.group_dir / "desc-lesions_stats.tsv",
            c.pcols,
            "Lesion tables of every participant, joined with participants.tsv.",
        )
    excl = pd.DataFrame(
        {"participant_id": list(c.exclusions), "reason": list(c.exclusions.values())}
    )
    write_table(
        excl,
        c.group_dir / "desc-excluded_participants.tsv",
        EXCLUSION_COLUMNS,
        "Participants left out of every group statistic (--exclude-participants).",
    )
    if thresholds is not None:
        write_table(
            thresholds,
            Path(f"{prefix}_desc-aptthresholds_stats.tsv"),
            S.THRESHOLD_COLUMNS,
            "Abnormal-phase thresholds derived from the healthy controls.",
        )


@dataclass
class _Statistics:
    data: pd.DataFrame
    measures: list[str]
    variables: list[str]
    groupdiff: pd.DataFrame
    clinical: pd.DataFrame
    zscores: pd.DataFrame


def _statistics(c: _Cohort, long: pd.DataFrame) -> _Statistics:
    """Group differences, clinical associations and z-scores, each written as a table."""
    design, prefix = c.design, c.prefix
    data = G.regional_analysis_data(long[~long["participant_id"].isin(list(c.exclusions))], design)
    measures = G.present_measures(data)
    variables = c.settings.clinical_columns or G.default_clinical_columns(c.participants, design)
    steps = (
        ("group differences (OLS)", "groupdiff", G.GROUPDIFF_COLUMNS,
         "Covariate-adjusted group differences (OLS).",
         lambda: G.group_differences(data, design, measures)),
        ("clinical associations", "clinical", G.CLINICAL_COLUMNS,
         "Partial correlations with clinical variables in the patients.",
         lambda: G.clinical_associations(data, design, measures, variables)),
        ("normative z-scores", "zscores", G.ZSCORE_COLUMNS,
         "z-scores of every participant against the controls.",
         lambda: G.normative_zscores(data, design, measures)),
    )  # fmt: skip
    tables = []
    for step, desc, columns, description, compute in steps:
        with _step(step, c.timings):
            tables.append(compute())
            write_table(tables[-1], Path(f"{prefix}_desc-{desc}_stats.tsv"), columns, description)
    groupdiff, clinical, zscores = tables
    return _Statistics(data, measures, variables, groupdiff, clinical, zscores)


def _structures(config: Config, s: GroupSettings, atlas: Any) -> Any:
    if atlas is not None:
        return atlas.structures
    if s.atlas.upper() == "AAL3":
        return aal3_structures()
    return _load_atlas(config, s.atlas).structures


def run_group_level(config: Config, *, atlas: Any = None) -> int:
    """Run the group level; return 0 or raise a :class:`bids_qsm.errors.BidsQsmError`.

    ``atlas`` (an :class:`~bids_qsm.atlas.registry.Atlas`) overrides loading the configured
    atlas (tests use a small one). Raises :class:`InputMissingError` (66) when no participant
    output exists yet and :class:`InputDataError` (65) when ``participants.tsv`` lacks the
    group column or the control label.
    """
    t_start = time.perf_counter()
    s = GroupSettings.from_config(config)
    c = _resolve_cohort(s)
    timings = c.timings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with _step("gather tables", timings):
            long = G.gather_tables(c.paths, c.participants)
            lesion_paths = G.find_lesion_tables(s.output_dir)
            lesions = G.gather_tables(lesion_paths, c.participants) if lesion_paths else None
        structures = _structures(config, s, atlas)
        with _step("SWI thresholds from controls, MP-APT", timings):
            long, thresholds = _swi_thresholds(c, long, structures)
        with _step("write cohort tables", timings):
            _write_cohort_tables(c, long, lesions, thresholds)
        st = _statistics(c, long)
        vox = None
        if s.voxelwise:
            with _step("voxelwise GLM", timings):
                vox = _voxelwise(config, s, st.data, c.design, c.paths, c.group_dir, atlas)

        with _step("longitudinal mixed models", timings):
            longitudinal = run_longitudinal_group(s, c.participants, c.design, c.exclusions)

    with _step("report", timings):
        from bids_qsm.reports.group_report import GroupCohort, write_group_report

        write_group_report(
            c.group_dir,
            atlas_name=s.atlas,
            design=c.design,
            data=st.data,
            groupdiff=st.groupdiff,
            clinical=st.clinical,
            thresholds=thresholds,
            voxelwise=vox,
            settings={
                "n_permutations": s.n_permutations if s.voxelwise else 0,
                "measures": st.measures,
                "clinical_columns": st.variables,
            },
            timings=timings,
            cohort=GroupCohort(
                participants=c.participants,
                long=long,
                zscores=st.zscores,
                lesions=lesions,
                exclusions=c.exclusions,
                output_dir=s.output_dir,
            ),
        )
        add_group_section(c.group_dir, longitudinal)
    LOGGER.info(
        "group level finished in %.1f s (%s)",
        time.perf_counter() - t_start,
        ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()),
    )
    return 0


@dataclass
class VoxelwiseOutput:
    """What the report needs from the voxelwise step."""

    results: list
    mask_img: nib.Nifti1Image
    template_img: nib.Nifti1Image
    template_name: str
    n: int
    files: list[Path]


def _voxelwise(
    config: Config,
    s: GroupSettings,
    data: pd.DataFrame,
    design: G.Design,
    paths: list[Path],
    group_dir: Path,
    atlas: Any,
) -> VoxelwiseOutput | None:
    from bids_qsm.stats.voxelwise import deep_gm_mask, voxelwise_glm, warp_chimap, write_voxelwise

    atlas = atlas if atlas is not None else _load_atlas(config, s.atlas)
    tpl = atlas.template_name
    per_acq = {_acq_key(G.read_tsv(p)): p for p in paths}
    rows = data.drop_duplicates("participant_id")
    cache = (s.work_dir or Path(tempfile.gettempdir()) / f"bids-qsm-{os.getuid()}") / "group"
    images, keep = [], []
    for idx, row in rows.iterrows():
        key = (row["participant_id"], row["session_id"], row["acq"], row["run"])
        d = Derivatives.from_table(per_acq[key], s.atlas)
        chimap = d.path("chi")
        xfm = d.xfm("GRE", tpl)
        if not (chimap.is_file() and xfm.is_file()):
            LOGGER.warning(
                "voxelwise: %s lacks %s",
                row["participant_id"],
                chimap.name if not chimap.is_file() else xfm.name,
            )
            continue
        out = cache / f"{d.source_prefix}_space-{tpl}_Chimap.nii.gz"
        if not (
            out.is_file()
            and out.stat().st_mtime >= max(chimap.stat().st_mtime, xfm.stat().st_mtime)
        ):
            atomic_save_nifti(warp_chimap(chimap, xfm, atlas), out)
        images.append(out)
        keep.append(idx)
    sub = rows.loc[keep].dropna(subset=[design.group_column, *design.covariates])
    images = [img for img, idx in zip(images, keep, strict=True) if idx in sub.index]
    X = G.design_matrix(sub, _without_volume(design))
    counts = sub[design.group_column].astype(str).value_counts()
    if len(sub) <= X.shape[1] + 1 or counts.get(design.control_label, 0) < 2:
        LOGGER.warning("voxelwise analysis skipped: %d usable Chimaps", len(sub))
        return None
    contrasts = {k: v for k, v in design.contrasts.items() if v in X.columns}
    mask = deep_gm_mask(atlas.labels_img, atlas.structures)
    results = voxelwise_glm(
        images,
        X,
        contrasts,
        mask,
        n_permutations=s.n_permutations,
        n_jobs=max(1, s.nprocs),
        random_state=s.random_seed,
    )
    files = write_voxelwise(results, mask, group_dir, tpl)
    for r in results:
        LOGGER.info(
            "voxelwise %s: %d of %d voxels at q < 0.05", r.contrast, r.n_significant_q05, r.n_voxels
        )
    return VoxelwiseOutput(results, mask, atlas.template_img, tpl, len(sub), files)


def _without_volume(design: G.Design) -> G.Design:
    return G.Design(
        design.group_column,
        design.control_label,
        list(design.case_labels),
        list(design.covariates),
        False,
        list(design.skipped),
    )


__all__ = ["GroupSettings", "VoxelwiseOutput", "run_group_level", "write_table"]

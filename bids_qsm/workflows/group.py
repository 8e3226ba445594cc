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
from bids_qsm.bids.writers import atomic_path, atomic_save_nifti, atomic_write_json
from bids_qsm.errors import InputMissingError
from bids_qsm.logging_setup import heartbeat
from bids_qsm.stats import group as G
from bids_qsm.stats import group_swi as S
from bids_qsm.stats.effects import read_exclusions
from bids_qsm.stats.regional import COLUMN_DESCRIPTIONS

LOGGER = logging.getLogger("bids_qsm.group")

EXCLUSION_COLUMNS: dict[str, dict[str, str]] = {
    "participant_id": {"Description": "Participant left out of the group statistics."},
    "reason": {"Description": "Why (from the exclusion TSV, or --exclude-participants)."},
}


# ----------------------------------------------------------------------------- settings
@dataclass
class GroupSettings:
    """The settings the group level reads from the run configuration."""

    bids_dir: Path
    output_dir: Path
    work_dir: Path | None = None
    covariates: list[str] = field(default_factory=lambda: ["age", "sex"])
    clinical_columns: list[str] | None = None  # None / empty: numeric participants columns
    group_column: str = "group"
    control_label: str = "HC"
    adjust_volume: bool = True
    voxelwise: bool = True
    n_permutations: int = 1000
    nprocs: int = 1
    atlas: str = "AAL3"
    random_seed: int = 0
    exclude_participants: list[str] = field(default_factory=list)

    @classmethod
    def from_config(cls, config: Any) -> GroupSettings:
        """Read :class:`bids_qsm.config.Config` (sections) or any flat object with the names."""

        def get(name: str, *sections: str, default: Any = None) -> Any:
            for sec in sections:
                obj = getattr(config, sec, None)
                if obj is not None and getattr(obj, name, None) is not None:
                    return getattr(obj, name)
            value = getattr(config, name, None)
            return default if value is None else value

        wf = getattr(config, "workflow", None)
        atlas = get("atlas", "workflow", default="AAL3")
        if (
            wf is not None
            and getattr(wf, "custom_atlas", False)
            and getattr(wf, "atlas_name", None)
        ):
            atlas = wf.atlas_name
        clinical = get("clinical_columns", "group")
        return cls(
            bids_dir=Path(get("bids_dir", "execution")),
            output_dir=Path(get("output_dir", "execution")),
            work_dir=(Path(w) if (w := get("work_dir", "execution")) else None),
            covariates=list(get("covariates", "group", default=["age", "sex"])),
            clinical_columns=list(clinical) if clinical else None,
            group_column=str(get("group_column", "group", default="group")),
            control_label=str(get("control_label", "group", default="HC")),
            adjust_volume=bool(get("adjust_volume", "group", default=True)),
            voxelwise=bool(get("voxelwise", "group", default=True)),
            n_permutations=int(get("n_permutations", "group", default=1000)),
            nprocs=int(get("nprocs", "nipype", default=os.cpu_count() or 1)),
            atlas=str(atlas),
            random_seed=int(get("random_seed", "execution", default=0)),
            exclude_participants=[
                str(x) for x in (get("exclude_participants", "group", default=[]) or [])
            ],
        )


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


def _load_atlas(config: Any, name: str):  # -> bids_qsm.atlas.registry.Atlas
    from bids_qsm.atlas.registry import load_atlas, load_custom_atlas

    wf = getattr(config, "workflow", None)
    if wf is not None and getattr(wf, "custom_atlas", False):
        return load_custom_atlas(wf.atlas_labels, wf.atlas_table, wf.atlas_template, name)
    return load_atlas(name)


def _acq_key(df: pd.DataFrame) -> tuple[str, str, str, str]:
    row = df.iloc[0]
    return (
        G._with_sub(row["participant_id"]),
        str(row["session_id"]),
        str(row["acq"]),
        str(row["run"]),
    )


# ----------------------------------------------------------------------------- main
def run_group_level(config: Any, *, atlas: Any = None) -> int:
    """Run the group level; return 0 or raise a :class:`bids_qsm.errors.BidsQsmError`.

    ``atlas`` (an :class:`~bids_qsm.atlas.registry.Atlas`) overrides loading the configured
    atlas (tests use a small one). Raises :class:`InputMissingError` (66) when no participant
    output exists yet and :class:`InputDataError` (65) when ``participants.tsv`` lacks the
    group column or the control label.
    """
    t_start = time.perf_counter()
    s = GroupSettings.from_config(config)
    timings: dict[str, float] = {}
    group_dir = s.output_dir / "group"
    prefix = group_dir / f"seg-{s.atlas}"

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
    long_cols = {**COLUMN_DESCRIPTIONS, **pcols}
    LOGGER.info(
        "group: %d participant tables, groups %s vs %s, covariates %s%s",
        len(paths),
        "+".join(design.case_labels),
        design.control_label,
        design.covariates,
        " + volume" if design.use_volume else "",
    )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with _step("gather tables", timings):
            long = G.gather_tables(paths, participants)
            lesion_paths = G.find_lesion_tables(s.output_dir)
            lesions = G.gather_tables(lesion_paths, participants) if lesion_paths else None

        structures = (
            atlas.structures
            if atlas is not None
            else (
                aal3_structures()
                if s.atlas.upper() == "AAL3"
                else _load_atlas(config, s.atlas).structures
            )
        )
        thresholds = None
        with _step("SWI thresholds from controls, MP-APT", timings):
            inputs = {}
            for path in paths:
                found = S.find_swi_inputs(path, s.atlas)
                if found is not None:
                    inputs[_acq_key(G.read_tsv(path))] = found
            controls = set(
                participants.loc[
                    participants[s.group_column].astype(str) == s.control_label, "participant_id"
                ]
            ) - set(exclusions)
            ctrl_inputs = [v for k, v in inputs.items() if k[0] in controls]
            if len(ctrl_inputs) >= 2:
                thresholds = S.control_thresholds(ctrl_inputs, structures)
                long = S.recompute_mpapt(long, inputs, thresholds, structures)
            else:
                LOGGER.warning(
                    "fewer than 2 controls with a phase-iron map: MP-APT kept from "
                    "the participant level (fixed threshold)"
                )

        with _step("write cohort tables", timings):
            write_table(
                long,
                Path(f"{prefix}_stats.tsv"),
                long_cols,
                "Regional measures of every participant (long), joined with "
                "participants.tsv; MP-APT recomputed with control-derived thresholds.",
            )
            wide = G.wide_table(long, participants)
            write_table(
                wide,
                Path(f"{prefix}_desc-wide_stats.tsv"),
                _wide_columns(wide, long_cols),
                "Regional measures, one row per acquisition, columns "
                "<structure>_<hemisphere>_<measure>.",
            )
            if lesions is not None:
                write_table(
                    lesions,
                    group_dir / "desc-lesions_stats.tsv",
                    pcols,
                    "Lesion tables of every participant, joined with participants.tsv.",
                )
            excl = pd.DataFrame(
                {"participant_id": list(exclusions), "reason": list(exclusions.values())}
            )
            write_table(
                excl,
                group_dir / "desc-excluded_participants.tsv",
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

        data = G.regional_analysis_data(
            long[~long["participant_id"].isin(list(exclusions))], design
        )
        measures = G.present_measures(data)
        with _step("group differences (OLS)", timings):
            groupdiff = G.group_differences(data, design, measures)
            write_table(
                groupdiff,
                Path(f"{prefix}_desc-groupdiff_stats.tsv"),
                G.GROUPDIFF_COLUMNS,
                "Covariate-adjusted group differences (OLS).",
            )
        with _step("clinical associations", timings):
            variables = s.clinical_columns or G.default_clinical_columns(participants, design)
            clinical = G.clinical_associations(data, design, measures, variables)
            write_table(
                clinical,
                Path(f"{prefix}_desc-clinical_stats.tsv"),
                G.CLINICAL_COLUMNS,
                "Partial correlations with clinical variables in the patients.",
            )
        with _step("normative z-scores", timings):
            zscores = G.normative_zscores(data, design, measures)
            write_table(
                zscores,
                Path(f"{prefix}_desc-zscores_stats.tsv"),
                G.ZSCORE_COLUMNS,
                "z-scores of every participant against the controls.",
            )

        vox = None
        if s.voxelwise:
            with _step("voxelwise GLM", timings):
                vox = _voxelwise(config, s, data, design, paths, group_dir, atlas)

        with _step("longitudinal mixed models", timings):  # issue 17
            from bids_qsm.workflows.longitudinal_group import run_longitudinal_group

            longitudinal = run_longitudinal_group(s, participants, design, exclusions)

    with _step("report", timings):
        from bids_qsm.reports.group_report import GroupCohort, write_group_report

        write_group_report(
            group_dir,
            atlas_name=s.atlas,
            design=design,
            data=data,
            groupdiff=groupdiff,
            clinical=clinical,
            thresholds=thresholds,
            voxelwise=vox,
            settings={
                "n_permutations": s.n_permutations if s.voxelwise else 0,
                "measures": measures,
                "clinical_columns": variables,
            },
            timings=timings,
            cohort=GroupCohort(
                participants=participants,
                long=long,
                zscores=zscores,
                lesions=lesions,
                exclusions=exclusions,
                output_dir=s.output_dir,
            ),
        )
        from bids_qsm.reports.longitudinal import add_group_section  # issue 17

        add_group_section(group_dir, longitudinal)  # issue 17
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
    config: Any,
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
        src = S.source_prefix(per_acq[key], s.atlas)
        chimap = Path(f"{src}_Chimap.nii.gz")
        xfm = Path(f"{src}_from-GRE_to-{tpl}_mode-image_xfm.h5")
        if not (chimap.is_file() and xfm.is_file()):
            LOGGER.warning(
                "voxelwise: %s lacks %s",
                row["participant_id"],
                chimap.name if not chimap.is_file() else xfm.name,
            )
            continue
        out = cache / f"{Path(src).name}_space-{tpl}_Chimap.nii.gz"
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

"""Typed settings of one bids-qsm run.

The settings are grouped in sections, in the style of fMRIPrep's ``config`` module:

``execution``
    where the data are, which subjects/sessions, BIDS handling, logging, run identity.
``nipype``
    how the workflow engine runs (processes, threads, memory, plugin).
``workflow``
    every algorithm choice and parameter of the participant level.
``group``
    the group level (covariates, clinical columns, permutations).

Values come from (lowest to highest priority) the dataclass defaults, a TOML file given with
``--config-file`` (same sections and keys as :meth:`Config.to_dict`) and the command line.
Each run writes its full configuration as TOML to
``OUTPUT_DIR/sub-<label>/log/<run-id>/bids_qsm.toml`` (``OUTPUT_DIR/group/log/<run-id>/`` at the
group level), so that any output can be traced to the exact settings that produced it.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import tomli_w

from bids_qsm import __version__
from bids_qsm.errors import InputMissingError, UsageError
from bids_qsm.methods import (  # noqa: F401 (re-exported: defined once in the core)
    BG_REMOVAL_METHODS,
    DEFAULT_BG_REMOVAL,
    DEFAULT_INVERSION,
    DEFAULT_REFERENCE,
    DEFAULT_SWI_HIGHPASS,
    DEFAULT_UNWRAPPING,
    INVERSION_METHODS,
    REFERENCE_REGIONS,
    SWI_HIGHPASS_METHODS,
    UNWRAPPING_METHODS,
    QSMMethodChoices,
)
from bids_qsm.specs import AtlasSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

#: The two analysis levels of the BIDS Apps contract.
ANALYSIS_LEVELS: tuple[str, str] = ("participant", "group")


def new_run_id() -> str:
    """A unique, sortable run identifier: UTC timestamp plus a short random suffix."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}_{uuid.uuid4().hex[:8]}"


@dataclass
class ExecutionConfig:
    """Inputs, outputs, selection and run-time behaviour."""

    bids_dir: Path | None = None
    output_dir: Path | None = None
    analysis_level: str = "participant"
    work_dir: Path | None = None
    participant_label: list[str] = field(default_factory=list)
    session_label: list[str] = field(default_factory=list)
    bids_filter_file: Path | None = None
    #: Parsed content of ``bids_filter_file`` (query name -> pybids entity filters).
    bids_filters: dict[str, dict[str, Any]] = field(default_factory=dict)
    bids_database_dir: Path | None = None
    skip_bids_validation: bool = False
    lesion_masks: Path | None = None
    brain_mask_source: Path | None = None
    #: User field maps on the GRE grid replacing the phase (total, Hz) or also the background
    #: removal (local, ppm): ``*_desc-total_fieldmap.nii[.gz]`` / ``*_desc-local_fieldmap...``.
    total_field_source: Path | None = None
    local_field_source: Path | None = None
    b0_tesla: float | None = None
    boilerplate_only: bool = False
    reports_only: bool = False
    verbosity: int = 0
    random_seed: int | None = None
    run_id: str = field(default_factory=new_run_id)
    #: Log folders of this run (one per subject, or the group folder); filled by the CLI.
    log_dirs: list[Path] = field(default_factory=list)
    version: str = __version__
    config_file: Path | None = None


@dataclass
class NipypeConfig:
    """Workflow engine settings."""

    nprocs: int | None = None
    omp_nthreads: int | None = None
    mem_mb: int | None = None
    stop_on_first_crash: bool = False
    #: Nipype plugin YAML file given with ``--use-plugin``.
    use_plugin: Path | None = None
    plugin: str = "MultiProc"
    plugin_args: dict[str, Any] = field(default_factory=dict)

    def get_plugin(self) -> dict[str, Any]:
        """``{"plugin": name, "plugin_args": {...}}`` ready for ``Workflow.run(**...)``."""
        args = dict(self.plugin_args)
        if self.plugin == "MultiProc":
            if self.nprocs is not None:
                args.setdefault("n_procs", self.nprocs)
            if self.mem_mb is not None:
                args.setdefault("memory_gb", self.mem_mb / 1024)
            args.setdefault("raise_insufficient", False)
        return {"plugin": self.plugin, "plugin_args": args}


@dataclass
class WorkflowConfig(QSMMethodChoices):
    """Algorithm choices and parameters of the participant level (all reported in sidecars)."""

    vsharp_radius_mm: float = 12.0
    swi_highpass: str = DEFAULT_SWI_HIGHPASS
    swi_mask_power: int = 4
    minip_thickness_mm: float = 8.0
    #: Abnormal-phase threshold (rad); None: derived from the healthy controls at group level.
    apt_threshold_rad: float | None = None
    atlas: str = "AAL3"
    atlas_labels: Path | None = None
    atlas_table: Path | None = None
    atlas_template: Path | None = None
    atlas_name: str | None = None
    skip_registration: bool = False
    sloppy: bool = False

    @property
    def custom_atlas(self) -> bool:
        """True when a custom atlas (labels, table, template, name) was given."""
        return self.atlas_labels is not None

    def atlas_spec(self) -> AtlasSpec:
        """The atlas of the run (custom when its files are given); ``.load()`` loads it once."""
        return AtlasSpec.from_workflow_config(self)

    def qsm_options(self) -> dict[str, Any]:
        """The :class:`bids_qsm.qsm.pipeline.QSMOptions` fields chosen by these settings."""
        return {
            "unwrapping": self.unwrapping,
            "bg_removal": self.bg_removal,
            "inversion": self.inversion,
            "reference": self.reference,
            "phase_sign": int(self.phase_sign),
            "vsharp_max_radius_mm": float(self.vsharp_radius_mm),
        }

    def swi_options(self) -> dict[str, Any]:
        """The :class:`bids_qsm.swi.pipeline.SWIOptions` fields chosen by these settings."""
        opts: dict[str, Any] = {
            "highpass": self.swi_highpass,
            # Gaussian width: the SWIOptions default, in mm (chosen by measurement, see
            # docs/methods_swi.md); the sidecar records the value in voxels too
            "mask_power": int(self.swi_mask_power),
            "minip_thickness_mm": float(self.minip_thickness_mm),
        }
        if self.apt_threshold_rad is not None:
            opts["apt_threshold_rad"] = float(self.apt_threshold_rad)
        return opts


@dataclass
class GroupConfig:
    """Group-level statistics."""

    covariates: list[str] = field(default_factory=lambda: ["age", "sex"])
    clinical_columns: list[str] = field(default_factory=list)
    group_column: str = "group"
    control_label: str = "HC"
    voxelwise: bool = True
    n_permutations: int = 1000
    #: add the structure's own volume_mm3 (mL) to every regional model (left out when constant)
    adjust_volume: bool = True
    #: participants left out of the statistics: labels and/or TSV files (participant_id, reason)
    exclude_participants: list[str] = field(default_factory=list)


@dataclass
class GroupSettings:
    """The settings the group level reads from the run configuration (a flat view of the
    ``execution``, ``nipype``, ``workflow`` and ``group`` sections: see :meth:`from_config`)."""

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


SECTIONS: dict[str, type] = {
    "execution": ExecutionConfig,
    "nipype": NipypeConfig,
    "workflow": WorkflowConfig,
    "group": GroupConfig,
}


@dataclass
class Config:
    """All settings of one run."""

    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    nipype: NipypeConfig = field(default_factory=NipypeConfig)
    workflow: WorkflowConfig = field(default_factory=WorkflowConfig)
    group: GroupConfig = field(default_factory=GroupConfig)

    # ------------------------------------------------------------------ conversion
    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain TOML-able dictionary (paths as strings, ``None`` values left out)."""
        out: dict[str, dict[str, Any]] = {}
        for name in SECTIONS:
            section = getattr(self, name)
            values: dict[str, Any] = {}
            for f in dataclasses.fields(section):
                value = _to_plain(getattr(section, f.name))
                if value is not None:
                    values[f.name] = value
            out[name] = values
        return out

    def group_settings(self) -> GroupSettings:
        """The flat settings of the group level (:meth:`GroupSettings.from_config`)."""
        return GroupSettings.from_config(self)

    def to_toml(self) -> str:
        """The configuration as TOML text."""
        return tomli_w.dumps(self.to_dict())

    def save(self, path: Path) -> Path:
        """Write the configuration as TOML to ``path`` (atomically) and return the path."""
        from bids_qsm.bids.writers import atomic_write_text

        atomic_write_text(Path(path), self.to_toml())
        return Path(path)

    def update(self, values: dict[str, dict[str, Any]], source: str = "settings") -> None:
        """Set fields from ``{section: {key: value}}``, converting types; unknown keys -> 64."""
        for section_name, section_values in values.items():
            if section_name not in SECTIONS:
                raise UsageError(
                    f"unknown section [{section_name}] (expected one of {', '.join(SECTIONS)})",
                    source,
                )
            if not isinstance(section_values, dict):
                raise UsageError(f"[{section_name}] must be a table", source)
            section = getattr(self, section_name)
            hints = get_type_hints(type(section))
            names = {f.name for f in dataclasses.fields(section)}
            for key, value in section_values.items():
                if key not in names:
                    raise UsageError(f"unknown setting {section_name}.{key}", source)
                try:
                    converted = _convert(value, hints[key])
                except (TypeError, ValueError) as exc:
                    raise UsageError(f"{section_name}.{key}: {exc}", source) from exc
                setattr(section, key, converted)

    @classmethod
    def from_dict(cls, values: dict[str, dict[str, Any]]) -> Config:
        """Build a configuration from ``{section: {key: value}}`` over the defaults."""
        config = cls()
        config.update(values)
        return config

    @classmethod
    def from_toml(cls, path: Path) -> Config:
        """Read a configuration saved by :meth:`save` (or written by a user)."""
        return cls.from_dict(load_toml(path))


def load_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML settings file; missing -> exit 66, malformed -> exit 64."""
    path = Path(path)
    if not path.is_file():
        raise InputMissingError("configuration file not found", path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"invalid TOML: {exc}", path) from exc


def _to_plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _convert(value: Any, hint: Any) -> Any:
    """Convert a TOML/CLI value to the annotated type (``X | None``, Path, list, scalars)."""
    args = get_args(hint)
    origin = get_origin(hint)
    if type(None) in args:  # Optional[...]
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0])
    if hint is Path:
        if not isinstance(value, (str, Path)):
            raise TypeError(f"expected a path, got {value!r}")
        return Path(value)
    if origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected a list, got {value!r}")
        (item,) = args or (str,)
        return [_convert(v, item) for v in value]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise TypeError(f"expected a table, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise TypeError(f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise TypeError(f"expected an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError(f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise TypeError(f"expected a string, got {value!r}")
        return str(value)
    return value

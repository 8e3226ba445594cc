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
import sys
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import tomli_w

from bids_qsm import __version__
from bids_qsm.errors import InputMissingError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

#: The two analysis levels of the BIDS Apps contract.
ANALYSIS_LEVELS: tuple[str, str] = ("participant", "group")

UNWRAPPING_METHODS = ("quality", "laplacian")
BG_REMOVAL_METHODS = ("vsharp", "pdf", "lbv")
INVERSION_METHODS = ("rts", "tikhonov", "tv", "tkd", "wtv")  # issue 13: wtv
REFERENCE_REGIONS = ("brain", "csf", "none")
SWI_HIGHPASS_METHODS = ("gaussian", "homodyne")


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
class WorkflowConfig:
    """Algorithm choices and parameters of the participant level (all reported in sidecars)."""

    unwrapping: str = "quality"
    bg_removal: str = "lbv"
    inversion: str = "wtv"  # issue 13 (was "rts")
    reference: str = "brain"
    phase_sign: int = 1
    vsharp_radius_mm: float = 12.0
    swi_highpass: str = "gaussian"
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

    @property
    def custom_atlas(self) -> bool:
        """True when a custom atlas (labels, table, template, name) was given."""
        return self.atlas_labels is not None


@dataclass
class GroupConfig:
    """Group-level statistics."""

    covariates: list[str] = field(default_factory=lambda: ["age", "sex"])
    clinical_columns: list[str] = field(default_factory=list)
    group_column: str = "group"
    control_label: str = "HC"
    voxelwise: bool = True
    n_permutations: int = 1000
    #: participants left out of the statistics: labels and/or TSV files (participant_id, reason)
    exclude_participants: list[str] = field(default_factory=list)


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

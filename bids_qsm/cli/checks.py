"""Checks of a parsed configuration: absolute paths, cross-option consistency, option files.

Called by :func:`bids_qsm.cli.parser.parse_args` once defaults, ``--config-file`` and the
command line are merged. Bad values raise :class:`bids_qsm.errors.UsageError` (exit 64), a
missing file or folder :class:`bids_qsm.errors.InputMissingError` (exit 66).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bids_qsm.config import Config
from bids_qsm.errors import InputMissingError, UsageError
from bids_qsm.methods import WORKFLOW_CHOICES


def absolute_paths(config: Config) -> None:
    """Make every path setting absolute (relative to the current folder), in place.

    Nipype runs each step in its own working folder, so a relative ``--lesion-masks`` (or
    atlas, mask folder, filter file...) would otherwise be looked up there.
    """
    for section_name in ("execution", "nipype", "workflow", "group"):
        section = getattr(config, section_name)
        for name, value in vars(section).items():
            if isinstance(value, Path):
                setattr(section, name, Path(os.path.abspath(value.expanduser())))


def _check_consistency(config: Config) -> None:
    """Cross-option checks and loading of option files (filter file, plugin YAML)."""
    wf = config.workflow
    for name, allowed in WORKFLOW_CHOICES.items():
        if getattr(wf, name) not in allowed:
            raise UsageError(
                f"workflow.{name} = {getattr(wf, name)!r} is not one of {', '.join(allowed)}"
            )
    if wf.phase_sign not in (1, -1):
        raise UsageError(f"workflow.phase_sign must be 1 or -1, got {wf.phase_sign}")

    custom = {
        "--atlas-labels": wf.atlas_labels,
        "--atlas-table": wf.atlas_table,
        "--atlas-template": wf.atlas_template,
        "--atlas-name": wf.atlas_name,
    }
    given = [k for k, v in custom.items() if v is not None]
    if given and len(given) != len(custom):
        missing = [k for k, v in custom.items() if v is None]
        raise UsageError(
            f"a custom atlas needs all of --atlas-labels, --atlas-table, --atlas-template and "
            f"--atlas-name; missing {', '.join(missing)}"
        )
    if given:
        for option in ("--atlas-labels", "--atlas-table", "--atlas-template"):
            if not Path(custom[option]).is_file():
                raise InputMissingError(f"{option} file not found", custom[option])
        if not str(wf.atlas_name).isalnum():
            raise UsageError(f"--atlas-name must be letters and digits only, got {wf.atlas_name!r}")
        wf.atlas = str(wf.atlas_name)

    ex = config.execution
    for option, path in (
        ("--lesion-masks", ex.lesion_masks),
        ("--brain-mask-source", ex.brain_mask_source),
        ("--total-field-source", ex.total_field_source),
        ("--local-field-source", ex.local_field_source),
    ):
        if path is not None and not Path(path).is_dir():
            raise InputMissingError(f"{option} folder not found", path)

    if ex.total_field_source is not None and ex.local_field_source is not None:
        raise UsageError("give --total-field-source or --local-field-source, not both")

    if ex.bids_filter_file is not None:
        ex.bids_filters = load_bids_filters(ex.bids_filter_file)

    nip = config.nipype
    if nip.use_plugin is not None:
        plugin, plugin_args = load_plugin_file(nip.use_plugin)
        nip.plugin = plugin
        nip.plugin_args = plugin_args
    if nip.omp_nthreads is not None and nip.nprocs is not None and nip.omp_nthreads > nip.nprocs:
        raise UsageError(
            f"--omp-nthreads ({nip.omp_nthreads}) cannot exceed --nprocs ({nip.nprocs})"
        )


def _parsed_file(
    path: Path, name: str, invalid: str, parse: Callable[[str], Any], errors: Any
) -> Any:
    """``parse`` of the text of the ``name`` file ``path``: missing -> :class:`InputMissingError`
    (66), ``errors`` while parsing -> :class:`UsageError` (64) "invalid <invalid>: ..."."""
    path = Path(path)
    if not path.is_file():
        raise InputMissingError(f"{name} not found", path)
    try:
        return parse(path.read_text())
    except errors as exc:
        raise UsageError(f"invalid {invalid}: {exc}", path) from exc


def load_bids_filters(path: Path) -> dict[str, dict[str, Any]]:
    """Read a ``--bids-filter-file`` (missing -> 66; not a JSON object of objects -> 64)."""
    errors = (json.JSONDecodeError, UnicodeDecodeError)
    data = _parsed_file(path, "BIDS filter file", "JSON in BIDS filter file", json.loads, errors)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise UsageError(
            'BIDS filter file must be a JSON object of objects, e.g. {"megre": {"acquisition": '
            '"wb"}}',
            path,
        )
    return data


def load_plugin_file(path: Path) -> tuple[str, dict[str, Any]]:
    """Read a Nipype plugin YAML (``plugin:`` name and optional ``plugin_args:``)."""
    import yaml

    errors = yaml.YAMLError
    data = _parsed_file(path, "Nipype plugin file", "YAML in plugin file", yaml.safe_load, errors)
    if not isinstance(data, dict) or not isinstance(data.get("plugin"), str):
        raise UsageError("plugin file must contain 'plugin: <Nipype plugin name>'", path)
    args = data.get("plugin_args") or {}
    if not isinstance(args, dict):
        raise UsageError("'plugin_args' must be a mapping", path)
    return data["plugin"], args

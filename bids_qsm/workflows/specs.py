"""Plain-dict forms of the objects Nipype nodes receive as inputs.

Nipype hashes node inputs to decide whether a node must re-run, so nodes take JSON-like
dicts (acquisitions, atlas choice) rather than live objects.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from pathlib import Path
from typing import Any

from bids_qsm.atlas.registry import Atlas


def acquisition_to_dict(acq: Any) -> dict[str, Any]:
    """A ``GreAcquisition`` as a dict of JSON-friendly values (paths as strings)."""

    def conv(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, list | tuple):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        return v

    out = {f.name: conv(getattr(acq, f.name)) for f in dataclasses.fields(acq)}
    out["source_prefix"] = acq.source_prefix
    return out


def acquisition_from_dict(d: dict[str, Any]) -> Any:
    """Inverse of :func:`acquisition_to_dict`."""
    from bids_qsm.bids.discovery import GreAcquisition

    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(GreAcquisition):
        if f.name not in d:
            continue
        v = d[f.name]
        if f.name.endswith("_files"):
            v = [Path(x) for x in v]
        elif f.name == "t1w" and v:
            v = Path(v)
        elif f.name == "lesion_masks":
            v = {k: Path(x) for k, x in v.items()}
        kwargs[f.name] = v
    return GreAcquisition(**kwargs)


def atlas_spec_from_config(workflow_cfg: Any) -> dict[str, str]:
    """The atlas choice of a :class:`~bids_qsm.config.WorkflowConfig` as a plain dict."""
    if workflow_cfg.custom_atlas:
        return {
            "name": str(workflow_cfg.atlas_name),
            "labels": str(workflow_cfg.atlas_labels),
            "table": str(workflow_cfg.atlas_table),
            "template": str(workflow_cfg.atlas_template),
        }
    return {"name": str(workflow_cfg.atlas)}


@lru_cache(maxsize=4)
def _atlas_cached(items: tuple[tuple[str, str], ...]) -> Atlas:
    from bids_qsm.atlas.registry import load_atlas, load_custom_atlas

    spec = dict(items)
    if "labels" in spec:
        return load_custom_atlas(
            Path(spec["labels"]), Path(spec["table"]), Path(spec["template"]), spec["name"]
        )
    return load_atlas(spec["name"])


def atlas_from_spec(spec: dict[str, str]) -> Atlas:
    """Load (once per process) the atlas a spec dict names."""
    return _atlas_cached(tuple(sorted(spec.items())))

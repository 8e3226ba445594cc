"""Plain-dict forms of the objects Nipype nodes receive as inputs, and the atlas choice.

Nipype hashes node inputs to decide whether a node must re-run, so nodes take JSON-like
dicts (acquisitions, atlas choice) rather than live objects. :class:`AtlasSpec` is the one
place the atlas choice of a run is resolved (built by
:meth:`bids_qsm.config.WorkflowConfig.atlas_spec`, loaded once per process by
:meth:`AtlasSpec.load`). A lower layer: imports nothing of ``bids_qsm.workflows``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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


@dataclass(frozen=True)
class AtlasSpec:
    """The atlas of a run: a built-in atlas by name, or a custom one (labels, table, template
    files and a name). Hashable, so :meth:`load` caches per spec."""

    name: str
    labels: str | None = None
    table: str | None = None
    template: str | None = None

    @property
    def custom(self) -> bool:
        """True for a custom atlas (files given)."""
        return self.labels is not None

    def to_dict(self) -> dict[str, str]:
        """The plain dict given to the Nipype nodes (``{"name"}`` or all four keys)."""
        if not self.custom:
            return {"name": self.name}
        return {
            "name": self.name,
            "labels": str(self.labels),
            "table": str(self.table),
            "template": str(self.template),
        }

    @classmethod
    def from_dict(cls, spec: dict[str, str]) -> AtlasSpec:
        """Inverse of :meth:`to_dict`."""
        if "labels" in spec:
            return cls(str(spec["name"]), spec["labels"], spec["table"], spec["template"])
        return cls(str(spec["name"]))

    @classmethod
    def from_workflow_config(cls, workflow_cfg: Any) -> AtlasSpec:
        """From a :class:`~bids_qsm.config.WorkflowConfig` (custom when its files are set)."""
        if workflow_cfg.custom_atlas:
            return cls(
                str(workflow_cfg.atlas_name),
                str(workflow_cfg.atlas_labels),
                str(workflow_cfg.atlas_table),
                str(workflow_cfg.atlas_template),
            )
        return cls(str(workflow_cfg.atlas))

    def load(self) -> Atlas:
        """The atlas (loaded once per process and spec)."""
        return _atlas_cached(self)


def atlas_spec_from_config(workflow_cfg: Any) -> dict[str, str]:
    """The atlas choice of a :class:`~bids_qsm.config.WorkflowConfig` as a plain dict."""
    return AtlasSpec.from_workflow_config(workflow_cfg).to_dict()


@lru_cache(maxsize=4)
def _atlas_cached(spec: AtlasSpec) -> Atlas:
    from bids_qsm.atlas.registry import load_atlas, load_custom_atlas

    if spec.custom:
        return load_custom_atlas(
            Path(spec.labels), Path(spec.table), Path(spec.template), spec.name
        )
    return load_atlas(spec.name)


def atlas_from_spec(spec: dict[str, str]) -> Atlas:
    """Load (once per process) the atlas a spec dict names."""
    return AtlasSpec.from_dict(spec).load()

"""The import layers of the package, checked on the source (every import, also inside functions).

Lower layers never import upper ones:

* the numerical core (``qsm``, ``swi``, ``atlas``, ``stats``) imports neither Nipype nor the
  interfaces, workflows or CLI;
* nothing outside ``bids_qsm.workflows`` and ``bids_qsm.cli`` imports ``bids_qsm.workflows``
  (the interfaces in particular);
* inside the workflows: the graph builders and the report writers import neither the scheduler
  nor the participant entry point, the scheduler does not import the entry point.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bids_qsm"


def _imports(path: Path) -> set[str]:
    """Every module a file imports (absolute names; relative imports resolved)."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def _modules(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (PACKAGE / f).rglob("*.py"))


def _offending(paths: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in paths:
        for name in sorted(_imports(path)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    return bad


def test_numerical_core_imports_no_nipype_nor_upper_layers() -> None:
    core = _modules("qsm", "swi", "atlas", "stats")
    assert len(core) > 20
    forbidden = ("nipype", "bids_qsm.interfaces", "bids_qsm.workflows", "bids_qsm.cli")
    assert _offending(core, forbidden) == []


def test_only_workflows_and_cli_import_workflows() -> None:
    lower = [
        p
        for p in PACKAGE.rglob("*.py")
        if p.relative_to(PACKAGE).parts[0] not in ("workflows", "cli")
    ]
    assert any(p.parts[-2] == "interfaces" for p in lower)
    assert _offending(lower, ("bids_qsm.workflows",)) == []


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("participant_graph", ("participant", "scheduler", "reporting", "group")),
        ("reporting", ("participant", "participant_graph", "scheduler", "group")),
        ("errors_bridge", ("participant", "participant_graph", "scheduler", "reporting")),
        ("scheduler", ("participant", "group")),
        ("group", ("participant", "participant_graph", "scheduler")),
    ],
)
def test_workflow_modules_import_no_upper_module(module: str, forbidden: tuple[str, ...]) -> None:
    path = PACKAGE / "workflows" / f"{module}.py"
    names = tuple(f"bids_qsm.workflows.{m}" for m in forbidden)
    assert _offending([path], names) == []


def test_the_checker_sees_function_local_and_relative_imports() -> None:
    """The walk finds an import hidden inside a function and resolves ``from .. import``."""
    names = _imports(PACKAGE / "workflows" / "participant.py")
    assert "bids_qsm.workflows.scheduler" in names
    assert "bids_qsm.errors" in _imports(PACKAGE / "qsm" / "stages.py")  # `from .. import errors`
    assert "bids_qsm.atlas.registry" in _imports(PACKAGE / "specs.py")  # inside a function

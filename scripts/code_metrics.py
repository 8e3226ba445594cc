#!/usr/bin/env python3
"""List the modules over 500 lines and the functions over 100 lines in bids_qsm/.

The project's size targets (docs/CONVENTIONS): no module over ``--max-module`` lines and no
function over ``--max-function`` lines.  Exempt by design: the citation data
(``reports/references.py``) and the argparse table (``cli/parser.py:build_parser``).

Usage: ``python scripts/code_metrics.py [--max-module 500] [--max-function 100] [--check]``.
Prints one table per target; with ``--check`` exits 1 when anything outside the exemptions is
over a limit.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bids_qsm"
EXEMPT_MODULES = {"bids_qsm/reports/references.py"}
EXEMPT_FUNCTIONS = {("bids_qsm/cli/parser.py", "build_parser")}


def module_lengths(package: Path = PACKAGE) -> list[tuple[str, int]]:
    """(path relative to the repository, number of lines) of every module under ``package``."""
    rows = []
    for path in sorted(package.rglob("*.py")):
        n_lines = len(path.read_text(encoding="utf-8").splitlines())
        rows.append((path.relative_to(ROOT).as_posix(), n_lines))
    return rows


def function_lengths(package: Path = PACKAGE) -> list[tuple[str, str, int]]:
    """(module, qualified function name, lines from ``def`` to the last line) of every function."""
    rows = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = path.relative_to(ROOT).as_posix()

        def visit(node: ast.AST, prefix: str, rel: str = rel) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                    name = f"{prefix}{child.name}"
                    start = min([d.lineno for d in child.decorator_list] + [child.lineno])
                    rows.append((rel, name, child.end_lineno - start + 1))
                    visit(child, f"{name}.")
                elif isinstance(child, ast.ClassDef):
                    visit(child, f"{prefix}{child.name}.")

        visit(tree, "")
    return rows


def over_limits(max_module: int = 500, max_function: int = 100) -> tuple[list, list]:
    """The non-exempt modules and functions over the limits, longest first."""
    modules = [
        (path, n) for path, n in module_lengths() if n > max_module and path not in EXEMPT_MODULES
    ]
    functions = [
        (path, name, n)
        for path, name, n in function_lengths()
        if n > max_function and (path, name) not in EXEMPT_FUNCTIONS
    ]
    modules.sort(key=lambda row: -row[-1])
    functions.sort(key=lambda row: -row[-1])
    return modules, functions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-module", type=int, default=500, help="lines per module")
    parser.add_argument("--max-function", type=int, default=100, help="lines per function")
    parser.add_argument("--check", action="store_true", help="exit 1 when over a limit")
    args = parser.parse_args(argv)
    modules, functions = over_limits(args.max_module, args.max_function)
    print(f"modules over {args.max_module} lines: {len(modules)}")
    for path, n in modules:
        print(f"  {n:5d}  {path}")
    print(f"functions over {args.max_function} lines: {len(functions)}")
    for path, name, n in functions:
        print(f"  {n:5d}  {path}:{name}")
    return 1 if args.check and (modules or functions) else 0


if __name__ == "__main__":
    sys.exit(main())

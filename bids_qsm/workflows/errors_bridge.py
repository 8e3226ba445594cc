"""Carry the product's errors across the Nipype node boundary.

Inside a node, a bad input raises a :class:`bids_qsm.errors.BidsQsmError` subclass (e.g.
``InputDataError``, exit 65). Nipype catches it in the worker, writes the traceback into a crash
file and re-raises a generic ``RuntimeError`` whose text is a traceback, so the class, the exit
code and the one-line message would be lost. This module reads them back from the crash files
of the run (their last traceback line is ``bids_qsm.errors.<Class>: <message>``, always one
line), names the source file when the message does not, and picks the most severe failure of
a run over several subjects. It works with every plugin that writes crash files (MultiProc,
Linear, ...), because it reads files rather than in-memory exception objects.

Severity (most severe first), used for the exit code of a run over several subjects:
73 (output cannot be written: every subject is affected), 1 (unexpected failure), 66 (input
missing), 65 (bad input data), then any other code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bids_qsm import errors
from bids_qsm.errors import BidsQsmError, ExitCode

#: Exit codes from the most to the least severe (see the module docstring).
SEVERITY: tuple[int, ...] = (
    ExitCode.CANNOT_CREATE_OUTPUT,
    ExitCode.FAILURE,
    ExitCode.INPUT_MISSING,
    ExitCode.DATA_ERROR,
)

_ERROR_CLASSES: dict[str, type[BidsQsmError]] = {
    name: obj
    for name, obj in vars(errors).items()
    if isinstance(obj, type) and issubclass(obj, BidsQsmError)
}
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*): (.*)$")
#: A message "names a file" when it holds a path or a file name with a known extension.
#: errno ENOSPC, EROFS, EDQUOT: the work dir or OUTPUT_DIR cannot be written (73).
_NO_SPACE = re.compile(r"\[Errno (28|30|122)\]")
_FILE_TOKEN = re.compile(r"/|\.(nii|json|tsv|gz|txt|toml|h5|mat|png)\b")


@dataclass
class NodeFailure:
    """What one crash file says: node, exception class and message, exit code."""

    node: str
    error_type: str
    message: str
    exit_code: int
    crash_file: Path

    @property
    def step(self) -> str:
        """The node's own name (last component), e.g. ``qsm``."""
        return self.node.rsplit(".", 1)[-1]


def read_crash_file(path: Path) -> NodeFailure:
    """Parse a Nipype text crash file (``crashfile_format = txt``)."""
    text = Path(path).read_text(errors="replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    node = lines[0].split(":", 1)[1].strip() if lines and lines[0].startswith("Node:") else "?"
    error_type, message = "Error", lines[-1] if lines else "unknown failure"
    for line in reversed(lines):
        m = _EXCEPTION_LINE.match(line)
        if m and not line.startswith(("File ", "Node:", "Working directory:")):
            error_type, message = m.groups()
            break
    name = error_type.rsplit(".", 1)[-1]
    cls = _ERROR_CLASSES.get(name) if error_type.startswith("bids_qsm.errors.") else None
    code = int(cls.exit_code) if cls is not None else int(ExitCode.FAILURE)
    if cls is None:
        if _NO_SPACE.search(message) and name in ("OSError", "IOError"):
            code = int(ExitCode.CANNOT_CREATE_OUTPUT)  # disk full, read-only, quota (work dir)
        elif name == "MemoryError":
            message = f"{message} out of memory: lower --nprocs or --omp-nthreads".strip()
        message = f"{name}: {message}"
    return NodeFailure(node, error_type, message, code, Path(path))


def _source_for(node: str, sources: Mapping[str, Path]) -> Path | None:
    """The raw file of the acquisition whose sub-workflow holds ``node``."""
    parts = node.split(".")
    for part in parts:
        if part in sources:
            return sources[part]
    return next(iter(sources.values()), None) if len(sources) == 1 else None


def failure_to_error(failure: NodeFailure, sources: Mapping[str, Path]) -> BidsQsmError:
    """The product error for a node failure, its message naming a file."""
    message = " ".join(failure.message.split())
    source = _source_for(failure.node, sources)
    if source is not None and not _FILE_TOKEN.search(message):
        message = f"{source}: {message}"
    if failure.exit_code == ExitCode.FAILURE:
        message = f"{message} (step {failure.step}; traceback in {failure.crash_file})"
    cls = _ERROR_CLASSES.get(failure.error_type.rsplit(".", 1)[-1], BidsQsmError)
    if failure.exit_code == ExitCode.FAILURE:
        cls = BidsQsmError
    error = cls(message)
    error.exit_code = ExitCode(failure.exit_code)
    return error


def subject_error(
    subject: str, crash_dir: Path, sources: Mapping[str, Path], exc: BaseException
) -> BidsQsmError:
    """The most severe error of one subject's failed workflow run.

    ``crash_dir`` holds this run's crash files, ``sources`` maps the name of each acquisition's
    sub-workflow to its first raw file, ``exc`` is what ``Workflow.run`` raised (used when no
    crash file was written, e.g. a failure of the plugin itself).
    """
    crash_files = sorted(Path(crash_dir).glob("crash-*.txt")) if Path(crash_dir).is_dir() else []
    found = [failure_to_error(read_crash_file(p), sources) for p in crash_files]
    if found:
        return most_severe(found)
    if isinstance(exc, BidsQsmError):
        return exc
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return BidsQsmError(f"sub-{subject}: {type(exc).__name__}: {first}")


def severity(code: int) -> int:
    """Rank of an exit code (0 = most severe)."""
    return SEVERITY.index(code) if code in SEVERITY else len(SEVERITY)


def most_severe(found: Sequence[BidsQsmError]) -> BidsQsmError:
    """The first of the most severe errors (see :data:`SEVERITY`)."""
    return min(found, key=lambda e: severity(int(e.exit_code)))


def run_error(failures: Mapping[str, BidsQsmError], n_subjects: int) -> BidsQsmError:
    """One error for the whole run: the most severe subject's, mentioning the other failures."""
    worst_subject = min(failures, key=lambda s: severity(int(failures[s].exit_code)))
    worst = failures[worst_subject]
    text = str(worst)
    if len(failures) > 1:
        others = sorted(f"sub-{s}" for s in failures if s != worst_subject)
        text += f" (also failed: {', '.join(others)}; {len(failures)} of {n_subjects} subjects)"
    error = type(worst)(text)
    error.exit_code = worst.exit_code
    return error

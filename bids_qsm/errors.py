"""Exit codes (draft BIDS Apps spec, BEP027) and the exceptions that carry them.

Every user-facing failure is raised as a :class:`BidsQsmError` subclass whose message is a
single line naming the file (when there is one) and the problem. The command line turns it
into that line on stderr and the exit code; the traceback goes to the log only.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes documented in ``docs/usage.md``."""

    OK = 0
    FAILURE = 1
    BIDS_INVALID = 16
    UNKNOWN_LEVEL = 17
    NO_DATA = 18
    USAGE = 64
    DATA_ERROR = 65
    INPUT_MISSING = 66
    CANNOT_CREATE_OUTPUT = 73


class BidsQsmError(Exception):
    """Base class: a one-line message and an exit code."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, path: object | None = None) -> None:
        self.path = None if path is None else str(path)
        text = " ".join(str(message).split())  # always one line
        if self.path and self.path not in text:
            text = f"{self.path}: {text}"
        super().__init__(text)


def _error_class(name: str, code: ExitCode, doc: str) -> type[BidsQsmError]:
    """A :class:`BidsQsmError` subclass ``name`` exiting with ``code``."""
    body = {"exit_code": code, "__doc__": f"{doc} (exit {int(code)}).", "__module__": __name__}
    return type(name, (BidsQsmError,), body)


BidsValidationError = _error_class("BidsValidationError", ExitCode.BIDS_INVALID, "Not valid BIDS")
UnknownLevelError = _error_class("UnknownLevelError", ExitCode.UNKNOWN_LEVEL, "Unknown level")
NoDataError = _error_class("NoDataError", ExitCode.NO_DATA, "Nothing to process")
UsageError = _error_class("UsageError", ExitCode.USAGE, "Bad command line")
InputDataError = _error_class("InputDataError", ExitCode.DATA_ERROR, "Bad or inconsistent input")
InputMissingError = _error_class("InputMissingError", ExitCode.INPUT_MISSING, "Missing input")
OutputError = _error_class("OutputError", ExitCode.CANNOT_CREATE_OUTPUT, "Output not writable")

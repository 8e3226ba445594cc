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


class BidsValidationError(BidsQsmError):
    exit_code = ExitCode.BIDS_INVALID


class UnknownLevelError(BidsQsmError):
    exit_code = ExitCode.UNKNOWN_LEVEL


class NoDataError(BidsQsmError):
    exit_code = ExitCode.NO_DATA


class UsageError(BidsQsmError):
    exit_code = ExitCode.USAGE


class InputDataError(BidsQsmError):
    """Bad or inconsistent input data (exit 65)."""

    exit_code = ExitCode.DATA_ERROR


class InputMissingError(BidsQsmError):
    exit_code = ExitCode.INPUT_MISSING


class OutputError(BidsQsmError):
    exit_code = ExitCode.CANNOT_CREATE_OUTPUT

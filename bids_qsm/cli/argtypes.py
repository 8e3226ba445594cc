"""Argument types of the ``bids-qsm`` parser: each converts one option value or raises
:class:`argparse.ArgumentTypeError` (reported as a usage error, exit 64)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _phase_sign(text: str) -> int:
    if text.strip() not in ("1", "-1", "+1"):
        raise argparse.ArgumentTypeError(f"expected 1 or -1, got {text!r}")
    return int(text)


def _label(prefix: str):
    def convert(text: str) -> str:
        label = text.strip()
        if label.startswith(prefix):
            label = label[len(prefix) :]
        if not label or not label.isalnum():
            raise argparse.ArgumentTypeError(
                f"invalid label {text!r} (letters and digits, optionally prefixed {prefix!r})"
            )
        return label

    convert.__name__ = f"{prefix.rstrip('-')} label"
    return convert


def _path(text: str) -> Path:
    return Path(text).expanduser()


def _absolute_path(text: str) -> Path:
    return Path(text).expanduser().absolute()

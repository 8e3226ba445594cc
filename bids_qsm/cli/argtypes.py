"""Argument types of the ``bids-qsm`` parser: each converts one option value or raises
:class:`argparse.ArgumentTypeError` (reported as a usage error, exit 64)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _number(text: str, kind: type, ok: Callable[[float], bool], what: str) -> Any:
    """``kind(text)`` when ``ok`` of it, else an :class:`argparse.ArgumentTypeError`."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 1, "a positive integer")


def _nonnegative_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def _positive_float(text: str) -> float:
    return _number(text, float, lambda v: v > 0 and v != float("inf"), "a positive number")


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

"""Atomic file writes for the report package (thin layer over :mod:`bids_qsm.bids.writers`).

Every file is first written under a temporary name in the destination directory and then
renamed with :func:`os.replace`, so a killed run never leaves a truncated file under a final
name and a concurrent reader sees either the old or the new content. Write failures raise
:class:`bids_qsm.errors.OutputError` (exit 73).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from bids_qsm.bids.writers import atomic_path, atomic_write_bytes, atomic_write_text

__all__ = ["atomic_copy", "atomic_write_bytes", "atomic_write_text", "atomic_write_with"]


def atomic_write_with(path: Path, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` then rename ``tmp_path`` to ``path`` (temp removed on error)."""
    with atomic_path(Path(path)) as tmp:
        writer(tmp)
    return Path(path)


def atomic_copy(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` atomically (no-op when both name the same file)."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and os.path.samefile(src, dst):
        return dst
    return atomic_write_with(dst, lambda tmp: shutil.copyfile(src, tmp))

"""Atomic file writes for the report package.

Every file is first written under a temporary name in the destination directory and then
renamed with :func:`os.replace`, so a killed run never leaves a truncated file under a final
name and a concurrent reader sees either the old or the new content.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_copy", "atomic_write_bytes", "atomic_write_text", "atomic_write_with"]


def atomic_write_with(path: Path, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` then rename ``tmp_path`` to ``path``.

    The temporary file lives in the same directory (same filesystem, so the rename is atomic)
    and is removed if ``writer`` raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write_with(path, lambda tmp: tmp.write_text(text, encoding=encoding))


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write_with(path, lambda tmp: tmp.write_bytes(data))


def atomic_copy(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` atomically (no-op when both name the same file)."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and os.path.samefile(src, dst):
        return dst
    return atomic_write_with(dst, lambda tmp: shutil.copyfile(src, tmp))

"""Atomic file writes for the report package (the writers of :mod:`bids_qsm.bids.writers`).

Every file is first written under a temporary name in the destination directory and then
renamed with :func:`os.replace`, so a killed run never leaves a truncated file under a final
name and a concurrent reader sees either the old or the new content. Write failures raise
:class:`bids_qsm.errors.OutputError` (exit 73).
"""

from __future__ import annotations

from bids_qsm.bids.writers import (
    atomic_copy,
    atomic_write_bytes,
    atomic_write_text,
    atomic_write_with,
)

__all__ = ["atomic_copy", "atomic_write_bytes", "atomic_write_text", "atomic_write_with"]

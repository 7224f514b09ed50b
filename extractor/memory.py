"""Handing freed memory back to the system, so that a long run's RSS follows what it holds.

glibc keeps what Python, lxml and aiohttp free in per-thread arenas, up to the high-water
mark of the busiest moment; ``malloc_trim`` returns it. (pyarrow's own allocator, mimalloc,
is released by ``MemoryPool.release_unused``, on the thread that freed the memory.)
"""

from __future__ import annotations

import ctypes
from typing import Any, Final


def _trimmer() -> Any:
    """glibc's ``malloc_trim``, or None (another libc). Looked up among the symbols the
    process has loaded: ``ctypes.util.find_library`` runs ``ldconfig`` (a process, 10-20 ms
    of every start, the parser processes' included)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM: Final = _trimmer()


def trim() -> None:
    """Return the C heap's free pages to the system (nothing where the libc is not glibc)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)

"""Giving freed memory back to the system (glibc only; elsewhere these do nothing).

A node allocates and frees many medium-sized buffers (gossip payloads, requests, decoded
events) and runs its store in worker threads. glibc's malloc gives each thread its own arena
(up to eight per core) and returns freed memory to the system only from the top of a heap,
so after a flood of junk a node's resident memory stays near its high-water mark although
the bounded tables have let go: in the memory benchmark, 300-400 MB resident against some
100 MB of live Python objects. So the daemon keeps glibc to `ARENAS` arenas and asks it every
`TRIM_EVERY` seconds to give back what is free (`malloc_trim`, a few ms).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Final

import trio

ARENAS: Final = 2
TRIM_EVERY: Final = 10.0
_M_ARENA_MAX: Final = -8  # mallopt's parameter, from glibc's malloc.h


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC: Final = _glibc()


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Keep malloc to `arenas` arenas (call before threads start); False where not glibc."""
    return _LIBC is not None and bool(_LIBC.mallopt(_M_ARENA_MAX, arenas))


def trim() -> bool:
    """Give free heap memory back to the system; True if some was."""
    return _LIBC is not None and bool(_LIBC.malloc_trim(0))


async def trim_forever(every: float = TRIM_EVERY) -> None:
    """Run until cancelled: `trim` every `every` seconds."""
    if _LIBC is None:
        return
    while True:
        await trio.sleep(every)
        trim()

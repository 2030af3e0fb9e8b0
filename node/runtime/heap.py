"""Giving freed memory back to the system (glibc only; elsewhere these do nothing).

A node allocates and frees many medium-sized buffers (gossip payloads, requests, decoded
events) and runs its store in worker threads. glibc's malloc gives each thread its own arena
(up to eight per core) and returns freed memory to the system only from the top of a heap,
so after a flood of junk a node's resident memory stays near its high-water mark although
the bounded tables have let go: in the memory benchmark, 300-400 MB resident against some
100 MB of live Python objects. So the daemon keeps glibc to `ARENAS` arenas and asks it every
`TRIM_EVERY` seconds to give back what is free (`malloc_trim`, a few ms). It also fixes the
size from which malloc maps a block of its own (`MMAP_THRESHOLD`): glibc raises that
threshold to the largest block freed, up to 32 MiB, so after a few 1 MiB payloads every
payload came from the heap and left holes in it; mapped, a payload's memory goes back to the
system when it is freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Final

import trio

ARENAS: Final = 2
MMAP_THRESHOLD: Final = 128 << 10  # glibc's initial value, kept from rising
TRIM_EVERY: Final = 5.0
_M_ARENA_MAX: Final = -8  # mallopt's parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD: Final = -3


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


def limit_arenas(arenas: int = ARENAS, mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Keep malloc to `arenas` arenas (call before threads start) and map blocks from
    `mmap_threshold` bytes on; False where not glibc."""
    if _LIBC is None:
        return False
    return bool(_LIBC.mallopt(_M_ARENA_MAX, arenas)) and bool(
        _LIBC.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
    )


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

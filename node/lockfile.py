"""Exclusive locks on files, for what one process at a time may own.

A node's store (`runtime/store.py`) and a controller's identifier (`client/session.py`) each
take one: two owners could otherwise make two versions of one event. The lock is an advisory
`flock` on `<path>` (created 0600), released when its descriptor is closed, so a crashed
holder never leaves it behind; the holder writes its pid there to be named in the refusal.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class LockHeld(Exception):
    """Another process holds the lock; `holder` is its pid as it wrote it (or "unknown")."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held by process {holder}")
        self.path = path
        self.holder = holder


def exclusive(path: Path) -> int:
    """Take the lock at `path` without waiting; its descriptor (close it to release)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise LockHeld(path, holder) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        os.close(fd)
        raise
    return fd

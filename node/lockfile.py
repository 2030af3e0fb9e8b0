"""Exclusive locks on files, for what one process at a time may own.

A node's store (`runtime/store.py`) and a controller's identifier (`client/session.py`) each
take one: two owners could otherwise make two versions of one event. The lock is an advisory
`flock` on `<path>` (created 0600), released when its descriptor is closed, so a crashed
holder never leaves it behind; the holder writes its pid there to be named to others.

A store refuses a second owner at once (`exclusive`); a controller's command waits its turn
(`waited`), since what it asks for is still worth doing once the other command is done. The
wait blocks in a worker thread, so the trio loop keeps running and a cancellation (Ctrl-C)
ends it at once; the abandoned thread then releases the lock as soon as it gets it. A lock
file is never deleted: a waiter blocked on the old file would get a lock nobody else sees.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import trio


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
        holder = _holder(fd)
        os.close(fd)
        raise LockHeld(path, holder) from None
    except BaseException:
        os.close(fd)
        raise
    return _stamped(fd)


async def waited(path: Path, waiting: Callable[[str], None]) -> int:
    """Take the lock at `path`, waiting for its holder if need be; its descriptor.

    `waiting(holder)` is called once, before waiting, with the holder's pid (or "unknown")."""
    try:
        return exclusive(path)
    except LockHeld as held:
        waiting(held.holder)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    waiter = _Waiter(fd)
    try:
        # A thread of its own: waiters must not take the tokens of trio's default limiter.
        # (libp2p's trio-typing stubs, which mypy reads, predate `abandon_on_cancel`.)
        limiter = trio.CapacityLimiter(1)
        await trio.to_thread.run_sync(  # type: ignore[call-arg,unused-ignore]
            waiter.block, abandon_on_cancel=True, limiter=limiter
        )
    except BaseException:
        waiter.abandon()
        raise
    return _stamped(fd)


@contextlib.contextmanager
def blocking(path: Path) -> Iterator[None]:
    """Hold the lock at `path` for a short critical section, waiting for it in this thread."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class _Waiter:
    """A blocking `flock` in a worker thread that the trio side may give up on: whichever of
    the two finishes second closes the descriptor (releasing the lock if it was taken)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._mutex = threading.Lock()
        self._finished = False
        self._abandoned = False

    def block(self) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        finally:
            with self._mutex:
                self._finished = True
                if self._abandoned:
                    os.close(self.fd)

    def abandon(self) -> None:
        with self._mutex:
            self._abandoned = True
            if self._finished:
                os.close(self.fd)


def _holder(fd: int) -> str:
    return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"


def _stamped(fd: int) -> int:
    """`fd`, locked, with this process's pid written in it for others to name."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd

"""A stopped node's store as files: who owns it, taking it over, moving it aside, putting a
new one in its place. What `dkms-node backup`, `restore` and `recover` share.

A store is never deleted here: one being replaced moves, with its WAL and shared-memory
files and a copy of `node.history`, into `DATA_DIR/<why>-<UTC time>/`, for the operator to
inspect (or to salvage from). A new store is built beside the old one under a temporary
name and renamed into place, so a crash leaves the old store or the new one, never half.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from dkms.node import lockfile
from dkms.node.runtime.history import HISTORY_FILE
from dkms.node.runtime.store import FILENAME
from dkms.node.secretfiles import SEED_FILE, SecretError, fsync_dir, read_private
from dkms.protocol.crypto import Signer

SIDECARS: Final = ("", "-wal", "-shm")  # the store's files: database, WAL, shared memory


class StoreFilesError(Exception):
    """The store cannot be taken over or replaced; the message says what to do."""


def node_of(data_dir: Path) -> str:
    """The prefix of the node whose seed is in `data_dir` (never makes one)."""
    path = data_dir / SEED_FILE
    if not path.exists():
        raise StoreFilesError(
            f"no node seed in {data_dir}: put the node's node.seed back first (a store belongs"
            " to one key)"
        )
    try:
        seed = read_private(path, "node seed")
        return Signer(seed, transferable=False).verfer
    except (SecretError, ValueError) as err:
        raise StoreFilesError(str(err)) from None
    except OSError as err:
        raise StoreFilesError(f"cannot read {path}: {err.strerror}") from None


@contextlib.contextmanager
def stopped(data_dir: Path) -> Iterator[None]:
    """Hold the store's lock (the one a running node holds) for the block."""
    path = data_dir / (FILENAME + ".lock")
    try:
        fd = lockfile.exclusive(path)
    except lockfile.LockHeld as held:
        raise StoreFilesError(
            f"a node is running on {data_dir} (pid {held.holder}): stop it first"
        ) from None
    except OSError as err:
        raise StoreFilesError(f"cannot lock {path}: {err.strerror}") from None
    try:
        yield
    finally:
        os.close(fd)


def temporary(data_dir: Path, what: str) -> Path:
    """A fresh path in `data_dir` to build a store at (a leftover of ours is removed)."""
    path = data_dir / f".{FILENAME}.{what}"
    for suffix in (*SIDECARS, ".lock"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")
    return path


def move_aside(data_dir: Path, why: str) -> Path | None:
    """Move the store's files (and a copy of the history record) into a new folder;
    None if there was no store."""
    present = [data_dir / (FILENAME + s) for s in SIDECARS if (data_dir / (FILENAME + s)).exists()]
    if not present:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder = data_dir / f"{why}-{stamp}"
    n = 1
    while folder.exists():
        n += 1
        folder = data_dir / f"{why}-{stamp}-{n}"
    try:
        folder.mkdir(mode=0o700)
        if (data_dir / HISTORY_FILE).exists():
            shutil.copy2(data_dir / HISTORY_FILE, folder / HISTORY_FILE)
        for path in present:
            os.rename(path, folder / path.name)
        fsync_dir(data_dir)
    except OSError as err:
        raise StoreFilesError(f"cannot move the store into {folder}: {err.strerror}") from None
    return folder


def install(built: Path, data_dir: Path) -> None:
    """Rename the closed store at `built` into place (no store may be there)."""
    target = data_dir / FILENAME
    try:
        if target.exists():
            raise StoreFilesError(f"{target} exists: move it aside first")
        for suffix in ("-wal", "-shm"):  # a cleanly closed store has none; never carry them
            if os.path.exists(f"{built}{suffix}"):
                raise StoreFilesError(f"{built} was not closed cleanly")
        os.rename(built, target)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{built}.lock")
        fsync_dir(data_dir)
    except OSError as err:
        raise StoreFilesError(f"cannot put the new store in place: {err.strerror}") from None

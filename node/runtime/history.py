"""A node's history kept outside its store: proof that a key has receipted, and how much.

Theory of operation. A store can be lost (deleted, truncated, its WAL removed) while the
node's seed survives; started on an empty or older store, a witness would receipt again,
and so receipt other versions of events it had receipted. So beside `node.seed` the node
keeps `node.history`: whose it is (the node prefix), which store it runs on (the store's id)
and a high-water mark of that store (event rows and the hash chain's link there: a
`store.Mark`). At start the store must carry that id and its chain must pass through that
link after that many rows; otherwise the node refuses to start (`daemon.py`).

The record is a lower bound, never ahead of the store: it is advanced after each commit
that stored events (`Store.after_commit`), once SQLite's fsynced COMMIT has returned and
before any receipt that depended on it leaves. What may go wrong, and why that is safe:

    kill -9          the advance is one `pwrite` into the page cache: whole or not made.
                     Not made, the record is one commit behind the store: still a lower
                     bound, and that commit's receipts were never released
    OS crash         the last advances may not have reached the disk; the store's commits
                     have (synchronous=FULL), so again the record is behind, never ahead.
                     The file is fsynced at most once every SYNC_EVERY seconds, so it lags
                     by at most that much after a crash, without an fsync per commit
    torn write       two slots, written alternately, each with its own checksum and a
                     sequence number: a slot torn by a crash leaves the other one whole

The file is made (atomically, fsynced) when the node first opens a store; it is text (two
fixed-size slots of JSON, padded, each ending with its checksum), so `cat` shows it. Losing
it together with the store loses the proof: keep it with `node.seed`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dkms.node.runtime.store import Mark
from dkms.node.secretfiles import atomic_write

HISTORY_FILE: Final = "node.history"
SLOT: Final = 512  # bytes per slot; the file holds two
SYNC_EVERY: Final = 1.0  # seconds: the record lags the store by at most this after an OS crash
_SUM: Final = 32  # hex characters of the slot checksum (16 bytes of blake2b)
_VERSION: Final = 1


class HistoryError(Exception):
    """The history record cannot be read or written; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Record:
    """What `node.history` says: whose node, and the high-water mark of its store."""

    node: str
    mark: Mark
    seq: int = 0

    def slot(self) -> bytes:
        """The record as one slot: `json.dumps` of its fields (compact), padded, checksummed.

        Written after every commit that stores events, so the JSON is put together from the
        part that is the same for every record of a node and store (`_opening`, encoded once)
        and the numbers: the same bytes as `json.dumps`, at a fraction of its cost."""
        mark = self.mark
        body = b'%s%d,"head":"%s","seq":%d}' % (
            _opening(self.node, mark.store),
            mark.events,
            mark.head.hex().encode(),
            self.seq,
        )
        room = SLOT - _SUM - 2
        if len(body) > room:
            raise HistoryError(f"history record too long ({len(body)} bytes)")
        text = body + b" " * (room - len(body)) + b" "
        return text + _checksum(text).encode() + b"\n"


@functools.lru_cache(maxsize=4)
def _opening(node: str, store: str) -> bytes:
    """`{"v":1,"node":...,"store":...,"events":` as `json.dumps(..., separators=(",", ":"))`
    writes it."""
    fields = json.dumps({"v": _VERSION, "node": node, "store": store}, separators=(",", ":"))
    return fields[:-1].encode() + b',"events":'


def read(data_dir: Path) -> Record | None:
    """The record in `data_dir`, None if there is none; HistoryError if neither slot reads."""
    path = data_dir / HISTORY_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise HistoryError(f"cannot read {path}: {err.strerror}") from None
    try:
        _check_mode(path, os.fstat(fd).st_mode)
        data = os.pread(fd, 2 * SLOT, 0)
    finally:
        os.close(fd)
    records = [r for r in (_parse(data[i * SLOT : (i + 1) * SLOT]) for i in (0, 1)) if r]
    if not records:
        raise HistoryError(
            f"{path} is damaged: this node's record of its store history does not read"
        )
    return max(records, key=lambda r: r.seq)


class History:
    """The open record of one node, advanced as its store commits (from the store's thread)."""

    def __init__(self, path: Path, fd: int, record: Record) -> None:
        self.path = path
        self._fd = fd
        self.record = record
        self._synced = time.monotonic()
        self._dirty = False

    @classmethod
    def write(cls, data_dir: Path, node: str, mark: Mark) -> History:
        """Replace the record (atomically, fsynced: both slots say `mark`) and open it."""
        path = data_dir / HISTORY_FILE
        old = None
        with contextlib.suppress(HistoryError):
            old = read(data_dir)
        record = Record(node, mark, (old.seq + 1) if old else 0)
        try:
            atomic_write(path, record.slot() * 2)
        except OSError as err:
            raise HistoryError(f"cannot write {path}: {err.strerror or err}") from None
        return cls.open(data_dir, record)

    @classmethod
    def open(cls, data_dir: Path, record: Record) -> History:
        path = data_dir / HISTORY_FILE
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as err:
            raise HistoryError(f"cannot open {path}: {err.strerror}") from None
        return cls(path, fd, record)

    def advance(self, mark: Mark) -> None:
        """Record a newer mark of the same store: one pwrite, an fsync now and then."""
        record = Record(self.record.node, mark, self.record.seq + 1)
        data = record.slot()
        try:
            if os.pwrite(self._fd, data, (record.seq % 2) * SLOT) != len(data):
                raise OSError(0, "short write")
            self.record = record
            self._dirty = True
            now = time.monotonic()
            if now - self._synced >= SYNC_EVERY:
                os.fdatasync(self._fd)
                self._synced, self._dirty = now, False
        except OSError as err:
            raise HistoryError(f"cannot update {self.path}: {err.strerror or err}") from None

    def close(self) -> None:
        """Make the last advance durable and close the file (idempotent)."""
        if self._fd < 0:
            return
        try:
            if self._dirty:
                with contextlib.suppress(OSError):
                    os.fdatasync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = -1


def _parse(slot: bytes) -> Record | None:
    if len(slot) != SLOT or not slot.endswith(b"\n"):
        return None
    text, checksum = slot[: -_SUM - 1], slot[-_SUM - 1 : -1]
    if _checksum(text).encode() != checksum:
        return None
    try:
        held = json.loads(text)
        mark = Mark(str(held["store"]), int(held["events"]), bytes.fromhex(held["head"]))
        return Record(str(held["node"]), mark, int(held["seq"]))
    except (ValueError, KeyError, TypeError):
        return None


def _checksum(text: bytes) -> str:
    return hashlib.blake2b(text, digest_size=_SUM // 2).hexdigest()


def _check_mode(path: Path, mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise HistoryError(f"{path} is not a regular file")
    if stat.S_IMODE(mode) & 0o022:
        raise HistoryError(
            f"{path} may be changed by other users (mode {stat.S_IMODE(mode):o}): if nobody"
            f" else did, fix it with `chmod 600 {path}`"
        )

"""The node's durable store: one SQLite file per node, crash-safe, one writer at a time.

Theory of operation. The roles ask for persistence with `PersistEvent` / `PersistReceipts`
effects; the runtime collects those of many steps and hands them to `Store.apply`, which
writes the whole batch in one transaction (group commit) and returns only once it is durable:
WAL journal with `synchronous=FULL`, so the commit's WAL frames are fsynced before `COMMIT`
returns. Only then may the runtime release the replies (receipts) that followed those effects.
If `apply` raises, nothing of the batch was stored and those replies must not leave the node.

    events    first-seen ordinal (autoincrement), prefix, sn, said (unique), message
    receipts  (said, witness) -> signature; every receipt a witness holds for an event
    meta      key -> value (node identity and the like)
    evidence  duplicity evidence this node holds (CBOR, deduplicated by digest)
    rulings   judges' rulings (CBOR, deduplicated by digest)

Both writes are idempotent (`INSERT OR IGNORE`): the first version stored under a SAID, and the
first signature of a witness for it, stay. At start-up `replay()` turns the tables back into a
CESR stream for `Witness.restore`: each event in first-seen order, directly followed by one
`rct` message carrying its stored receipts (so an event that needs receipts to be accepted
gets them at once, and the validator's escrows stay empty during the replay).

One process owns the file: `open` takes an exclusive `flock` on `<file>.lock` (released by the
kernel when the process dies, even by SIGKILL) and writes its pid there for the error message
of the next one. SQLite's own locking stays normal, so an operator can read the database with
the `sqlite3` shell while the node runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

from dkms.node import lockfile
from dkms.node.lockfile import LockHeld
from dkms.node.roles.effects import (
    Persist,
    PersistEvent,
    PersistEvidence,
    PersistMeta,
    PersistReceipts,
    PersistRuling,
)
from dkms.protocol.errors import ProtocolError
from dkms.protocol.events import receipt, sniff
from dkms.protocol.stream import Attachments, messagize

FILENAME: Final = "store.sqlite3"  # the database's name inside a node's data directory
APPLICATION_ID: Final = 0x444B4D53  # "DKMS" in the SQLite header: `file` and tools can tell
SCHEMA_VERSION: Final = 1
REPLAY_PAGE: Final = 1000  # events per replay chunk

__all__ = ["FILENAME", "Persist", "Store", "StoreError", "StoreStats", "Stored"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS events (
    ordinal INTEGER PRIMARY KEY AUTOINCREMENT,
    prefix TEXT NOT NULL,
    sn INTEGER NOT NULL,
    said TEXT NOT NULL UNIQUE,
    message BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_prefix_sn ON events (prefix, sn);
CREATE TABLE IF NOT EXISTS receipts (
    said TEXT NOT NULL,
    witness TEXT NOT NULL,
    signature BLOB NOT NULL,
    PRIMARY KEY (said, witness)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS evidence (
    ordinal INTEGER PRIMARY KEY AUTOINCREMENT,
    prefix TEXT NOT NULL,
    sn INTEGER NOT NULL,
    digest BLOB NOT NULL UNIQUE,
    body BLOB NOT NULL,
    received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS evidence_by_prefix ON evidence (prefix, sn);
CREATE TABLE IF NOT EXISTS rulings (
    ordinal INTEGER PRIMARY KEY AUTOINCREMENT,
    prefix TEXT NOT NULL,
    digest BLOB NOT NULL UNIQUE,
    body BLOB NOT NULL,
    received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS rulings_by_prefix ON rulings (prefix);
"""


_INSERT_EVIDENCE: Final = (
    "INSERT OR IGNORE INTO evidence (prefix, sn, digest, body, received) VALUES (?, ?, ?, ?, ?)"
)
_INSERT_RULING: Final = (
    "INSERT OR IGNORE INTO rulings (prefix, digest, body, received) VALUES (?, ?, ?, ?)"
)


class StoreError(Exception):
    """The store cannot be used: in use elsewhere, not a store, damaged, disk full, ..."""


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Sizes for metrics: rows kept and bytes on disk (database plus its WAL)."""

    events: int
    receipts: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Stored:
    """One row of `evidence` or `rulings` (`sn` is -1 for rulings)."""

    prefix: str
    sn: int
    body: bytes
    received: float


class Store:
    """One node's database. Any thread may call it; calls run one at a time (a mutex)."""

    def __init__(self, path: Path, db: sqlite3.Connection, lock_fd: int) -> None:
        self.path = path
        self._db = db
        self._lock_fd = lock_fd
        self._mutex = threading.Lock()
        self._events = 0
        self._receipts = 0
        self._closed = False

    # ---------------------------------------------------------------- life cycle

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Store:
        """Open (or create, mode 0600, with its directories) the store at `path`.

        A node keeps it at `DATA_DIR / FILENAME`; the lock is `DATA_DIR / FILENAME.lock`.
        """
        file = Path(path)
        try:
            file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if file.is_dir():
                raise StoreError(f"{file} is a directory, not a store (try {file / FILENAME})")
            lock_fd = _lock(file.with_name(file.name + ".lock"))
        except OSError as err:
            raise StoreError(f"cannot open store {file}: {err.strerror or err}") from None
        try:
            with contextlib.suppress(FileExistsError):
                os.close(os.open(file, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
            db = sqlite3.connect(file, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as err:
            os.close(lock_fd)
            raise StoreError(f"cannot open store {file}: {err}") from None
        store = cls(file, db, lock_fd)
        try:
            store._setup()
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        """Close the database and release the lock (idempotent)."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            try:
                self._db.close()
            finally:
                os.close(self._lock_fd)  # closing the descriptor releases the flock

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ---------------------------------------------------------------- writes

    def apply(self, effects: Sequence[Persist]) -> None:
        """Store a batch of persist effects in one transaction; durable when this returns."""
        if not effects:
            return
        events: list[tuple[str, int, str, bytes]] = []
        receipts: list[tuple[str, str, bytes]] = []
        evidence: list[tuple[str, int, bytes, bytes, float]] = []
        rulings: list[tuple[str, bytes, bytes, float]] = []
        meta: list[tuple[str, bytes]] = []
        now = time.time()
        for effect in effects:
            if isinstance(effect, PersistEvent):
                events.append((effect.prefix, effect.sn, effect.said, effect.message))
            elif isinstance(effect, PersistReceipts):
                receipts.extend((effect.said, w, sig) for w, sig in effect.couples)
            elif isinstance(effect, PersistEvidence):
                body = effect.envelope
                evidence.append((effect.accused, effect.sn, _digest(body), body, now))
            elif isinstance(effect, PersistRuling):
                rulings.append((effect.accused, _digest(effect.envelope), effect.envelope, now))
            elif isinstance(effect, PersistMeta):
                meta.append((effect.key, effect.value))
        with self._transaction("store a batch") as db:
            if evidence:
                db.executemany(_INSERT_EVIDENCE, evidence)
            if rulings:
                db.executemany(_INSERT_RULING, rulings)
            if meta:
                db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta)
            added_events = db.executemany(
                "INSERT OR IGNORE INTO events (prefix, sn, said, message) VALUES (?, ?, ?, ?)",
                events,
            ).rowcount
            added_receipts = db.executemany(
                "INSERT OR IGNORE INTO receipts (said, witness, signature) VALUES (?, ?, ?)",
                receipts,
            ).rowcount
        self._events += max(added_events, 0)
        self._receipts += max(added_receipts, 0)

    def put_meta(self, key: str, value: bytes) -> None:
        with self._transaction(f"store {key}") as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def get_meta(self, key: str) -> bytes | None:
        with self._reading(f"read {key}") as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def claim(self, key: str, value: str) -> str | None:
        """Record `value` under meta `key` if nothing is there yet; return what is there when
        it differs (the store belongs to something else), else None."""
        held = self.get_meta(key)
        if held is None:
            self.put_meta(key, value.encode())
            return None
        text = held.decode(errors="replace")
        return None if text == value else text

    def bind_node(self, prefix: str) -> None:
        """Record the node prefix this store belongs to, or refuse another node's store."""
        owner = self.claim("node", prefix)
        if owner is not None:
            raise StoreError(
                f"{self.path} belongs to node {owner}, not {prefix}:"
                " wrong data directory or node seed"
            )

    def put_evidence(self, prefix: str, sn: int, body: bytes, received: float) -> bool:
        """Keep a piece of duplicity evidence (CBOR); False if it was already stored."""
        with self._transaction("store evidence") as db:
            added = db.execute(
                _INSERT_EVIDENCE, (prefix, sn, _digest(body), body, received)
            ).rowcount
        return added > 0

    def evidence(self, prefix: str | None = None) -> list[Stored]:
        """Stored evidence, oldest first, of one identifier or of all."""
        sql = "SELECT prefix, sn, body, received FROM evidence"
        return self._list(sql, prefix)

    def put_ruling(self, prefix: str, body: bytes, received: float) -> bool:
        """Keep a judge's ruling about `prefix` (CBOR); False if it was already stored."""
        with self._transaction("store a ruling") as db:
            added = db.execute(_INSERT_RULING, (prefix, _digest(body), body, received)).rowcount
        return added > 0

    def rulings(self, prefix: str | None = None) -> list[Stored]:
        """Stored rulings, oldest first, about one identifier or all."""
        return self._list("SELECT prefix, -1, body, received FROM rulings", prefix)

    # ---------------------------------------------------------------- reads

    def replay_chunks(self, page: int = REPLAY_PAGE) -> Iterator[bytes]:
        """The CESR stream for `Witness.restore`, `page` events (with their receipts) a chunk."""
        last = 0
        while True:
            with self._reading("replay") as db:
                rows = db.execute(
                    "SELECT ordinal, prefix, sn, said, message FROM events"
                    " WHERE ordinal > ? ORDER BY ordinal LIMIT ?",
                    (last, page),
                ).fetchall()
                if not rows:
                    return
                couples: dict[str, list[tuple[str, bytes]]] = {}
                for said, witness, signature in db.execute(
                    "SELECT r.said, r.witness, r.signature FROM events AS e"
                    " JOIN receipts AS r ON r.said = e.said"
                    " WHERE e.ordinal > ? AND e.ordinal <= ? ORDER BY r.said, r.witness",
                    (last, rows[-1][0]),
                ):
                    couples.setdefault(said, []).append((witness, bytes(signature)))
            out: list[bytes] = []
            for _, prefix, sn, said, message in rows:
                out.append(bytes(message))
                if said in couples:
                    out.append(self._rct(prefix, sn, said, message, couples[said]))
            yield b"".join(out)
            last = rows[-1][0]

    def replay(self) -> bytes:
        """The whole replay stream in memory (see `replay_chunks` for large stores)."""
        return b"".join(self.replay_chunks())

    def stats(self) -> StoreStats:
        size = 0
        for name in (self.path.name, self.path.name + "-wal"):
            with contextlib.suppress(FileNotFoundError):
                size += (self.path.parent / name).stat().st_size
        return StoreStats(self._events, self._receipts, size)

    def check(self) -> None:
        """Run SQLite's `quick_check` over the whole file (reads every page: slow when large)."""
        with self._reading("check") as db:
            problems = [row[0] for row in db.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise StoreError(f"{self.path} is damaged: {problems[0]}")

    # ---------------------------------------------------------------- internals

    def _setup(self) -> None:
        with self._reading("open") as db:
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"{self.path}: the file system does not allow a WAL journal")
            db.execute("PRAGMA synchronous = FULL")
            application = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if application not in (0, APPLICATION_ID) or (application == 0 and tables):
            raise StoreError(f"{self.path} is an SQLite database but not a dkms store")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema {version}, made by a newer dkms-node"
                f" (this one knows schema {SCHEMA_VERSION})"
            )
        if version < SCHEMA_VERSION:
            with self._transaction("create the tables") as db:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        with self._reading("count rows") as db:
            self._events = db.execute("SELECT count(*) FROM events").fetchone()[0]
            self._receipts = db.execute("SELECT count(*) FROM receipts").fetchone()[0]

    @contextlib.contextmanager
    def _reading(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._mutex:
            if self._closed:
                raise StoreError(f"{self.path}: the store is closed")
            try:
                yield self._db
            except (sqlite3.Error, OverflowError) as err:  # OverflowError: int beyond 64 bits
                raise self._error(what, err) from None

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._reading(what) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def _error(self, what: str, err: Exception) -> StoreError:
        text = str(err)
        if isinstance(err, sqlite3.DatabaseError) and (
            "not a database" in text or "malformed" in text
        ):
            return StoreError(f"{self.path} is not a dkms store or is damaged ({text})")
        return StoreError(f"{self.path}: cannot {what}: {text}")

    def _list(self, select: str, prefix: str | None) -> list[Stored]:
        with self._reading("list") as db:
            if prefix is None:
                rows = db.execute(select + " ORDER BY ordinal").fetchall()
            else:
                where = select + " WHERE prefix = ? ORDER BY ordinal"
                rows = db.execute(where, (prefix,)).fetchall()
        return [Stored(p, sn, bytes(body), at) for p, sn, body, at in rows]

    def _rct(
        self, prefix: str, sn: int, said: str, message: bytes, couples: list[tuple[str, bytes]]
    ) -> bytes:
        """One receipt message for a stored event, in the event's own serialization kind."""
        try:
            kind, _ = sniff(message)
            rct = receipt(prefix, sn, said, kind=kind)
        except ProtocolError as err:
            raise StoreError(f"{self.path}: stored event {said} is unreadable: {err}") from None
        return messagize(rct, Attachments(couples=tuple(couples)))


def _lock(path: Path) -> int:
    """Take the store's exclusive lock, or say which process holds it."""
    try:
        return lockfile.exclusive(path)
    except LockHeld as held:
        raise StoreError(
            f"{path.with_suffix('')} is in use by another process (pid {held.holder}):"
            " is a node already running on this data directory?"
        ) from None


def _digest(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=32).digest()

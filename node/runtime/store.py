"""The node's durable store: one SQLite file per node, crash-safe, one writer at a time.

Theory of operation. The roles ask for persistence with `PersistEvent` / `PersistReceipts`
effects; the runtime collects those of many steps and hands them to `Store.apply`, which
writes the whole batch in one transaction (group commit) and returns only once it is durable:
WAL journal with `synchronous=FULL`, so the commit's WAL frames are fsynced before `COMMIT`
returns. Only then may the runtime release the replies (receipts) that followed those effects.
If `apply` raises, nothing of the batch was stored and those replies must not leave the node.

    events    first-seen ordinal (autoincrement), prefix, sn, said (unique), message, chain
    loose     events of unwitnessed identifiers (`PersistEvent.loose`, see roles/storage.py):
              ordinal, prefix, sn, said (unique), message, and no chain, so that they can
              be dropped (`DropLoose`) or join the chain later (`ChainLoose`)
    receipts  (said, witness) -> signature; every receipt a witness holds for an event
    meta      key -> value (node identity, store id, chain head and the like)
    evidence  duplicity evidence this node holds (CBOR, deduplicated by digest)
    rulings   judges' rulings (CBOR, deduplicated by digest)
    floors    prefix -> sn: a recovered witness signs no new receipt at or below it

Both writes are idempotent: the first version stored under a SAID, and the first signature of
a witness for it, stay. At start-up `pages()` turns the tables back into a CESR stream for the
role's `restore`: each event in first-seen order, directly followed by one `rct` message
carrying its stored receipts (so an event that needs receipts to be accepted gets them at
once, and the validator's escrows stay empty during the replay); then the loose events, in
the order they were stored. Chained events never depend on loose ones: an identifier's loose
events (and its loose delegators') join the chain, in order, in the same transaction as its
first chained event (`ChainLoose`, and here as a safety net whenever a chained event comes
for an identifier with loose rows). `usage()` gives the role back its byte counts.

Integrity. Every event row carries `chain`: a hash of the previous row's link and this row
(prefix, sn, SAID, message), the first one chained to the store's random id (meta `store`);
meta `chain` holds the number of event rows and the last link. `pages()` recomputes the chain
while it replays, so a changed, lost or inserted row is an error that names it; and a `Mark`
(store id, events, chain head) that the node keeps outside the store (`runtime/history.py`)
proves that the store still holds everything it held when the mark was taken. After each
commit that stored events, `apply` hands the new mark to the `after_commit` callback, before
it returns (so before any receipt that depended on the commit leaves the node). `check()` is
SQLite's `integrity_check`. A schema 1 store gets its chain (and an id) when first opened,
and a schema 2 one its `loose` table. Loose events are outside the chain and the mark: no
witness ever receipts an event of an identifier with no witnesses, so losing one cannot
make a witness sign two versions of anything; a node that drops them just holds less.

One process owns the file: `open` takes an exclusive `flock` on `<file>.lock` (released by the
kernel when the process dies, even by SIGKILL) and writes its pid there for the error message
of the next one. SQLite's own locking stays normal, so an operator can read the database with
the `sqlite3` shell while the node runs, and `backup` (an SQLite online backup, run from any
process) copies it while the node runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from dkms.node import lockfile
from dkms.node.lockfile import LockHeld
from dkms.node.roles.effects import (
    ChainLoose,
    DropLoose,
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
SCHEMA_VERSION: Final = 3
REPLAY_PAGE: Final = 1000  # events per replay chunk
_LOOKUP: Final = 500  # SAIDs per "already stored?" query

__all__ = [
    "FILENAME",
    "Mark",
    "Page",
    "Persist",
    "Store",
    "StoreError",
    "StoreInUse",
    "StoreStats",
    "Stored",
    "Usage",
]

_SCHEMA_1: Final = """
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
_SCHEMA_2: Final = """
ALTER TABLE events ADD COLUMN chain BLOB;
CREATE TABLE IF NOT EXISTS floors (
    prefix TEXT PRIMARY KEY,
    sn INTEGER NOT NULL
) WITHOUT ROWID;
"""

_SCHEMA_3: Final = """
CREATE TABLE IF NOT EXISTS loose (
    ordinal INTEGER PRIMARY KEY AUTOINCREMENT,
    prefix TEXT NOT NULL,
    sn INTEGER NOT NULL,
    said TEXT NOT NULL UNIQUE,
    message BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS loose_by_prefix ON loose (prefix, ordinal);
"""

_INSERT_EVENT: Final = (
    "INSERT INTO events (prefix, sn, said, message, chain) VALUES (?, ?, ?, ?, ?)"
)
_INSERT_LOOSE: Final = (
    "INSERT OR IGNORE INTO loose (prefix, sn, said, message) VALUES (?, ?, ?, ?)"
)
_INSERT_EVIDENCE: Final = (
    "INSERT OR IGNORE INTO evidence (prefix, sn, digest, body, received) VALUES (?, ?, ?, ?, ?)"
)
_INSERT_RULING: Final = (
    "INSERT OR IGNORE INTO rulings (prefix, digest, body, received) VALUES (?, ?, ?, ?)"
)
_SET_META: Final = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
_DROP_META: Final = "DELETE FROM meta WHERE key = ?"
_HEAD: Final = struct.Struct(">Q32s")  # meta `chain`: event rows, last link


class StoreError(Exception):
    """The store cannot be used: in use elsewhere, not a store, damaged, disk full, ..."""


class StoreInUse(StoreError):
    """Another process holds the store's lock (nothing is wrong with the store)."""


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Sizes for metrics: rows kept and bytes on disk (database plus its WAL)."""

    events: int
    receipts: int
    bytes: int
    loose: int = 0  # rows of the loose table (events of unwitnessed identifiers)


@dataclass(frozen=True, slots=True)
class Usage:
    """What the store holds, in the bytes the storage policy counts (`roles/storage.py`)."""

    stored: int  # event messages (chained and loose) and receipts (witness + signature)
    loose: tuple[tuple[str, int], ...]  # loose identifiers with their bytes, least recent first


@dataclass(frozen=True, slots=True)
class Stored:
    """One row of `evidence` or `rulings` (`sn` is -1 for rulings)."""

    prefix: str
    sn: int
    body: bytes
    received: float


@dataclass(frozen=True, slots=True)
class Mark:
    """A point in a store's history: which store, how many event rows, the chain's link there.

    A store whose chain passes through `head` after `events` rows holds, unchanged, every
    event it held when the mark was taken."""

    store: str
    events: int
    head: bytes


@dataclass(frozen=True, slots=True)
class Page:
    """A replay chunk: the CESR stream, and (prefix, sn, SAID) of each event in it."""

    stream: bytes
    events: tuple[tuple[str, int, str], ...]


class Store:
    """One node's database. Any thread may call it; calls run one at a time (a mutex)."""

    def __init__(self, path: Path, db: sqlite3.Connection, lock_fd: int | None) -> None:
        self.path = path
        self._db = db
        self._lock_fd = lock_fd
        self._mutex = threading.Lock()
        self._events = 0
        self._receipts = 0
        self._loose = 0  # loose rows
        self._loose_prefixes: set[str] = set()  # identifiers with loose rows
        self._has_loose = True  # False: a schema 2 store opened read-only
        self._closed = False
        self._id = ""
        self._head = b""
        self._after_commit: Callable[[Mark], None] | None = None

    # ---------------------------------------------------------------- life cycle

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create: bool = True) -> Store:
        """Open (or create, mode 0600, with its directories) the store at `path`.

        A node keeps it at `DATA_DIR / FILENAME`; the lock is `DATA_DIR / FILENAME.lock`.
        `create=False`: a missing file is an error instead of a new store.
        """
        file = Path(path)
        try:
            file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if file.is_dir():
                raise StoreError(f"{file} is a directory, not a store (try {file / FILENAME})")
            if not create and not file.exists():
                raise StoreError(f"{file} does not exist")
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

    @classmethod
    def inspect(cls, path: str | os.PathLike[str]) -> Store:
        """Open a store file read-only and without its lock: a backup, or a store to look
        at before replacing it. Writes fail; `pages`, `verify`, `check`, `mark` work."""
        file = Path(path)
        if not file.is_file():
            raise StoreError(f"{file} is not a file")
        try:
            db = sqlite3.connect(
                f"file:{file}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as err:
            raise StoreError(f"cannot open {file}: {err}") from None
        store = cls(file, db, None)
        try:
            if store._version() < 2:
                raise StoreError(
                    f"{file} is a store of schema 1: run a node on it once to bring it up to"
                    f" schema {SCHEMA_VERSION}"
                )
            store._load()
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
                if self._lock_fd is not None:
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

    def after_commit(self, callback: Callable[[Mark], None] | None) -> None:
        """Call `callback(mark)` after every commit that stored events, before `apply`
        returns (in the committing thread, under the store's mutex). If it raises, `apply`
        raises: the batch is stored, but what waits for it must not go out."""
        self._after_commit = callback

    # ---------------------------------------------------------------- writes

    def apply(self, effects: Sequence[Persist]) -> None:
        """Store a batch of persist effects in one transaction; durable when this returns."""
        if not effects:
            return
        events: list[PersistEvent | ChainLoose | DropLoose] = []
        loosened = False  # some effect concerns the loose table
        receipts: list[tuple[str, str, bytes]] = []
        evidence: list[tuple[str, int, bytes, bytes, float]] = []
        rulings: list[tuple[str, bytes, bytes, float]] = []
        meta: list[tuple[str, bytes]] = []
        now = time.time()
        for effect in effects:
            if isinstance(effect, PersistEvent):
                events.append(effect)
                loosened = loosened or effect.loose
            elif isinstance(effect, (ChainLoose, DropLoose)):
                events.append(effect)
                loosened = True
            elif isinstance(effect, PersistReceipts):
                receipts.extend((effect.said, w, sig) for w, sig in effect.couples)
            elif isinstance(effect, PersistEvidence):
                body = effect.envelope
                evidence.append((effect.accused, effect.sn, _digest(body), body, now))
            elif isinstance(effect, PersistRuling):
                rulings.append((effect.accused, _digest(effect.envelope), effect.envelope, now))
            elif isinstance(effect, PersistMeta):
                meta.append((effect.key, effect.value))
        with self._reading("store a batch") as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                if evidence:
                    db.executemany(_INSERT_EVIDENCE, evidence)
                if rulings:
                    db.executemany(_INSERT_RULING, rulings)
                if meta:
                    db.executemany(_SET_META, [(k, v) for k, v in meta if v])
                    db.executemany(_DROP_META, [(k,) for k, v in meta if not v])
                if loosened or (events and self._loose_prefixes):
                    loose = self._sort_loose(db, events)
                    chained = loose.chained
                else:
                    loose = None
                    chained = [(e.prefix, e.sn, e.said, e.message) for e in _stored(events)]
                rows = self._insert_events(db, chained) if chained else []
                if rows:
                    head = _HEAD.pack(self._events + len(rows), rows[-1][4])
                    db.execute(_SET_META, ("chain", head))
                added_receipts = db.executemany(
                    "INSERT OR IGNORE INTO receipts (said, witness, signature) VALUES (?, ?, ?)",
                    receipts,
                ).rowcount
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            self._receipts += max(added_receipts, 0)
            if loose is not None:
                self._loose_prefixes = loose.prefixes
                self._loose += loose.rows
                self._receipts -= loose.receipts
            if rows:  # committed: the chain moves on, and so does the node's record of it
                self._events += len(rows)
                self._head = rows[-1][4]
                if self._after_commit is not None:
                    self._after_commit(Mark(self._id, self._events, self._head))

    def probe_write(self) -> None:
        """Take the write lock and write a row, then roll it back (for `/health`): raises
        `StoreError` when the store cannot be written now (closed, read-only, locked). In WAL
        mode a rolled-back write touches neither file."""
        with self._reading("write") as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(_SET_META, ("health-probe", b""))
            finally:
                db.execute("ROLLBACK")

    def put_meta(self, key: str, value: bytes) -> None:
        with self._transaction(f"store {key}") as db:
            db.execute(_SET_META, (key, value))

    def metas(self, prefix: str) -> list[tuple[str, bytes]]:
        """Every meta key beginning with `prefix`, with its value, in key order."""
        with self._reading(f"read {prefix}*") as db:
            rows = db.execute(
                "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ? ORDER BY key",
                (len(prefix), prefix),
            ).fetchall()
        return [(str(key), bytes(value)) for key, value in rows]

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
                f"{self.path} belongs to node {owner}, not {prefix} (the key in this data"
                " directory's node.seed): wrong --data-dir, or node.seed was replaced; put the"
                " node's own seed back, or move the store aside to start this key afresh"
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

    def put_floors(self, floors: dict[str, int]) -> None:
        """Raise the receipt floors of these identifiers (a floor never goes down)."""
        with self._transaction("store receipt floors") as db:
            db.executemany(
                "INSERT INTO floors (prefix, sn) VALUES (?, ?)"
                " ON CONFLICT (prefix) DO UPDATE SET sn = max(sn, excluded.sn)",
                sorted(floors.items()),
            )

    def floors(self) -> dict[str, int]:
        """prefix -> sn at or below which a recovered witness signs no new receipt."""
        with self._reading("read receipt floors") as db:
            return {p: sn for p, sn in db.execute("SELECT prefix, sn FROM floors")}

    # ---------------------------------------------------------------- reads

    @property
    def store_id(self) -> str:
        """This store's random id, made when it was created (a copy keeps it)."""
        return self._id

    def mark(self) -> Mark:
        """Where the store's history is now."""
        with self._reading("read the chain"):
            return Mark(self._id, self._events, self._head)

    def pages(
        self, page: int = REPLAY_PAGE, *, expect: Mark | None = None, loose: bool = True
    ) -> Iterator[Page]:
        """The replay stream `page` events a chunk, with the hash chain checked on the way,
        then (with `loose`) the loose events in the order they were stored.

        A row that does not match its link, or a chain that does not end where meta says,
        raises StoreError; so does, with `expect`, a chain that does not pass through
        `expect.head` after `expect.events` rows (the store lost or changed what it held)."""
        if expect is not None and expect.store != self._id:
            raise StoreError(
                f"{self.path} is not the store this node last ran on"
                f" (store {self._id}, the node's history names store {expect.store})"
            )
        link, count, last = _genesis(self._id), 0, 0
        while True:
            rows, couples = self._page_rows("events", ", chain", last, page)
            if not rows:
                break
            out: list[bytes] = []
            events: list[tuple[str, int, str]] = []
            for ordinal, prefix, sn, said, blob, chain in rows:
                message = bytes(blob)
                link = _link(link, prefix, sn, said, message)
                count += 1
                if chain is None or bytes(chain) != link:
                    raise StoreError(
                        f"{self.path}: stored event #{ordinal} ({said}, sn {sn} of {prefix})"
                        " is damaged: it does not match the store's hash chain"
                    )
                if expect is not None and count == expect.events and link != expect.head:
                    raise StoreError(
                        f"{self.path} does not hold the history this node recorded: its"
                        f" {count} first events differ from those it had stored"
                    )
                out.append(message)
                events.append((prefix, sn, said))
                if said in couples:
                    out.append(self._rct(prefix, sn, said, message, couples[said]))
            yield Page(b"".join(out), tuple(events))
            last = rows[-1][0]
        if count != self._events or link != self._head:
            raise StoreError(
                f"{self.path} is damaged: {count} event rows chain to a different end than the"
                f" store recorded ({self._events} rows)"
            )
        if expect is not None and count < expect.events:
            raise StoreError(
                f"{self.path} is behind: it holds {count} events, but this node had stored"
                f" {expect.events} (a deleted WAL file, or an old copy of the store)"
            )
        if loose and self._has_loose:
            yield from self._loose_pages(page)

    def _loose_pages(self, page: int) -> Iterator[Page]:
        last = 0
        while True:
            rows, couples = self._page_rows("loose", "", last, page)
            if not rows:
                return
            out: list[bytes] = []
            events: list[tuple[str, int, str]] = []
            for _, prefix, sn, said, blob in rows:
                message = bytes(blob)
                out.append(message)
                events.append((prefix, sn, said))
                if said in couples:
                    out.append(self._rct(prefix, sn, said, message, couples[said]))
            yield Page(b"".join(out), tuple(events))
            last = rows[-1][0]

    def _page_rows(
        self, table: str, extra: str, last: int, page: int
    ) -> tuple[list[tuple[Any, ...]], dict[str, list[tuple[str, bytes]]]]:
        """Up to `page` rows of `table` ("events" or "loose") after ordinal `last` (ordinal,
        prefix, sn, said, message, then the `extra` columns), and their stored receipts."""
        with self._reading("replay") as db:
            rows = db.execute(
                f"SELECT ordinal, prefix, sn, said, message{extra} FROM {table}"
                " WHERE ordinal > ? ORDER BY ordinal LIMIT ?",
                (last, page),
            ).fetchall()
            couples: dict[str, list[tuple[str, bytes]]] = {}
            if rows:
                for said, witness, signature in db.execute(
                    f"SELECT r.said, r.witness, r.signature FROM {table} AS e"
                    " JOIN receipts AS r ON r.said = e.said"
                    " WHERE e.ordinal > ? AND e.ordinal <= ? ORDER BY r.said, r.witness",
                    (last, rows[-1][0]),
                ):
                    couples.setdefault(said, []).append((witness, bytes(signature)))
        return rows, couples

    def verify(self, expect: Mark | None = None) -> None:
        """Walk the whole chain (as `pages` does) without keeping the stream."""
        for _ in self.pages(expect=expect, loose=False):
            pass

    def usage(self) -> Usage:
        """The bytes the storage policy counts (`roles/storage.py`): event messages, chained
        and loose, and receipts (witness prefix and signature); and each identifier with
        loose rows, with their bytes, least recently extended first. One pass over the
        tables, at start-up."""
        with self._reading("measure") as db:
            events = db.execute("SELECT coalesce(sum(length(message)), 0) FROM events")
            total: int = events.fetchone()[0]
            receipts = db.execute(
                "SELECT coalesce(sum(length(witness) + length(signature)), 0) FROM receipts"
            )
            total += receipts.fetchone()[0]
            loose: list[tuple[str, int]] = []
            if self._has_loose:
                loose = db.execute(
                    "SELECT prefix, sum(length(message)) FROM loose GROUP BY prefix"
                    " ORDER BY max(ordinal)"
                ).fetchall()
        return Usage(total + sum(size for _, size in loose), tuple(loose))

    def replay_chunks(self, page: int = REPLAY_PAGE) -> Iterator[bytes]:
        """The CESR stream for `Witness.restore`, `page` events (with their receipts) a chunk."""
        for chunk in self.pages(page):
            yield chunk.stream

    def replay(self) -> bytes:
        """The whole replay stream in memory (see `replay_chunks` for large stores)."""
        return b"".join(self.replay_chunks())

    def prefixes(self) -> dict[str, int]:
        """Every identifier with stored events, and the highest sn stored of it."""
        with self._reading("list identifiers") as db:
            rows = db.execute("SELECT prefix, max(sn) FROM events GROUP BY prefix").fetchall()
        return {prefix: sn for prefix, sn in rows}

    def stats(self) -> StoreStats:
        size = 0
        for name in (self.path.name, self.path.name + "-wal"):
            with contextlib.suppress(FileNotFoundError):
                size += (self.path.parent / name).stat().st_size
        return StoreStats(self._events, self._receipts, size, self._loose)

    def check(self) -> None:
        """Run SQLite's `integrity_check` over the whole file: every page, every index entry
        against its row (about 0.2 s per 100,000 events on the development machine)."""
        with self._reading("check") as db:
            problems = [row[0] for row in db.execute("PRAGMA integrity_check(5)")]
        if problems != ["ok"]:
            raise StoreError(f"{self.path} is damaged: {problems[0]}")

    # ---------------------------------------------------------------- internals

    def _insert_events(
        self, db: sqlite3.Connection, events: list[tuple[str, int, str, bytes]]
    ) -> list[tuple[str, int, str, bytes, bytes]]:
        """Insert the events not stored yet, each chained to the one before; the rows.

        The roles persist an event once, so first every event is tried as new; only when
        some SAID is stored already (a replayed batch) are the stored ones looked up and left
        out, and the chain made again without them."""
        rows = self._chained(events, set())
        db.execute("SAVEPOINT events")
        try:
            db.executemany(_INSERT_EVENT, rows)
        except sqlite3.IntegrityError:
            db.execute("ROLLBACK TO events")
            rows = self._chained(events, self._stored(db, [said for _, _, said, _ in events]))
            db.executemany(_INSERT_EVENT, rows)
        db.execute("RELEASE events")
        return rows

    def _sort_loose(
        self, db: sqlite3.Connection, events: list[PersistEvent | ChainLoose | DropLoose]
    ) -> _Loosened:
        """Carry out a batch's loose events, chainings and drops in order, in the open
        transaction; return the events to chain, in order (a chained event of an identifier
        with loose rows comes after those rows, moved out of `loose`)."""
        out = _Loosened([], set(self._loose_prefixes), 0, 0)
        for effect in events:
            prefix = effect.prefix
            if isinstance(effect, PersistEvent) and effect.loose:
                row = (prefix, effect.sn, effect.said, effect.message)
                out.rows += max(db.execute(_INSERT_LOOSE, row).rowcount, 0)
                out.prefixes.add(prefix)
            elif isinstance(effect, DropLoose):
                if prefix in out.prefixes:
                    out.receipts += db.execute(
                        "DELETE FROM receipts WHERE said IN"
                        " (SELECT said FROM loose WHERE prefix = ?)",
                        (prefix,),
                    ).rowcount
                    out.rows -= db.execute("DELETE FROM loose WHERE prefix = ?", (prefix,)).rowcount
                    out.prefixes.discard(prefix)
            else:  # a chained event, or ChainLoose: its loose rows join the chain first
                if prefix in out.prefixes:
                    moved = db.execute(
                        "SELECT prefix, sn, said, message FROM loose WHERE prefix = ?"
                        " ORDER BY ordinal",
                        (prefix,),
                    ).fetchall()
                    db.execute("DELETE FROM loose WHERE prefix = ?", (prefix,))
                    out.chained.extend((p, sn, said, bytes(m)) for p, sn, said, m in moved)
                    out.rows -= len(moved)
                    out.prefixes.discard(prefix)
                if isinstance(effect, PersistEvent):
                    out.chained.append((prefix, effect.sn, effect.said, effect.message))
        return out

    def _chained(
        self, events: list[tuple[str, int, str, bytes]], stored: set[str]
    ) -> list[tuple[str, int, str, bytes, bytes]]:
        """The rows for `events` not in `stored` (nor repeated), each with its link."""
        link = self._head
        seen = set(stored)
        rows: list[tuple[str, int, str, bytes, bytes]] = []
        for prefix, sn, said, message in events:
            if said in seen:
                continue
            seen.add(said)
            link = _link(link, prefix, sn, said, message)
            rows.append((prefix, sn, said, message, link))
        return rows

    def _stored(self, db: sqlite3.Connection, saids: list[str]) -> set[str]:
        """Which of `saids` the events table holds."""
        stored: set[str] = set()
        for i in range(0, len(saids), _LOOKUP):
            chunk = saids[i : i + _LOOKUP]
            marks = ",".join("?" * len(chunk))
            found = db.execute(f"SELECT said FROM events WHERE said IN ({marks})", chunk)
            stored.update(said for (said,) in found)
        return stored

    def _setup(self) -> None:
        with self._reading("open") as db:
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"{self.path}: the file system does not allow a WAL journal")
            db.execute("PRAGMA synchronous = FULL")
        version = self._version()
        if version < 1:
            with self._transaction("create the tables") as db:
                _run(db, _SCHEMA_1)
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute("PRAGMA user_version = 1")
        if version < 2:
            with self._transaction("add the hash chain") as db:
                _run(db, _SCHEMA_2)
                self._rechain(db)
                db.execute("PRAGMA user_version = 2")
        if version < 3:
            with self._transaction("add the loose table") as db:
                _run(db, _SCHEMA_3)
                db.execute("PRAGMA user_version = 3")
        self._load()

    def _version(self) -> int:
        """The schema version, after checking that this is a dkms store this code can read."""
        with self._reading("open") as db:
            application = db.execute("PRAGMA application_id").fetchone()[0]
            version: int = db.execute("PRAGMA user_version").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if application not in (0, APPLICATION_ID) or (application == 0 and tables):
            raise StoreError(f"{self.path} is an SQLite database but not a dkms store")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema {version}, made by a newer dkms-node"
                f" (this one knows schema {SCHEMA_VERSION})"
            )
        return version

    def _load(self) -> None:
        """Counts, store id and chain head, checked against each other."""
        with self._reading("count rows") as db:
            self._events = db.execute("SELECT count(*) FROM events").fetchone()[0]
            self._receipts = db.execute("SELECT count(*) FROM receipts").fetchone()[0]
            held = db.execute("SELECT key, value FROM meta WHERE key IN ('store', 'chain')")
            meta = {key: bytes(value) for key, value in held}
            tables = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'loose'").fetchone()
            self._has_loose = tables is not None  # False: schema 2, opened read-only
            if self._has_loose:
                self._loose = db.execute("SELECT count(*) FROM loose").fetchone()[0]
                prefixes = db.execute("SELECT DISTINCT prefix FROM loose")
                self._loose_prefixes = {prefix for (prefix,) in prefixes}
        if "store" not in meta or "chain" not in meta or len(meta["chain"]) != _HEAD.size:
            raise StoreError(f"{self.path} is damaged: its store id or chain head is missing")
        self._id = meta["store"].decode(errors="replace")
        events, self._head = _HEAD.unpack(meta["chain"])
        if events != self._events:
            raise StoreError(
                f"{self.path} is damaged: it holds {self._events} event rows but recorded {events}"
            )

    def _rechain(self, db: sqlite3.Connection) -> None:
        """Give a new store (or one of schema 1) an id and chain its rows."""
        store_id = os.urandom(16).hex()
        link, count, updates = _genesis(store_id), 0, []
        for ordinal, prefix, sn, said, message in db.execute(
            "SELECT ordinal, prefix, sn, said, message FROM events ORDER BY ordinal"
        ).fetchall():
            link = _link(link, prefix, sn, said, bytes(message))
            updates.append((link, ordinal))
            count += 1
        db.executemany("UPDATE events SET chain = ? WHERE ordinal = ?", updates)
        db.execute(_SET_META, ("store", store_id.encode()))
        db.execute(_SET_META, ("chain", _HEAD.pack(count, link)))

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


@dataclass(slots=True)
class _Loosened:
    """What a batch did to the loose table (`Store._sort_loose`)."""

    chained: list[tuple[str, int, str, bytes]]  # events to chain, in order
    prefixes: set[str]  # identifiers with loose rows after the batch
    rows: int  # loose rows added (less those dropped or chained)
    receipts: int  # receipt rows dropped with them


def _stored(events: list[PersistEvent | ChainLoose | DropLoose]) -> Iterator[PersistEvent]:
    """The events of a batch that has nothing loose in it (nor any loose rows to mind)."""
    for effect in events:
        if isinstance(effect, PersistEvent):
            yield effect


def backup(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Mark:
    """Copy the store at `source` to the new file `target` (mode 0600), consistent as of one
    moment, while a node may be writing it (an SQLite online backup through a read-only
    connection: it takes no lock a running node would notice). The copy is a single file
    (rollback journal, no WAL), checked whole (`integrity_check`, the hash chain) before this
    returns its mark."""
    file = Path(source)
    if not file.is_file():
        raise StoreError(f"no store at {file}")
    try:
        db = sqlite3.connect(f"file:{file}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as err:
        raise StoreError(f"cannot open {file}: {err}") from None
    try:
        _copy(db, Path(target))
    except sqlite3.Error as err:
        raise StoreError(f"cannot back up {file}: {err}") from None
    finally:
        db.close()
    with Store.inspect(target) as copy:
        copy.check()
        copy.verify()
        return copy.mark()


def _copy(db: sqlite3.Connection, target: Path) -> None:
    """`db` into the new file `target`: written beside it, fsynced, then linked into place
    (which fails rather than replace a file that exists)."""
    if target.exists():
        raise StoreError(f"{target} exists already: choose a new file name")
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        os.close(os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        copy = sqlite3.connect(temp, isolation_level=None)
        try:
            db.backup(copy)
            copy.execute("PRAGMA journal_mode = DELETE")
        finally:
            copy.close()
        fd = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(temp, target)
        _fsync_dir(target.parent)
    except FileExistsError:
        raise StoreError(f"{target} exists already: choose a new file name") from None
    except OSError as err:
        raise StoreError(f"cannot write {target}: {err.strerror or err}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _genesis(store_id: str) -> bytes:
    """The link before a store's first event row."""
    return hashlib.blake2b(b"dkms store " + store_id.encode(), digest_size=32).digest()


def _link(previous: bytes, prefix: str, sn: int, said: str, message: bytes) -> bytes:
    """The link of one event row: the previous link and everything the row holds."""
    h = hashlib.blake2b(previous, digest_size=32)
    h.update(f"\x00{prefix}\x00{sn}\x00{said}\x00".encode())
    h.update(message)
    return h.digest()


def _run(db: sqlite3.Connection, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _lock(path: Path) -> int:
    """Take the store's exclusive lock, or say which process holds it."""
    try:
        return lockfile.exclusive(path)
    except LockHeld as held:
        raise StoreInUse(
            f"{path.with_suffix('')} is in use by another process (pid {held.holder}):"
            " is a node already running on this data directory?"
        ) from None


def _digest(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=32).digest()

"""The node store: group commit, replay into a fresh witness, locking, damage, and SIGKILL."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dkms.node.roles.codes import Code
from dkms.node.roles.effects import (
    PersistEvent,
    PersistReceipts,
    Reply,
    Surface,
)
from dkms.node.roles.inputs import Request
from dkms.node.roles.witness import Witness
from dkms.node.runtime.store import FILENAME, Store, StoreError
from dkms.node.testing.keys import seed
from dkms.node.testing.witnessed import Witnessed
from dkms.protocol.crypto import Signer
from dkms.protocol.events import interact
from dkms.protocol.ids import NodePrefix
from dkms.protocol.stream import Attachments, messagize


def kel_view(w: Witness) -> dict[str, list[tuple[str, dict[str, bytes]]]]:
    """Every KEL a witness holds: SAIDs in order, each with its receipts."""
    view = {}
    for prefix in w.validator.prefixes:
        kel = w.validator.kel(prefix)
        assert kel is not None
        view[prefix] = [(r.event.said, dict(r.receipts)) for r in kel.chain]
    return view


@pytest.fixture(scope="module")
def wired() -> Witnessed:
    """Two identifiers through 5 witnesses; a rotation cuts w0, which then needs receipts."""
    net = Witnessed.of(5)
    w = net.prefixes
    c = net.controller
    net.run(c.incept("alice", [seed(1)], [seed(2)], witnesses=w[:4], toad=3, now=0.0))
    net.run(c.incept("bob", [seed(5)], [seed(6)], witnesses=w[1:], toad=2, now=0.0))
    for i in range(3):
        net.run(c.interact("alice", [{"n": i}], now=1.0))
        net.run(c.interact("bob", [{"n": i}], now=1.0))
    net.run(c.rotate("alice", [seed(3)], cuts=[w[0]], adds=[w[4]], toad=3, now=2.0))
    for i in range(2):
        net.run(c.interact("alice", [{"m": i}], now=3.0))
    assert c.pending() == []
    return net


def test_replay_rebuilds_every_witness(wired: Witnessed, tmp_path: Path) -> None:
    for number, (prefix, original) in enumerate(wired.witnesses.items()):
        path = tmp_path / f"w{number}" / FILENAME
        batches = wired.disk[prefix]
        with Store.open(path) as store:
            for i in range(0, len(batches), 3):  # group commit: several steps per transaction
                store.apply([e for batch in batches[i : i + 3] for e in batch])
        with Store.open(path) as store:
            stream = store.replay()
            assert b"".join(store.replay_chunks(page=2)) == stream
        fresh = Witness(original.signer)
        fresh.restore(stream, 10.0)
        assert kel_view(fresh) == kel_view(original)
        assert kel_view(fresh)  # every witness holds something
        assert all(not pending for pending in fresh.validator.escrowed().values())


def test_the_cut_witness_gets_later_events_back_with_their_receipts(
    wired: Witnessed, tmp_path: Path
) -> None:
    cut = wired.witnesses[wired.prefixes[0]]
    alice = wired.controller.identity("alice").prefix
    with Store.open(tmp_path / FILENAME) as store:
        store.apply([e for batch in wired.disk[cut.prefix] for e in batch])
        stream = store.replay()
    fresh = Witness(cut.signer)
    fresh.restore(stream, 10.0)
    kel = fresh.validator.kel(alice)
    assert kel is not None and kel.sn == 6  # icp, 3 ixn, rot, 2 ixn; the last 3 needed bt=3
    assert all(len(r.receipts) >= 3 for r in kel.chain[4:])


def test_apply_is_idempotent(wired: Witnessed, tmp_path: Path) -> None:
    effects = [e for batch in wired.disk[wired.prefixes[1]] for e in batch]
    with Store.open(tmp_path / FILENAME) as store:
        store.apply(effects)
        once, stream = store.stats(), store.replay()
        store.apply(effects)
        store.apply(effects[:3])
        assert store.replay() == stream
        assert (store.stats().events, store.stats().receipts) == (once.events, once.receipts)
    with Store.open(tmp_path / FILENAME) as store:  # counts come back from the file
        assert (store.stats().events, store.stats().receipts) == (once.events, once.receipts)
        assert store.stats().bytes > 0


def test_restored_witness_still_refuses_a_second_version(wired: Witnessed, tmp_path: Path) -> None:
    original = wired.witnesses[wired.prefixes[1]]
    with Store.open(tmp_path / FILENAME) as store:
        store.apply([e for batch in wired.disk[original.prefix] for e in batch])
        fresh = Witness(original.signer)
        fresh.restore(store.replay(), 10.0)
    bob = wired.controller.identity("bob").prefix
    kel = fresh.validator.kel(bob)
    assert kel is not None
    other = interact(bob, prior=kel.chain[1].event.said, sn=2, anchors=[{"n": "other"}])
    message = messagize(other, Attachments(sigs=(Signer(seed(5)).sign_indexed(other.raw, 0),)))
    effects = fresh.step(Request(Surface.SUBMIT, NodePrefix(""), message), 11.0)
    reply = next(e for e in effects if isinstance(e, Reply))
    assert reply.code is Code.CONFLICT and "conflicting" in reply.reason
    assert not any(isinstance(e, PersistEvent | PersistReceipts) for e in effects)


def event(n: int, size: int = 500) -> PersistEvent:
    return PersistEvent("Eprefix", n, f"E{n:043d}", b"x" * size)


def test_a_failing_batch_stores_nothing(tmp_path: Path) -> None:
    with Store.open(tmp_path / FILENAME) as store:
        store.apply([event(0)])
        with pytest.raises(StoreError):
            store.apply([event(1), PersistEvent("Eprefix", 2**70, "Ebig", b"x")])
        assert store.stats().events == 1
        store.apply([event(1)])  # the store is still usable
        assert store.stats().events == 2


def test_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / FILENAME
    with Store.open(path) as store:
        store.apply([event(0)])
        for name in (FILENAME, FILENAME + "-wal", FILENAME + "-shm", FILENAME + ".lock"):
            mode = stat.S_IMODE((path.parent / name).stat().st_mode)
            assert mode == 0o600, (name, oct(mode))
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_second_opener_is_refused_and_told_who_holds_it(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    held = rf"in use by another process \(pid {os.getpid()}\)"
    with Store.open(path), pytest.raises(StoreError, match=held):
        Store.open(path)
    Store.open(path).close()  # released on close


def test_operator_can_read_it_while_the_node_runs(tmp_path: Path) -> None:
    with Store.open(tmp_path / FILENAME) as store:
        store.apply([event(0), event(1)])
        with sqlite3.connect(tmp_path / FILENAME) as shell:
            assert shell.execute("SELECT count(*) FROM events").fetchone() == (2,)
        shell.close()


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    path.write_bytes(b"these are not the pages you are looking for\n" * 200)
    with pytest.raises(StoreError, match="not a dkms store or is damaged") as info:
        Store.open(path)
    assert "\n" not in str(info.value)


def test_another_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE t (x)")
    other.close()
    with pytest.raises(StoreError, match="an SQLite database but not a dkms store"):
        Store.open(path)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    Store.open(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StoreError, match="schema 99, made by a newer dkms-node"):
        Store.open(path)


def test_damage_inside_the_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    with Store.open(path) as store:
        store.apply([event(n) for n in range(400)])  # ~50 pages
    data = bytearray(path.read_bytes())
    data[20 * 4096 : 30 * 4096] = b"\xa5" * (10 * 4096)
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="damaged"):  # open may notice already, or check
        store = Store.open(path)
        try:
            store.check()
        finally:
            store.close()


def test_closed_store_says_so(tmp_path: Path) -> None:
    store = Store.open(tmp_path / FILENAME)
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.apply([event(0)])


def test_meta_evidence_and_rulings(tmp_path: Path) -> None:
    with Store.open(tmp_path / FILENAME) as store:
        assert store.get_meta("node") is None
        store.bind_node("Bnode")
        store.bind_node("Bnode")
        with pytest.raises(StoreError, match="belongs to node Bnode, not Bother"):
            store.bind_node("Bother")
        assert store.put_evidence("Ea", 3, b"proof", 1.0)
        assert not store.put_evidence("Ea", 3, b"proof", 2.0)
        assert store.put_evidence("Eb", 1, b"other", 3.0)
        assert [e.body for e in store.evidence()] == [b"proof", b"other"]
        assert [(e.prefix, e.sn) for e in store.evidence("Ea")] == [("Ea", 3)]
        assert store.put_ruling("Ea", b"guilty", 4.0)
        assert not store.put_ruling("Ea", b"guilty", 5.0)
        assert [r.body for r in store.rulings("Ea")] == [b"guilty"]
        assert store.rulings("Eb") == []
    with Store.open(tmp_path / FILENAME) as store:
        assert store.get_meta("node") == b"Bnode"


# ------------------------------------------------------------------------- crash

PER_BATCH = 5
CHILD = f"""
import sys
from dkms.node.roles.effects import PersistEvent, PersistReceipts
from dkms.node.runtime.store import Store

store = Store.open(sys.argv[1])
n = int(sys.argv[2])
while True:
    batch = []
    for j in range({PER_BATCH}):
        said = "E%08d-%d" % (n, j)
        batch.append(PersistEvent("Eprefix", n * {PER_BATCH} + j, said, bytes([n % 251]) * 500))
        batch.append(PersistReceipts("Eprefix", n * {PER_BATCH} + j, said, (("Bw", b"s" * 64),)))
    store.apply(batch)
    print(n, flush=True)
    n += 1
"""


def run_until_killed(path: Path, start: int, batches: int) -> list[int]:
    """Start the writer, SIGKILL it once it has reported `batches` commits; what it reported."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(start)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(20.0, child.kill)  # bounds the test if the child stalls
    watchdog.start()
    try:
        assert child.stdout is not None
        reported = []
        for line in child.stdout:
            reported.append(int(line))
            if len(reported) == batches:
                child.kill()  # SIGKILL, most likely inside the next apply
                break
        out, err = child.communicate(timeout=10)
    finally:
        watchdog.cancel()
    assert child.returncode == -9, err
    return reported + [int(line) for line in out.split()]


def test_sigkill_loses_no_committed_batch(tmp_path: Path) -> None:
    path = tmp_path / "data" / FILENAME
    reported: list[int] = []
    start = 0
    for batches in (15, 40, 3):
        reported += run_until_killed(path, start, batches)
        with Store.open(path) as store:
            store.check()
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            rows = db.execute("SELECT said, sn FROM events ORDER BY ordinal").fetchall()
            receipts = db.execute("SELECT count(*) FROM receipts").fetchone()[0]
            db.close()
        stored = sorted({int(said[1:9]) for said, _ in rows})
        assert set(reported) <= set(stored)
        assert len(rows) == len(stored) * PER_BATCH  # every batch whole, or not at all
        assert receipts == len(rows)
        assert [sn for _, sn in rows] == list(range(len(rows)))  # first-seen order kept
        assert stored == list(range(len(stored)))
        start = stored[-1] + 1
    assert len(reported) >= 15 + 40 + 3


def test_apply_from_worker_threads(tmp_path: Path) -> None:
    """The runtime commits from `trio.to_thread` workers: any thread, one at a time."""
    with Store.open(tmp_path / FILENAME) as store:
        workers = [threading.Thread(target=store.apply, args=([event(n)],)) for n in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=10)
        assert store.stats().events == 8

"""A lost or damaged store never makes a witness duplicitous.

The process tests run real `dkms-node` witnesses, receipt events, then damage one witness's
store in each way an operator or a disk can (deleted with the seed kept, truncated to 0 and to
half, bytes flipped in the middle of a stored event, a stored signature rotted, the WAL
deleted after kill -9): each damaged copy must refuse to start with one line saying what to
do. The witness itself is then recovered from its co-witnesses (`dkms-node recover`), starts,
serves the receipts it had signed and refuses another version of what it receipted.

The other tests run in this process: the history record, the start-up proof, strict replay,
receipt floors, the identifier listing, recovery over an in-memory network, backup and
restore, and the permission rules.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import cbor2
import pytest
import trio

from dkms.node import backups, recovery
from dkms.node.client.controller import ControllerClient
from dkms.node.client.home import Home
from dkms.node.daemon import NODE_FILE, NodeError, _restore, _write_node_file
from dkms.node.p2p import parse_introduction
from dkms.node.roles import listing
from dkms.node.roles.codes import Code
from dkms.node.roles.effects import PersistEvent, Reply, Surface
from dkms.node.roles.floors import Floors
from dkms.node.roles.follower import Follower
from dkms.node.roles.inputs import Request
from dkms.node.roles.witness import Witness
from dkms.node.runtime import history
from dkms.node.runtime.control import SOCKET_FILE
from dkms.node.runtime.history import HISTORY_FILE, SLOT, History, HistoryError
from dkms.node.runtime.store import FILENAME, Mark, Store, StoreError
from dkms.node.runtime.transport import Answer
from dkms.node.secretfiles import SEED_FILE, SecretError, atomic_write, passphrase_from
from dkms.node.storecheck import StoreRefused, open_proven
from dkms.node.testing.keys import node_signer, seed
from dkms.node.testing.witnessed import Witnessed
from dkms.protocol.crypto import Signer
from dkms.protocol.events import Ilk, interact
from dkms.protocol.ids import NodePrefix
from dkms.protocol.stream import Attachments, Message, messagize, parse_stream

from .test_node_processes import (
    RecordingTransport,
    Seen,
    ask,
    controller,
    events_of,
    kel_at,
    witness_processes,
)

# ------------------------------------------------------------------ helpers


def rival(prefix: str, prior: str, sn: int, signer: Signer) -> bytes:
    """A validly signed interaction at `sn`: another version of whatever is there."""
    other = interact(prefix, prior=prior, sn=sn, anchors=[{"rival": sn}])
    return messagize(other, Attachments(sigs=(signer.sign_indexed(other.raw, 0),)))


def receipts_by(payload: bytes, witness: str) -> dict[str, bytes]:
    """SAID -> `witness`'s receipt signature, for every receipt in a reply."""
    found = {}
    for frame in parse_stream(payload):
        if isinstance(frame, Message) and frame.event.ilk is Ilk.RCT:
            for prefix, signature in frame.attachments.couples:
                if prefix == witness:
                    found[frame.event.said] = signature
    return found


def node_dir(tmp_path: Path, number: int, name: str = "node") -> tuple[Path, str]:
    """A data directory holding the seed of `node_signer(number)`; its prefix."""
    data_dir = tmp_path / name
    data_dir.mkdir(mode=0o700)
    atomic_write(data_dir / SEED_FILE, bytes([number + 1]) * 32)
    prefix = Signer(bytes([number + 1]) * 32, transferable=False).verfer
    return data_dir, prefix


def fill(data_dir: Path, node: str, events: int, start: int = 0) -> Mark:
    """Open the node's store as the daemon does and store `events` made-up events."""
    store, _, record = open_proven(data_dir, node)
    with store:
        store.after_commit(record.advance)
        for n in range(start, start + events):
            store.apply([PersistEvent("Eprefix", n, f"E{n:043d}", b"m" * 300)])
        mark = store.mark()
    record.close()
    return mark


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def test_a_store_in_use_by_another_process_says_only_that(tmp_path: Path) -> None:
    """Formerly worded as damage ("... could receipt other versions of them: rebuild it"):
    a second node on a data directory in use must be told it is in use, and nothing else."""
    data_dir, node = node_dir(tmp_path, 0)
    fill(data_dir, node, 3)
    with Store.open(data_dir / FILENAME), pytest.raises(StoreRefused) as info:
        open_proven(data_dir, node)
    assert "in use by another process" in str(info.value)
    assert "recover" not in str(info.value) and "other versions" not in str(info.value)


# ------------------------------------------------------------------ the history record


def test_history_record_survives_a_torn_slot_and_refuses_when_both_are(tmp_path: Path) -> None:
    first = Mark("s1", 3, b"\x01" * 32)
    record = History.write(tmp_path, "Bnode", first)
    for n in range(4, 8):
        record.advance(Mark("s1", n, bytes([n]) * 32))
    record.close()
    held = history.read(tmp_path)
    assert held is not None and held.node == "Bnode" and held.mark.events == 7
    assert stat.S_IMODE((tmp_path / HISTORY_FILE).stat().st_mode) == 0o600
    data = bytearray((tmp_path / HISTORY_FILE).read_bytes())
    newest = (held.seq % 2) * SLOT
    data[newest + 40 : newest + 44] = b"XXXX"  # a crash tore the slot being written
    (tmp_path / HISTORY_FILE).write_bytes(bytes(data))
    older = history.read(tmp_path)
    assert older is not None and older.mark.events == 6  # the other slot: a lower bound
    other = SLOT - newest
    data[other + 40 : other + 44] = b"XXXX"
    (tmp_path / HISTORY_FILE).write_bytes(bytes(data))
    with pytest.raises(HistoryError, match="is damaged"):
        history.read(tmp_path)


def test_a_history_slot_is_the_records_compact_json_padded_and_checksummed() -> None:
    for node, store in (("Bnode", "s1"), ('B\u00e9"\\', "st\u2603")):
        for events, head, seq in ((0, b"", 0), (12345678901, b"\xab" * 32, 7)):
            slot = history.Record(node, Mark(store, events, head), seq).slot()
            fields = {"v": 1, "node": node, "store": store, "events": events}
            body = json.dumps(fields | {"head": head.hex(), "seq": seq}, separators=(",", ":"))
            assert len(slot) == SLOT and slot.startswith(body.encode() + b" ")
            assert history._parse(slot) == history.Record(node, Mark(store, events, head), seq)


# ------------------------------------------------------------------ the start-up proof


def test_a_key_with_history_never_starts_on_a_missing_empty_or_other_store(
    tmp_path: Path,
) -> None:
    data_dir, node = node_dir(tmp_path, 0)
    assert fill(data_dir, node, 5).events == 5
    store_file = data_dir / FILENAME
    kept = tmp_path / "kept.sqlite3"
    shutil.copy(store_file, kept)

    store_file.unlink()
    with pytest.raises(StoreRefused, match=r"is missing \(it held 5 events\)") as info:
        open_proven(data_dir, node)
    assert "dkms-node recover --data-dir" in str(info.value)
    assert not store_file.exists()  # nothing was made in its place

    store_file.write_bytes(b"")
    with pytest.raises(StoreRefused, match=r"is empty \(it held 5 events\)"):
        open_proven(data_dir, node)

    store_file.unlink()  # another store of the same node (say, one started afresh elsewhere)
    with Store.open(store_file) as other:
        other.bind_node(node)
    with pytest.raises(StoreRefused, match="not the store this node last ran on"):
        open_proven(data_dir, node)

    store_file.unlink()
    shutil.copy(kept, store_file)  # the right store again: it starts
    store, expect, record = open_proven(data_dir, node)
    with store:
        assert expect is not None and expect.events == 5
        store.verify(expect)
    record.close()


def test_a_store_behind_its_history_is_refused_on_replay(tmp_path: Path) -> None:
    """What a deleted WAL leaves: the same store, fewer events than the node had stored."""
    data_dir, node = node_dir(tmp_path, 0)
    fill(data_dir, node, 3)
    old = tmp_path / "old.sqlite3"
    with sqlite3.connect(data_dir / FILENAME) as src, sqlite3.connect(old) as dst:
        src.backup(dst)
    src.close()
    dst.close()
    fill(data_dir, node, 2, start=3)
    for name in (FILENAME, FILENAME + "-wal", FILENAME + "-shm"):
        (data_dir / name).unlink(missing_ok=True)
    shutil.copy(old, data_dir / FILENAME)
    store, expect, record = open_proven(data_dir, node)
    with store, pytest.raises(StoreError, match="is behind: it holds 3 events, but this node"):
        store.verify(expect)
    record.close()


def test_a_store_of_another_node_is_one_clear_line(tmp_path: Path) -> None:
    data_dir, node = node_dir(tmp_path, 0)
    fill(data_dir, node, 1)
    (data_dir / HISTORY_FILE).unlink()  # as if only the seed were swapped for another one
    _, other = node_dir(tmp_path, 1, "other")
    with pytest.raises(StoreRefused, match=f"belongs to node {node}, not {other}") as info:
        open_proven(data_dir, other)
    assert "node.seed" in str(info.value) and "\n" not in str(info.value)


async def test_replay_is_strict_an_event_that_no_longer_verifies_stops_the_node(
    tmp_path: Path,
) -> None:
    """A rotted signature whose row was re-chained (as a bug or a hand edit could): the
    chain holds, so it is the replay that must refuse, not drop the event and what follows."""
    net = Witnessed.of(3)
    ctl = net.controller
    net.run(ctl.incept("alice", [seed(1)], [seed(2)], witnesses=net.prefixes, toad=2, now=0.0))
    for n in range(3):
        net.run(ctl.interact("alice", [{"n": n}], now=1.0))
    witness = net.witness(net.prefixes[0])
    data_dir = tmp_path / "w"
    data_dir.mkdir(mode=0o700)
    with Store.open(data_dir / FILENAME) as store:
        store.apply([e for batch in net.disk[witness.prefix] for e in batch])
    said = ctl.identity("alice").last_said
    db = sqlite3.connect(data_dir / FILENAME)
    (message,) = db.execute("SELECT message FROM events WHERE said = ?", (said,)).fetchone()
    rotten = bytes(message[:-5]) + bytes([message[-5] ^ 0x01]) + bytes(message[-4:])
    db.execute("UPDATE events SET message = ? WHERE said = ?", (rotten, said))
    db.commit()
    db.close()
    with (
        Store.open(data_dir / FILENAME) as store,
        pytest.raises(StoreError, match="does not match the store's hash chain"),
    ):
        store.verify()
    rechain(data_dir / FILENAME)
    with Store.open(data_dir / FILENAME) as store:
        store.verify()  # the chain is whole again ...
        fresh = Witness(witness.signer)
        with pytest.raises(NodeError, match=f"stored event {said} .* does not verify on replay"):
            _restore(fresh, store, None, data_dir)  # ... the event is not


def rechain(path: Path) -> None:
    """Recompute every link (and the head) of a store from its rows as they now are."""
    from dkms.node.runtime.store import _HEAD, _genesis, _link  # noqa: PLC0415

    db = sqlite3.connect(path)
    (store_id,) = db.execute("SELECT value FROM meta WHERE key = 'store'").fetchone()
    link = _genesis(bytes(store_id).decode())
    rows = db.execute("SELECT ordinal, prefix, sn, said, message FROM events ORDER BY ordinal")
    count = 0
    for ordinal, prefix, sn, said, message in rows.fetchall():
        link = _link(link, prefix, sn, said, bytes(message))
        db.execute("UPDATE events SET chain = ? WHERE ordinal = ?", (link, ordinal))
        count += 1
    db.execute("UPDATE meta SET value = ? WHERE key = 'chain'", (_HEAD.pack(count, link),))
    db.commit()
    db.close()


def test_a_schema_1_store_gets_its_chain(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    with Store.open(path) as store:
        store.apply([PersistEvent("Ea", n, f"E{n:043d}", b"x" * 10) for n in range(3)])
        replayed = store.replay()
    db = sqlite3.connect(path)  # back to what schema 1 held
    db.execute("ALTER TABLE events DROP COLUMN chain")
    db.execute("DROP TABLE floors")
    db.execute("DELETE FROM meta")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with Store.open(path) as store:
        assert store.mark().events == 3 and store.store_id
        assert store.replay() == replayed
        store.verify()


# ------------------------------------------------------------------ receipt floors


def test_a_recovered_witness_signs_nothing_new_at_or_below_its_floor() -> None:
    net = Witnessed.of(3)
    ctl = net.controller
    net.run(ctl.incept("alice", [seed(1)], [seed(2)], witnesses=net.prefixes, toad=3, now=0.0))
    for n in range(2):
        net.run(ctl.interact("alice", [{"n": n}], now=1.0))
    alice = ctl.identity("alice")
    witness = net.witness(net.prefixes[0])
    kel = witness.validator.kel(alice.prefix)
    assert kel is not None
    held = kel.chain[1]
    mine = held.receipts[witness.prefix]

    fresh = Witness(witness.signer)  # rebuilt: sn 0 and 1 with receipts, sn 2 without ours
    fresh.restore(witness.validator.replay(alice.prefix, 0), 0.0)
    last = fresh.validator.kel(alice.prefix)
    assert last is not None
    del last.chain[2].receipts[witness.prefix]
    fresh.floors.hold(alice.prefix, 2)

    def submit(message: bytes) -> Reply:
        effects = fresh.step(Request(Surface.SUBMIT, NodePrefix("C"), message), 2.0)
        return next(e for e in effects if isinstance(e, Reply))

    again = submit(Follower.stored_message(held))
    assert again.code.ok and receipts_by(again.payload, witness.prefix) == {held.event.said: mine}
    unsigned = submit(Follower.stored_message(last.chain[2]))
    assert unsigned.code is Code.CONFLICT and "signs none at or below sn 2" in unsigned.reason
    assert receipts_by(unsigned.payload, witness.prefix) == {}
    other = submit(rival(alice.prefix, kel.chain[1].event.said, 2, alice.signers[0]))
    assert other.code is Code.CONFLICT and not receipts_by(other.payload, witness.prefix)
    above = interact(alice.prefix, prior=last.chain[2].event.said, sn=3, anchors=[{"n": 3}])
    signed = messagize(above, Attachments(sigs=(alice.signers[0].sign_indexed(above.raw, 0),)))
    assert receipts_by(submit(signed).payload, witness.prefix).keys() == {above.said}

    floors = Floors({"E1": 4})
    floors.hold("E1", 2)  # floors never go down
    assert not floors.allows("E1", 4) and floors.allows("E1", 5) and floors.allows("E2", 0)


# ------------------------------------------------------------------ listing and recovery


def test_listing_pages_through_the_identifiers_that_name_a_witness() -> None:
    net = Witnessed.of(4)
    ctl = net.controller
    w = net.prefixes
    for n in range(5):
        net.run(
            ctl.incept(f"i{n}", [seed(10 + n)], [seed(20 + n)], witnesses=w[1:], toad=2, now=0.0)
        )
    net.run(ctl.incept("cut", [seed(30)], [seed(31)], witnesses=w[:3], toad=2, now=0.0))
    net.run(ctl.rotate("cut", [seed(31)], cuts=[w[0]], adds=[w[3]], toad=2, now=1.0))
    validator = net.witness(w[1]).validator
    every = sorted(ctl.identity(n).prefix for n in ctl.names)
    assert listing.witnessed_by(validator, w[1]) == (every, False)
    # w0 was cut by a rotation: it still receipted what came before.
    assert listing.witnessed_by(validator, w[0]) == ([ctl.identity("cut").prefix], False)
    first, more = listing.witnessed_by(validator, w[1], limit=4)
    assert (first, more) == (every[:4], True)
    rest = listing.answer(validator, {"t": listing.QUERY, "w": w[1], "a": first[-1]}, limit=4)
    assert cbor2.loads(rest.payload) == {"i": every[4:], "more": False}
    assert listing.answer(validator, {"t": listing.QUERY}).code is Code.BAD_QUERY


class RoleAsker:
    """Queries answered by the witness roles in this process; `lists=False` plays peers of
    a release that did not answer `{"t": "witnessed"}` yet."""

    def __init__(self, net: Witnessed, *, lists: bool = True) -> None:
        self.net = net
        self.lists = lists

    async def request(self, to: str, surface: str, payload: bytes, timeout: float) -> Answer:
        witness = self.net.witness(to)
        ask = cbor2.loads(payload)
        if ask.get("t") == listing.QUERY and not self.lists:
            return Answer(Code.BAD_QUERY, b"", "query type t must be 'kel' or 'state'")
        effects = witness.step(Request(Surface.QUERY, NodePrefix("R"), payload), 0.0)
        reply = next(e for e in effects if isinstance(e, Reply))
        return Answer(reply.code, reply.payload, reply.reason)


async def test_recover_rebuilds_from_co_witnesses_with_floors(tmp_path: Path) -> None:
    net = Witnessed.of(3)
    ctl = net.controller
    w = net.prefixes
    net.run(ctl.incept("alice", [seed(1)], [seed(2)], witnesses=w, toad=3, now=0.0))
    net.run(ctl.incept("bob", [seed(3)], [seed(4)], witnesses=w[:2], toad=2, now=0.0))
    for n in range(3):
        net.run(ctl.interact("alice", [{"n": n}], now=1.0))
    alice, bob = ctl.identity("alice"), ctl.identity("bob")
    victim = net.witness(w[0])
    data_dir = tmp_path / "victim"
    data_dir.mkdir(mode=0o700)
    atomic_write(data_dir / SEED_FILE, seed_of(0))
    with Store.open(data_dir / FILENAME) as store:  # what it had: now half gone
        store.bind_node(victim.prefix)
        store.apply([e for batch in net.disk[victim.prefix][:2] for e in batch])
    (data_dir / FILENAME).write_bytes((data_dir / FILENAME).read_bytes()[:3000])

    with trio.fail_after(20):
        done = await recovery.recover(data_dir, w[1:], RoleAsker(net))
    assert done.floors == {alice.prefix: 3, bob.prefix: 0}
    assert done.aside is not None and (done.aside / FILENAME).exists()  # moved, not deleted
    store, expect, record = open_proven(data_dir, victim.prefix)
    with store:
        fresh = Witness(victim.signer)
        _restore(fresh, store, expect, data_dir)
    record.close()
    kel = fresh.validator.kel(alice.prefix)
    assert kel is not None and kel.sn == 3
    assert fresh.floors.allows(alice.prefix, 4) and not fresh.floors.allows(alice.prefix, 3)
    effects = fresh.step(
        Request(
            Surface.SUBMIT,
            NodePrefix("C"),
            rival(alice.prefix, kel.chain[2].event.said, 3, alice.signers[0]),
        ),
        5.0,
    )
    reply = next(e for e in effects if isinstance(e, Reply))
    assert reply.code is Code.CONFLICT and not receipts_by(reply.payload, victim.prefix)

    # Peers that cannot list yet: --prefix names the identifiers, else recovery refuses.
    with pytest.raises(recovery.RecoveryError, match="name them with --prefix"):
        await recovery.gather(RoleAsker(net, lists=False), victim.prefix, w[1:])
    got = await recovery.gather(
        RoleAsker(net, lists=False), victim.prefix, w[1:], prefixes=[bob.prefix]
    )
    assert got.floors == {bob.prefix: 0} and got.notes


def seed_of(number: int) -> bytes:
    """The seed of `node_signer(number)` (node_signer(n) is Signer(seed(200 + n)))."""
    assert Signer(seed(200 + number), transferable=False).verfer == node_signer(number).verfer
    return seed(200 + number)


# ------------------------------------------------------------------ backup and restore


def test_backup_while_running_then_restore_refuses_older_unless_accepted(
    tmp_path: Path,
) -> None:
    data_dir, node = node_dir(tmp_path, 0)
    fill(data_dir, node, 4)
    first = tmp_path / "first.backup"
    store, _, record = open_proven(data_dir, node)  # "the node runs": it holds the lock
    with store:
        store.after_commit(record.advance)
        mark = backups.back_up(data_dir, first)
        assert mark.events == 4
        assert stat.S_IMODE(first.stat().st_mode) == 0o600
        with pytest.raises(backups.BackupError, match="a node is running on"):
            backups.restore(data_dir, first)
        with pytest.raises(backups.BackupError, match="exists already"):
            backups.back_up(data_dir, first)
        store.apply([PersistEvent("Eprefix", 9, f"E{9:043d}", b"later")])
    record.close()

    warnings: list[str] = []
    with pytest.raises(backups.BackupError, match="is older than this node's store") as info:
        backups.restore(data_dir, first, warn=warnings.append)
    assert "--accept-older" in str(info.value) and "dkms-node recover" in str(info.value)
    assert "\n" not in str(info.value)
    latest = tmp_path / "latest.backup"
    backups.back_up(data_dir, latest)
    assert backups.restore(data_dir, latest, warn=warnings.append).events == 5
    aside = [p for p in data_dir.iterdir() if p.name.startswith("replaced-")]
    assert len(aside) == 1 and (aside[0] / FILENAME).exists()

    restored = backups.restore(data_dir, first, accept_older=True, warn=warnings.append)
    assert restored.events == 4
    assert any("two versions of one event" in w for w in warnings)
    store, expect, record = open_proven(data_dir, node)  # and the node starts on it
    with store:
        store.verify(expect)
    record.close()

    node_dir(tmp_path, 1, "other")
    with pytest.raises(backups.BackupError, match="is a backup of node"):
        backups.restore(tmp_path / "other", first)


# ------------------------------------------------------------------ permissions


def test_data_dirs_are_private_and_writable_ones_are_refused(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        from dkms.node.secretfiles import load_or_create_node_seed, private_dir  # noqa: PLC0415

        load_or_create_node_seed(tmp_path / "new")
        assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
        shared = tmp_path / "shared"
        shared.mkdir(mode=0o777)
        with pytest.raises(SecretError, match=f"`chmod 700 {shared}`"):
            load_or_create_node_seed(shared)
        with pytest.raises(SecretError, match="may be written by other users"):
            Home(shared).learn([parse_introduction(f"{node_signer(0).verfer}@/ip4/1.2.3.4/tcp/1")])
        readable = tmp_path / "readable"
        readable.mkdir(mode=0o755)
        private_dir(readable)  # readable only: allowed (the daemon warns)

        class Host:
            prefix = "Bnode"

            class peer_id:  # stands in for libp2p's ID
                @staticmethod
                def to_base58() -> str:
                    return "12D3"

            @staticmethod
            def introductions() -> list[str]:
                return ["Bnode@/ip4/127.0.0.1/tcp/1"]

        _write_node_file(tmp_path / "new", Host())  # type: ignore[arg-type]
        assert stat.S_IMODE((tmp_path / "new" / NODE_FILE).stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_passphrase_files_are_held_to_the_seed_rule(tmp_path: Path) -> None:
    file = tmp_path / "pass"
    file.write_text("secret\n")
    file.chmod(0o644)
    with pytest.raises(SecretError, match=f"`chmod 600 {file}`"):
        passphrase_from(file=file)
    file.chmod(0o600)
    assert passphrase_from(file=file).reveal() == b"secret"
    read, write = os.pipe()  # `--passphrase-file <(...)`: a pipe has no mode to check
    os.write(write, b"piped\n")
    os.close(write)
    try:
        assert passphrase_from(file=f"/dev/fd/{read}").reveal() == b"piped"
    finally:
        os.close(read)


def test_a_history_record_others_may_change_is_refused(tmp_path: Path) -> None:
    data_dir, node = node_dir(tmp_path, 0)
    fill(data_dir, node, 1)
    (data_dir / HISTORY_FILE).chmod(0o666)
    with pytest.raises(StoreRefused, match="may be changed by other users"):
        open_proven(data_dir, node)


# ------------------------------------------------------------------ real processes

NODE = [sys.executable, "-m", "dkms.node.cli.node"]


async def run_node(*args: str) -> tuple[int, str]:
    """A `dkms-node` command to its end: exit status and standard error."""
    done = await trio.run_process(
        [*NODE, *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    return done.returncode, done.stderr.decode(errors="replace")


# A copy of a data directory leaves out the control socket (a killed node leaves it behind):
# copytree cannot copy a socket, nor would an operator's backup want one.
NOT_FILES = shutil.ignore_patterns(SOCKET_FILE)


def damage(source: Path, target: Path, how: str, said: str) -> None:
    """A copy of a stopped node's data directory, with its store damaged `how`."""
    shutil.copytree(source, target, ignore=NOT_FILES)
    store = target / FILENAME
    data = store.read_bytes()
    if how == "deleted":
        for name in (FILENAME, FILENAME + "-wal", FILENAME + "-shm"):
            (target / name).unlink(missing_ok=True)
    elif how == "empty":
        store.write_bytes(b"")
    elif how == "half":
        store.write_bytes(data[: len(data) // 2])
    elif how == "flipped":  # 16 bytes in the middle of a stored event's message
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
            row = db.execute("SELECT message FROM events WHERE said = ?", (said,)).fetchone()
        db.close()
        at = data.index(bytes(row[0])) + len(row[0]) // 2
        flipped = bytes(b ^ 0xFF for b in data[at : at + 16])
        store.write_bytes(data[:at] + flipped + data[at + 16 :])
    elif how == "rotted":  # one byte of a stored signature, edited with sqlite3
        db = sqlite3.connect(store)
        (message,) = db.execute("SELECT message FROM events WHERE said = ?", (said,)).fetchone()
        rotten = bytes(message[:-3]) + bytes([message[-3] ^ 0x04]) + bytes(message[-2:])
        db.execute("UPDATE events SET message = ? WHERE said = ?", (rotten, said))
        db.commit()
        db.close()
    elif how == "wal":
        assert (target / (FILENAME + "-wal")).stat().st_size > 0
        (target / (FILENAME + "-wal")).unlink()
        (target / (FILENAME + "-shm")).unlink(missing_ok=True)


REFUSALS = {  # how the store was damaged -> what the one line says
    "deleted": "is missing",
    "empty": "is empty",
    "half": "damaged",
    "flipped": "does not match the store's hash chain",
    "rotted": "does not match the store's hash chain",
    "wal": "is behind",
}


async def receipted_by_all(client: ControllerClient, peer: str, prefix: str, count: int) -> bool:
    """Whether `peer` holds `count` events of `prefix`, each with every witness's receipt."""
    page = await ask(client, peer, {"t": "kel", "i": prefix, "s": 0})
    events = [f for f in parse_stream(page) if isinstance(f, Message)]
    return len(events) == count and all(len(f.attachments.wigs) == 3 for f in events)


@pytest.mark.slow
async def test_damaged_stores_refuse_and_recovery_never_double_receipts(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with witness_processes(tmp_path, 3) as nodes:
            victim, prefixes = nodes[0], [n.prefix for n in nodes]
            intros = [n.introduction for n in nodes]
            async with controller(intros) as client:
                transport = client.runtime.transport
                assert isinstance(transport, RecordingTransport)
                seen = transport.watch = Seen(victim.prefix)
                ctl = client.controller
                effects = ctl.incept(
                    "alice", [seed(1)], [seed(2)], witnesses=prefixes, toad=3, now=0.0
                )
                alice = ctl.identity("alice")
                await client.witnessed(effects, alice.last_said)
                for n in range(3):
                    effects = ctl.interact("alice", [{"n": n}], now=client.runtime.now())
                    await client.witnessed(effects, alice.last_said)
                expected = events_of(ctl.export("alice"))

                # A clean stop (everything in the database file), then one more event that
                # only the WAL holds when the witness is killed.
                await victim.terminate()
                clean = tmp_path / "clean"
                shutil.copytree(victim.data_dir, clean, ignore=NOT_FILES)
                await victim.start(victim.listen)
                effects = ctl.interact("alice", [{"n": 3}], now=client.runtime.now())
                await client.witnessed(effects, alice.last_said)
                expected = events_of(ctl.export("alice"))
                dirname = str(victim.data_dir)
                # Witness agreement: the co-witnesses hold every receipt, the victim's too.
                with trio.fail_after(10):
                    for peer in prefixes[1:]:
                        while not await receipted_by_all(client, peer, alice.prefix, 5):
                            await trio.sleep(0.05)
                # A backup while it runs; a restore is refused while it runs.
                copy = tmp_path / "running.backup"
                code, err = await run_node("backup", "--data-dir", dirname, "--to", str(copy))
                assert code == 0, err
                assert stat.S_IMODE(copy.stat().st_mode) == 0o600
                code, err = await run_node("restore", "--data-dir", dirname, "--from", str(copy))
                assert code == 1 and "a node is running on" in one_line(err)
                with Store.inspect(copy) as backed_up:
                    assert backed_up.mark().events == 5
                victim.kill()
                assert await victim.wait() == -signal.SIGKILL
                killed = tmp_path / "killed"
                shutil.copytree(victim.data_dir, killed, ignore=NOT_FILES)

                # Every damaged copy refuses to start, with one line that says what to do.
                results: dict[str, tuple[int, str]] = {}

                async def attempt(how: str) -> None:
                    target = tmp_path / f"damaged-{how}"
                    damage(killed if how == "wal" else clean, target, how, expected[2][1])
                    results[how] = await run_node("run", "--data-dir", str(target))

                async with trio.open_nursery() as nursery:
                    for how in REFUSALS:
                        nursery.start_soon(attempt, how)
                for how, (code, err) in sorted(results.items()):
                    line = one_line(err)
                    assert code == 1, (how, err)
                    assert line.startswith("dkms-node: ") and REFUSALS[how] in line, (how, line)
                    assert "dkms-node recover --data-dir" in line, (how, line)

                # The witness itself loses its store, keeps its seed, and is recovered.
                for name in (FILENAME, FILENAME + "-wal", FILENAME + "-shm"):
                    (victim.data_dir / name).unlink(missing_ok=True)
                code, err = await run_node(
                    "recover",
                    "--data-dir",
                    dirname,
                    "--from",
                    *intros[1:],
                    "--prefix",
                    alice.prefix,
                )
                assert code == 0, err
                await victim.start(victim.listen)
                assert await kel_at(client, victim.prefix, alice.prefix) == expected

                # It hands out the receipts it had signed (the peers held them), the same bytes.
                for sn in (1, 4):
                    record = ctl.validator.record(expected[sn][1])
                    assert record is not None
                    again = messagize(record.event, Attachments(sigs=record.sigs))
                    code, payload, reason = await transport.request(
                        victim.prefix, Surface.SUBMIT.value, again, 5
                    )
                    assert code.ok, reason
                    said = expected[sn][1]
                    assert receipts_by(payload, victim.prefix) == {said: seen.signatures[said]}
                # Another version of any event it receipted is refused, unsigned.
                for sn in range(1, 5):
                    other = rival(alice.prefix, expected[sn - 1][1], sn, alice.signers[0])
                    code, payload, reason = await transport.request(
                        victim.prefix, Surface.SUBMIT.value, other, 5
                    )
                    assert code is Code.CONFLICT, reason
                    assert receipts_by(payload, victim.prefix) == {}
                # Above the floor it witnesses as before; never two versions at one sn.
                effects = ctl.interact("alice", [{"n": 4}], now=client.runtime.now())
                await client.witnessed(effects, alice.last_said)
                assert alice.last_said in seen.signatures
                assert all(len(saids) == 1 for saids in seen.saids.values())

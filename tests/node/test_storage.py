"""The storage policy (roles/storage.py): unwitnessed identifiers kept loose and evicted least
recently extended first, witnessed ones chained for good, and no new identifiers once the
store is at its quota. Pure roles with real signed events; then a real store across a
restart, the settings, and the metrics."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from dkms.node.config import ConfigError, load
from dkms.node.daemon import _restore, _storage_metrics, _table_metrics
from dkms.node.roles.codes import Code
from dkms.node.roles.effects import (
    ChainLoose,
    DropLoose,
    Effect,
    Persist,
    PersistEvent,
    Publish,
    Reply,
    Report,
    Surface,
)
from dkms.node.roles.inputs import Heard, Request
from dkms.node.roles.juror import Lag
from dkms.node.roles.storage import NOTE_EVERY
from dkms.node.roles.topics import kel_topic
from dkms.node.roles.watcher import Watcher
from dkms.node.roles.witness import Witness
from dkms.node.runtime.metrics import Metrics
from dkms.node.runtime.store import FILENAME, Store
from dkms.node.testing.keys import node_signer
from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.events import Event, incept, interact, receipt, rotate, seal
from dkms.protocol.ids import NodePrefix
from dkms.protocol.stream import Attachments, messagize

WATCHER = node_signer(50)
WITNESS = node_signer(51)
OTHER_WITNESS = node_signer(52)


def key(label: object, generation: int) -> Signer:
    return Signer(hashlib.sha256(repr((label, generation)).encode()).digest())


class Ident:
    """One identifier's controller: keys by generation, its events, each signed on demand."""

    def __init__(
        self,
        label: object,
        witnesses: Sequence[Signer] = (),
        toad: int = 0,
        delegator: str | None = None,
    ) -> None:
        self.label = label
        self.generation = 0
        self.witnesses = list(witnesses)
        icp = incept(
            [key(label, 0).verfer],
            next_digests=[next_key_digest(key(label, 1).verfer)],
            witnesses=[w.verfer for w in witnesses],
            toad=toad,
            delegator=delegator,
        )
        self.events = [icp]
        self.signers = {icp.said: key(label, 0)}

    @property
    def prefix(self) -> str:
        return self.events[0].prefix

    @property
    def icp(self) -> Event:
        return self.events[0]

    def ixn(self, anchors: Sequence[object] = ()) -> Event:
        last = self.events[-1]
        event = interact(self.prefix, prior=last.said, sn=last.sn + 1, anchors=list(anchors))
        return self._add(event)

    def rot(
        self, adds: Sequence[Signer] = (), cuts: Sequence[Signer] = (), toad: int = 0
    ) -> Event:
        self.generation += 1
        last = self.events[-1]
        event = rotate(
            self.prefix,
            [key(self.label, self.generation).verfer],
            prior=last.said,
            sn=last.sn + 1,
            next_digests=[next_key_digest(key(self.label, self.generation + 1).verfer)],
            adds=[w.verfer for w in adds],
            cuts=[w.verfer for w in cuts],
            toad=toad,
        )
        return self._add(event)

    def _add(self, event: Event) -> Event:
        self.events.append(event)
        self.signers[event.said] = key(self.label, self.generation)
        return event

    def signed(self, event: Event, *witnesses: Signer) -> bytes:
        """The event with its controller signature, and a receipt of each of `witnesses`."""
        sig = self.signers[event.said].sign_indexed(event.raw, 0)
        out = messagize(event, Attachments(sigs=(sig,)))
        if witnesses:
            rct = receipt(event.prefix, event.sn, event.said)
            couples = tuple((w.verfer, w.sign_raw(event.raw)) for w in witnesses)
            out += messagize(rct, Attachments(couples=couples))
        return out


def watcher(**quotas: int) -> Watcher:
    return Watcher(WATCHER, "Egovernance", **quotas)


def hear(role: Watcher | Witness, data: bytes, now: float = 0.0) -> list[Effect]:
    return role.step(Heard(kel_topic("E"), NodePrefix("Epeer"), data), now)


def submit(role: Witness, data: bytes, now: float = 0.0) -> tuple[Reply, list[Effect]]:
    effects = role.step(Request(Surface.SUBMIT, NodePrefix("Econtroller"), data), now)
    [reply] = [e for e in effects if isinstance(e, Reply)]
    return reply, effects


def stored(effects: Sequence[Effect]) -> list[tuple[str, int, bool]]:
    """(prefix, sn, loose) of each event the effects store."""
    return [(e.prefix, e.sn, e.loose) for e in effects if isinstance(e, PersistEvent)]


def loose_held(*events: tuple[Ident, Event]) -> int:
    """What a watcher holds for these (unwitnessed) events, measured on a fresh one."""
    probe = watcher()
    for ident, event in events:
        hear(probe, ident.signed(event))
    return probe.storage.loose_held


# ---------------------------------------------------------------- unwitnessed identifiers


def test_free_identifiers_are_kept_loose_and_the_least_recently_extended_go_first() -> None:
    a, b, c, d = (Ident(("free", n)) for n in range(4))
    a_ixn = a.ixn([{"d": "x"}])
    full = loose_held((a, a.icp), (b, b.icp), (c, c.icp), (a, a_ixn))
    role = watcher(unwitnessed_quota=full)  # exactly room for these four events
    effects: list[Effect] = []
    for ident, event in ((a, a.icp), (b, b.icp), (c, c.icp), (a, a_ixn)):
        effects += hear(role, ident.signed(event))
    assert stored(effects) == [
        (a.prefix, 0, True),
        (b.prefix, 0, True),
        (c.prefix, 0, True),
        (a.prefix, 1, True),
    ]
    assert not any(isinstance(e, DropLoose) for e in effects)
    assert list(role.storage.loose) == [b.prefix, c.prefix, a.prefix]
    assert role.storage.loose_held == full

    effects = hear(role, d.signed(d.icp), 1.0)  # one more: b was extended least recently
    assert stored(effects) == [(d.prefix, 0, True)]
    assert [e for e in effects if isinstance(e, DropLoose)] == [DropLoose(b.prefix)]
    assert role.validator.kel(b.prefix) is None
    assert role.validator.record(b.icp.said) is None
    assert b.icp.said not in role.receipts.bodies  # the receipt detector's copy went too
    assert role.key_state(b.prefix)["standing"] == "unknown"
    assert all(role.validator.kel(x.prefix) is not None for x in (a, c, d))
    assert (role.storage.evictions, role.storage.loose_held) == (1, full)
    assert any(r.level == "info" and "evicted" in r.message for r in _reports(effects))
    # An evicted identifier may come again: it is new, and least recent goes (c now).
    effects = hear(role, b.signed(b.icp), 2.0)
    assert stored(effects) == [(b.prefix, 0, True)]
    assert [e for e in effects if isinstance(e, DropLoose)] == [DropLoose(c.prefix)]


def test_witnessed_identifiers_are_chained_and_never_evicted() -> None:
    role = watcher(unwitnessed_quota=1)  # no room for anything unwitnessed
    kept = Ident("kept", [WITNESS], toad=1)
    effects = hear(role, kept.signed(kept.icp, WITNESS))
    assert stored(effects) == [(kept.prefix, 0, False)]
    free = Ident("free")
    effects = hear(role, free.signed(free.icp), 1.0)
    assert stored(effects) == [(free.prefix, 0, True)]
    assert [e for e in effects if isinstance(e, DropLoose)] == [DropLoose(free.prefix)]
    assert role.validator.kel(free.prefix) is None
    effects = hear(role, kept.signed(kept.ixn(), WITNESS), 2.0)
    assert stored(effects) == [(kept.prefix, 1, False)]
    assert role.validator.kel(kept.prefix) is not None
    assert not role.storage.loose and role.storage.loose_held == 0


def test_an_identifier_that_gains_witnesses_joins_the_chain_for_good() -> None:
    role = watcher()
    ident = Ident("late")
    effects = hear(role, ident.signed(ident.icp))
    effects += hear(role, ident.signed(ident.ixn()))
    assert stored(effects) == [(ident.prefix, 0, True), (ident.prefix, 1, True)]
    rot = ident.rot(adds=[WITNESS], toad=1)
    effects = hear(role, ident.signed(rot, WITNESS), 1.0)
    chained = [e for e in effects if isinstance(e, (ChainLoose, PersistEvent))]
    assert chained == [
        ChainLoose(ident.prefix),
        PersistEvent(ident.prefix, 2, rot.said, chained[1].message),  # type: ignore[union-attr]
    ]
    assert ident.prefix not in role.storage.loose and role.storage.loose_held == 0
    # Back to no witnesses: still kept for good (its events are in the chain already).
    effects = hear(role, ident.signed(ident.rot(cuts=[WITNESS])), 2.0)
    effects += hear(role, ident.signed(ident.ixn()), 2.0)
    assert stored(effects) == [(ident.prefix, 3, False), (ident.prefix, 4, False)]
    assert not role.storage.loose


def test_delegation_ties_loose_identifiers_together() -> None:
    boss = Ident("boss")
    worker = Ident("worker", delegator=boss.prefix)
    anchor = boss.ixn([seal(worker.icp)])
    role = watcher()
    for data in (boss.signed(boss.icp), boss.signed(anchor), worker.signed(worker.icp)):
        hear(role, data)
    assert list(role.storage.loose) == [boss.prefix, worker.prefix]
    assert role.storage.loose[boss.prefix].delegatees == {worker.prefix}

    # Evicting the delegator evicts its loose delegatee with it, though it is more recent.
    tight = watcher(unwitnessed_quota=role.storage.loose_held)
    for data in (boss.signed(boss.icp), boss.signed(anchor), worker.signed(worker.icp)):
        hear(tight, data)
    newcomer = Ident("newcomer")
    effects = hear(tight, newcomer.signed(newcomer.icp), 1.0)
    assert {e.prefix for e in effects if isinstance(e, DropLoose)} == {boss.prefix, worker.prefix}
    assert list(tight.storage.loose) == [newcomer.prefix]
    assert tight.validator.kel(worker.prefix) is None

    # A witnessed delegatee makes its loose delegator kept too, chained before it.
    kept = Ident("kept", [WITNESS], toad=1, delegator=boss.prefix)
    effects = hear(role, boss.signed(boss.ixn([seal(kept.icp)])), 2.0)
    effects = hear(role, kept.signed(kept.icp, WITNESS), 2.0)
    chained = [e for e in effects if isinstance(e, (ChainLoose, PersistEvent))]
    assert [type(e) for e in chained] == [ChainLoose, PersistEvent]
    assert chained[0] == ChainLoose(boss.prefix) and chained[1].prefix == kept.prefix
    assert not chained[1].loose  # type: ignore[union-attr]
    assert list(role.storage.loose) == [worker.prefix]  # still loose, its delegator kept
    assert role.storage.loose[worker.prefix].delegator == ""


def test_room_for_a_delegated_inception_is_never_made_by_evicting_its_delegator() -> None:
    boss = Ident("boss")
    worker = Ident("worker", delegator=boss.prefix)
    anchor = boss.ixn([seal(worker.icp)])
    other = Ident("other")
    before = [boss.signed(boss.icp), boss.signed(anchor), other.signed(other.icp)]
    probe = watcher()
    for data in before:
        hear(probe, data)
    room = probe.storage.held
    hear(probe, worker.signed(worker.icp))
    need = probe.storage.held - room

    # Room for the delegatee once one inception is evicted: "other", though boss is older.
    role = watcher(store_quota=room + need - 1)
    for data in before:
        hear(role, data)
    effects = hear(role, worker.signed(worker.icp), 1.0)
    assert [e for e in effects if isinstance(e, DropLoose)] == [DropLoose(other.prefix)]
    assert list(role.storage.loose) == [boss.prefix, worker.prefix]
    assert role.storage.loose[boss.prefix].delegatees == {worker.prefix}

    # No room even then: the delegatee is refused, its delegator kept.
    role = watcher(store_quota=room - 1)
    for data in before[:2]:
        hear(role, data)
    effects = hear(role, worker.signed(worker.icp), 1.0)
    assert not any(isinstance(e, (DropLoose, PersistEvent)) for e in effects)
    assert role.storage.refusals == 1 and list(role.storage.loose) == [boss.prefix]


def test_a_forgotten_kel_makes_no_lag_anomaly() -> None:
    lag = Lag(10.0)
    lag.seen("Egone", 1, "Eone", 0.0)
    lag.seen("Ekept", 1, "Etwo", 0.0)
    lag.forget("Egone", 5.0)
    lag.seen("Egone", 2, "Ethree", 6.0)  # seen again after it was forgotten: counts
    found = lag.due(30.0, lambda said: None)
    assert sorted(a["d"] for a in found) == ["Ethree", "Etwo"]  # type: ignore[type-var]


# ---------------------------------------------------------------- the store quota


def test_at_the_store_quota_a_watcher_keeps_no_new_identifier_but_extends_held_ones() -> None:
    held = Ident("held", [WITNESS], toad=1)
    free = Ident("free")
    probe = watcher()
    hear(probe, held.signed(held.icp, WITNESS))
    hear(probe, free.signed(free.icp))
    role = watcher(store_quota=probe.storage.held + 100)  # no room for a third inception
    hear(role, held.signed(held.icp, WITNESS))
    hear(role, free.signed(free.icp))
    assert list(role.storage.loose) == [free.prefix]

    newcomer = Ident("newcomer", [WITNESS], toad=1)
    effects = hear(role, newcomer.signed(newcomer.icp, WITNESS), 1.0)
    assert DropLoose(free.prefix) in effects  # the unwitnessed go first, but that is not enough
    assert stored(effects) == []
    assert role.validator.kel(newcomer.prefix) is None
    assert role.storage.refusals == 1
    [warning] = [r for r in _reports(effects) if r.level == "warning"]
    assert "store quota" in warning.message and newcomer.prefix in warning.message
    assert role.key_state(newcomer.prefix)["standing"] == "unknown"

    # An identifier held is still followed, past the quota.
    for sn in range(1, 8):
        effects = hear(role, held.signed(held.ixn(), WITNESS), 2.0)
        assert stored(effects) == [(held.prefix, sn, False)]
    assert role.storage.held > role.storage.quota

    # Refusals are counted; the warning comes at most once a minute.
    another = Ident("another", [WITNESS], toad=1)
    effects = hear(role, another.signed(another.icp, WITNESS), 3.0)
    assert role.storage.refusals == 2 and not _reports(effects, "warning")
    third = Ident("third", [WITNESS], toad=1)
    effects = hear(role, third.signed(third.icp, WITNESS), 1.0 + NOTE_EVERY)
    [warning] = _reports(effects, "warning")
    assert "(1 more like it not logged)" in warning.message


def test_the_quota_counts_what_an_event_holds_in_memory_not_only_its_bytes() -> None:
    """An inception anchoring 20,000 empty maps is 60 KB on the wire and over 4 MB decoded,
    and the node holds the decoded form as long as it keeps the KEL: a witness whose quota
    counted stored bytes alone took one (and a thousand more) within a 1 MiB quota."""
    signer = key("heavy", 0)
    heavy = incept(
        [signer.verfer],
        next_digests=[next_key_digest(key("heavy", 1).verfer)],
        witnesses=[WITNESS.verfer],
        toad=1,
        anchors=[{} for _ in range(20_000)],
    )
    message = messagize(heavy, Attachments(sigs=(signer.sign_indexed(heavy.raw, 0),)))
    assert len(message) < 100_000
    role = Witness(WITNESS, store_quota=1 << 20)
    reply, effects = submit(role, message)
    assert reply.code is Code.QUOTA and reply.payload == b""
    assert stored(effects) == [] and role.validator.kel(heavy.prefix) is None
    assert role.storage.stored == role.storage.held == 0
    light = Ident("light", [WITNESS], toad=1)  # an ordinary identifier still fits
    reply, _ = submit(role, light.signed(light.icp))
    assert reply.code is Code.OK
    assert 0 < role.storage.stored <= role.storage.held <= role.storage.quota


def test_a_witness_at_its_quota_refuses_new_identifiers_but_receipts_held_ones() -> None:
    held = Ident("held", [WITNESS], toad=1)
    probe = Witness(WITNESS)
    submit(probe, held.signed(held.icp))
    role = Witness(WITNESS, store_quota=probe.storage.held + 100)
    reply, _ = submit(role, held.signed(held.icp))
    assert reply.code is Code.OK and reply.payload

    newcomer = Ident("newcomer", [WITNESS, OTHER_WITNESS], toad=1)
    reply, effects = submit(role, newcomer.signed(newcomer.icp) + newcomer.signed(newcomer.ixn()))
    assert reply.code is Code.QUOTA
    assert reply.payload == b""  # nothing signed
    assert "store quota" in reply.reason and newcomer.prefix in reply.reason
    assert not any(isinstance(e, (PersistEvent, Publish)) for e in effects)
    assert role.validator.kel(newcomer.prefix) is None
    assert role.storage.refusals == 1
    # Gossip of it changes nothing either.
    assert stored(hear(role, newcomer.signed(newcomer.icp), 1.0)) == []
    assert role.validator.kel(newcomer.prefix) is None

    ixn = held.ixn()
    reply, effects = submit(role, held.signed(ixn), 2.0)
    assert reply.code is Code.OK and reply.payload  # our receipt
    assert stored(effects) == [(held.prefix, 1, False)]
    assert any(isinstance(e, Publish) for e in effects)
    assert role.storage.held > role.storage.quota
    # The same event again: the receipt it had, never another version.
    again, _ = submit(role, held.signed(ixn), 3.0)
    assert again.code is Code.ALREADY and again.payload == reply.payload


def test_a_witness_keeps_the_events_of_identifiers_without_witnesses_loose() -> None:
    role = Witness(WITNESS, unwitnessed_quota=1)
    free = Ident("free")
    reply, effects = submit(role, free.signed(free.icp))
    assert reply.code is Code.NOT_WITNESS
    assert stored(effects) == [(free.prefix, 0, True)]
    assert DropLoose(free.prefix) in effects  # over the unwitnessed quota: evicted
    assert role.validator.kel(free.prefix) is None


def _reports(effects: Sequence[Effect], level: str | None = None) -> list[Report]:
    return [e for e in effects if isinstance(e, Report) and level in (None, e.level)]


# ---------------------------------------------------------------- a real store, restarted


async def test_evictions_keep_the_chain_whole_across_a_restart(tmp_path: Path) -> None:
    """A watcher's effects through a real store: loose rows come and go, an identifier
    gaining witnesses moves into the chain, and after a restart the store proves its chain,
    replays everything and gives the role back its counts."""
    kept = Ident("kept", [WITNESS], toad=1)
    frees = [Ident(("free", n)) for n in range(6)]
    late = Ident("late")
    late_ixn = late.ixn()
    per_free = loose_held((frees[0], frees[0].icp))
    quota = loose_held((late, late.icp), (late, late_ixn), (frees[0], frees[0].icp)) + per_free
    role = watcher(unwitnessed_quota=quota)  # room for late and two more
    path = tmp_path / FILENAME
    with Store.open(path) as store:

        def step(data: bytes, now: float) -> None:
            store.apply([e for e in hear(role, data, now) if isinstance(e, Persist)])

        step(kept.signed(kept.icp, WITNESS), 0.0)
        for n, free in enumerate(frees[:4]):
            step(free.signed(free.icp), 1.0 + n)  # the fourth evicts the first
        step(late.signed(late.icp), 5.0)  # evicts frees[1]
        step(late.signed(late_ixn), 6.0)
        for n, free in enumerate(frees[4:]):
            step(free.signed(free.icp), 7.0 + n)  # evict frees[2] and frees[3], not late
        step(kept.signed(kept.ixn(), WITNESS), 10.0)
        assert role.storage.evictions == 4
        assert list(role.storage.loose) == [late.prefix, frees[4].prefix, frees[5].prefix]
        # late gains witnesses: its loose rows join the chain, in order, before its rotation
        step(late.signed(late.rot(adds=[WITNESS], toad=1), WITNESS), 11.0)
        assert list(role.storage.loose) == [frees[4].prefix, frees[5].prefix]
        mark = store.mark()
        assert (store.stats().events, store.stats().loose) == (5, 2)
        usage = store.usage()
        assert usage.stored == role.storage.stored
        assert [p for p, _ in usage.loose] == list(role.storage.loose)
        assert [size for _, size in usage.loose] == [
            e.stored for e in role.storage.loose.values()
        ]

    with Store.open(path) as store:
        store.check()
        store.verify(expect=mark)
        fresh = watcher(unwitnessed_quota=quota)
        with trio.fail_after(10):
            assert _restore(fresh, store, mark, tmp_path) == 7
        assert sorted(fresh.validator.prefixes) == sorted(role.validator.prefixes)
        assert fresh.validator.kel(late.prefix).sn == 2  # type: ignore[union-attr]
        assert fresh.storage.stored == role.storage.stored
        assert fresh.storage.held == role.storage.held  # worked out again from the replay
        assert list(fresh.storage.loose) == list(role.storage.loose)
        assert fresh.storage.loose_held == role.storage.loose_held
        # Started with a lower quota, it evicts the oldest at once.
        smaller = watcher(unwitnessed_quota=per_free)
        with trio.fail_after(10):
            _restore(smaller, store, mark, tmp_path)
        drops = [e for e in smaller.start(20.0) if isinstance(e, DropLoose)]
        assert drops == [DropLoose(frees[4].prefix)]
        store.apply(drops)
        assert store.stats().loose == 1
        store.verify(expect=mark)  # the chain does not notice loose rows going


def test_a_chained_event_takes_its_identifiers_loose_rows_into_the_chain(tmp_path: Path) -> None:
    """The store's safety net: a chained event of an identifier with loose rows moves them
    into the chain first, even without a ChainLoose."""
    with Store.open(tmp_path / FILENAME) as store:
        store.apply([PersistEvent("Ea", n, f"E{n:043d}", b"x" * 10, loose=True) for n in range(2)])
        store.apply([PersistEvent("Eb", 0, "E" + "b" * 43, b"y" * 10)])
        assert (store.stats().events, store.stats().loose) == (1, 2)
        loose_first = store.replay()
        store.apply([PersistEvent("Ea", 2, f"E{2:043d}", b"x" * 10)])
        assert (store.stats().events, store.stats().loose) == (4, 0)
        assert [page.events for page in store.pages()] == [
            (
                ("Eb", 0, "E" + "b" * 43),
                ("Ea", 0, f"E{0:043d}"),
                ("Ea", 1, f"E{1:043d}"),
                ("Ea", 2, f"E{2:043d}"),
            )
        ]
        store.verify()
        assert loose_first == b"y" * 10 + b"x" * 20  # chained first, then loose
        store.apply([DropLoose("Ea")])  # nothing loose left to drop
        assert store.stats().events == 4


def test_a_schema_2_store_gets_its_loose_table(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    with Store.open(path) as store:
        store.apply([PersistEvent("Ea", 0, "E" + "a" * 43, b"x")])
        mark = store.mark()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE loose")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    with Store.inspect(path) as old:  # a backup made before: readable as it is
        old.verify(expect=mark)
        assert old.usage().loose == () and old.replay() == b"x"
    with Store.open(path) as store:
        store.apply([PersistEvent("Eb", 0, "E" + "b" * 43, b"y", loose=True)])
        assert store.replay() == b"xy"
        store.verify(expect=mark)


# ---------------------------------------------------------------- settings and metrics


def test_quota_settings_take_bytes_or_binary_units(tmp_path: Path) -> None:
    assert load().store_quota == 4 << 30 and load().unwitnessed_quota == 64 << 20
    config = load(store_quota="100 MiB", unwitnessed_quota="8MiB")
    assert (config.store_quota, config.unwitnessed_quota) == (100 << 20, 8 << 20)
    path = tmp_path / "node.toml"
    path.write_text('store-quota = "2GiB"\nunwitnessed_quota = 4096\n')
    assert (load(path).store_quota, load(path).unwitnessed_quota) == (2 << 30, 4096)
    assert load(path, store_quota="1TiB").store_quota == 1 << 40  # the flag wins


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("lots", "--store-quota 'lots': not a number of bytes (expected a whole number of"),
        ("64MB", "--store-quota '64MB': not a number of bytes"),
        ("-5", "--store-quota '-5': not a number of bytes"),
        (0, "--store-quota 0: must be at least 1 byte"),
        (True, "--store-quota True: not a number of bytes"),
        (1.5, "--store-quota 1.5: not a number of bytes"),
    ],
)
def test_bad_quotas_say_what_to_fix(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(store_quota=value)
    unwitnessed = message.replace("--store-quota", "--unwitnessed-quota")
    with pytest.raises(ConfigError, match=re.escape(unwitnessed)):
        load(unwitnessed_quota=value)


def test_metrics_show_each_budget_and_escrow() -> None:
    metrics = Metrics()
    role = Witness(WITNESS, store_quota=5000)
    _storage_metrics(metrics, role)
    free = Ident("free")
    submit(role, free.signed(free.icp))
    text = metrics.render()
    assert "# TYPE dkms_store_message_bytes gauge" in text
    assert f"dkms_store_message_bytes {role.storage.stored}\n" in text
    assert role.storage.stored > 0
    assert "dkms_store_quota_bytes 5000\n" in text
    assert "dkms_unwitnessed_identifiers 1\n" in text
    assert f"dkms_unwitnessed_bytes {role.storage.loose_held}\n" in text
    assert "# TYPE dkms_quota_refusals_total counter\ndkms_quota_refusals_total 0" in text
    assert "dkms_unwitnessed_evictions_total 0" in text
    assert 'dkms_escrow_entries{escrow="out-of-order"} 0' in text
    assert 'dkms_escrow_bytes{escrow="early-receipts"} 0' in text
    assert 'dkms_escrow_entries{escrow="rivals"} 0' in text
    assert text.count("# TYPE dkms_escrow_entries gauge") == 1
    late = Ident("late")
    reply, _ = submit(role, late.signed(late.ixn()))  # its inception never came: escrowed
    assert reply.code is Code.ESCROWED
    assert 'dkms_escrow_entries{escrow="out-of-order"} 1' in metrics.render()


def test_metrics_show_the_role_tables() -> None:
    metrics = Metrics()
    role = Witness(WITNESS)
    _table_metrics(metrics, role)
    late = Ident("late")
    submit(role, late.signed(late.ixn()))  # escrowed: the follower asks for the gap
    text = metrics.render()
    assert text.count("# TYPE dkms_table_entries gauge") == 1
    for table, size in role.follower.table_sizes().items():
        assert f'dkms_table_entries{{table="follower.{table}"}} {size}\n' in text
    assert 'dkms_table_entries{table="rivals.bytes"} 0\n' in text

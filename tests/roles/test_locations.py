"""Location records in the roles: heard, validated, kept newest first, answered for, bounded
against floods of fresh prefixes (records of the witnesses a held KEL names survive)."""

from __future__ import annotations

import cbor2
import pytest

from dkms.node.roles.codes import Code
from dkms.node.roles.effects import Publish, Reply, Subscribe, Surface
from dkms.node.roles.inputs import Heard, Request
from dkms.node.roles.locations import MAX_BYTES, PIN_REFRESH, Locations, weight
from dkms.node.roles.topics import LOCATIONS_TOPIC
from dkms.node.roles.watcher import Watcher
from dkms.node.roles.witness import Witness
from dkms.node.testing.keys import node_signer, seed
from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.envelope import Signed
from dkms.protocol.errors import LocalProtocolError
from dkms.protocol.events import incept
from dkms.protocol.ids import NodePrefix
from dkms.protocol.location import LocationRecord
from dkms.protocol.validator import Validator

from .kit import governance, signed

ME = node_signer(1)
A, B = node_signer(2), node_signer(3)
ADDR = "/ip4/127.0.0.2/tcp/4001"
T = 1_700_000_000_000


def rec(signer: Signer, time: int = T, addr: str = ADDR) -> LocationRecord:
    return LocationRecord.sign(signer, [addr], time)


def made_up(n: int) -> Signer:
    """A fresh node key, as an attacker makes them: free."""
    return Signer(n.to_bytes(4, "big") * 8, transferable=False)


def table(**kwargs: object) -> Locations:
    return Locations(ME.verfer, Validator(), **kwargs)  # type: ignore[arg-type]


def test_a_verified_record_newer_than_held_is_admitted_and_kept() -> None:
    locs = table()
    first, later = rec(A, T), rec(A, T + 1, "/ip4/127.0.0.3/tcp/1")
    assert locs.admits(first.raw)
    assert locs.heard(first.raw, 0.0) == []
    assert locs.get(A.verfer) == first
    assert not locs.admits(first.raw)  # a replay goes no further
    assert locs.admits(later.raw)
    locs.heard(later.raw, 1.0)
    assert locs.get(A.verfer) == later
    locs.heard(first.raw, 2.0)  # an older one, arriving late, changes nothing
    assert locs.get(A.verfer) == later


def test_what_does_not_verify_is_refused_and_not_kept() -> None:
    locs = table()
    body = rec(A).location.body()
    forged = Signed(A.verfer, body, Signed.make(B, body).signature).to_cbor()
    for bad in (forged, b"", b"\xa0", rec(A).raw[:-3], b"junk" * 30):
        assert not locs.admits(bad)
        locs.heard(bad, 0.0)
    assert len(locs) == 0


def test_a_payload_of_joined_records_is_read_whole() -> None:
    locs = table()
    joined = rec(A).raw + rec(B).raw
    assert locs.admits(joined)
    locs.heard(joined, 0.0)
    assert {locs.get(A.verfer), locs.get(B.verfer)} == {rec(A), rec(B)}
    body = rec(A, T + 9).location.body()
    forged = Signed(A.verfer, body, Signed.make(B, body).signature).to_cbor()
    assert not locs.admits(rec(B, T + 9).raw + forged)  # one bad record: the payload is


def test_our_own_record_is_ours_alone() -> None:
    locs = table()
    mine = rec(ME, T + 5)
    effects = locs.own(mine.raw, 0.0)
    assert Publish(LOCATIONS_TOPIC, mine.raw) in effects
    assert locs.get(ME.verfer) == mine
    assert locs.admits(mine.raw)  # the adapter validates our own publish too
    older, newer = rec(ME, T), rec(ME, T + 99, "/ip4/10.9.9.9/tcp/1")  # another run's
    assert not locs.admits(older.raw) and not locs.admits(newer.raw)
    locs.heard(newer.raw, 1.0)
    assert locs.get(ME.verfer) == mine
    with pytest.raises(LocalProtocolError):
        locs.own(rec(A, T + 10).raw, 0.0)
    with pytest.raises(LocalProtocolError):
        locs.own(rec(ME, T + 5).raw, 0.0)  # not newer than the last


def test_queries_answer_the_record_or_unknown() -> None:
    locs = table()
    locs.heard(rec(A).raw, 0.0)
    assert locs.reply({"t": "loc", "i": A.verfer}) == Reply.accept(rec(A).raw)
    unknown = locs.reply({"t": "loc", "i": B.verfer})
    assert unknown.code is Code.UNKNOWN and B.verfer in unknown.reason
    assert locs.reply({"t": "loc"}).code is Code.BAD_QUERY
    assert locs.reply({"t": "loc", "i": 7}).code is Code.BAD_QUERY


def test_a_flood_of_fresh_prefixes_evicts_the_least_recently_refreshed() -> None:
    locs = table(max_entries=4)
    for n in range(4):
        locs.heard(rec(made_up(n)).raw, 0.0)
    locs.heard(rec(made_up(0), T + 1).raw, 1.0)  # refreshed: now the newest
    for n in range(10, 13):
        locs.heard(rec(made_up(n)).raw, 2.0)
    held = {p for p in (made_up(n).verfer for n in (0, 1, 2, 3, 10, 11, 12)) if locs.get(p)}
    assert held == {made_up(n).verfer for n in (0, 10, 11, 12)}
    assert locs.evictions == 3 and len(locs) == 4


def test_records_of_witnesses_named_in_held_kels_survive_a_flood() -> None:
    """The node holds a KEL naming witnesses A and B; an attacker floods records of a
    thousand fresh keys into a table of 16: A's, B's and our own stay, the rest churn."""
    witness = Witness(ME)
    key = Signer(seed(77))
    icp = incept(
        [key.verfer],
        next_digests=[next_key_digest(Signer(seed(78)).verfer)],
        witnesses=[ME.verfer, A.verfer, B.verfer],
        toad=2,
    )
    witness.step(Request(Surface.SUBMIT, NodePrefix(""), signed(icp, [key])), 0.0)
    assert witness.validator.kel(icp.prefix) is not None
    locs = Locations(ME.verfer, witness.validator, max_entries=16)
    locs.own(rec(ME, T).raw, 0.0)
    locs.heard(rec(A).raw, 0.0)
    locs.heard(rec(B).raw, 0.0)
    for n in range(1000):
        locs.heard(rec(made_up(1000 + n)).raw, n / 10)
    assert locs.get(A.verfer) == rec(A) and locs.get(B.verfer) == rec(B)
    assert locs.get(ME.verfer) == rec(ME, T)
    assert len(locs) == 16 and locs.evictions == 1000 - 13


def test_when_only_pinned_records_are_left_a_new_one_is_not_kept() -> None:
    pinned = [made_up(n).verfer for n in range(3)]
    locs = table(max_entries=3, pinned=lambda: pinned)
    for n in range(3):
        locs.heard(rec(made_up(n)).raw, 0.0)
    locs.heard(rec(made_up(9)).raw, 0.0)
    assert locs.get(made_up(9).verfer) is None and locs.refused == 1
    assert all(locs.get(p) for p in pinned)
    locs.heard(rec(made_up(1), T + 1).raw, 0.0)  # a pinned one refreshed still fits
    assert locs.get(made_up(1).verfer) == rec(made_up(1), T + 1)


def test_the_pinned_set_is_worked_out_again_after_a_while() -> None:
    pinned: list[str] = []
    locs = table(max_entries=2, pinned=lambda: list(pinned))
    locs.heard(rec(A).raw, 0.0)
    locs.heard(rec(B).raw, 0.0)
    locs.heard(rec(made_up(5)).raw, 0.0)  # evicts A: nothing pinned yet
    assert locs.get(A.verfer) is None
    pinned.append(B.verfer)
    locs.heard(rec(made_up(6)).raw, 1.0)  # the set of t=0 still holds: B goes
    assert locs.get(B.verfer) is None
    locs.heard(rec(B, T + 1).raw, 2.0)
    locs.heard(rec(made_up(7)).raw, 2.0 + PIN_REFRESH)  # now B is pinned
    assert locs.get(B.verfer) == rec(B, T + 1)


def test_the_byte_budget_holds() -> None:
    big = ["/dns/" + "x" * 240 + f"{i}/tcp/1" for i in range(8)]
    one = weight(LocationRecord.sign(made_up(0), big, T))
    locs = table(max_bytes=10 * one)
    for n in range(50):
        locs.heard(LocationRecord.sign(made_up(n), big, T).raw, 0.0)
        assert locs.weight <= 10 * one
    assert len(locs) == 10
    assert table().max_bytes == MAX_BYTES


def test_both_roles_listen_answer_and_validate() -> None:
    gov, _ = governance(watchers=(ME.verfer,))
    for role in (Witness(node_signer(1)), Watcher(node_signer(1), gov)):
        assert Subscribe(LOCATIONS_TOPIC) in role.start(0.0)
        assert role.admits(LOCATIONS_TOPIC, rec(A).raw)
        assert not role.admits(LOCATIONS_TOPIC, b"\xa0")
        role.step(Heard(LOCATIONS_TOPIC, NodePrefix(B.verfer), rec(A).raw), 0.0)
        ask = Request(Surface.QUERY, NodePrefix(""), cbor2.dumps({"t": "loc", "i": A.verfer}))
        assert role.step(ask, 1.0) == [Reply.accept(rec(A).raw)]
        ask = Request(Surface.QUERY, NodePrefix(""), cbor2.dumps({"t": "loc", "i": B.verfer}))
        (refusal,) = role.step(ask, 1.0)
        assert isinstance(refusal, Reply) and refusal.code is Code.UNKNOWN


def test_a_watcher_keeps_the_records_of_its_roster_and_peers() -> None:
    gov, bundle = governance(watchers=(ME.verfer, A.verfer), jurors=(A.verfer,))
    watcher = Watcher(ME, gov, peers=[B.verfer])
    watcher.governance.offer(bundle, 0.0)
    watcher.locations.max_entries = 3
    watcher.step(Heard(LOCATIONS_TOPIC, NodePrefix(""), rec(A).raw), 0.0)
    watcher.step(Heard(LOCATIONS_TOPIC, NodePrefix(""), rec(B).raw), 0.0)
    for n in range(20):
        watcher.step(Heard(LOCATIONS_TOPIC, NodePrefix(""), rec(made_up(n)).raw), 0.0)
    assert watcher.locations.get(A.verfer) == rec(A)
    assert watcher.locations.get(B.verfer) == rec(B)

"""The follower's ask tables (roles/follower.py) stay bounded whatever the gossip names: how
many identifiers are asked for, how many peers each, and how many gaps are remembered."""

from __future__ import annotations

import gc
import tracemalloc

from dkms.node.roles.codes import Code
from dkms.node.roles.effects import Effect, Send
from dkms.node.roles.follower import (
    ASK_LOST,
    GAP_RETRY,
    MAX_GAP_ASKS,
    MAX_GAPS_KEPT,
    WITNESS_ASKS,
    Follower,
    retry_after,
)
from dkms.node.roles.inputs import Answered, GapQuery
from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.events import incept
from dkms.protocol.ids import NodePrefix
from dkms.protocol.outcomes import Status
from dkms.protocol.stream import Attachments, Message, messagize, parse_stream
from dkms.protocol.validator import Validator

ME = NodePrefix(Signer(bytes([90]) * 32, transferable=False).verfer)
PEERS = [NodePrefix(Signer(bytes([91 + i]) * 32, transferable=False).verfer) for i in range(6)]
MADE_UP_KEYS = [Signer(i.to_bytes(32, "big"), transferable=False) for i in range(1, 301)]
MADE_UP = [k.verfer for k in MADE_UP_KEYS]  # witnesses an attacker made up (it holds their keys)


def holding(follower: Follower, n: int, witnesses: list[str]) -> str:
    """Give the follower's validator an inception naming `witnesses` (bt 1, receipted by the
    first, whose key the attacker holds as it made it up); its prefix."""
    key = Signer(bytes([n % 200 + 1]) * 31 + bytes([n // 200]))
    icp = incept(
        [key.verfer],
        next_digests=[next_key_digest(Signer(bytes([250]) * 32).verfer)],
        witnesses=witnesses,
        toad=1,
    )
    wig = MADE_UP_KEYS[MADE_UP.index(witnesses[0])].sign_indexed(icp.raw, 0)
    raw = messagize(icp, Attachments(sigs=(key.sign_indexed(icp.raw, 0),), wigs=(wig,)))
    (message,) = [f for f in parse_stream(raw) if isinstance(f, Message)]
    (outcome,) = follower.validator.process(message, 0.0)
    assert outcome.status is Status.ACCEPTED
    return icp.prefix


def sends(effects: list[Effect]) -> list[Send]:
    return [e for e in effects if isinstance(e, Send)]


def fail(follower: Follower, send: Send, now: float) -> None:
    assert isinstance(send.tag, GapQuery)
    answer = Answered(send.tag, Code.UNREACHABLE, b"", "down")
    assert sends(follower.gap_answered(send.tag, answer, now, lambda data, effects: None)) == []


def test_a_kel_naming_hundreds_of_witnesses_asks_a_few_per_round() -> None:
    """Formerly every witness the KEL names was asked at once: a free inception naming
    20,000 made-up witnesses made each out-of-order event 20,000 queries."""
    follower = Follower(Validator(), ME)
    prefix = holding(follower, 0, MADE_UP)
    first = sends(follower.ask_for_gap(prefix, 1.0))
    assert [s.to for s in first] == MADE_UP[:WITNESS_ASKS]
    assert follower.table_sizes()["asking_peers"] == WITNESS_ASKS
    for send in first:
        fail(follower, send, 1.0)
    assert follower.table_sizes() == {"asking": 0, "asking_peers": 0, "asked": 1, "waiting": 0}
    assert sends(follower.ask_for_gap(prefix, 1.0 + retry_after(0) - 0.1)) == []
    second = sends(follower.ask_for_gap(prefix, 1.0 + retry_after(0)))
    assert [s.to for s in second] == MADE_UP[WITNESS_ASKS : 2 * WITNESS_ASKS]


def test_the_rounds_of_one_gap_come_round_to_every_witness() -> None:
    follower = Follower(Validator(), ME)
    witnesses = MADE_UP[:20]
    prefix = holding(follower, 0, witnesses)
    asked: list[str] = []
    now = 1.0
    for _ in range(3):
        round_ = sends(follower.ask_for_gap(prefix, now))
        asked += [s.to for s in round_]
        for send in round_:
            fail(follower, send, now)
        now += GAP_RETRY
    assert len(asked) == 3 * WITNESS_ASKS and set(asked) == set(witnesses)


def test_asks_in_flight_are_bounded_in_identifiers_and_peers() -> None:
    follower = Follower(Validator(), ME, PEERS)
    total = 0
    for n in range(MAX_GAP_ASKS + 40):  # never answered
        prefix = holding(follower, n, MADE_UP[n : n + 100])
        total += len(sends(follower.ask_for_gap(prefix, 1.0)))
    for n in range(20):  # identifiers it holds nothing of: its peers are asked
        total += len(sends(follower.ask_for_gap(f"E{n:043d}", 1.0)))
    sizes = follower.table_sizes()
    assert sizes["asking"] == MAX_GAP_ASKS
    assert sizes["asking_peers"] == total == MAX_GAP_ASKS * WITNESS_ASKS


def test_gaps_remembered_are_bounded_in_entries_and_bytes() -> None:
    follower = Follower(Validator(), ME, PEERS)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(MAX_GAPS_KEPT + 2_000):  # made-up identifiers, each asked, each failing
            for send in sends(follower.ask_for_gap(f"E{n:043d}", 1.0)):
                fail(follower, send, 1.0)
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    sizes = {"asking": 0, "asking_peers": 0, "asked": MAX_GAPS_KEPT, "waiting": 0}
    assert follower.table_sizes() == sizes
    assert kept < 4 << 20, f"{kept / 1e6:.1f} MB kept for {MAX_GAPS_KEPT} gaps"


def test_an_ask_whose_answer_is_lost_stops_blocking_its_kel() -> None:
    """A lost answer (seen after a bulk load: a watcher's gap asks for 6 KELs never came back,
    and reconciliation, which skips a KEL being asked for, never fetched them): the expiry
    sweep takes asks older than ASK_LOST for lost, and the KEL can be fetched again."""
    follower = Follower(Validator(), ME, PEERS)
    prefix = holding(follower, 1, MADE_UP[:3])
    answered = holding(follower, 2, MADE_UP[3:6])
    lost = sends(follower.fetch(prefix, PEERS[0], 1, 10.0) or [])
    assert len(lost) == 1 and follower.asking(prefix)
    assert follower.fetch(prefix, PEERS[0], 1, 11.0) == []  # being asked for already
    for send in sends(follower.fetch(answered, PEERS[1], 1, 10.0) or []):
        fail(follower, send, 12.0)
    follower.expire(10.0 + ASK_LOST - 1)
    assert follower.asking(prefix)  # not yet
    follower.expire(10.0 + ASK_LOST)
    assert not follower.asking(prefix) and follower.table_sizes()["asking"] == 0
    again = sends(follower.fetch(prefix, PEERS[0], 1, 10.0 + ASK_LOST) or [])
    assert [s.to for s in again] == [PEERS[0]]
    fail(follower, lost[0], 10.0 + ASK_LOST + 1)  # the old answer, late: no harm

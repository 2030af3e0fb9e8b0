"""A witness gossips the end of a quiet KEL again, so a follower that lost it catches up."""

from __future__ import annotations

from collections.abc import Sequence

from dkms.node.roles.effects import Effect, Publish, SetTimer
from dkms.node.roles.inputs import Tail, TimerFired
from dkms.node.roles.tails import QUIET, SHOTS, TAIL_EVENTS
from dkms.node.roles.topics import kel_topic
from dkms.node.roles.witness import Witness
from dkms.protocol.stream import Message, parse_stream
from tests.node.test_storage import WITNESS, Ident, hear, submit, watcher


def publishes(effects: Sequence[Effect]) -> list[Publish]:
    return [e for e in effects if isinstance(e, Publish)]


def tail_timer(effects: Sequence[Effect]) -> list[SetTimer]:
    return [e for e in effects if isinstance(e, SetTimer) and isinstance(e.key, Tail)]


def test_a_quiet_kels_last_events_go_out_again_and_fill_a_follower_that_lost_them() -> None:
    amy = Ident("amy", [WITNESS], toad=1)
    witness = Witness(WITNESS)
    _, effects = submit(witness, amy.signed(amy.icp), 0.0)
    assert len(tail_timer(effects)) == 1
    first = publishes(effects)
    ixns = [amy.ixn() for _ in range(3)]
    for n, ixn in enumerate(ixns, start=1):
        _, effects = submit(witness, amy.signed(ixn), float(n))
        first += publishes(effects)
        assert tail_timer(effects) == []  # one timer while any KEL waits
    # Not quiet yet: nothing goes out again.
    effects = witness.step(TimerFired(Tail()), 3.0 + QUIET - 0.5)
    assert publishes(effects) == [] and tail_timer(effects)
    effects = witness.step(TimerFired(Tail()), 3.0 + QUIET)
    [tail] = publishes(effects)
    assert tail_timer(effects)  # the later shots wait
    assert tail.topic == kel_topic(amy.prefix)
    messages = [f for f in parse_stream(tail.payload) if isinstance(f, Message)]
    assert [m.event.sn for m in messages] == list(range(4 - TAIL_EVENTS, 4))
    assert all(m.attachments.wigs for m in messages)  # with the witness's receipts
    assert tail.payload not in {p.payload for p in first}  # not swallowed as seen

    # Again at each later shot, one event more each time (other bytes), then no more.
    payloads = [tail.payload]
    for shot in range(1, len(SHOTS)):
        assert publishes(witness.step(TimerFired(Tail()), 3.0 + SHOTS[shot] - 0.5)) == []
        effects = witness.step(TimerFired(Tail()), 3.0 + SHOTS[shot])
        [again] = publishes(effects)
        sns = [f.event.sn for f in parse_stream(again.payload) if isinstance(f, Message)]
        assert sns == list(range(4 - TAIL_EVENTS - shot, 4))
        assert again.payload not in payloads
        payloads.append(again.payload)
    assert tail_timer(effects) == []  # nothing left to wait for
    assert len(witness.tails) == 0

    # A watcher heard everything but the last two events' gossip: nothing else will come.
    follower = watcher()
    for event in [amy.icp, ixns[0]]:
        hear(follower, amy.signed(event, WITNESS))
    assert follower.key_state(amy.prefix)["sn"] == 1
    hear(follower, tail.payload, 10.0)
    assert follower.key_state(amy.prefix)["sn"] == 3


def test_a_kel_still_changing_waits_and_tails_can_be_off() -> None:
    amy = Ident("amy", [WITNESS], toad=1)
    witness = Witness(WITNESS)
    submit(witness, amy.signed(amy.icp), 0.0)
    submit(witness, amy.signed(amy.ixn()), QUIET - 1.0)  # changed again: due later
    assert publishes(witness.step(TimerFired(Tail()), QUIET + 0.5)) == []
    assert len(publishes(witness.step(TimerFired(Tail()), 2 * QUIET))) == 1

    quiet = Witness(WITNESS, tails=False)
    bob = Ident("bob", [WITNESS], toad=1)
    _, effects = submit(quiet, bob.signed(bob.icp), 0.0)
    assert tail_timer(effects) == [] and len(quiet.tails) == 0

"""KEL pages (roles/pages.py) and the follower filling a gap page by page (roles/follower.py):
pure role steps, no network."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, SupportsIndex, overload

import cbor2
import pytest

from dkms.node.roles.codes import Code
from dkms.node.roles.controller import Controller
from dkms.node.roles.effects import Effect, Reply, Send, SetTimer, Surface
from dkms.node.roles.follower import (
    CATCH_UP_AFTER,
    CATCH_UP_EVERY,
    GAP_FIRST_RETRY,
    GAP_RETRY,
    retry_after,
)
from dkms.node.roles.inputs import Answered, CatchUp, GapQuery, Heard, Request, TimerFired
from dkms.node.roles.pages import PAGE_EVENTS, kel_page, page_message
from dkms.node.roles.topics import kel_topic
from dkms.node.roles.witness import Witness
from dkms.node.testing.keys import node_signer, seed
from dkms.node.testing.witnessed import CONTROLLER, Witnessed
from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.events import Event, incept, interact
from dkms.protocol.ids import NodePrefix
from dkms.protocol.kel import Kel, Record
from dkms.protocol.stream import Attachments, Message, messagize, parse_stream

KEY = Signer(seed(1))
NODES = [node_signer(i) for i in range(4)]
WITNESSES = [n.verfer for n in NODES]


def kel_events(count: int, anchor_bytes: int = 0) -> list[Event]:
    """An inception naming the four witnesses (bt 3), then interactions."""
    icp = incept(
        [KEY.verfer],
        next_digests=[next_key_digest(Signer(seed(2)).verfer)],
        witnesses=WITNESSES,
        toad=3,
    )
    events = [icp]
    for sn in range(1, count):
        anchors = [{"d": "x" * anchor_bytes}] if anchor_bytes else []
        events.append(interact(icp.prefix, prior=events[-1].said, sn=sn, anchors=anchors))
    return events


def signed(event: Event) -> bytes:
    return messagize(event, Attachments(sigs=(KEY.sign_indexed(event.raw, 0),)))


def submit(witness: Witness, messages: bytes) -> list[Effect]:
    return witness.step(Request(Surface.SUBMIT, NodePrefix("controller"), messages), 0.0)


def holding(count: int, page_bytes: int = 1 << 20, anchor_bytes: int = 0) -> Witness:
    """Witness 0 holding a KEL of `count` events (each receipted by it)."""
    witness = Witness(NODES[0], page_bytes=page_bytes)
    submit(witness, b"".join(signed(e) for e in kel_events(count, anchor_bytes)))
    return witness


def kel_of(witness: Witness) -> Kel:
    kel = witness.validator.kel(kel_events(1)[0].prefix)
    assert kel is not None
    return kel


def ask(witness: Witness, question: dict[str, Any]) -> Reply:
    (reply,) = witness.step(Request(Surface.QUERY, NodePrefix("asker"), cbor2.dumps(question)), 0)
    assert isinstance(reply, Reply)
    return reply


def sns(data: bytes) -> list[int]:
    return [f.event.sn for f in parse_stream(data) if isinstance(f, Message)]


# ---------------------------------------------------------------- page building


def test_a_page_from_past_the_end_is_empty_and_ends_the_kel() -> None:
    kel = kel_of(holding(3))
    page = kel_page(kel, 3, 1000)
    assert (page.data, page.count, page.more, page.next) == (b"", 0, False, 3)
    assert kel_page(kel, 99, 1000, limit=5).count == 0


def test_a_kel_of_one_event_is_one_page() -> None:
    kel = kel_of(holding(1))
    page = kel_page(kel, 0, 10)  # budget below one event: the first event goes anyway
    assert (sns(page.data), page.more) == ([0], False)
    assert page.data == page_message(kel.chain[0])


def test_a_kel_that_exactly_fills_a_page_says_nothing_follows() -> None:
    kel = kel_of(holding(5))
    sizes = [len(page_message(r)) for r in kel.chain]
    exact = kel_page(kel, 0, sum(sizes))
    assert (exact.count, exact.more) == (5, False)
    short = kel_page(kel, 0, sum(sizes) - 1)
    assert (short.count, short.more, short.next) == (4, True, 4)
    assert kel_page(kel, 1, sum(sizes[1:4])).count == 3


def test_n_limits_the_events_of_a_page() -> None:
    kel = kel_of(holding(10))
    page = kel_page(kel, 2, 1 << 20, limit=3)
    assert (sns(page.data), page.more, page.next) == ([2, 3, 4], True, 5)
    assert kel_page(kel, 7, 1 << 20, limit=3).more is False  # exactly what is left


def test_big_events_go_one_per_page_and_pages_make_the_whole_kel() -> None:
    witness = holding(6, page_bytes=100, anchor_bytes=2000)
    kel = kel_of(witness)
    pages, start = [], 0
    while True:
        reply = ask(witness, {"t": "kel", "i": kel.prefix, "s": start, "n": 50})
        pages.append(reply.payload)
        if reply.code is Code.OK:
            break
        assert reply.code is Code.PARTIAL
        start = sns(reply.payload)[-1] + 1
    assert [sns(p) for p in pages] == [[n] for n in range(6)]
    assert b"".join(pages) == witness.validator.replay(kel.prefix)  # receipts included


class Watched(list[Record]):
    """A chain that records which records were read (a list: the compiled `Kel` wants one)."""

    def __init__(self, records: list[Record]) -> None:
        super().__init__(records)
        self.read: set[int] = set()

    @overload
    def __getitem__(self, at: SupportsIndex) -> Record: ...
    @overload
    def __getitem__(self, at: slice) -> list[Record]: ...
    def __getitem__(self, at: SupportsIndex | slice) -> Record | list[Record]:
        if isinstance(at, slice):
            raise AssertionError("a page never copies the chain")
        self.read.add(int(at))
        return super().__getitem__(at)

    def __iter__(self) -> Iterator[Record]:
        raise AssertionError("a page never walks the chain")


def test_a_page_reads_only_the_records_it_sends() -> None:
    kel = kel_of(holding(40))
    watched = Watched(kel.chain)
    kel.chain = watched
    size = len(page_message(list.__getitem__(watched, 20)))
    page = kel_page(kel, 20, 2 * size + 5, limit=10)
    assert page.count == 2
    assert watched.read == {20, 21, 22}  # the two sent, and the one that did not fit


def test_kel_queries() -> None:
    witness = holding(4, page_bytes=1)
    prefix = kel_of(witness).prefix
    paged = ask(witness, {"t": "kel", "i": prefix, "s": 1, "n": 10})
    assert (paged.code, sns(paged.payload)) == (Code.PARTIAL, [1])
    last = ask(witness, {"t": "kel", "i": prefix, "s": 3, "n": 10})
    assert (last.code, sns(last.payload)) == (Code.OK, [3])
    # An ask without n (a node that knows no pages) gets one page, and OK: it cannot read
    # a code it does not know.
    old = ask(witness, {"t": "kel", "i": prefix, "s": 0})
    assert (old.code, sns(old.payload)) == (Code.OK, [0])
    for bad in ({"s": -1}, {"s": True}, {"s": "0"}, {"n": 0}, {"n": -2}, {"n": "5"}, {"n": None}):
        refused = ask(witness, {"t": "kel", "i": prefix} | bad)
        assert refused.code is Code.BAD_QUERY, bad
    unknown = ask(witness, {"t": "kel", "i": "E" + "x" * 43, "n": 5})
    assert unknown.code is Code.UNKNOWN


def test_the_state_answer_holds_the_latest_receipts_only() -> None:
    witness = holding(30)
    kel = kel_of(witness)
    state = cbor2.loads(ask(witness, {"t": "state", "i": kel.prefix}).payload)
    assert state["receipts"] == {kel.last.event.said: [WITNESSES[0]]}
    assert state["sn"] == 29 and state["fully_witnessed"] is False  # one receipt of bt 3


# ---------------------------------------------------------------- gap filling


class Gap:
    """Witness 3 (`late`) holds the inception; witnesses 0-2 (`full`) hold `count` events
    and answer pages of `page_bytes`."""

    def __init__(self, count: int, page_bytes: int) -> None:
        self.events = kel_events(count)
        self.prefix = self.events[0].prefix
        self.full = {n.verfer: Witness(n, page_bytes=page_bytes) for n in NODES[:3]}
        for witness in self.full.values():
            submit(witness, b"".join(signed(e) for e in self.events))
        self.late = Witness(NODES[3])
        submit(self.late, signed(self.events[0]))
        self.sent: list[Send] = []

    def hear(self, sn: int, now: float = 1.0) -> list[Send]:
        """Gossip of event `sn` reaches the late witness; the queries it makes."""
        heard = Heard(kel_topic(self.prefix), NodePrefix(""), signed(self.events[sn]))
        return self.queries(self.late.step(heard, now))

    def answer(self, send: Send, now: float = 1.0) -> list[Send]:
        """`send`'s target answers it; the queries the late witness makes next."""
        (reply,) = self.full[send.to].step(
            Request(Surface.QUERY, self.late.prefix, send.payload), 0
        )
        assert isinstance(reply, Reply)
        answered = Answered(send.tag, reply.code, reply.payload, reply.reason)
        return self.queries(self.late.step(answered, now))

    def queries(self, effects: list[Effect]) -> list[Send]:
        sends = [e for e in effects if isinstance(e, Send) and e.surface is Surface.QUERY]
        self.sent += sends
        return sends

    @property
    def held(self) -> int:
        kel = self.late.validator.kel(self.prefix)
        return -1 if kel is None else kel.sn


def test_a_partial_answer_makes_the_follower_ask_the_same_peer_for_the_next_page() -> None:
    gap = Gap(30, page_bytes=1200)  # a few events a page
    first = gap.hear(29)
    assert sorted(s.to for s in first) == sorted(gap.full)
    assert all(
        cbor2.loads(s.payload) == {"t": "kel", "i": gap.prefix, "s": 1, "n": PAGE_EVENTS}
        for s in first
    )
    assert [s.tag for s in first] == [GapQuery(gap.prefix, s.to) for s in first]  # type: ignore[arg-type]
    leader, *others = first
    nxt = gap.answer(leader)
    assert len(nxt) == 1 and nxt[0].to == leader.to
    assert cbor2.loads(nxt[0].payload)["s"] == gap.held + 1 > 2
    for other in others:  # the same page again: it moves nothing, and ends there
        assert gap.answer(other) == []
    pending = nxt
    while pending:
        (ask,) = pending
        assert ask.to == leader.to
        pending = gap.answer(ask)
    assert gap.held == 29  # the escrowed event came out once the gap closed
    assert len(gap.sent) > 5  # several pages were needed


def test_gap_queries_are_deduplicated_per_identifier_and_peer() -> None:
    """A busy KEL with gaps: events keep arriving while a gap is asked for. Formerly any
    answer freed the identifier's slot, so each answer that moved the gap let the next
    out-of-order event ask every co-witness again while the old round's answers (each the
    whole KEL from the old start) were still coming in."""
    gap = Gap(102, page_bytes=3 * 330)
    first = gap.hear(2)  # sn 1 went by unseen, and so will sn 10
    assert sorted(s.to for s in first) == sorted(gap.full)
    assert [q for sn in [*range(3, 10), *range(11, 61)] for q in gap.hear(sn)] == []
    leader, second, third = first
    (nxt,) = gap.answer(leader)  # a page: 1 and a few more, then 2-9 come out of escrow
    assert gap.held == 9 and nxt.to == leader.to
    assert cbor2.loads(nxt.payload)["s"] == 10
    assert [q for sn in range(61, 81) for q in gap.hear(sn)] == []  # leader still asked
    assert gap.answer(second) == [] and gap.hear(81) == []  # its page adds nothing
    assert gap.answer(third) == [] and gap.hear(82) == []
    (last,) = gap.answer(nxt)  # sn 10, and everything escrowed after it
    assert gap.held == 82 and cbor2.loads(last.payload)["s"] == 83
    assert [q for sn in range(83, 102) for q in gap.hear(sn)] == []  # in order now
    assert gap.answer(last) == []  # nothing new in it: done
    assert gap.held == 101
    assert len(gap.sent) == 5


def test_a_gap_no_answer_fills_is_asked_again_after_a_doubling_back_off() -> None:
    gap = Gap(5, page_bytes=1 << 20)
    for witness in gap.full.values():  # they lose the KEL: nobody can fill the gap
        witness.validator = Witness(NODES[0]).validator
        witness.follower.validator = witness.validator
    now, rounds = 1.0, []
    sent = gap.hear(3, now=now)
    while now < 200:
        assert sorted(s.to for s in sent) == sorted(gap.full)
        for send in sent:
            assert gap.answer(send, now=now) == []
        wait = retry_after(len(rounds))
        rounds.append(wait)
        assert gap.hear(4, now=now + wait - 0.1) == []
        now += wait
        sent = gap.hear(4, now=now)
    assert rounds[:4] == [GAP_FIRST_RETRY * 2**n for n in range(4)]
    assert max(rounds) == GAP_RETRY  # and no longer: an idle gap costs a round per 30 s


def test_a_kel_that_stalled_behind_a_lost_event_is_caught_up_without_more_gossip() -> None:
    """Gossip of sn 1 is lost and sn 2 is the KEL's last event: nothing more will come to
    start a gap ask, and the first ask (on hearing sn 2) reached no one that could answer.
    The CatchUp timer asks again, and the KEL is whole."""
    gap = Gap(3, page_bytes=1 << 20)
    effects = gap.late.step(
        Heard(kel_topic(gap.prefix), NodePrefix(""), signed(gap.events[2])), 1.0
    )
    first = gap.queries(effects)
    (timer,) = [e for e in effects if isinstance(e, SetTimer) and isinstance(e.key, CatchUp)]
    for send in first:  # every witness was down
        gap.late.step(Answered(send.tag, Code.UNREACHABLE, b"", "down"), 1.0)
    now = timer.at
    while now < 1.0 + CATCH_UP_AFTER + GAP_FIRST_RETRY:
        effects = gap.late.step(TimerFired(CatchUp()), now)
        (again,) = [e for e in effects if isinstance(e, SetTimer)]  # still waiting: re-armed
        asked = gap.queries(effects)
        if asked:
            break
        now = again.at
    assert sorted(s.to for s in asked) == sorted(gap.full)
    assert now >= 1.0 + max(CATCH_UP_AFTER, GAP_FIRST_RETRY)
    gap.answer(asked[0], now=now)
    assert gap.held == 2
    effects = gap.late.step(TimerFired(CatchUp()), now + CATCH_UP_EVERY)
    assert effects == []  # caught up: nothing asked, the timer not set again


def test_a_kel_that_moves_is_not_caught_up_until_it_stops_moving() -> None:
    """sn 3 is heard first (escrowed out of order; asked for at once, nobody answers), then
    sn 1 at 1.9: the KEL moved, so the CatchUp clock starts again from the next check. Before,
    it ran from the first escrow, and a node far behind its own gossip asked for pages of
    events it was about to hear (every busy KEL's newest event is escrowed a moment)."""
    gap = Gap(5, page_bytes=1 << 20)
    effects = gap.late.step(
        Heard(kel_topic(gap.prefix), NodePrefix(""), signed(gap.events[3])), 1.0
    )
    for send in gap.queries(effects):
        gap.late.step(Answered(send.tag, Code.UNREACHABLE, b"", "down"), 1.0)
    assert gap.hear(1, now=1.9) == [] and gap.held == 1

    def tick(now: float) -> list[Send]:
        return gap.queries(gap.late.step(TimerFired(CatchUp()), now))

    assert tick(2.0) == []  # it moved since the escrow: the clock starts again now
    assert tick(2.0 + CATCH_UP_AFTER - 0.5) == []  # formerly asked here (1.0 + CATCH_UP_AFTER)
    asked = tick(2.0 + CATCH_UP_AFTER)  # no move for CATCH_UP_AFTER: stalled
    assert sorted(s.to for s in asked) == sorted(gap.full)
    assert all(cbor2.loads(s.payload)["s"] == 2 for s in asked)
    gap.answer(asked[0], now=2.0 + CATCH_UP_AFTER)
    assert gap.held == 4  # the page from sn 2 on: the whole KEL


def test_a_witness_added_by_a_rotation_fills_a_long_kel_by_pages_and_gossips_none_of_it() -> None:
    """The controller hands the new witness the KEL's first page with the rotation; the
    witness asks the witnesses that page names for the rest, page by page, then receipts the
    rotation. It publishes only the rotation, the one event it witnesses: the rest is old
    news that would flood every node."""
    net = Witnessed()
    net.add(CONTROLLER, Controller(prelude_bytes=1500))
    for n in NODES:
        net.add(n.verfer, Witness(n, page_bytes=1500))
    ctl = net.controller
    net.run(ctl.incept("amy", [seed(1)], [seed(2)], witnesses=WITNESSES[:3], toad=2, now=0.0))
    for n in range(40):
        net.run(ctl.interact("amy", [{"n": n}], now=1.0))
    prefix = ctl.identity("amy").prefix
    queries_before, published_before = net.requests, len(net.published)
    net.run(ctl.rotate("amy", [seed(3)], adds=[WITNESSES[3]], now=2.0))
    new = net.witness(WITNESSES[3])
    kel = new.validator.kel(prefix)
    assert kel is not None and kel.sn == 41
    assert not ctl.done(ctl.identity("amy").last_said)  # bt 4: it refused, escrowed, at first
    net.advance(1.0)  # the controller's retry
    assert ctl.done(ctl.identity("amy").last_said)
    assert WITNESSES[3] in kel.last.receipts
    ours = {
        sn
        for who, p in net.published[published_before:]
        if who == new.prefix
        for sn in sns(p.payload)
    }
    assert 0 < kel_page(kel, 0, 1500).count < 10  # what came with the rotation
    assert ours == {41}
    assert net.requests - queries_before > 5  # pages, not one answer


@pytest.mark.parametrize("code", [Code.UNREACHABLE, Code.RATE_LIMITED])
def test_a_failed_gap_query_frees_its_slot(code: Code) -> None:
    gap = Gap(5, page_bytes=1 << 20)
    first = gap.hear(3)
    for send in first[:2]:
        effects = gap.late.step(Answered(send.tag, code, b"", "down"), 1.0)
        assert not [e for e in effects if isinstance(e, Send)]
    assert gap.hear(4, now=1.0 + GAP_RETRY) == []  # the third is still asked
    gap.answer(first[2])
    assert gap.held == 4

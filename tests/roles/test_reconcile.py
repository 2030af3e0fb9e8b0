"""Anti-entropy (`roles/reconcile.py`, `roles/summaries.py`): a watcher that gossip gave
nothing holds every KEL after one round; peers that hold the same ask nothing more than a
summary; a watcher behind is fetched only what it lacks; a rival at our tip is fetched once
and judged; a lying or garbled peer costs a bounded round and is blamed; a round nobody
answered is tried again soon; the answering side is bounded and a witness builds its summary
at most every `FRESH` seconds, a watcher keeps its own current; no peer bytes crash the
decoders. Pure: the in-memory driver, no clock.
"""

from __future__ import annotations

from typing import Any, Final

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from dkms.node.roles import reconcile, summaries
from dkms.node.roles.codes import Code
from dkms.node.roles.effects import Blame, Effect, Reply, Send, Surface
from dkms.node.roles.inputs import (
    Answered,
    GapQuery,
    Input,
    ReconcileDigest,
    ReconcileShard,
    Request,
)
from dkms.node.roles.reconcile import (
    FETCHES_PER_ROUND,
    FIRST_ROUND,
    LISTINGS_IN_FLIGHT,
    LISTINGS_PER_ROUND,
)
from dkms.node.roles.summaries import FRESH, LIST_PAGE, SHARDS, read_digest, read_listing
from dkms.node.roles.topics import shard_of
from dkms.node.roles.watcher import Watcher
from dkms.node.roles.witness import Witness
from dkms.node.testing.keys import seed
from dkms.node.testing.witnessed import Witnessed
from dkms.protocol.crypto import Signer
from dkms.protocol.events import interact
from dkms.protocol.ids import NodePrefix

from .kit import governance
from .test_checking import witnessed

LATE = Signer(seed(150), transferable=False)
OTHER = Signer(seed(151), transferable=False)
GOV, _ = governance(watchers=(LATE.verfer,), jurors=(), judges=())
EVERY: Final = 10.0


class Logged(Witnessed):
    """The driver, keeping every Send made (who, send)."""

    def _send(self, who: str, send: Send) -> None:
        self.__dict__.setdefault("log", []).append((who, send))
        super()._send(who, send)


def network(identifiers: int = 5, events: int = 3) -> tuple[Witnessed, list[str]]:
    """4 witnesses (bt = 3) holding `identifiers` KELs of `events` + 1 events each."""
    net = Logged.of(4)
    for witness in net.witnesses.values():
        witness.tails.enabled = False  # no tails gossiped again: reconciliation alone repairs
    ctl = net.controller
    prefixes = []
    for i in range(identifiers):
        name = f"id{i}"
        net.run(
            ctl.incept(
                name, [seed(10 + 2 * i)], [seed(11 + 2 * i)], witnesses=net.prefixes, toad=3, now=0
            )
        )
        for n in range(events):
            net.run(ctl.interact(name, [{"n": n}], now=net.now))
        prefixes.append(ctl.identity(name).prefix)
    return net, prefixes


def late_watcher(net: Witnessed, *peers: str, signer: Signer = LATE) -> Watcher:
    watcher = Watcher(signer, GOV, peers=peers, reconcile_every=EVERY)
    net.add(signer.verfer, watcher)
    return watcher


def holds(watcher: Watcher, net: Witnessed, prefix: str) -> bool:
    mine = watcher.validator.kel(prefix)
    theirs = net.witness(net.prefixes[0]).validator.kel(prefix)
    return mine is not None and theirs is not None and mine.last_said == theirs.last_said


def sent(net: Witnessed, who: str, kind: type) -> list[Send]:
    """The Sends `who` made whose tag is of `kind`."""
    log: list[tuple[str, Send]] = net.__dict__.get("log", [])
    return [s for w, s in log if w == who and isinstance(s.tag, kind)]


def test_a_watcher_gossip_gave_nothing_holds_every_kel_after_one_round() -> None:
    net, prefixes = network(identifiers=6)
    watcher = late_watcher(net, net.prefixes[0])
    assert all(watcher.validator.kel(p) is None for p in prefixes)  # gossip brought nothing
    net.advance(FIRST_ROUND)
    assert all(holds(watcher, net, p) for p in prefixes)
    assert len(sent(net, LATE.verfer, ReconcileDigest)) == 1
    fetches = sent(net, LATE.verfer, GapQuery)
    assert sorted(cbor2.loads(s.payload)["i"] for s in fetches) == sorted(prefixes)
    assert all(cbor2.loads(s.payload)["s"] == 0 for s in fetches)
    # every KEL's events were stored, with their receipts
    assert watcher.storage.stored > 0


def test_peers_that_hold_the_same_exchange_only_summaries() -> None:
    net, prefixes = network()
    watcher = late_watcher(net, net.prefixes[0])
    net.advance(FIRST_ROUND)
    assert all(holds(watcher, net, p) for p in prefixes)
    listings = len(sent(net, LATE.verfer, ReconcileShard))
    net.advance(FRESH + EVERY)  # the summaries are built again: the same
    assert len(sent(net, LATE.verfer, ReconcileDigest)) == 2
    assert len(sent(net, LATE.verfer, ReconcileShard)) == listings
    assert len(sent(net, LATE.verfer, GapQuery)) == len(prefixes)


def test_a_watcher_behind_fetches_only_what_it_lacks_and_from_the_next_round_on() -> None:
    net, prefixes = network(identifiers=3)
    watcher = late_watcher(net, net.prefixes[0])
    net.advance(FIRST_ROUND)
    net.down.add(LATE.verfer)  # it misses the gossip of two more events of one KEL
    for n in range(2):
        net.run(net.controller.interact("id1", [{"m": n}], now=net.now))
    net.down.discard(LATE.verfer)
    kel = watcher.validator.kel(prefixes[1])
    assert kel is not None and not holds(watcher, net, prefixes[1])
    behind = kel.sn
    before = len(sent(net, LATE.verfer, GapQuery))
    net.advance(EVERY)
    assert all(holds(watcher, net, p) for p in prefixes)
    (fetch,) = sent(net, LATE.verfer, GapQuery)[before:]
    ask = cbor2.loads(fetch.payload)
    assert (ask["i"], ask["s"]) == (prefixes[1], behind + 1)


def test_two_watchers_reconcile_with_each_other() -> None:
    net, prefixes = network(identifiers=4)
    first = late_watcher(net, net.prefixes[0])
    net.advance(FIRST_ROUND)
    second = late_watcher(net, LATE.verfer, signer=OTHER)  # knows only the first watcher
    net.advance(FIRST_ROUND)  # the first's summary is current: no wait for a rebuild
    assert all(holds(first, net, p) and holds(second, net, p) for p in prefixes)


def test_a_round_no_peer_answered_is_tried_again_soon() -> None:
    net, prefixes = network(identifiers=2)
    peer = net.prefixes[0]
    net.down.add(peer)
    watcher = late_watcher(net, peer)
    net.advance(FIRST_ROUND)
    assert len(sent(net, LATE.verfer, ReconcileDigest)) == 1
    net.down.discard(peer)
    net.advance(reconcile.RETRY)  # not a whole period
    assert reconcile.RETRY < EVERY
    assert len(sent(net, LATE.verfer, ReconcileDigest)) == 2
    assert all(holds(watcher, net, p) for p in prefixes)
    net.advance(reconcile.RETRY)  # answered: back to one round a period
    assert len(sent(net, LATE.verfer, ReconcileDigest)) == 2


def test_reconciliation_off_asks_nothing() -> None:
    net, prefixes = network(identifiers=2)
    watcher = Watcher(LATE, GOV, peers=(net.prefixes[0],))  # reconcile_every 0: the default
    net.add(LATE.verfer, watcher)
    net.advance(100.0)
    assert sent(net, LATE.verfer, ReconcileDigest) == []
    assert all(watcher.validator.kel(p) is None for p in prefixes)


class Flaky:
    """A witness that refuses its first `fails` KEL page queries (overloaded, say)."""

    def __init__(self, witness: Witness, fails: int) -> None:
        self.witness = witness
        self.fails = fails
        self.surfaces = witness.surfaces

    def start(self, now: float) -> list[Effect]:
        return []

    def admits(self, topic: str, payload: bytes) -> bool:
        return False

    def step(self, event: Input, now: float) -> list[Effect]:
        kel = isinstance(event, Request) and cbor2.loads(event.payload).get("t") == "kel"
        if kel and self.fails > 0:
            self.fails -= 1
            return [Reply.refuse(Code.BUSY, "busy")]
        return self.witness.step(event, now)


def test_a_fetch_that_fails_is_tried_again_within_the_round() -> None:
    net, prefixes = network(identifiers=3)
    peer = net.prefixes[0]
    net.roles[peer] = Flaky(net.witness(peer), fails=4)
    watcher = late_watcher(net, peer)
    net.advance(FIRST_ROUND)
    assert not all(holds(watcher, net, p) for p in prefixes)
    for _ in range(4):
        net.advance(reconcile.PUMP)
    assert all(holds(watcher, net, p) for p in prefixes)  # not a period later
    assert len(sent(net, LATE.verfer, ReconcileDigest)) == 1
    assert watcher.reconciler.table_sizes()["fetching"] == 0


# ------------------------------------------------------------------ a lying peer


class Liar:
    """A peer whose summary differs in every shard and whose listings never end: `listing`
    makes each page (made-up prefixes, say)."""

    surfaces: Final = frozenset({Surface.QUERY})

    def __init__(self, listing: Any, kel_answer: Reply | None = None) -> None:
        self.listing = listing
        self.kel_answer = kel_answer or Reply.refuse(Code.UNKNOWN, "no")
        self.asks: list[dict[str, Any]] = []

    def start(self, now: float) -> list[Effect]:
        return []

    def admits(self, topic: str, payload: bytes) -> bool:
        return False

    def step(self, event: Input, now: float) -> list[Effect]:
        assert isinstance(event, Request)
        ask = cbor2.loads(event.payload)
        self.asks.append(ask)
        if ask["t"] == "digest":
            body = {"k": SHARDS, "d": [bytes(16)] * SHARDS, "c": [10**9] * SHARDS}
            return [Reply.accept(cbor2.dumps(body))]
        if ask["t"] == "shard":
            return [Reply.accept(self.listing(ask))]
        return [self.kel_answer]


LIAR = Signer(seed(152), transferable=False).verfer


def made_up(shard: int, after: str, count: int) -> list[str]:
    """`count` prefixes (`E` and 43 digits) of `shard`, each greater than `after`."""
    found: list[str] = []
    n = int(after[1:]) + 1 if after else 0
    while len(found) < count:
        prefix = f"E{n:043d}"
        if shard_of(prefix) == shard:
            found.append(prefix)
        n += 1
    return found


def test_a_lying_peer_costs_one_bounded_round_per_period() -> None:
    def endless(ask: dict[str, Any]) -> bytes:
        tips = [[p, 7, "E" + "x" * 43] for p in made_up(ask["s"], ask["a"], 4)]
        return cbor2.dumps({"v": tips, "more": True})

    liar = Liar(endless)
    net, _ = network(identifiers=1)
    net.add(LIAR, liar)
    watcher = late_watcher(net, LIAR)
    net.advance(FIRST_ROUND)
    listings = [a for a in liar.asks if a["t"] == "shard"]
    fetches = [a for a in liar.asks if a["t"] == "kel"]
    assert len(listings) == LISTINGS_PER_ROUND
    assert 0 < len(fetches) <= FETCHES_PER_ROUND
    assert watcher.reconciler.table_sizes()["to_fetch"] <= reconcile.MAX_WANTED
    net.advance(EVERY)  # the next round: the same budgets again, no more
    listings = [a for a in liar.asks if a["t"] == "shard"]
    assert len(listings) == 2 * LISTINGS_PER_ROUND
    assert watcher.validator.prefixes == []  # nothing it said was taken


def test_tips_listed_under_the_wrong_shard_are_ignored() -> None:
    def misfiled(ask: dict[str, Any]) -> bytes:
        wrong = (ask["s"] + 1) % SHARDS
        tips = [[p, 0, "E" + "x" * 43] for p in made_up(wrong, "", 4)]
        return cbor2.dumps({"v": tips, "more": False})

    liar = Liar(misfiled)
    net, _ = network(identifiers=1)
    net.add(LIAR, liar)
    late_watcher(net, LIAR)
    net.advance(FIRST_ROUND)
    assert [a for a in liar.asks if a["t"] == "kel"] == []


def test_an_unreadable_answer_ends_the_round_with_that_peer_and_is_blamed() -> None:
    liar = Liar(lambda ask: b"\xff\x00garbage")
    net, _ = network(identifiers=1)
    net.add(LIAR, liar)
    late_watcher(net, LIAR)
    net.advance(FIRST_ROUND)
    # the first listings went out together; the first garbled answer ended the round
    assert len([a for a in liar.asks if a["t"] == "shard"]) == LISTINGS_IN_FLIGHT
    assert any(isinstance(b, Blame) and b.peer == LIAR for _, b in net.blames)


def test_another_version_at_our_tip_is_fetched_once_and_judged() -> None:
    net, prefixes = network(identifiers=1, events=2)
    prefix = prefixes[0]
    kel = net.witness(net.prefixes[0]).validator.kel(prefix)
    assert kel is not None
    rival = interact(prefix, prior=kel.chain[kel.sn - 1].event.said, sn=kel.sn, anchors=[{"r": 1}])
    message = witnessed(rival, [Signer(seed(10))], [0, 1, 2])  # the controller's key signs

    def listing(ask: dict[str, Any]) -> bytes:
        tips = [[prefix, rival.sn, rival.said]] if ask["s"] == shard_of(prefix) else []
        return cbor2.dumps({"v": tips, "more": False})

    liar = Liar(listing, Reply.accept(message))
    net.add(LIAR, liar)
    watcher = late_watcher(net, net.prefixes[0], LIAR)
    net.advance(FIRST_ROUND)
    assert holds(watcher, net, prefix)
    fetches = [a for a in liar.asks if a["t"] == "kel"]
    assert [(a["i"], a["s"]) for a in fetches] == [(prefix, kel.sn)]
    assert watcher.key_state(prefix)["standing"] == "duplicitous"
    net.advance(EVERY)  # listed again: judged already, not fetched again
    assert len([a for a in liar.asks if a["t"] == "shard"]) > len(fetches)
    assert [a for a in liar.asks if a["t"] == "kel"] == fetches


# ------------------------------------------------------------------ the answering side


def ask(role: Watcher, body: object, now: float = 0.0) -> Reply:
    (reply,) = [
        e
        for e in role.step(Request(Surface.QUERY, NodePrefix(""), cbor2.dumps(body)), now)
        if isinstance(e, Reply)
    ]
    return reply


def test_listings_are_paged_in_prefix_order_and_bounded() -> None:
    net, prefixes = network(identifiers=8, events=0)
    witness = net.witness(net.prefixes[0])
    summary = witness.digests.summary(net.now)
    assert sum(summary.counts) == len(prefixes)
    listed: list[str] = []
    for shard in range(SHARDS):
        reply = witness.step(
            Request(Surface.QUERY, NodePrefix(""), summaries.shard_ask(shard, "")), net.now
        )[0]
        assert isinstance(reply, Reply) and reply.ok
        read = read_listing(reply.payload, "")
        assert read is not None
        tips, more = read
        assert not more
        assert [t[0] for t in tips] == sorted(t[0] for t in tips)
        assert all(shard_of(t[0]) == shard for t in tips)
        listed += [t[0] for t in tips]
    assert sorted(listed) == sorted(prefixes)


def test_bad_queries_are_refused_with_one_line() -> None:
    watcher = Watcher(LATE, GOV)
    for body, code in [
        ({"t": "digest", "k": 8}, Code.BAD_QUERY),
        ({"t": "digest", "k": True}, Code.BAD_QUERY),
        ({"t": "shard"}, Code.BAD_QUERY),
        ({"t": "shard", "s": SHARDS}, Code.BAD_QUERY),
        ({"t": "shard", "s": -1}, Code.BAD_QUERY),
        ({"t": "shard", "s": 0, "a": 5}, Code.BAD_QUERY),
        ({"t": "shard", "s": 0, "a": "x" * 500}, Code.BAD_QUERY),
    ]:
        reply = ask(watcher, body)
        assert reply.code is code and "\n" not in reply.reason, body
    assert ask(watcher, {"t": "digest"}).ok
    assert ask(watcher, {"t": "shard", "s": 3}).ok


def test_a_witness_builds_its_summary_at_most_every_fresh_seconds() -> None:
    net, _ = network(identifiers=2, events=0)
    witness = net.witness(net.prefixes[0])
    for i in range(50):
        witness.step(
            Request(Surface.QUERY, NodePrefix(""), summaries.digest_ask()), i * FRESH / 100
        )
    assert witness.digests.built == 1
    witness.step(Request(Surface.QUERY, NodePrefix(""), summaries.digest_ask()), FRESH + 0.1)
    assert witness.digests.built == 2


def test_a_watcher_keeps_its_summary_current_as_its_kels_change() -> None:
    net = Logged.of(4)
    watcher = Watcher(LATE, GOV)  # follows by gossip from the start
    net.add(LATE.verfer, watcher)
    ctl = net.controller
    for i in range(3):
        name = f"id{i}"
        ctl_effects = ctl.incept(
            name, [seed(10 + 2 * i)], [seed(11 + 2 * i)], witnesses=net.prefixes, toad=3, now=0
        )
        net.run(ctl_effects)
        for n in range(3):
            net.run(ctl.interact(name, [{"n": n}], now=net.now))
            mine = watcher.digests.summary(net.now)
            whole = summaries.Digests(watcher.validator).summary(net.now)
            assert (mine.digests, mine.counts, mine.members) == (
                whole.digests,
                whole.counts,
                whole.members,
            )
    assert watcher.digests.built == 1  # summed again KEL by KEL, never whole
    assert sum(watcher.digests.summary(net.now).counts) == 3


def test_the_summary_says_the_same_of_the_same_holdings() -> None:
    net, prefixes = network(identifiers=5)
    a, b = (net.witness(p) for p in net.prefixes[:2])
    assert a.digests.summary(0).digests == b.digests.summary(0).digests
    read = read_digest(ask_witness(net, 0, {"t": "digest"}))
    assert read is not None and sum(c for _, c in read) == len(prefixes)


def ask_witness(net: Witnessed, i: int, body: object) -> bytes:
    reply = net.witness(net.prefixes[i]).step(
        Request(Surface.QUERY, NodePrefix(""), cbor2.dumps(body)), net.now
    )[0]
    assert isinstance(reply, Reply) and reply.ok
    return reply.payload


# ------------------------------------------------------------------ fuzz: peers' bytes

cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.text(max_size=60)
    | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=40,
)
answers = st.one_of(
    st.binary(max_size=300),
    cbor_values.map(cbor2.dumps),
    st.builds(
        lambda d, c, k: cbor2.dumps({"k": k, "d": d, "c": c}),
        st.lists(st.binary(min_size=15, max_size=17), min_size=63, max_size=65),
        st.lists(st.integers(min_value=-2, max_value=2**65), min_size=63, max_size=65),
        st.sampled_from([SHARDS, 63, True, "64"]),
    ),
    st.builds(
        lambda v, more: cbor2.dumps({"v": v, "more": more}),
        st.lists(st.lists(cbor_values, min_size=2, max_size=4), max_size=8),
        cbor_values,
    ),
)


@settings(max_examples=300, deadline=None)
@given(payload=answers, after=st.text(max_size=10))
def test_the_decoders_never_raise(payload: bytes, after: str) -> None:
    digest = read_digest(payload)
    if digest is not None:
        assert len(digest) == SHARDS
    listing = read_listing(payload, after)
    if listing is not None:
        tips, _ = listing
        assert [t[0] for t in tips] == sorted({t[0] for t in tips})
        assert all(t[0] > after for t in tips)


FUZZ_NET, FUZZ_PREFIXES = network(identifiers=3, events=1)


@settings(max_examples=200, deadline=None)
@given(
    payload=answers,
    code=st.sampled_from([Code.OK, Code.PARTIAL, Code.UNKNOWN, Code.UNREACHABLE]),
    shard=st.integers(min_value=0, max_value=SHARDS - 1),
    query=cbor_values,
)
def test_no_answer_or_query_crashes_a_watcher(
    payload: bytes, code: Code, shard: int, query: object
) -> None:
    watcher = Watcher(LATE, GOV, peers=(LIAR,), reconcile_every=EVERY)
    watcher.step(Request(Surface.QUERY, NodePrefix(""), cbor2.dumps(query)), 0.0)
    watcher.step(Request(Surface.QUERY, NodePrefix(""), cbor2.dumps({"t": "shard", "s": query})), 0)
    peer = NodePrefix(LIAR)
    watcher.reconciler.round(1.0)
    watcher.step(Answered(ReconcileDigest(peer), code, payload), 1.0)
    watcher.reconciler.round(100.0)
    body = {"k": SHARDS, "d": [bytes(16)] * SHARDS, "c": [1] * SHARDS}
    watcher.step(Answered(ReconcileDigest(peer), Code.OK, cbor2.dumps(body)), 100.0)
    watcher.step(Answered(ReconcileShard(peer, shard, ""), code, payload), 100.0)
    assert watcher.reconciler.table_sizes()["to_fetch"] <= LIST_PAGE

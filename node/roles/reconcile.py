"""Anti-entropy: a watcher compares what it holds with its peers and fetches what it lacks.

Theory of operation. Gossip is lossy and keeps no history: a KEL whose events all went by
while a watcher was down, starting, or dropping gossip under load leaves nothing behind to
tell it so (a gap is noticed only when a later event comes). So every `every` seconds a
watcher reconciles with a few of its peers (its bootstrap nodes and the roster's watchers,
`PEERS_PER_ROUND` of them per round, in turn), in three steps, each a query on
`Surface.QUERY` answered by `Digests` (watchers and witnesses both serve it):

    summary   `{"t": "digest", "k": SHARDS}` -> `{"k": SHARDS, "d": [digest, ...],
              "c": [count, ...]}`: per shard of the prefix space (`topics.shard_of`, as the
              gossip topics cut it) the number of KELs held and the XOR of a 16-byte Blake3
              digest of each one's tip, (prefix, sn, SAID of its last event). About 1.5 KB
    listing   for each shard whose summary differs from ours (and where the peer holds
              any), `{"t": "shard", "k": SHARDS, "s": shard, "a": after}` ->
              `{"v": [[prefix, sn, said], ...], "more": bool}`: the tips held in that shard,
              in prefix order after `after`, `LIST_PAGE` at a time; one listing in flight
              per peer, at most `LISTINGS_PER_ROUND` pages in a round
    fetch     each prefix the peer holds more of (one we hold nothing of, or a longer KEL)
              is fetched from it through the follower's gap path (`Follower.fetch`, paged
              by `gap_answered`) from our next sn; a prefix it holds another version of at
              our own sn is fetched from that sn, so the validator judges the rival (and
              evidence follows). At most `FETCHES_PER_ROUND` fetches are started in a round
              and none once `FETCH_BYTES` of answers came in; they wait for free ask slots
              (`ReconcilePump`), and what is left waits for the next round

A peer's answers are untrusted: they are decoded within bounds (`read_digest`,
`read_listing`: at most `ANSWER_BYTES`, fixed shapes, anything else is blamed on the peer and
ends its round), tips listed in a shard they do not hash to are ignored, and everything
fetched is validated as all KEL messages are. A peer that lies costs at most one round's
budgets each period. What we hold more of is not pushed: the peer finds it when it
reconciles with us. A round whose summary asks all fail (as just after start, before the
peers are reachable) is followed by the next `RETRY` seconds later rather than a period.

The answering side (`Digests`) keeps each shard's prefixes sorted for the listings (a list
of references to strings it holds anyway). A witness builds its summary from the validator's
KELs (O(KELs held), some 5 us each) at most once every `FRESH` seconds, or `FRESH_PER_KEL`
per KEL held if longer, however often it is asked; a watcher is told of every KEL that
changed and sums only those again (O(1) each, for a digest and a shard kept per KEL held,
some 150 bytes), so its summary is current; it is built whole every `REBUILD` seconds all
the same. Pure: no I/O, no clock (times come in).
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import blake3
import cbor2

from dkms.protocol.ids import NodePrefix
from dkms.protocol.validator import Validator

from .codes import Code
from .effects import Blame, Effect, Reply, Report, Send, SetTimer, Surface
from .inputs import Answered, ReconcileDigest, ReconcilePump, ReconcileRound, ReconcileShard
from .topics import shard_of

DIGEST: Final = "digest"  # the summary query's "t"
SHARD: Final = "shard"  # the listing query's "t"
QUERIES: Final = frozenset({DIGEST, SHARD})
SHARDS: Final = 64
DIGEST_BYTES: Final = 16
FRESH: Final = 5.0  # seconds an untracked summary is reused before it is built again
FRESH_PER_KEL: Final = 0.0005  # ... or this per KEL held, if longer (100,000 KELs: 50 s)
REBUILD: Final = 300.0  # seconds between whole builds of a tracked summary
LIST_PAGE: Final = 256  # tips in one listing (some 25 KB of CBOR)
MAX_PREFIX: Final = 128  # characters of a prefix or SAID taken from a peer
MAX_SN: Final = (1 << 64) - 1
ANSWER_BYTES: Final = 64 << 10  # a peer's summary or listing larger than this is not read
FIRST_ROUND: Final = 1.0  # seconds after start of the first round (at most `every`)
RETRY: Final = 5.0  # seconds to the next round when no peer answered this one's summary
PEERS_PER_ROUND: Final = 3  # peers reconciled with in one round
LISTINGS_PER_ROUND: Final = 128  # listing pages asked in one round, all peers together
FETCHES_PER_ROUND: Final = 1024  # KEL fetches started in one round
FETCH_BYTES: Final = 64 << 20  # bytes of fetched KEL pages after which a round starts no more
MAX_WANTED: Final = 4096  # prefixes waiting to be fetched
PUMP: Final = 0.5  # seconds between tries to start waiting fetches

Tip = tuple[str, int, str]  # (prefix, sn, SAID of the last event)
TipOf = Callable[[str], Tip | None]
Fetch = Callable[[str, NodePrefix, int, float], list[Effect] | None]


def tip_digest(prefix: str, sn: int, said: str) -> int:
    """The 16-byte digest of one KEL's tip, as an integer (shard digests XOR them)."""
    data = f"{prefix}\x00{sn}\x00{said}".encode("utf-8", "surrogatepass")
    return int.from_bytes(blake3.blake3(data).digest(DIGEST_BYTES), "big")


@dataclass(frozen=True, slots=True)
class Summary:
    """What a node held when it last summed up: per shard, the XOR of its tips' digests, the
    number of KELs, and their prefixes in order."""

    at: float
    digests: tuple[bytes, ...]
    counts: tuple[int, ...]
    members: tuple[list[str], ...]

    def of(self, shard: int) -> tuple[bytes, int]:
        return self.digests[shard], self.counts[shard]


class Digests:
    """The answering side: summaries and listings of the KELs a validator holds.

    Untracked (a witness), the summary is built again from every KEL held once it is older
    than `fresh` seconds. Tracked (a watcher, which calls `changed` for every KEL whose tip
    moved or that it forgot), only the KELs changed since are summed again, so the summary
    is always current; it is still built whole every `REBUILD` seconds, so that a change it
    was not told of cannot stay wrong for long."""

    def __init__(
        self, validator: Validator, *, fresh: float = FRESH, tracked: bool = False
    ) -> None:
        self.validator = validator
        self.fresh = fresh
        self.tracked = tracked
        self._summary: Summary | None = None
        self._whole = -REBUILD  # when last built whole
        self._memo: dict[str, tuple[int, int]] = {}  # prefix -> (its tip digest, its shard)
        self._digests = [0] * SHARDS
        self._counts = [0] * SHARDS
        self._members: tuple[list[str], ...] = tuple([] for _ in range(SHARDS))
        self._dirty: set[str] = set()
        self.built = 0  # summaries built whole (for tests)

    def changed(self, prefix: str) -> None:
        """The KEL of `prefix` changed (its tip moved, or it was forgotten)."""
        if self.tracked:
            self._dirty.add(prefix)
            self._summary = None

    def summary(self, now: float) -> Summary:
        """The summary as of now (tracked) or of at most `fresh` seconds ago."""
        held = self._summary
        if self.tracked:
            if self._whole <= now < self._whole + REBUILD:
                if held is not None:
                    return held
                self._apply()
            else:
                self._build(now)
        elif held is not None and held.at <= now < held.at + self._fresh(held):
            return held
        else:
            self._build(now)
        self._summary = Summary(
            now,
            tuple(d.to_bytes(DIGEST_BYTES, "big") for d in self._digests),
            tuple(self._counts),
            self._members,
        )
        return self._summary

    def _fresh(self, held: Summary) -> float:
        """How long an untracked summary is reused: a whole build costs some 5 us per KEL
        (100,000 KELs: 0.5 s), so at most about 1% of a core however often it is asked."""
        return max(self.fresh, FRESH_PER_KEL * sum(held.counts))

    def _build(self, now: float) -> None:
        self._memo.clear()
        self._dirty.clear()
        self._digests = [0] * SHARDS
        self._counts = [0] * SHARDS
        self._members = tuple([] for _ in range(SHARDS))
        for prefix in self.validator.prefixes:
            self._add(prefix)
        for listed in self._members:
            listed.sort()
        self._whole = now
        self.built += 1

    def _apply(self) -> None:
        """Sum the KELs changed since again: out with what we summed, in with what is held."""
        for prefix in self._dirty:
            old = self._memo.pop(prefix, None)
            if old is not None:
                digest, shard = old
                self._digests[shard] ^= digest
                self._counts[shard] -= 1
                listed = self._members[shard]
                at = bisect.bisect_left(listed, prefix)
                if at < len(listed) and listed[at] == prefix:
                    del listed[at]
            self._add(prefix, sort=True)
        self._dirty.clear()

    def _add(self, prefix: str, *, sort: bool = False) -> None:
        kel = self.validator.kel(prefix)
        if kel is None:
            return
        shard = shard_of(prefix, SHARDS)
        digest = tip_digest(prefix, kel.sn, kel.last_said)
        if self.tracked:  # else never read: built whole each time
            self._memo[prefix] = (digest, shard)
        self._digests[shard] ^= digest
        self._counts[shard] += 1
        if sort:
            bisect.insort(self._members[shard], prefix)
        else:
            self._members[shard].append(prefix)

    def answer(self, ask: dict[Any, Any], now: float) -> Reply:
        """The reply to a `digest` or `shard` query (`ask` is its CBOR map)."""
        if ask.get("k", SHARDS) != SHARDS or isinstance(ask.get("k"), bool):
            return Reply.refuse(Code.BAD_QUERY, f"k must be {SHARDS}, the number of shards")
        if ask.get("t") == DIGEST:
            summary = self.summary(now)
            body = {"k": SHARDS, "d": list(summary.digests), "c": list(summary.counts)}
            return Reply.accept(cbor2.dumps(body))
        shard, after = ask.get("s"), ask.get("a", "")
        if not (isinstance(shard, int) and not isinstance(shard, bool) and 0 <= shard < SHARDS):
            return Reply.refuse(Code.BAD_QUERY, f"s must be a shard, 0 to {SHARDS - 1}")
        if not isinstance(after, str) or len(after) > MAX_PREFIX:
            return Reply.refuse(Code.BAD_QUERY, "a must be the last prefix received")
        members = self.summary(now).members[shard]
        at = bisect.bisect_right(members, after)
        tips: list[list[object]] = []
        while at < len(members) and len(tips) < LIST_PAGE:
            kel = self.validator.kel(members[at])
            if kel is not None:  # else forgotten since the summary
                tips.append([kel.prefix, kel.sn, kel.last_said])
            at += 1
        return Reply.accept(cbor2.dumps({"v": tips, "more": at < len(members)}))


def digest_ask() -> bytes:
    return cbor2.dumps({"t": DIGEST, "k": SHARDS})


def shard_ask(shard: int, after: str) -> bytes:
    return cbor2.dumps({"t": SHARD, "k": SHARDS, "s": shard, "a": after})


def _loads(payload: bytes) -> dict[Any, Any] | None:
    if len(payload) > ANSWER_BYTES:
        return None
    try:
        value = cbor2.loads(payload)
    except Exception:  # cbor2 raises many types on hostile input
        return None
    return value if isinstance(value, dict) else None


def _count(value: object, top: int = MAX_SN) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= top


def read_digest(payload: bytes) -> list[tuple[bytes, int]] | None:
    """A peer's summary, (digest, count) per shard, or None if it is not one."""
    body = _loads(payload)
    if body is None or body.get("k") != SHARDS or isinstance(body.get("k"), bool):
        return None
    digests, counts = body.get("d"), body.get("c")
    if not (isinstance(digests, list) and isinstance(counts, list)):
        return None
    if len(digests) != SHARDS or len(counts) != SHARDS:
        return None
    if not all(isinstance(d, bytes) and len(d) == DIGEST_BYTES for d in digests):
        return None
    if not all(_count(c) for c in counts):
        return None
    return list(zip(digests, counts, strict=True))


def read_listing(payload: bytes, after: str) -> tuple[list[Tip], bool] | None:
    """A peer's listing of one shard: its well-formed tips (others skipped), in strictly
    increasing prefix order after `after`, and whether more follow; None if it is none."""
    body = _loads(payload)
    if body is None:
        return None
    items, more = body.get("v"), body.get("more")
    if not isinstance(items, list) or len(items) > LIST_PAGE or not isinstance(more, bool):
        return None
    tips: list[Tip] = []
    last = after
    for item in items:
        if not (isinstance(item, list) and len(item) == 3):
            continue
        prefix, sn, said = item
        if not (isinstance(prefix, str) and 0 < len(prefix) <= MAX_PREFIX and prefix > last):
            continue
        if not (_count(sn) and isinstance(said, str) and 0 < len(said) <= MAX_PREFIX):
            continue
        tips.append((prefix, sn, said))
        last = prefix
    return tips, more


@dataclass(slots=True)
class Session:
    """One peer's reconciliation in a round: the shards left to list."""

    started: float
    shards: list[int] = field(default_factory=list)
    found: int = 0  # KELs it holds more of, found so far


@dataclass(frozen=True, slots=True)
class Wanted:
    """A KEL to fetch from `peer`, which holds (sn, said) of it."""

    peer: NodePrefix
    sn: int
    said: str


class Reconciler:
    """The asking side: rounds of summaries, listings and fetches, within budgets."""

    def __init__(
        self,
        me: str,
        digests: Digests,
        tip_of: TipOf,
        peers: Callable[[], Sequence[str]],
        fetch: Fetch,
        *,
        every: float,
        wanted: Callable[[str], bool] = lambda prefix: True,
        busy: Callable[[str], bool] = lambda prefix: False,
    ) -> None:
        """`every`: seconds between rounds (0: never); `peers`: whom to reconcile with;
        `fetch(prefix, peer, start, now)`: the follower's KEL fetch (`Follower.fetch`);
        `wanted`: whether a prefix is one we follow; `busy`: whether its events are being
        asked for already (`Follower.asking`: another peer listed it too, or a gap)."""
        self.me = me
        self.every = every
        self.digests = digests
        self._tip_of = tip_of
        self._peers = peers
        self._fetch = fetch
        self._wanted_prefix = wanted
        self._busy = busy
        self._sessions: dict[NodePrefix, Session] = {}
        self._wanted: OrderedDict[str, Wanted] = OrderedDict()
        self._turn = 0  # where the next round starts in the list of peers
        self._summed_ok = False  # some peer answered this round's summary ask
        # rival tips fetched once already (the validator judged them): not fetched again
        self._judged: OrderedDict[tuple[str, int, str], None] = OrderedDict()
        # this round's budgets, spent
        self._listings = 0
        self._fetches = 0
        self._bytes = 0
        # totals, for tests and metrics
        self.rounds = 0
        self.fetched_kels = 0

    def start(self, now: float) -> list[Effect]:
        if self.every <= 0:
            return []
        return [SetTimer(ReconcileRound(), now + min(FIRST_ROUND, self.every))]

    def round(self, now: float) -> list[Effect]:
        """The `ReconcileRound` timer: fresh budgets, and a summary asked of the next peers."""
        effects: list[Effect] = [SetTimer(ReconcileRound(), now + self.every)]
        self._listings = self._fetches = self._bytes = 0
        self._summed_ok = False
        for peer, session in list(self._sessions.items()):  # the runtime answers every ask;
            if now > session.started + 4 * self.every:  # this is only a backstop
                del self._sessions[peer]
        peers = [NodePrefix(p) for p in dict.fromkeys(self._peers()) if p and p != self.me]
        self.rounds += 1
        if peers:
            start = self._turn % len(peers)
            chosen = [peers[(start + i) % len(peers)] for i in range(len(peers))]
            chosen = [p for p in chosen if p not in self._sessions][:PEERS_PER_ROUND]
            self._turn = start + PEERS_PER_ROUND
            for peer in chosen:
                self._sessions[peer] = Session(now)
                effects.append(Send(peer, Surface.QUERY, digest_ask(), ReconcileDigest(peer)))
        return effects + self.pump(now)

    def answered(
        self, tag: ReconcileDigest | ReconcileShard, answer: Answered, now: float
    ) -> list[Effect]:
        """A peer's summary or listing."""
        session = self._sessions.get(tag.peer)
        if session is None:
            return []
        if not answer.code.ok:
            del self._sessions[tag.peer]
            effects: list[Effect] = [
                Report("info", f"reconciliation with {tag.peer}: no answer ({answer.reason})")
            ]
            if isinstance(tag, ReconcileDigest) and not self._summed_ok and not self._sessions:
                # nobody answered this round (peers not reachable yet, just after start):
                # the next round comes sooner, not a whole period later
                effects.append(SetTimer(ReconcileRound(), now + min(self.every, RETRY)))
            return effects
        if isinstance(tag, ReconcileDigest):
            self._summed_ok = True
            return self._summed(tag.peer, session, answer.payload, now)
        return self._listed(tag, session, answer.payload, now)

    def fetched(self, size: int) -> None:
        """A KEL page came in (any gap answer): counted against this round's bytes."""
        self._bytes += size

    def pump(self, now: float) -> list[Effect]:
        """Start the fetches waiting, while this round's budgets and the ask slots allow;
        the `ReconcilePump` timer tries again later."""
        effects: list[Effect] = []
        while self._wanted and self._fetches < FETCHES_PER_ROUND and self._bytes < FETCH_BYTES:
            prefix, want = next(iter(self._wanted.items()))
            start = self._start(prefix, want.sn, want.said)
            if start is None or self._busy(prefix):  # came meanwhile, or is on its way
                del self._wanted[prefix]
                continue
            asks = self._fetch(prefix, want.peer, start, now)
            if asks is None:
                break  # every ask slot is taken: later
            del self._wanted[prefix]
            if asks:
                self._fetches += 1
                self.fetched_kels += 1
                effects += asks
                if start == want.sn:
                    self._judged[(prefix, want.sn, want.said)] = None
                    while len(self._judged) > MAX_WANTED:
                        self._judged.popitem(last=False)
        budget = self._fetches < FETCHES_PER_ROUND and self._bytes < FETCH_BYTES
        if self._wanted and budget:
            effects.append(SetTimer(ReconcilePump(), now + PUMP))
        return effects

    def table_sizes(self) -> dict[str, int]:
        return {"reconciling": len(self._sessions), "to_fetch": len(self._wanted)}

    # ---------------------------------------------------------------- internals

    def _summed(
        self, peer: NodePrefix, session: Session, payload: bytes, now: float
    ) -> list[Effect]:
        theirs = read_digest(payload)
        if theirs is None:
            del self._sessions[peer]
            return [Blame(peer, "unreadable reconciliation summary")]
        mine = self.digests.summary(now)
        # shards where the peer holds something we may lack, the largest surplus first
        differ = [
            (mine.counts[s] - count, s)
            for s, (digest, count) in enumerate(theirs)
            if count and (digest, count) != mine.of(s)
        ]
        session.shards = [s for _, s in sorted(differ)]
        return self._next_listing(peer, session, "")

    def _listed(
        self, tag: ReconcileShard, session: Session, payload: bytes, now: float
    ) -> list[Effect]:
        read = read_listing(payload, tag.after)
        if read is None:
            del self._sessions[tag.peer]
            return [Blame(tag.peer, "unreadable reconciliation listing")]
        tips, more = read
        for prefix, sn, said in tips:
            if shard_of(prefix, SHARDS) == tag.shard and self._wanted_prefix(prefix):
                session.found += self._want(prefix, tag.peer, sn, said)
        after = ""
        if more and tips:
            after = tips[-1][0]  # strictly past tag.after: the listing moves on
        else:
            session.shards = session.shards[1:]
        return self._next_listing(tag.peer, session, after) + self.pump(now)

    def _want(self, prefix: str, peer: NodePrefix, sn: int, said: str) -> bool:
        """`peer` holds (sn, said) of `prefix`: fetch what of it we lack (True: we do)."""
        if self._start(prefix, sn, said) is None:
            return False
        if prefix in self._wanted or len(self._wanted) < MAX_WANTED:
            self._wanted.setdefault(prefix, Wanted(peer, sn, said))
        return True

    def _start(self, prefix: str, sn: int, said: str) -> int | None:
        """Where to fetch `prefix` from, to have what a peer holding (sn, said) holds; None:
        we hold that or more, or it is a rival already judged."""
        held = self._tip_of(prefix)
        if held is None:
            return 0
        if sn > held[1]:
            return held[1] + 1
        if sn == held[1] and said != held[2] and (prefix, sn, said) not in self._judged:
            return sn  # another version at our tip: the validator judges it
        return None

    def _next_listing(self, peer: NodePrefix, session: Session, after: str) -> list[Effect]:
        if not session.shards or self._listings >= LISTINGS_PER_ROUND:
            del self._sessions[peer]
            if not session.found:
                return []
            return [
                Report("info", f"reconciled with {peer}: it holds more of {session.found} KELs")
            ]
        self._listings += 1
        shard = session.shards[0]
        tag = ReconcileShard(peer, shard, after)
        return [Send(peer, Surface.QUERY, shard_ask(shard, after), tag)]

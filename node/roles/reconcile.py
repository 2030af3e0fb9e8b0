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
              in prefix order after `after`, `LIST_PAGE` at a time; `LISTINGS_IN_FLIGHT`
              listings in flight per peer, at most `LISTINGS_PER_ROUND` pages in a round
    fetch     each prefix the peer holds more of (one we hold nothing of, or a longer KEL)
              is fetched from it through the follower's gap path (`Follower.fetch`, paged
              by `gap_answered`) from our next sn; a prefix it holds another version of at
              our own sn is fetched from that sn, so the validator judges the rival (and
              evidence follows). At most `FETCHES_PER_ROUND` fetches are started in a round
              and none once `FETCH_BYTES` of answers came in; they wait for free ask slots
              (`ReconcilePump`), and what is left waits for the next round. A fetch that
              ends short (a page timed out: the peer is overloaded) is started again, at
              most `FETCH_TRIES` times in a round

A peer's answers are untrusted: they are decoded within bounds (`read_digest`,
`read_listing`: at most `ANSWER_BYTES`, fixed shapes, anything else is blamed on the peer and
ends its round), tips listed in a shard they do not hash to are ignored, and everything
fetched is validated as all KEL messages are. A peer that lies costs at most one round's
budgets each period. What we hold more of is not pushed: the peer finds it when it
reconciles with us. A round whose summary asks all fail (as just after start, before the
peers are reachable) is followed by the next `RETRY` seconds later rather than a period.

The queries, their answers and their decoders are `summaries.py`. Pure: no I/O, no clock
(times come in).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from dkms.protocol.ids import NodePrefix

from .effects import Blame, Effect, Report, Send, SetTimer, Surface
from .inputs import Answered, ReconcileDigest, ReconcilePump, ReconcileRound, ReconcileShard
from .summaries import SHARDS, Digests, Tip, digest_ask, read_digest, read_listing, shard_ask
from .topics import shard_of

FIRST_ROUND: Final = 1.0  # seconds after start of the first round (at most `every`)
RETRY: Final = 5.0  # seconds to the next round when no peer answered this one's summary
PEERS_PER_ROUND: Final = 3  # peers reconciled with in one round
LISTINGS_PER_ROUND: Final = 128  # listing pages asked in one round, all peers together
LISTINGS_IN_FLIGHT: Final = 8  # listing pages awaited from one peer at once
FETCHES_PER_ROUND: Final = 1024  # KEL fetches started in one round
FETCH_BYTES: Final = 64 << 20  # bytes of fetched KEL pages after which a round starts no more
MAX_WANTED: Final = 4096  # prefixes waiting to be fetched
PUMP: Final = 0.5  # seconds between tries to start waiting fetches
FETCH_TRIES: Final = 3  # times a KEL is fetched in one round while its fetch ends short
TipOf = Callable[[str], Tip | None]
Fetch = Callable[[str, NodePrefix, int, float], list[Effect] | None]


@dataclass(slots=True)
class Session:
    """One peer's reconciliation in a round: the shards left to list."""

    started: float
    shards: list[int] = field(default_factory=list)  # not yet asked for
    listing: int = 0  # listings asked, not yet answered
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
        self._fetching: dict[str, Wanted] = {}  # prefix -> what its fetch in flight is for
        self._tries: dict[str, int] = {}  # prefix -> fetches started this round
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
        self._tries.clear()
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
                tries = self._tries.get(prefix, 0)
                self.fetched_kels += int(tries == 0)
                self._tries[prefix] = tries + 1
                self._fetching[prefix] = want
                effects += asks
                if start == want.sn:
                    self._judged[(prefix, want.sn, want.said)] = None
                    while len(self._judged) > MAX_WANTED:
                        self._judged.popitem(last=False)
        budget = self._fetches < FETCHES_PER_ROUND and self._bytes < FETCH_BYTES
        if self._wanted and budget:
            effects.append(SetTimer(ReconcilePump(), now + PUMP))
        return effects

    def fetch_ended(self, prefix: str, now: float) -> list[Effect]:
        """A gap answer for `prefix` was applied. Once no ask for it is left in flight, a
        fetch of ours that ended short of what the peer listed (it timed out, the peer is
        overloaded) is tried again, up to `FETCH_TRIES` times a round, the rest next round."""
        want = self._fetching.get(prefix)
        if want is None or self._busy(prefix):
            return []
        del self._fetching[prefix]
        if self._start(prefix, want.sn, want.said) is None:
            return []  # it holds what the peer listed
        if self._tries.get(prefix, 0) >= FETCH_TRIES or len(self._wanted) >= MAX_WANTED:
            return []
        self._wanted.setdefault(prefix, want)
        return [SetTimer(ReconcilePump(), now + PUMP)]

    def table_sizes(self) -> dict[str, int]:
        return {
            "reconciling": len(self._sessions),
            "to_fetch": len(self._wanted),
            "fetching": len(self._fetching),
        }

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
        return self._next_listings(peer, session)

    def _listed(
        self, tag: ReconcileShard, session: Session, payload: bytes, now: float
    ) -> list[Effect]:
        read = read_listing(payload, tag.after)
        if read is None:
            del self._sessions[tag.peer]
            return [Blame(tag.peer, "unreadable reconciliation listing")]
        tips, more = read
        session.listing -= 1
        for prefix, sn, said in tips:
            if shard_of(prefix, SHARDS) == tag.shard and self._wanted_prefix(prefix):
                session.found += self._want(prefix, tag.peer, sn, said)
        effects: list[Effect] = []
        if more and tips and self._listings < LISTINGS_PER_ROUND:
            # the shard's next page, from past its last tip (strictly past tag.after)
            effects.append(self._list(tag.peer, session, tag.shard, tips[-1][0]))
        return effects + self._next_listings(tag.peer, session) + self.pump(now)

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

    def _next_listings(self, peer: NodePrefix, session: Session) -> list[Effect]:
        """List the next shards, `LISTINGS_IN_FLIGHT` at once; the round with `peer` ends
        when none is left (or the round's budget is spent) and no answer is awaited."""
        effects: list[Effect] = []
        while (
            session.shards
            and session.listing < LISTINGS_IN_FLIGHT
            and self._listings < LISTINGS_PER_ROUND
        ):
            effects.append(self._list(peer, session, session.shards.pop(0), ""))
        if session.listing == 0:
            del self._sessions[peer]
            if session.found:
                line = f"reconciled with {peer}: it holds more of {session.found} KELs"
                effects.append(Report("info", line))
        return effects

    def _list(self, peer: NodePrefix, session: Session, shard: int, after: str) -> Send:
        self._listings += 1
        session.listing += 1
        return Send(
            peer, Surface.QUERY, shard_ask(shard, after), ReconcileShard(peer, shard, after)
        )

"""What the other watchers of the roster hold: tips exchanged, so a key state says who agrees.

Theory of operation. A watcher's key state answer says how many watchers of the roster hold
the very state it holds (`agreement`). What it knows of the others comes from a small
exchange among the roster's watchers, of each KEL's tip: its latest sn and SAID.

    changed    a KEL's tip moved here (an event accepted): the identifier is queued for each
               other watcher on the roster (`peers`, read from the roster in force)
    round      every `ROUND` seconds while anything is queued, one request to each peer with
               no ask in flight carries the current tips of up to `BATCH` queued identifiers:
               `{"t": "tips", "v": [[prefix, sn, said], ...]}` (sn -1, said "" for a KEL not
               held: forgotten since)
    answer     the watcher asked records the asker's tips as the asker's view, if the asker
               is a watcher on its roster (the transport authenticates the peer), and answers
               anyone with its own tips of those identifiers, in the same form
    answered   the peer's tips are recorded as its view. So both sides learn the other's
               view whenever either's tip moves, and a view that was behind is brought up to
               date when that watcher's own tip moves. A failed ask puts its identifiers back
               in the queue, and that peer is not asked again for `QUIET` seconds
    agreement  for one identifier: the roster's watchers, how many hold our tip (ourselves
               included, when on the roster), and what is known of each other: the same
               tip, behind (an older sn, or nothing), ahead (a newer sn), or another version
               at our sn; the others are unknown. A view is what that watcher held when it
               last told us: it is not a promise about now

Bounds: at most `MAX_QUEUED` identifiers queued per peer (oldest dropped: that peer learns
of the change at the next one), one ask in flight per peer, and views of at most `MAX_VIEWS`
(identifier, watcher) pairs, of identifiers we hold only (the least lately told of are
forgotten first, and are unknown again). A view shares the identifier's, the watcher's and,
when it agrees, the SAID's string with what we hold: some 190 bytes each when it agrees, 280
when not (tracemalloc, 20,000 identifiers of two watchers), so 28 MB at most. Views live in
memory only: a restarted watcher knows none until tips move. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Final

import cbor2

from dkms.protocol.ids import NodePrefix

from .codes import Code
from .effects import Effect, Reply, Report, Send, SetTimer, Surface
from .inputs import Answered, ViewAsk, ViewRound

QUERY: Final = "tips"  # the query's "t"
ROUND: Final = 1.0  # seconds between rounds of asks
QUIET: Final = 15.0  # seconds a peer whose ask failed is left alone
BATCH: Final = 512  # tips in one ask (some 50 KB of CBOR)
MAX_QUEUED: Final = 50_000  # identifiers queued per peer
MAX_VIEWS: Final = 100_000  # (identifier, watcher) views kept
MAX_PREFIX: Final = 128  # characters of an identifier prefix taken from a peer

Tip = tuple[int, str]  # (sn, SAID); (-1, "") when no KEL is held
# The KEL we hold of an identifier: (its prefix, sn, SAID), the objects it holds; None if none
TipOf = Callable[[str], tuple[str, int, str] | None]
Peers = Callable[[], Sequence[str]]  # the watchers on the roster in force


class Views:
    """Our peers' last known tips, and the tips waiting to be told to them."""

    def __init__(self, me: str, tip_of: TipOf, peers: Peers) -> None:
        self.me = me
        self._tip_of = tip_of
        self._peers = peers  # every watcher on the roster (perhaps ourselves among them)
        self._queued: dict[str, OrderedDict[str, None]] = {}  # peer -> identifiers to tell
        self._asking: dict[str, tuple[str, ...]] = {}  # peer -> identifiers in flight
        self._quiet: dict[str, float] = {}  # peer -> not asked again before then
        # (prefix, peer) -> the peer's tip, least lately told first
        self._views: OrderedDict[tuple[str, str], Tip] = OrderedDict()
        self._rounds = False  # a ViewRound timer is set

    def changed(self, prefix: str, now: float) -> list[Effect]:
        """The tip of `prefix` moved here: tell every other watcher of the roster (if we are
        on it: the others record only rostered watchers' views, so a relay's would be lost)."""
        peers = self._peers()
        if self.me not in peers:
            return []
        for peer in peers:
            if peer == self.me:
                continue
            queue = self._queued.setdefault(peer, OrderedDict())
            queue.pop(prefix, None)
            queue[prefix] = None
            if len(queue) > MAX_QUEUED:
                queue.popitem(last=False)
        return self._arm(now)

    def round(self, now: float) -> list[Effect]:
        """The `ViewRound` timer: one ask to each peer with tips queued and none in flight."""
        self._rounds = False
        effects: list[Effect] = []
        rostered = set(self._peers())
        for peer in list(self._queued):
            queue = self._queued[peer]
            if peer not in rostered:  # off the roster since
                del self._queued[peer]
                continue
            if peer in self._asking or self._quiet.get(peer, 0.0) > now:
                continue
            prefixes: list[str] = []
            while queue and len(prefixes) < BATCH:
                prefixes.append(queue.popitem(last=False)[0])
            if not queue:
                del self._queued[peer]
            self._asking[peer] = tuple(prefixes)
            ask = cbor2.dumps({"t": QUERY, "v": self._tips(prefixes)})
            effects.append(Send(NodePrefix(peer), Surface.QUERY, ask, ViewAsk(NodePrefix(peer))))
        return effects + self._arm(now)

    def answered(self, tag: ViewAsk, answer: Answered, now: float) -> list[Effect]:
        """A peer's answer: its tips are its view; a failure queues ours for it again."""
        peer = str(tag.peer)
        prefixes = self._asking.pop(peer, ())
        if not answer.code.ok:
            self._quiet[peer] = now + QUIET
            queue = self._queued.setdefault(peer, OrderedDict())
            for prefix in prefixes:
                if prefix not in queue and len(queue) < MAX_QUEUED:
                    queue[prefix] = None
            return [Report("debug", f"{tag}: no answer ({answer.reason})"), *self._arm(now)]
        self._quiet.pop(peer, None)
        tips = _read_tips(_loads(answer.payload).get("v"))
        asked = set(prefixes)
        for prefix, tip in tips or []:
            if prefix in asked:
                self._record(prefix, peer, tip)
        return self._arm(now)

    def answer(self, ask: dict[Any, Any], peer: str) -> Reply:
        """`{"t": "tips", "v": [[prefix, sn, said], ...]}` from `peer`: recorded as its view
        if it is a watcher on the roster; answered with our tips of the same identifiers."""
        tips = _read_tips(ask.get("v"))
        if tips is None:
            return Reply.refuse(
                Code.BAD_QUERY, f"v must be a list of at most {BATCH} [prefix, sn, said]"
            )
        if peer and peer != self.me and peer in self._peers():
            for prefix, tip in tips:
                self._record(prefix, peer, tip)
        return Reply.accept(cbor2.dumps({"v": self._tips([p for p, _ in tips])}))

    def agreement(self, prefix: str) -> dict[str, Any]:
        """Who of the roster's watchers holds our tip of `prefix`, as far as we know."""
        roster = list(dict.fromkeys(self._peers()))
        held = self._tip_of(prefix)
        mine = (-1, "") if held is None else held[1:]
        views = []
        agree = int(self.me in roster and held is not None)
        for peer in roster:
            known = self._views.get((prefix, peer))
            if peer == self.me or known is None:
                continue
            sn, said = known
            view = _compare((sn, said), mine)
            agree += view == "agree"
            views.append({"watcher": peer, "view": view, "sn": sn, "d": said or None})
        unknown = len([p for p in roster if p != self.me]) - len(views)
        return {"roster": len(roster), "agree": agree, "views": views, "unknown": unknown}

    def table_sizes(self) -> dict[str, int]:
        return {
            "views": len(self._views),
            "queued": sum(len(q) for q in self._queued.values()),
            "asking": len(self._asking),
        }

    def _record(self, prefix: str, peer: str, tip: Tip) -> None:
        """Keep `peer`'s tip of `prefix`, if we hold it, with our strings where they are
        the same (the peer's is one of the roster's)."""
        held = self._tip_of(prefix)
        if held is None:
            return
        prefix, _, said = held
        peer = next((p for p in self._peers() if p == peer), peer)
        key = (prefix, peer)
        self._views.pop(key, None)
        self._views[key] = (tip[0], said) if tip[1] == said else tip
        if len(self._views) > MAX_VIEWS:
            self._views.popitem(last=False)

    def _tips(self, prefixes: Sequence[str]) -> list[list[object]]:
        out: list[list[object]] = []
        for prefix in prefixes:
            held = self._tip_of(prefix)
            out.append([prefix, -1, ""] if held is None else [prefix, held[1], held[2]])
        return out

    def _arm(self, now: float) -> list[Effect]:
        if self._rounds or not self._queued:
            return []
        self._rounds = True
        return [SetTimer(ViewRound(), now + ROUND)]


def _compare(theirs: Tip, mine: Tip) -> str:
    if theirs == mine:
        return "agree"
    if theirs[0] < mine[0]:
        return "behind"
    if theirs[0] > mine[0]:
        return "ahead"
    return "differs"


def _loads(payload: bytes) -> dict[Any, Any]:
    try:
        value = cbor2.loads(payload)
    except Exception:  # cbor2 raises many types on hostile input
        return {}
    return value if isinstance(value, dict) else {}


def _read_tips(value: object) -> list[tuple[str, Tip]] | None:
    """The well-formed tips of a list (others skipped); None if it is no list or too long."""
    if not isinstance(value, list) or len(value) > BATCH:
        return None
    tips = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 3):
            continue
        prefix, sn, said = item
        if (
            isinstance(prefix, str)
            and 0 < len(prefix) <= MAX_PREFIX
            and isinstance(sn, int)
            and not isinstance(sn, bool)
            and sn >= -1
            and isinstance(said, str)
            and len(said) <= MAX_PREFIX
        ):
            tips.append((prefix, (sn, said)))
    return tips

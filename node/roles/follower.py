"""Following KELs: what a witness and a watcher both do with the key events they hold.

Theory of operation. A follower owns a `Validator` and turns what it says into effects:

    accepted        the event (with its signatures) and its receipts are persisted, so a
                    restart can replay them (`restore`)
    out of order    the events missing before it are asked for, a page at a time
                    (`pages.py`): from the KEL's witnesses, or, for an identifier nothing is
                    held of (it began before we listened), from `peers`. One round of asks
                    per identifier in flight, one ask per (identifier, peer), and at most
                    `MAX_GAP_ASKS` identifiers at once, so gossip about made-up identifiers
                    cannot make a node a query amplifier, nor a gap in a busy KEL one query
                    per event that arrives while the gap is asked for. A round asks at
                    most `WITNESS_ASKS` of the KEL's witnesses (a KEL may name thousands,
                    made up: each would be a query and an entry here), the next round of
                    the same gap the next ones. The same gap (same identifier, same first
                    missing sn) is asked again only after a back-off, `GAP_FIRST_RETRY`
                    seconds doubling each round up to `GAP_RETRY`: an answer that cannot
                    fill it (we hold a rival version, or the peers lack the events too)
                    must not start the next round at once, or every answer would ask every
                    co-witness again, without end
    catching up     gossip is lossy (a paused or restarted peer, a full neighbour queue):
                    the events after a lost one wait in escrow, and an event whose
                    receipts were lost waits for them, while nothing more may come to
                    start a gap ask (a KEL that stopped growing). So an identifier we hold
                    a KEL of, with an event escrowed (`note_waiting`), is checked every
                    `CATCH_UP_EVERY` seconds (`catch_up`, on a `CatchUp` timer armed only
                    while there is something to check): once its KEL has not moved at all
                    for `CATCH_UP_AFTER` seconds while an event waits, its gap (from our
                    KEL's next sn: the page carries the receipts too) is asked for, with
                    the back-off above. A KEL that moves starts the clock again (before,
                    it ran from the first event escrowed, and a busy KEL, whose newest
                    event is nearly always escrowed a moment under load, was asked for
                    while it was moving). After `CATCH_UP_FOR` seconds without moving it
                    is no longer checked (escrows expire too). At most `MAX_WAITING`
                    identifiers are watched, oldest out
    answers         (`gap_answered`) free their (identifier, peer) slot and are applied like
                    gossip. A partial answer (`Code.PARTIAL`) that moved our KEL on makes us
                    ask the same peer for the next page, from our KEL's next sn: a long gap
                    is filled page by page from whichever peer answered usefully first,
                    while the others' pages of the same events add nothing and end there
    expiry          every `EXPIRE_EVERY` seconds the escrows drop what waited too long,
                    and asks unanswered for `ASK_LOST` are taken for lost (a lost answer
                    would otherwise keep the KEL "being asked for", and unrepaired, for ever)
    queries         `{"t": "kel", "i": prefix, "s": sn, "n": limit}` (one page of the KEL
                    from sn on, `pages.kel_reply`) and `{"t": "state", "i": prefix}` (key
                    state with the latest event's receipts; a role adds to it). Both answers
                    are bounded whatever the KEL's length

Memory: the asks in flight (`_asking`) hold at most `MAX_GAP_ASKS` identifiers of at most
`max(PEER_ASKS, WITNESS_ASKS)` peers each, and the gaps remembered for `GAP_RETRY`
(`_asked`) at most `MAX_GAPS_KEPT`, each a 44-character prefix and three numbers, and the
identifiers caught up on (`_waiting`) at most `MAX_WAITING`, each a prefix and three numbers
(about 5 MB in all); `table_sizes` reports them.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Final

import cbor2

from dkms.protocol.errors import ProtocolError
from dkms.protocol.ids import NodePrefix, Prefix
from dkms.protocol.kel import Record
from dkms.protocol.stream import Attachments, Message, messagize, parse_stream
from dkms.protocol.validator import Validator

from .codes import Code
from .effects import (
    Blame,
    Effect,
    PersistEvent,
    PersistReceipts,
    Reply,
    Report,
    Send,
    SetTimer,
    Surface,
)
from .inputs import Answered, CatchUp, Expiry, GapQuery
from .pages import PAGE_BYTES, kel_ask, kel_reply
from .topics import Parse

EXPIRE_EVERY: Final = 60.0  # seconds between escrow expiry sweeps
PEER_ASKS: Final = 4  # peers asked for a KEL we hold nothing of
WITNESS_ASKS: Final = 8  # witnesses of a KEL asked in one round
MAX_GAP_ASKS: Final = 64  # identifiers with a gap query in flight at once
GAP_FIRST_RETRY: Final = 2.0  # seconds before the same gap is asked for again, at first
GAP_RETRY: Final = 30.0  # ... doubling each round up to this
CATCH_UP_AFTER: Final = 2.0  # seconds an escrowed event waits before its gap is asked for
CATCH_UP_EVERY: Final = 1.0  # seconds between checks of the identifiers waiting
CATCH_UP_FOR: Final = 300.0  # seconds an identifier is checked after an event of it waited
MAX_WAITING: Final = 10_000  # identifiers checked at once (oldest forgotten first)
MAX_GAP_ESCROWED: Final = 64  # a longer gap is asked for at once, escrowed or not
MAX_GAPS_KEPT: Final = 10_000  # gaps remembered for GAP_RETRY (oldest forgotten first)
ASK_LOST: Final = 120.0  # seconds after which an ask never answered is taken for lost

Apply = Callable[[bytes, list[Effect]], None]  # a role applying an answer's events


class Follower:
    """A node's copies of the KELs it follows, and the asks that keep them whole."""

    def __init__(
        self,
        validator: Validator,
        me: NodePrefix,
        peers: Sequence[NodePrefix] = (),
        *,
        parse: Parse = parse_stream,
        page_bytes: int = PAGE_BYTES,
    ) -> None:
        self.validator = validator
        self.me = me
        self.peers = tuple(peers)
        self.page_bytes = page_bytes  # budget of the KEL pages we answer
        self._parse = parse
        self._asking: dict[str, set[NodePrefix]] = {}  # prefix -> peers asked, not yet answered
        self._asking_since: dict[str, float] = {}  # prefix -> when its first ask in flight went
        # prefix -> (sn, when, round): the gap last asked for, and how many rounds it took
        self._asked: OrderedDict[str, tuple[int, float, int]] = OrderedDict()
        # prefix -> (highest sn escrowed, since when the KEL has not moved, the sn it held
        # then): identifiers to catch up on
        self._waiting: OrderedDict[str, tuple[int, float, int]] = OrderedDict()
        self._catching_up = False  # a CatchUp timer is set

    # ---------------------------------------------------------------- effects

    def messages(
        self, data: bytes, effects: list[Effect], peer: NodePrefix | None = None
    ) -> list[Message]:
        """The messages in gossip (or in a query's answer). Bytes that do not read are
        reported and, when they came from `peer` (gossip), blamed on it."""
        try:
            frames = self._parse(data)
        except ProtocolError as err:
            effects.append(Report("debug", f"ignored unreadable gossip: {err}"))
            if peer:
                effects.append(Blame(peer, "unreadable gossip"))
            return []
        return [frame for frame in frames if isinstance(frame, Message)]

    @staticmethod
    def stored_message(record: Record) -> bytes:
        """An accepted event as stored and gossiped: its body with the controller's signatures."""
        return messagize(record.event, Attachments(sigs=record.sigs, sources=record.sources))

    def persist(self, record: Record, message: bytes | None = None) -> list[Effect]:
        """What to store of an accepted event (`message`, when the caller has made it
        already): the event, and the receipts it has."""
        event = record.event
        if message is None:
            message = self.stored_message(record)
        effects: list[Effect] = [PersistEvent(event.prefix, event.sn, event.said, message)]
        if record.receipts:
            effects.append(self.persist_receipts(record))
        return effects

    @staticmethod
    def persist_receipts(record: Record) -> PersistReceipts:
        e = record.event
        return PersistReceipts(e.prefix, e.sn, e.said, tuple(record.receipts.items()))

    # ---------------------------------------------------------------- gaps

    def ask_for_gap(self, prefix: str, now: float) -> list[Effect]:
        """Ask for the events missing before an escrowed one of `prefix`."""
        if prefix in self._asking or len(self._asking) >= MAX_GAP_ASKS:
            return []
        start, targets = self._gap(prefix)
        if not targets:
            return []
        round_ = 0
        last = self._asked.get(prefix)
        if last is not None and last[0] == start:  # the same gap: a later round, in time
            if now < last[1] + retry_after(last[2]):
                return []
            round_ = last[2] + 1
        return self._ask(prefix, start, _window(targets, round_), now, round_)

    def gap_escrowed(self, prefix: str, sn: int) -> bool:
        """Whether every event of `prefix` before `sn` that our KEL lacks is here already,
        escrowed (short of receipts, mostly: under load an event's successor is often heard
        before its last receipts). Then there is nothing to ask for yet; if it stays stuck,
        `note_waiting` asks after `CATCH_UP_AFTER`. Asking at once cost about one
        gap query per event at both watchers under load (benchmarks/network.py)."""
        kel = self.validator.kel(prefix)
        if kel is None or sn - kel.sn - 1 > MAX_GAP_ESCROWED:
            return False
        held = self.validator.escrowed_sns(prefix)
        return all(missing in held for missing in range(kel.sn + 1, sn))

    def fetch(self, prefix: str, peer: NodePrefix, start: int, now: float) -> list[Effect] | None:
        """Ask `peer` for the KEL of `prefix` from `start` (a reconciliation found it holds
        more, `reconcile.py`): paged on by `gap_answered` like any gap. None when every ask
        slot is taken (try later); [] when that peer is being asked for it already."""
        if prefix not in self._asking and len(self._asking) >= MAX_GAP_ASKS:
            return None
        return self._ask(prefix, start, [peer], now, 0)

    def asking(self, prefix: str) -> bool:
        """Whether events of `prefix` are being asked for now."""
        return prefix in self._asking

    def note_waiting(self, prefix: str, sn: int, now: float) -> list[Effect]:
        """An event of `prefix` at `sn` went to an escrow (out of order, or short of
        receipts): check on it until our KEL moves past it. Identifiers we hold nothing of
        are not followed up (made-up ones would make us ask our peers for ever)."""
        if self.validator.kel(prefix) is None:
            return []
        last = self._waiting.get(prefix)
        if last is not None and last[0] >= sn:
            return []
        since, then = (now, self._held(prefix)) if last is None else last[1:]
        self._waiting[prefix] = (sn, since, then)
        while len(self._waiting) > MAX_WAITING:
            self._waiting.popitem(last=False)
        if self._catching_up:
            return []
        self._catching_up = True
        return [SetTimer(CatchUp(), now + CATCH_UP_EVERY)]

    def catch_up(self, now: float) -> list[Effect]:
        """The `CatchUp` timer: ask for the gaps of identifiers whose KEL stalled behind an
        escrowed event; set the timer again while any is left to check."""
        effects: list[Effect] = []
        for prefix, (sn, since, then) in list(self._waiting.items()):
            held = self._held(prefix)
            if held >= sn:
                del self._waiting[prefix]
            elif held > then:  # it moved: not stalled, the clock starts again
                self._waiting[prefix] = (sn, now, held)
            elif now >= since + CATCH_UP_FOR:
                del self._waiting[prefix]
            elif now >= since + CATCH_UP_AFTER:
                effects += self.ask_for_gap(prefix, now)
        self._catching_up = bool(self._waiting)
        if self._catching_up:
            effects.append(SetTimer(CatchUp(), now + CATCH_UP_EVERY))
        return effects

    def gap_answered(
        self, tag: GapQuery, answer: Answered, now: float, apply: Apply
    ) -> list[Effect]:
        """A peer's answer to a gap query: free its slot, apply its events with `apply`, and
        ask the same peer for the next page if it had more and moved our KEL on."""
        effects: list[Effect] = []
        if not answer.code.ok:
            self._done(tag)
            effects.append(Report("debug", f"{tag}: no answer ({answer.reason})"))
            return effects
        before = self._held(tag.prefix)
        apply(answer.payload, effects)  # our slot is still taken: no new round starts in here
        self._done(tag)
        held = self._held(tag.prefix)
        useful = answer.code is Code.PARTIAL and held > before
        if useful and (tag.prefix in self._asking or len(self._asking) < MAX_GAP_ASKS):
            effects += self._ask(tag.prefix, held + 1, [tag.peer], now, 0)
        return effects

    def table_sizes(self) -> dict[str, int]:
        """How much the ask tables hold: identifiers asked for, (identifier, peer) asks in
        flight, and gaps remembered."""
        return {
            "asking": len(self._asking),
            "asking_peers": sum(len(peers) for peers in self._asking.values()),
            "asked": len(self._asked),
            "waiting": len(self._waiting),
        }

    def _gap(self, prefix: str) -> tuple[int, list[NodePrefix]]:
        """Where the gap of `prefix` starts, and whom to ask for it."""
        kel = self.validator.kel(prefix)
        if kel is not None:
            return kel.sn + 1, [NodePrefix(w) for w in kel.authority.witnesses if w != self.me]
        return 0, list(self.peers[:PEER_ASKS])

    def _held(self, prefix: str) -> int:
        kel = self.validator.kel(prefix)
        return -1 if kel is None else kel.sn

    def _ask(
        self, prefix: str, start: int, targets: Sequence[NodePrefix], now: float, round_: int
    ) -> list[Effect]:
        asking = self._asking.get(prefix, set())
        fresh = [t for t in targets if t not in asking]
        if not fresh:
            return []
        self._asking[prefix] = asking | set(fresh)
        self._asking_since.setdefault(prefix, now)
        self._asked.pop(prefix, None)
        self._asked[prefix] = (start, now, round_)
        while len(self._asked) > MAX_GAPS_KEPT:
            self._asked.popitem(last=False)
        ask = kel_ask(prefix, start)
        return [Send(t, Surface.QUERY, ask, GapQuery(Prefix(prefix), t)) for t in fresh]

    def _done(self, tag: GapQuery) -> None:
        asking = self._asking.get(tag.prefix)
        if asking is not None:
            asking.discard(tag.peer)
            if not asking:
                del self._asking[tag.prefix]
                self._asking_since.pop(tag.prefix, None)

    def expire(self, now: float) -> list[Effect]:
        effects: list[Effect] = [SetTimer(Expiry(), now + EXPIRE_EVERY)]
        # Every ask is answered (by the peer, or by the runtime's timeout) unless the answer
        # is lost on the way; an ask taken for lost no longer blocks asking for that KEL
        # again (reconciliation skips a KEL being asked for). Its answer, if it ever comes,
        # is applied like any other.
        lost = [p for p, since in self._asking_since.items() if now - since >= ASK_LOST]
        for prefix in lost:
            del self._asking[prefix], self._asking_since[prefix]
        if lost:
            effects.append(Report("warning", f"gap asks for {len(lost)} KEL(s) never answered"))
        for outcome in self.validator.expire(now):
            effects.append(
                Report("info", f"dropped {outcome.ilk} {outcome.said}: {outcome.reason}")
            )
        return effects

    # ---------------------------------------------------------------- queries

    @staticmethod
    def read_query(data: bytes) -> dict[Any, Any] | Reply:
        """The query's CBOR map, or the refusal to send back."""
        try:
            ask = cbor2.loads(data)
        except Exception:
            return Reply.refuse(Code.MALFORMED, "query is not CBOR")
        if not isinstance(ask, dict):
            return Reply.refuse(Code.BAD_QUERY, "query must be a CBOR map")
        return ask

    def kel_reply(self, prefix: str, ask: dict[Any, Any]) -> Reply:
        """One page of the KEL of `prefix` (`pages.py`)."""
        return kel_reply(self.validator.kel(prefix), prefix, ask, self.page_bytes)

    def key_state(self, prefix: str) -> dict[str, Any] | None:
        """Key state, the receipts of the latest event, and whether it is fully witnessed.

        Only the latest event's receipts, so that the answer stays the same size however long
        the KEL grows; the KEL's pages carry every event's receipts."""
        kel = self.validator.kel(prefix)
        if kel is None:
            return None
        last = kel.last
        state = kel.state().to_json()
        state["receipts"] = {last.event.said: sorted(last.receipts)}
        state["fully_witnessed"] = len(last.receipts) >= last.authority.toad
        return state


def retry_after(round_: int) -> float:
    """Seconds before a gap asked for in round `round_` may be asked for again."""
    return min(GAP_FIRST_RETRY * float(1 << min(round_, 16)), GAP_RETRY)


def _window(targets: Sequence[NodePrefix], round_: int) -> list[NodePrefix]:
    """The `WITNESS_ASKS` targets asked in round `round_` of one gap: the first ones, then
    the next ones in each later round (wrapping around), so every witness is asked in time."""
    if len(targets) <= WITNESS_ASKS:
        return list(targets)
    first = round_ * WITNESS_ASKS % len(targets)
    return [targets[(first + i) % len(targets)] for i in range(WITNESS_ASKS)]

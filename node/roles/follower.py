"""Following KELs: what a witness and a watcher both do with the key events they hold.

Theory of operation. A follower owns a `Validator` and turns what it says into effects:

    accepted        the event (with its signatures) and its receipts are persisted, so a
                    restart can replay them (`restore`)
    out of order    the events missing before it are asked for: from the KEL's witnesses, or,
                    for an identifier nothing is held of (it began before we listened), from
                    `peers`. One ask per identifier in flight, and at most `MAX_GAP_ASKS` at
                    once, so gossip about made-up identifiers cannot make a node a query
                    amplifier; the answer (`answered`) frees the slot. The same gap (same
                    identifier, same first missing sn) is asked again only `GAP_RETRY`
                    seconds later: an answer that cannot fill it (we hold a rival version,
                    or the peers lack the events too) must not start the next round at once,
                    or every answer would ask every co-witness again, without end
    expiry          every `EXPIRE_EVERY` seconds the escrows drop what waited too long
    queries         `{"t": "kel", "i": prefix, "s": sn}` (the KEL from sn on) and
                    `{"t": "state", "i": prefix}` (key state with receipts; a role adds to it)

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
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
from .inputs import Expiry, GapQuery
from .topics import Parse

EXPIRE_EVERY: Final = 60.0  # seconds between escrow expiry sweeps
PEER_ASKS: Final = 4  # peers asked for a KEL we hold nothing of
MAX_GAP_ASKS: Final = 64  # identifiers with a gap query in flight at once
GAP_RETRY: Final = 30.0  # seconds before the same gap is asked for again
MAX_GAPS_KEPT: Final = 10_000  # gaps remembered for GAP_RETRY (oldest forgotten first)


class Follower:
    """A node's copies of the KELs it follows, and the asks that keep them whole."""

    def __init__(
        self,
        validator: Validator,
        me: NodePrefix,
        peers: Sequence[NodePrefix] = (),
        *,
        parse: Parse = parse_stream,
    ) -> None:
        self.validator = validator
        self.me = me
        self.peers = tuple(peers)
        self._parse = parse
        self._asking: set[str] = set()  # prefixes with a gap query in flight
        self._asked: OrderedDict[str, tuple[int, float]] = OrderedDict()  # prefix -> (sn, when)

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

    def ask_for_gap(self, prefix: str, now: float) -> list[Effect]:
        """Ask for the events missing before an escrowed one of `prefix`."""
        if prefix in self._asking or len(self._asking) >= MAX_GAP_ASKS:
            return []
        kel = self.validator.kel(prefix)
        if kel is not None:
            targets = [NodePrefix(w) for w in kel.authority.witnesses if w != self.me]
            start = kel.sn + 1
        else:
            targets, start = list(self.peers[:PEER_ASKS]), 0
        last = self._asked.get(prefix)
        if not targets or (last is not None and last[0] == start and now < last[1] + GAP_RETRY):
            return []
        self._asking.add(prefix)
        self._asked.pop(prefix, None)
        self._asked[prefix] = (start, now)
        while len(self._asked) > MAX_GAPS_KEPT:
            self._asked.popitem(last=False)
        ask = cbor2.dumps({"t": "kel", "i": prefix, "s": start})
        tag = GapQuery(Prefix(prefix))
        return [Send(target, Surface.QUERY, ask, tag) for target in targets]

    def answered(self, tag: GapQuery) -> None:
        self._asking.discard(tag.prefix)

    def expire(self, now: float) -> list[Effect]:
        effects: list[Effect] = [SetTimer(Expiry(), now + EXPIRE_EVERY)]
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
        start = ask.get("s", 0)
        if not isinstance(start, int) or start < 0:
            return Reply.refuse(Code.BAD_QUERY, "s must be a sequence number")
        if self.validator.kel(prefix) is None:
            return Reply.refuse(Code.UNKNOWN, f"unknown identifier {prefix}")
        return Reply.accept(self.validator.replay(prefix, start))

    def key_state(self, prefix: str) -> dict[str, Any] | None:
        """Key state plus receipts per event and whether the latest is fully witnessed."""
        kel = self.validator.kel(prefix)
        if kel is None:
            return None
        state = kel.state().to_json()
        state["receipts"] = {r.event.said: sorted(r.receipts) for r in kel.chain}
        state["fully_witnessed"] = len(kel.last.receipts) >= kel.last.authority.toad
        return state

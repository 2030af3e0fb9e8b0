"""Escrows: events that cannot be judged yet, kept (bounded) until what they wait for arrives.

Each entry is keyed by the event's SAID, so a copy of an escrowed event arriving with more
signatures or receipts merges into the entry instead of taking a second place. Every escrow is
bounded in count (the oldest entry is dropped first) and in age (judged from the `now` callers
pass in); what is dropped is returned so the caller can report it.

All escrows together are also bounded in bytes (`EscrowLimits.max_bytes`, judged from each
entry's size estimate), and no one source (the peer an entry came from, opaque here) may hold
more than `source_share` of those bytes or of `max_entries`: a source over its share loses its
own oldest entries, so one peer flooding junk cannot push out what others sent. The source ""
(local input, or a caller that does not say) is not held to a share.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from .attachments import Attachments
from .cesr import IndexedSig
from .events import Event, Ilk

T = TypeVar("T")


class Waiting(StrEnum):
    """What an escrowed event waits for."""

    OUT_OF_ORDER = "out-of-order"  # earlier events of its KEL
    PARTIALLY_SIGNED = "partially-signed"  # more controller signatures
    PARTIALLY_WITNESSED = "partially-witnessed"  # more witness receipts
    DELEGATION = "awaiting-delegation"  # its delegator's anchoring seal


MAX_CANDIDATES = 64  # signatures (or receipts) of one kind kept per pending event

# Size estimate of an entry: its event's bytes plus what its attachments take on the wire
# (qb64), plus a flat charge for the Python objects that hold it (the Event, the Pending, the
# index entries), so that many tiny entries are not free either; plus, once it is escrowed,
# what its decoded body holds (see `decoded_size`).
ENTRY_OVERHEAD = 512
SIG_BYTES = 88  # an indexed signature, qb64
COUPLE_BYTES = 44 + 88  # a witness prefix and its signature
SOURCE_BYTES = 24 + 44  # a source seal: sn and digest


class Pending:
    """An event with every signature and receipt offered for it so far, not yet all checked.

    Candidates are kept side by side rather than one per index: otherwise anyone could send a
    copy of a partially signed event with a garbage signature at index 0 and so shut out the
    controller's real one. Only signatures that verified survive into an escrow (see
    Validator._gates), and each list is capped so hostile copies cannot grow it without end.
    """

    __slots__ = (
        "body",
        "couples",
        "event",
        "origin",
        "sigs",
        "since",
        "size",
        "sources",
        "wigs",
    )

    def __init__(
        self,
        event: Event,
        since: float,
        attachments: Attachments | None = None,
        origin: str = "",
    ) -> None:
        self.event = event
        self.since = since
        self.origin = origin  # the source (peer) it first came from; "" for local or unknown
        self.body = 0  # decoded_size of its body, once weighed (on entering an escrow)
        if attachments is None:
            self.sigs: list[IndexedSig] = []
            self.wigs: list[IndexedSig] = []
            self.couples: list[tuple[str, bytes]] = []
            self.sources: list[tuple[int, str]] = []
        else:
            self.sigs = list(attachments.sigs[:MAX_CANDIDATES])
            self.wigs = list(attachments.wigs[:MAX_CANDIDATES])
            self.couples = list(attachments.couples[:MAX_CANDIDATES])
            self.sources = list(attachments.sources[:MAX_CANDIDATES])
        self.size = self._estimate()

    def _estimate(self) -> int:
        """Bytes this entry is charged for (see ENTRY_OVERHEAD); O(1)."""
        return (
            len(self.event.raw)
            + ENTRY_OVERHEAD
            + SIG_BYTES * (len(self.sigs) + len(self.wigs))
            + COUPLE_BYTES * len(self.couples)
            + SOURCE_BYTES * len(self.sources)
            + self.body
        )

    def weigh(self) -> None:
        """Add what the decoded body holds to `size`: a walk of the body, so done only for
        entries that are kept (and at most once each)."""
        if not self.body:
            event = self.event
            self.body = decoded_size(event.anchors if event.ilk is Ilk.IXN else event.ked)
            self.size = self._estimate()

    def merge(
        self,
        sigs: Sequence[IndexedSig],
        wigs: Sequence[IndexedSig],
        couples: Sequence[tuple[str, bytes]],
        sources: Sequence[tuple[int, str]],
    ) -> None:
        _add(self.sigs, sigs)
        _add(self.wigs, wigs)
        _add(self.couples, couples)
        _add(self.sources, sources)
        self.size = self._estimate()


def decoded_size(value: Any) -> int:
    """Roughly the bytes CPython holds for a decoded body (as measured on 3.11).

    Raw bytes alone understate it without bound: a CBOR empty map is one byte on the wire
    and 64 bytes (plus a slot in its list) decoded, so a 60 KB interaction anchoring 60,000
    `{}` holds 4.3 MB. Charging the decoded form keeps the byte budgets a memory bound.
    """
    total = 0
    todo: list[Any] = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            total += 64 + 40 * len(item)
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, list):
            total += 56 + 8 * len(item)
            todo.extend(item)
        elif isinstance(item, (str, bytes)):
            total += 49 + len(item)
        else:
            total += 32
    return total


def _add(into: list[T], items: Sequence[T]) -> None:
    for item in items:
        if len(into) >= MAX_CANDIDATES:
            return
        if item not in into:
            into.append(item)


@dataclass(frozen=True, slots=True)
class EscrowLimits:
    """Bounds for the escrows: entries kept, seconds an entry may wait, and bytes.

    `max_entries` bounds each escrow; `max_bytes` all four event escrows together (the
    early-receipt escrow has its own `max_receipt_bytes`, so at most the sum of the two is
    held). An event body over `max_event_bytes` is never escrowed: it is rejected, and may
    come again in order, when it is judged at once. 64 KiB is about five times the largest
    event KERI practice produces (an inception with 100 keys, 100 next digests and 100
    witnesses is about 14 KB in JSON) and holds some 400 anchored seals; events bigger than
    that only ever arrived as junk from peers (up to the 1 MiB message limit).
    `source_share` is the part of `max_bytes` and of `max_entries` one source may hold.
    """

    max_entries: int = 10_000
    max_age: float = 3600.0
    max_receipts: int = 50_000
    max_bytes: int = 64 << 20  # 64 MiB of estimated entry sizes, all event escrows together
    max_event_bytes: int = 64 << 10  # see above
    max_receipt_bytes: int = 16 << 20  # early receipts: ~50,000 single-couple receipts
    source_share: float = 0.25


class Budget:
    """What all escrows hold together: their index, bytes, and each source's entries.

    One budget is shared by the escrows of a validator; it evicts across them.
    """

    def __init__(self, limits: EscrowLimits, index: dict[str, Waiting]) -> None:
        self.limits = limits
        self.index = index  # SAID -> the escrow holding it
        self.escrows: dict[Waiting, Escrow] = {}
        self.bytes = 0
        self.order: OrderedDict[str, int] = OrderedDict()  # SAID -> size charged, oldest first
        self.by_source: dict[str, OrderedDict[str, None]] = {}  # source -> SAIDs, oldest first
        self.source_bytes: dict[str, int] = {}
        self.share_bytes = max(1, int(limits.max_bytes * limits.source_share))
        self.share_entries = max(1, int(limits.max_entries * limits.source_share))

    def evict(self, said: str) -> Pending:
        pending = self.escrows[self.index[said]].pop(said)
        assert pending is not None
        return pending


class Escrow:
    """One bounded escrow of pending events, oldest first."""

    def __init__(self, waiting: Waiting, budget: Budget) -> None:
        self.waiting = waiting
        self._limits = budget.limits
        self._budget = budget
        self._index = budget.index  # shared by all escrows: SAID -> the escrow holding it
        self._entries: OrderedDict[str, Pending] = OrderedDict()
        self._groups: dict[str, dict[str, None]] = {}  # group key -> SAIDs, insertion ordered
        self._group_of: dict[str, str] = {}
        self.bytes = 0  # size estimates of the entries held
        budget.escrows[waiting] = self

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, said: str) -> bool:
        return said in self._entries

    def __iter__(self) -> Iterator[Pending]:
        return iter(list(self._entries.values()))

    def get(self, said: str) -> Pending | None:
        return self._entries.get(said)

    def group(self, key: str) -> list[Pending]:
        """Entries filed under `key` (an identifier prefix or a delegator), oldest first."""
        saids = self._groups.get(key)
        return [self._entries[s] for s in saids] if saids else []

    def put(self, pending: Pending, group: str) -> list[tuple[Pending, str]]:
        """Add or replace an entry; return entries evicted to stay within bounds, each with
        the reason (`pending` itself among them when it alone is over its source's share)."""
        said = pending.event.said
        self.pop(said)
        pending.weigh()
        size = pending.size
        source = pending.origin
        budget = self._budget
        self._entries[said] = pending
        self._index[said] = self.waiting
        self._groups.setdefault(group, {})[said] = None
        self._group_of[said] = group
        self.bytes += size
        budget.bytes += size
        budget.order[said] = size
        mine = budget.by_source.get(source)
        if mine is None:
            mine = budget.by_source[source] = OrderedDict()
        mine[said] = None
        budget.source_bytes[source] = budget.source_bytes.get(source, 0) + size
        evicted: list[tuple[Pending, str]] = []
        if source:
            while source in budget.by_source and (
                budget.source_bytes[source] > budget.share_bytes
                or len(budget.by_source[source]) > budget.share_entries
            ):
                oldest = next(iter(budget.by_source[source]))
                evicted.append((budget.evict(oldest), "its source's escrow share is full"))
        limit = self._limits.max_entries
        while len(self._entries) > limit:
            oldest = next(iter(self._entries))
            evicted.append((self._remove(oldest), f"escrow full ({self.waiting})"))
        limit = self._limits.max_bytes
        while budget.bytes > limit:
            oldest = next(iter(budget.order))
            evicted.append((budget.evict(oldest), f"escrows full ({limit} bytes)"))
        return evicted

    def pop(self, said: str) -> Pending | None:
        return self._remove(said) if said in self._entries else None

    def _remove(self, said: str) -> Pending:
        pending = self._entries.pop(said)
        del self._index[said]
        group = self._group_of.pop(said)
        members = self._groups[group]
        del members[said]
        if not members:
            del self._groups[group]
        budget = self._budget
        size = budget.order.pop(said)
        self.bytes -= size
        budget.bytes -= size
        source = pending.origin
        mine = budget.by_source[source]
        del mine[said]
        if mine:
            budget.source_bytes[source] -= size
        else:
            del budget.by_source[source]
            del budget.source_bytes[source]
        return pending

    def expire(self, now: float) -> list[Pending]:
        """Remove and return entries older than the age limit."""
        cutoff = now - self._limits.max_age
        old = [p.event.said for p in self._entries.values() if p.since < cutoff]
        return [self._remove(said) for said in old]

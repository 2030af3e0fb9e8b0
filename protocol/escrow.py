"""Escrows: events that cannot be judged yet, kept (bounded) until what they wait for arrives.

Each entry is keyed by the event's SAID, so a copy of an escrowed event arriving with more
signatures or receipts merges into the entry instead of taking a second place. Every escrow is
bounded in count (the oldest entry is dropped first) and in age (judged from the `now` callers
pass in); what is dropped is returned so the caller can report it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from .attachments import Attachments
from .cesr import IndexedSig
from .events import Event

T = TypeVar("T")


class Waiting(StrEnum):
    """What an escrowed event waits for."""

    OUT_OF_ORDER = "out-of-order"  # earlier events of its KEL
    PARTIALLY_SIGNED = "partially-signed"  # more controller signatures
    PARTIALLY_WITNESSED = "partially-witnessed"  # more witness receipts
    DELEGATION = "awaiting-delegation"  # its delegator's anchoring seal


MAX_CANDIDATES = 64  # signatures (or receipts) of one kind kept per pending event


class Pending:
    """An event with every signature and receipt offered for it so far, not yet all checked.

    Candidates are kept side by side rather than one per index: otherwise anyone could send a
    copy of a partially signed event with a garbage signature at index 0 and so shut out the
    controller's real one. Only signatures that verified survive into an escrow (see
    Validator._gates), and each list is capped so hostile copies cannot grow it without end.
    """

    __slots__ = ("couples", "event", "sigs", "since", "sources", "wigs")

    def __init__(self, event: Event, since: float, attachments: Attachments | None = None) -> None:
        self.event = event
        self.since = since
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


def _add(into: list[T], items: Sequence[T]) -> None:
    for item in items:
        if len(into) >= MAX_CANDIDATES:
            return
        if item not in into:
            into.append(item)


@dataclass(frozen=True, slots=True)
class EscrowLimits:
    """Bounds for each escrow: entries kept and seconds an entry may wait."""

    max_entries: int = 10_000
    max_age: float = 3600.0
    max_receipts: int = 50_000


class Escrow:
    """One bounded escrow of pending events, oldest first."""

    def __init__(self, waiting: Waiting, limits: EscrowLimits, index: dict[str, Waiting]) -> None:
        self.waiting = waiting
        self._limits = limits
        self._index = index  # shared by all escrows: SAID -> the escrow holding it
        self._entries: OrderedDict[str, Pending] = OrderedDict()
        self._groups: dict[str, dict[str, None]] = {}  # group key -> SAIDs, insertion ordered
        self._group_of: dict[str, str] = {}

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

    def put(self, pending: Pending, group: str) -> list[Pending]:
        """Add or replace an entry; return entries evicted to stay within bounds."""
        said = pending.event.said
        self.pop(said)
        self._entries[said] = pending
        self._index[said] = self.waiting
        self._groups.setdefault(group, {})[said] = None
        self._group_of[said] = group
        evicted = []
        while len(self._entries) > self._limits.max_entries:
            oldest = next(iter(self._entries))
            evicted.append(self._remove(oldest))
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
        return pending

    def expire(self, now: float) -> list[Pending]:
        """Remove and return entries older than the age limit."""
        cutoff = now - self._limits.max_age
        old = [p.event.said for p in self._entries.values() if p.since < cutoff]
        return [self._remove(said) for said in old]

"""Escrows: events that cannot be judged yet, kept (bounded) until what they wait for arrives.

Each entry is keyed by the event's SAID, so a copy of an escrowed event arriving with more
signatures or receipts merges into the entry instead of taking a second place. Every escrow is
bounded in count (the oldest entry is dropped first) and in age (judged from the `now` callers
pass in); what is dropped is returned so the caller can report it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from .attachments import Attachments
from .cesr import IndexedSig
from .events import Event


class Waiting(StrEnum):
    """What an escrowed event waits for."""

    OUT_OF_ORDER = "out-of-order"  # earlier events of its KEL
    PARTIALLY_SIGNED = "partially-signed"  # more controller signatures
    PARTIALLY_WITNESSED = "partially-witnessed"  # more witness receipts
    DELEGATION = "awaiting-delegation"  # its delegator's anchoring seal


class Pending:
    """An event with everything attached to it so far."""

    __slots__ = ("couples", "event", "sigs", "since", "sources", "wigs")

    def __init__(self, event: Event, since: float, attachments: Attachments | None = None) -> None:
        self.event = event
        self.since = since
        if attachments is None:
            self.sigs: dict[int, IndexedSig] = {}
            self.wigs: dict[int, IndexedSig] = {}
            self.couples: dict[str, bytes] = {}
            self.sources: list[tuple[int, str]] = []
        else:  # reversed, so the first of two signatures with one index wins, as in merge
            sigs, wigs, couples = attachments.sigs, attachments.wigs, attachments.couples
            sources = attachments.sources
            self.sigs = {s.index: s for s in reversed(sigs)} if sigs else {}
            self.wigs = {s.index: s for s in reversed(wigs)} if wigs else {}
            self.couples = dict(reversed(couples)) if couples else {}
            self.sources = list(dict.fromkeys(sources)) if sources else []

    def merge(
        self,
        sigs: tuple[IndexedSig, ...] | list[IndexedSig],
        wigs: tuple[IndexedSig, ...] | list[IndexedSig],
        couples: tuple[tuple[str, bytes], ...] | list[tuple[str, bytes]],
        sources: tuple[tuple[int, str], ...] | list[tuple[int, str]],
    ) -> None:
        for sig in sigs:
            self.sigs.setdefault(sig.index, sig)
        for wig in wigs:
            self.wigs.setdefault(wig.index, wig)
        for prefix, signature in couples:
            self.couples.setdefault(prefix, signature)
        for source in sources:
            if source not in self.sources:
                self.sources.append(source)


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

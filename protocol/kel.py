"""One identifier's key event log as the validator keeps it.

`chain` is the log itself: one accepted event per sequence number, each with the signatures
and witness receipts that made it count. `first_seen` lists every event ever accepted, in
acceptance order, including interactions a recovery rotation later superseded (keripy keeps
those in its first-seen log too). `authorities` holds the authority set up by each
establishment event, in order, so the keys in force at any sequence number can be found.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from .cesr import IndexedSig
from .events import ESTABLISHMENT, Event
from .keystate import Authority, KeyState


@dataclass(slots=True)
class Record:
    """An accepted event with what made it count."""

    event: Event
    sigs: tuple[IndexedSig, ...]
    authority: Authority  # keys that signed it and witnesses that receipt it
    receipts: dict[str, bytes] = field(default_factory=dict)  # witness prefix -> signature
    sources: tuple[tuple[int, str], ...] = ()  # delegator anchor (sn, SAID), if delegated


class Kel:
    """Accepted events of one identifier, with its authorities and first-seen order."""

    __slots__ = (
        "_auth_sns",
        "authorities",
        "authority",
        "chain",
        "delegator",
        "first_seen",
        "interactive",
        "last_said",
        "prefix",
        "sn",
        "traits",
    )

    def __init__(self, inception: Record, traits: tuple[str, ...], delegator: str) -> None:
        self.prefix = inception.event.prefix
        self.chain: list[Record] = [inception]
        self.first_seen: list[Record] = [inception]
        self.authorities: list[Authority] = [inception.authority]
        self._auth_sns: list[int] = [0]
        self.traits = traits
        self.delegator = delegator
        # Kept as plain attributes (not properties): they are read for every event.
        self.sn = 0
        self.last_said = inception.event.said
        self.authority = inception.authority
        self.interactive = self._interactive()

    def _interactive(self) -> bool:
        """Interactions need next keys (a transferable identifier) and no EO trait."""
        return self.authority.transferable and "EO" not in self.traits

    @property
    def last(self) -> Record:
        return self.chain[-1]

    def authority_before(self, sn: int) -> Authority:
        """The authority in force for an event at `sn` (set up strictly before it)."""
        at = bisect.bisect_left(self._auth_sns, sn) - 1
        return self.authorities[max(at, 0)]

    def append(self, record: Record) -> None:
        event = record.event
        self.chain.append(record)
        self.first_seen.append(record)
        self.sn = event.sn
        self.last_said = event.said
        if event.ilk in ESTABLISHMENT:
            self.authorities.append(record.authority)
            self._auth_sns.append(event.sn)
            self.authority = record.authority
            self.interactive = self._interactive()

    def supersede_from(self, sn: int) -> list[Record]:
        """Drop the chain from `sn` on (a recovery replaces it); return what was dropped."""
        dropped = self.chain[sn:]
        del self.chain[sn:]
        self.sn = sn - 1
        self.last_said = self.chain[-1].event.said
        return dropped

    def at(self, sn: int) -> Record | None:
        return self.chain[sn] if 0 <= sn < len(self.chain) else None

    def state(self) -> KeyState:
        last = self.last.event
        return KeyState(
            prefix=self.prefix,
            sn=last.sn,
            said=last.said,
            ilk=last.ilk,
            authority=self.authority,
            traits=self.traits,
            delegator=self.delegator,
        )

"""What a node keeps of the KELs it is handed, and within which budgets (issue 11).

Theory of operation. Anyone can make identifiers for nothing: an inception with no witnesses
(`bt` 0) needs only its own keys, and a node that kept every validly signed event gossiped to
it would grow without bound. So every event a role accepts passes through `Storage.keep`,
which sorts identifiers in two:

    witnessed     its key state has a witness threshold (`bt` >= 1): the validator accepted
                  its events only with `bt` verified witness receipts (or, in a witness, as
                  one of its witnesses). Kept for good: its events join the store's hash chain
    unwitnessed   no witnesses (`bt` 0). Kept *loose*: outside the hash chain
                  (`PersistEvent.loose`), charged against `loose_quota` by what the validator
                  holds for them in memory (`validator.held_bytes`, about five times what
                  the store holds of them), and evicted least recently extended first when
                  over it: forgotten by the validator (`Validator.forget`) and dropped from
                  the store (`DropLoose`)

Once witnessed, always kept: the event that first gives an identifier witnesses is stored
after its loose events join the chain (`ChainLoose`, same commit), and a later rotation to
no witnesses leaves them there. A witnessed identifier delegated by a loose one makes its
delegator (and that one's) kept too: it could not be replayed without their anchors. For the
same reason evicting a loose delegator evicts its loose delegatees with it. The store replays
chained events first, then loose ones in the order stored, so at start-up every event finds
what it depends on. No witness ever receipts an unwitnessed event (it names none), so
forgetting one cannot make a witness sign two versions of anything.

`quota` bounds what the node keeps in all, counted twice: bytes of event messages and
receipts in the store (`stored`, restored at start from `Store.usage`), and what the
validator holds of the same events in memory (`held`, estimated by `held_bytes` and restored
at start from the replayed KELs): every KEL kept is held in memory too, and a decoded event
can weigh sixty times its bytes (a 1 MB inception of empty maps holds 66 MB), so a quota of
stored bytes alone would not bound the node's memory. `held` is never less than `stored`,
so the store stays under the quota too. Both are counted here as the role persists, since a
pure role does not ask its store. When keeping an event takes either over the quota,
unwitnessed KELs are evicted first. A new identifier (an inception) that still does
not fit is refused: forgotten by the validator before anything of it is stored or signed,
counted (`refusals`) and warned about at most once a minute; a witness answers `Code.QUOTA`.
Events of witnessed identifiers already held are always kept, so the store may pass the
quota by what those add, never by new identifiers or unwitnessed ones.

"Witnessed" is no sybil defence: an attacker can mint witness keys and receipt its own junk
identifiers. The total quota is what bounds that; the loose quota keeps free identifiers
from taking the room witnessed ones need. Pure: no I/O, no clock (times come in).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from dkms.protocol.escrow import COUPLE_BYTES
from dkms.protocol.events import INCEPTION
from dkms.protocol.kel import Record
from dkms.protocol.validator import Validator, held_bytes

from .effects import ChainLoose, DropLoose, Effect, PersistEvent, PersistReceipts, Report

STORE_QUOTA: Final = 4 << 30  # bytes kept: in the store, and (estimated) in memory
LOOSE_QUOTA: Final = 64 << 20  # bytes the validator holds for unwitnessed KELs (estimated)
RECEIPT_BYTES: Final = 44 + 64  # a stored receipt: the witness prefix and its raw signature
NOTE_EVERY: Final = 60.0  # seconds between two log lines of one kind (the rest are counted)

Forgotten = Callable[[str, float], None]  # told of each KEL about to be forgotten, and when


@dataclass(slots=True)
class Loose:
    """An unwitnessed KEL held: what it takes in the store and in memory, and the loose
    identifiers tied to it by delegation."""

    stored: int = 0  # bytes of its events in the store
    held: int = 0  # bytes the validator holds for it (estimated), what the loose quota counts
    delegator: str = ""  # its delegator, when that one is loose too
    delegatees: set[str] = field(default_factory=set)  # loose identifiers it delegates


def stored_bytes(effect: Effect) -> int:
    """What a persist effect adds to the store's count (events and receipts)."""
    if isinstance(effect, PersistEvent):
        return len(effect.message)
    if isinstance(effect, PersistReceipts):
        return sum(len(w) + len(s) for w, s in effect.couples)
    return 0


class Storage:
    """A role's storage policy over its validator: what is kept, chained, evicted, refused."""

    def __init__(
        self,
        validator: Validator,
        *,
        quota: int = STORE_QUOTA,
        loose_quota: int = LOOSE_QUOTA,
        forgotten: Forgotten | None = None,
    ) -> None:
        self.validator = validator
        self.quota = quota
        self.loose_quota = loose_quota
        self.stored = 0  # bytes of event messages and receipts in the store
        self.held = 0  # what the validator holds of every KEL kept (`held_bytes`, estimated)
        self.loose: OrderedDict[str, Loose] = OrderedDict()  # least recently extended first
        self.loose_held = 0  # sum of their `held`
        self.evictions = 0  # unwitnessed KELs evicted
        self.evicted_bytes = 0  # store bytes they took
        self.refusals = 0  # new identifiers refused for the quota
        self._forgotten = forgotten
        self._notes: dict[str, tuple[float, int]] = {}  # kind -> (next line due, not logged)

    # ---------------------------------------------------------------- start

    def restore(self, stored: int, loose: Iterable[tuple[str, int]]) -> None:
        """After the replay: the store's bytes (`Store.usage`) and its loose identifiers,
        least recently extended first, each with its bytes in the store."""
        self.stored = stored
        self.held = sum(
            held_bytes(record)
            for prefix in self.validator.prefixes
            if (kel := self.validator.kel(prefix)) is not None
            for record in kel.first_seen
        )
        self.loose.clear()
        self.loose_held = 0
        for prefix, size in loose:
            kel = self.validator.kel(prefix)
            if kel is None:  # the replay is strict: every stored event is held again
                continue
            held = sum(held_bytes(r) for r in kel.first_seen)
            self.loose[prefix] = Loose(size, held, kel.delegator)
            self.loose_held += held
        for prefix, entry in self.loose.items():
            parent = self.loose.get(entry.delegator) if entry.delegator else None
            if parent is None:
                entry.delegator = ""
            else:
                parent.delegatees.add(prefix)

    def start(self, now: float) -> list[Effect]:
        """What the budgets require at start (a quota lowered since the last run)."""
        effects: list[Effect] = []
        self._enforce(now, effects)
        return effects

    # ---------------------------------------------------------------- events

    def keep(
        self, record: Record, persist: Sequence[Effect], now: float, effects: list[Effect]
    ) -> bool:
        """An accepted event and the effects that would store it (`Follower.persist`):
        `admit`, then `store`. False: it was not kept (see `admit`)."""
        size = 0
        for effect in persist:
            size += stored_bytes(effect)
        weight = held_bytes(record)
        if not self.admit(record, size, now, effects, weight):
            return False
        self.store(record, persist, size, now, effects, weight)
        return True

    def admit(
        self, record: Record, size: int, now: float, effects: list[Effect], weight: int = -1
    ) -> bool:
        """May this accepted event, taking `size` bytes in the store and `weight` in memory
        (`held_bytes`, worked out when not given), be kept? Always, but
        for a new identifier (an inception) that does not fit in the quota even once every
        unwitnessed KEL is evicted: that one is forgotten by the validator, counted and
        warned about, and the caller must store, sign and publish nothing of it. The loose
        delegators of a delegated inception are not evicted to make room for it: it could
        not be replayed without them."""
        event = record.event
        if event.ilk not in INCEPTION:
            return True
        if weight < 0:
            weight = held_bytes(record)
        if self._fits(size, weight):
            return True
        ancestors = self._loose_delegators(event.delegator or "")
        while not self._fits(size, weight):
            victim = next((p for p in self.loose if p not in ancestors), None)  # least recent
            if victim is None:
                break
            self._evict(victim, now, effects)
        if self._fits(size, weight):
            return True
        prefix = event.prefix
        self._forget(prefix, now)
        self.refusals += 1
        self._note(
            "refused",
            "warning",
            now,
            effects,
            f"store quota of {self.quota} bytes reached ({self.stored} stored, {self.held}"
            f" held in memory): new identifier {prefix} not kept; the identifiers held are"
            " still served",
        )
        return False

    def store(
        self,
        record: Record,
        persist: Sequence[Effect],
        size: int,
        now: float,
        effects: list[Effect],
        weight: int = -1,
    ) -> None:
        """Add to `effects` what keeps an admitted event (`persist`, of `size` bytes, and
        `weight` in memory: worked out when not given), loose or chained, and the evictions
        it causes."""
        event = record.event
        held = held_bytes(record) if weight < 0 else weight
        self.held += held
        prefix = event.prefix
        entry = self.loose.get(prefix)
        if record.authority.witnesses or (entry is None and event.ilk not in INCEPTION):
            if self.loose:
                self._chain_for(prefix, effects)
            effects.extend(persist)
            self.stored += size
            if self.loose and not self._fits(0, 0):
                self._enforce(now, effects)
            return
        if entry is None:
            entry = self.loose[prefix] = Loose()
            delegator = event.delegator or ""
            parent = self.loose.get(delegator) if delegator else None
            if parent is not None:
                entry.delegator = delegator
                parent.delegatees.add(prefix)
        else:
            self.loose.move_to_end(prefix)
        entry.stored += size
        entry.held += held
        self.stored += size
        self.loose_held += held
        for effect in persist:
            if isinstance(effect, PersistEvent):
                effects.append(replace(effect, loose=True))
            else:
                effects.append(effect)
        self._enforce(now, effects)

    def receipts(self, prefix: str, added: int) -> None:
        """`added` more receipts of an event of `prefix` are being stored."""
        size = added * RECEIPT_BYTES
        self.stored += size
        self.held += added * COUPLE_BYTES
        entry = self.loose.get(prefix)
        if entry is not None:
            entry.stored += size
            entry.held += added * COUPLE_BYTES
            self.loose_held += added * COUPLE_BYTES

    # ---------------------------------------------------------------- internals

    def _chain_for(self, prefix: str, effects: list[Effect]) -> None:
        """`prefix` is kept for good: its loose events, and those of its loose delegators
        (topmost first: their events anchor the ones below), join the chain."""
        entry = self.loose.get(prefix)
        if entry is None:
            kel = self.validator.kel(prefix)
            up = kel.delegator if kel is not None else ""
            chain = []
        else:
            up = entry.delegator
            chain = [prefix]
        while up and up in self.loose:
            chain.append(up)
            up = self.loose[up].delegator
        for kept in reversed(chain):
            entry = self.loose.pop(kept)
            self.loose_held -= entry.held
            parent = self.loose.get(entry.delegator) if entry.delegator else None
            if parent is not None:
                parent.delegatees.discard(kept)
            for child in entry.delegatees:
                below = self.loose.get(child)
                if below is not None:
                    below.delegator = ""  # its delegator is kept now: nothing ties them
            effects.append(ChainLoose(kept))

    def _loose_delegators(self, delegator: str) -> set[str]:
        """`delegator` and its own delegators, as far up as they are loose."""
        found: set[str] = set()
        while delegator and delegator in self.loose and delegator not in found:
            found.add(delegator)
            delegator = self.loose[delegator].delegator
        return found

    def _fits(self, size: int, weight: int) -> bool:
        """Whether `size` more bytes stored and `weight` more held stay within the quota."""
        return self.stored + size <= self.quota and self.held + weight <= self.quota

    def _enforce(self, now: float, effects: list[Effect]) -> None:
        while self.loose and (self.loose_held > self.loose_quota or not self._fits(0, 0)):
            self._evict(next(iter(self.loose)), now, effects)

    def _evict(self, prefix: str, now: float, effects: list[Effect]) -> None:
        """Forget an unwitnessed KEL, with the loose KELs it delegates."""
        group = [prefix]
        for member in group:  # grows as it goes: delegatees of delegatees
            group.extend(c for c in self.loose[member].delegatees if c in self.loose)
        freed = 0
        for member in group:
            entry = self.loose.pop(member)
            parent = self.loose.get(entry.delegator) if entry.delegator else None
            if parent is not None:
                parent.delegatees.discard(member)
            self.loose_held -= entry.held
            kel = self.validator.kel(member)
            if kel is not None and any(a.witnesses for a in kel.authorities):
                # Never: a KEL that names witnesses is chained before it is stored. Should it
                # happen, keep it for good rather than forget what a witness may have signed.
                effects.append(ChainLoose(member))
                continue
            self.stored -= entry.stored
            self.held -= entry.held
            freed += entry.stored
            self.evictions += 1
            self.evicted_bytes += entry.stored
            self._forget(member, now)
            effects.append(DropLoose(member))
        self._note(
            "evicted",
            "info",
            now,
            effects,
            f"evicted unwitnessed identifier {prefix} ({len(group)} KEL(s), {freed} bytes"
            f" stored): unwitnessed KELs hold {self.loose_held} of {self.loose_quota} bytes,"
            f" the store {self.stored} of {self.quota}",
        )

    def _forget(self, prefix: str, now: float) -> None:
        if self._forgotten is not None:  # while the validator still holds it
            self._forgotten(prefix, now)
        self.validator.forget(prefix)

    def _note(self, kind: str, level: str, now: float, effects: list[Effect], line: str) -> None:
        """A log line of `kind`, at most one every NOTE_EVERY seconds; the others counted."""
        due, unlogged = self._notes.get(kind, (now, 0))
        if now < due:
            self._notes[kind] = (due, unlogged + 1)
            return
        if unlogged:
            line += f" ({unlogged} more like it not logged)"
        effects.append(Report(level, line))
        self._notes[kind] = (now + NOTE_EVERY, 0)

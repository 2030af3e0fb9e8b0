"""The juror's own detectors: witnesses that receipt two versions, and witnesses that lag.

Theory of operation. Controller duplicity is found by the watcher's KEL validator (a second
validly signed event at a taken sequence number); this module finds what the validator does
not judge:

    Receipts   keeps, per (prefix, sn, witness), the first version the witness receipted
               (its signature verified over that version's body); a verified receipt of a
               different version at the same (prefix, sn) is `WitnessDuplicity` evidence,
               except a rotation replacing an interaction, which is a recovery. Only a
               witness of the KEL counts (`names`: the KEL the node holds names it in one of
               its witness lists, or the version receipted designates it: an inception's
               witnesses, a rotation's additions to a KEL held): a receipt by any other key
               proves nothing, and made-up keys are free. Receipts of a KEL not held, of a
               version other than an inception, are not recorded either
    Lag        each event seen starts a clock; when `after` seconds pass, every designated
               witness that has not receipted it, or the event still being below its witness
               threshold, is an anomaly (not evidence: silence proves nothing). Events of a
               KEL the node forgot since (its storage policy evicted it) are no anomaly; the
               caller tells it only of events of KELs it holds (junk of identifiers nobody
               incepted is no lag)
    Throttle   at most a few log lines per minute; the rest are counted, and the count logged

Everything is bounded, oldest forgotten first: the versions kept (`max_bodies`, and in bytes
`max_body_bytes`, each version charged like an escrowed event: its raw and decoded body, so
that junk versions nobody else holds cannot grow a node's memory), the receipts waiting for
a version not seen yet (`MAX_EARLY` versions of `MAX_EARLY_EACH` witnesses, and in bytes
`max_early_bytes`; a receipt by a key the KEL held never named does not wait), the
first-receipt slots (`max_slots`, and in bytes `max_slot_bytes`, each charged `SLOT_BYTES`),
the events waiting to be checked for lag (`max_due`) and the anomalies kept. A slot whose
version has been forgotten could not make evidence anyway (the evidence needs both bodies).
Pure: bodies, signatures and times come in as arguments.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Final

from dkms.protocol import cesr
from dkms.protocol.cesr import Codes
from dkms.protocol.errors import ProtocolError
from dkms.protocol.escrow import ENTRY_OVERHEAD, decoded_size
from dkms.protocol.events import INCEPTION, ROTATION, Event, Ilk
from dkms.protocol.signing import Verifier
from dkms.protocol.witness_duplicity import WitnessDuplicity

MAX_BODIES: Final = 200_000  # event versions kept to check receipts against
MAX_BODY_BYTES: Final = 16 << 20  # what the versions kept may hold (estimated)
MAX_EARLY: Final = 10_000  # versions with receipts waiting for the body they sign
MAX_EARLY_EACH: Final = 16  # receipts (one per witness) kept waiting for one version
MAX_EARLY_BYTES: Final = 4 << 20  # what the receipts waiting may hold (estimated)
EARLY_VERSION_BYTES: Final = 200  # a version waited for: its SAID, its map and table entry
EARLY_RECEIPT_BYTES: Final = 250  # a receipt waiting: witness prefix, signature, map entry
MAX_SLOTS: Final = 1_000_000  # (prefix, sn, witness) first receipts
MAX_SLOT_BYTES: Final = 24 << 20  # what the first receipts may hold (estimated)
# A first receipt: its key (prefix, sn, witness), the SAID and signature, the table entry.
# Measured at some 430 bytes (the prefix, sn and SAID are the version's own objects,
# shared), so that MAX_SLOT_BYTES holds some 42,000 of them.
SLOT_BYTES: Final = 600
MAX_ANOMALIES: Final = 1_000
MAX_DUE: Final = 20_000  # events waiting for their lag check (some 350 bytes each)
MAX_FORGOTTEN: Final = 10_000  # KELs forgotten lately, for `Lag`
LOG_LINES: Final = 10  # anomaly log lines per LOG_EVERY seconds; the rest are counted
LOG_EVERY: Final = 60.0

# names(prefix, witness): whether the KEL of `prefix` names `witness` in one of its witness
# lists (any establishment event's); None when no KEL of `prefix` is held.
Names = Callable[[str, str], bool | None]


class Receipts:
    """First receipted version per (prefix, sn, witness); a second one is evidence."""

    def __init__(
        self,
        verify: Verifier,
        ignore: str = "",
        *,
        names: Names,
        max_bodies: int = MAX_BODIES,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_early_bytes: int = MAX_EARLY_BYTES,
        max_slots: int = MAX_SLOTS,
        max_slot_bytes: int = MAX_SLOT_BYTES,
    ) -> None:
        self._verify = verify
        self._ignore = ignore  # our own prefix: a watcher ignores its own receipts
        self._names = names
        self._max_bodies = max_bodies
        self._max_body_bytes = max_body_bytes
        self._max_early_bytes = max_early_bytes
        self._max_slots = min(max_slots, max(max_slot_bytes // SLOT_BYTES, 1))
        self.bodies: OrderedDict[str, Event] = OrderedDict()
        self.body_bytes = 0  # `_weight` of the versions in `bodies`
        self._first: OrderedDict[tuple[str, int, str], tuple[str, bytes]] = OrderedDict()
        # SAID -> witness -> signature: receipts of versions not seen yet, at most
        # MAX_EARLY versions of MAX_EARLY_EACH witnesses (made-up witnesses cost a peer one
        # signature each, so a version's list must not grow with what it sends)
        self._early: OrderedDict[str, dict[str, bytes]] = OrderedDict()
        self.early_bytes = 0  # `_early_weight` of what `_early` holds

    @property
    def slot_bytes(self) -> int:
        """What the first receipts hold, estimated."""
        return len(self._first) * SLOT_BYTES

    def body(self, event: Event) -> list[WitnessDuplicity]:
        """A version seen (validly signed); returns evidence from receipts that waited for it."""
        if event.said in self.bodies:
            return []
        self.bodies[event.said] = event
        self.body_bytes += _weight(event)
        while len(self.bodies) > self._max_bodies or (
            self.body_bytes > self._max_body_bytes and len(self.bodies) > 1
        ):
            self.body_bytes -= _weight(self.bodies.popitem(last=False)[1])
        found = []
        waiting = self._early.pop(event.said, None)
        if waiting is not None:
            self.early_bytes -= _early_weight(waiting)
            for witness, signature in waiting.items():
                found.extend(self.receipt(event.prefix, event.sn, event.said, witness, signature))
        return found

    def forget(self, saids: Iterable[str]) -> None:
        """Drop these versions (their KEL was forgotten)."""
        for said in saids:
            event = self.bodies.pop(said, None)
            if event is not None:
                self.body_bytes -= _weight(event)

    def receipt(
        self, prefix: str, sn: int, said: str, witness: str, signature: bytes
    ) -> list[WitnessDuplicity]:
        """`witness`'s receipt of `said`; returns evidence if it receipted another version."""
        if witness == self._ignore:
            return []
        event = self.bodies.get(said)
        if event is None:
            self._wait(prefix, said, witness, signature)
            return []
        if event.prefix != prefix or event.sn != sn:
            return []
        if not self._witness(event, witness):
            return []
        try:
            key = cesr.decode(witness, expect=Codes.ED25519N)[1]
        except ProtocolError:
            return []
        if not self._verify(key, signature, event.raw):
            return []
        slot = (event.prefix, event.sn, witness)  # the version's own objects: shared
        first = self._first.get(slot)
        if first is None:
            self._first[slot] = (event.said, signature)
            if len(self._first) > self._max_slots:
                self._first.popitem(last=False)
            return []
        other = self.bodies.get(first[0])
        if first[0] == said or other is None:
            return []
        kinds = {other.ilk, event.ilk}
        if Ilk.IXN in kinds and kinds & ROTATION:
            return []  # a recovery and the interaction it replaces
        return [WitnessDuplicity(witness, other.raw, first[1], event.raw, signature)]

    def _witness(self, version: Event, witness: str) -> bool:
        """Whether `witness` is one of the KEL's witnesses: named by the KEL held, or
        designated by `version` itself (its receipts may be what it waits for, before it is
        accepted): an inception's witnesses, a rotation's additions to a KEL held."""
        named = self._names(version.prefix, witness)
        if named:
            return True
        if version.ilk in INCEPTION:
            return witness in version.ked.get("b", ())
        if version.ilk in ROTATION and named is not None:
            return witness in version.ked.get("ba", ())
        return False

    def _wait(self, prefix: str, said: str, witness: str, signature: bytes) -> None:
        """Keep a receipt until the version it signs comes, unless the KEL it would belong
        to is held and never named `witness` (a rotation adding it, whose receipts came
        before it, is then missed: witnesses gossip their receipts with the event)."""
        if self._names(prefix, witness) is False:
            return
        waiting = self._early.get(said)
        if waiting is None:
            waiting = self._early[said] = {}
            self.early_bytes += EARLY_VERSION_BYTES
        if len(waiting) < MAX_EARLY_EACH and witness not in waiting:
            waiting[witness] = signature  # the first a witness gave
            self.early_bytes += EARLY_RECEIPT_BYTES
        while len(self._early) > MAX_EARLY or (
            self.early_bytes > self._max_early_bytes and len(self._early) > 1
        ):
            self.early_bytes -= _early_weight(self._early.popitem(last=False)[1])


class Lag:
    """Events whose witnesses are slow to receipt them, checked `after` seconds on."""

    def __init__(self, after: float, *, max_due: int = MAX_DUE) -> None:
        self.after = after
        self._max_due = max_due
        self._due: deque[tuple[float, str, int, str]] = deque()
        self._seen: set[str] = set()
        self.anomalies: deque[dict[str, object]] = deque(maxlen=MAX_ANOMALIES)
        # prefix -> when its KEL was forgotten, for `after` seconds (time order)
        self._forgotten: OrderedDict[str, float] = OrderedDict()

    def forget(self, prefix: str, now: float) -> None:
        """The KEL of `prefix` was dropped: its events seen until now make no anomaly."""
        self._forgotten.pop(prefix, None)
        self._forgotten[prefix] = now
        cutoff = now - self.after  # events seen before then are due already
        while self._forgotten and (
            next(iter(self._forgotten.values())) < cutoff or len(self._forgotten) > MAX_FORGOTTEN
        ):
            self._forgotten.popitem(last=False)

    def seen(self, prefix: str, sn: int, said: str, now: float) -> None:
        """An event to check `after` seconds on; beyond `max_due` waiting, the oldest goes
        unchecked."""
        if said not in self._seen:
            self._seen.add(said)
            self._due.append((now + self.after, prefix, sn, said))
            if len(self._due) > self._max_due:
                self._seen.discard(self._due.popleft()[3])

    def due(
        self, now: float, receipts_of: Callable[[str], tuple[tuple[str, ...], set[str]] | None]
    ) -> list[dict[str, object]]:
        """Check the events whose time is up. `receipts_of(said)` gives (designated
        witnesses, those that receipted) of an accepted event, None if it was not accepted."""
        found: list[dict[str, object]] = []
        while self._due and self._due[0][0] <= now:
            at, prefix, sn, said = self._due.popleft()
            self._seen.discard(said)
            gone = self._forgotten.get(prefix)
            if gone is not None and gone >= at - self.after:
                continue
            got = receipts_of(said)
            if got is None:
                found.append(
                    {
                        "i": prefix,
                        "s": sn,
                        "d": said,
                        "anomaly": f"not fully witnessed within {self.after:g} s",
                    }
                )
                continue
            witnesses, receipted = got
            for witness in witnesses:
                if witness not in receipted:
                    found.append(
                        {
                            "i": prefix,
                            "s": sn,
                            "d": said,
                            "w": witness,
                            "anomaly": f"witness {witness} did not receipt within {self.after:g} s",
                        }
                    )
        self.anomalies.extend(found)
        return found


class Throttle:
    """At most `lines` log lines per `every` seconds: the first ones of a period are logged,
    the rest counted, and the count is a line of its own when the period is over."""

    def __init__(self, what: str, lines: int = LOG_LINES, every: float = LOG_EVERY) -> None:
        self.what = what  # what the lines are about, for the count's line: "anomalies"
        self._lines = lines
        self._every = every
        self._until = -math.inf  # the end of the current period
        self._logged = 0  # in the current period
        self.unlogged = 0  # in the current period

    def lines(self, lines: Iterable[str], now: float) -> list[str]:
        """Those of `lines` to log now, after the count of the period past if it is over."""
        out = []
        if now >= self._until:
            if self.unlogged:
                out.append(f"{self.what} not logged in {self._every:g} s: {self.unlogged}")
            self._until, self._logged, self.unlogged = now + self._every, 0, 0
        for line in lines:
            if self._logged < self._lines:
                out.append(line)
                self._logged += 1
            else:
                self.unlogged += 1
        return out


def _early_weight(waiting: dict[str, bytes]) -> int:
    return EARLY_VERSION_BYTES + EARLY_RECEIPT_BYTES * len(waiting)


def _weight(event: Event) -> int:
    """What a kept version holds, estimated as the escrows estimate an entry (an interaction
    keeps only its anchors decoded)."""
    body = event.anchors if event.ilk is Ilk.IXN else event.ked
    return len(event.raw) + decoded_size(body) + ENTRY_OVERHEAD

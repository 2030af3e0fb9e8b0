"""The juror's own detectors: witnesses that receipt two versions, and witnesses that lag.

Theory of operation. Controller duplicity is found by the watcher's KEL validator (a second
validly signed event at a taken sequence number); this module finds what the validator does
not judge:

    Receipts   keeps, per (prefix, sn, witness), the first version the witness receipted
               (its signature verified over that version's body); a verified receipt of a
               different version at the same (prefix, sn) is `WitnessDuplicity` evidence,
               except a rotation replacing an interaction, which is a recovery
    Lag        each event seen starts a clock; when `after` seconds pass, every designated
               witness that has not receipted it, or the event still being below its witness
               threshold, is an anomaly (not evidence: silence proves nothing). Events of a
               KEL the node forgot since (its storage policy evicted it) are no anomaly

Everything is bounded, oldest forgotten first: the versions kept (`max_bodies`, and in bytes
`max_body_bytes`, each version charged like an escrowed event: its raw and decoded body, so
that junk versions nobody else holds cannot grow a node's memory), the receipts waiting for
a version not seen yet, and the first-receipt slots (`max_slots`). A slot whose
version has been forgotten could not make evidence anyway (the evidence needs both bodies).
Pure: bodies, signatures and times come in as arguments.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Final

from dkms.protocol import cesr
from dkms.protocol.cesr import Codes
from dkms.protocol.errors import ProtocolError
from dkms.protocol.escrow import ENTRY_OVERHEAD, decoded_size
from dkms.protocol.events import ROTATION, Event, Ilk
from dkms.protocol.signing import Verifier
from dkms.protocol.witness_duplicity import WitnessDuplicity

MAX_BODIES: Final = 200_000  # event versions kept to check receipts against
MAX_EARLY: Final = 10_000  # versions with receipts waiting for the body they sign
MAX_EARLY_EACH: Final = 16  # receipts (one per witness) kept waiting for one version
MAX_SLOTS: Final = 1_000_000  # (prefix, sn, witness) first receipts; ~4 witnesses per version
MAX_BODY_BYTES: Final = 32 << 20  # what the versions kept may hold (estimated)
MAX_ANOMALIES: Final = 1_000
MAX_FORGOTTEN: Final = 10_000  # KELs forgotten lately, for `Lag`


class Receipts:
    """First receipted version per (prefix, sn, witness); a second one is evidence."""

    def __init__(
        self,
        verify: Verifier,
        ignore: str = "",
        *,
        max_bodies: int = MAX_BODIES,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_slots: int = MAX_SLOTS,
    ) -> None:
        self._verify = verify
        self._ignore = ignore  # our own prefix: a watcher ignores its own receipts
        self._max_bodies = max_bodies
        self._max_body_bytes = max_body_bytes
        self._max_slots = max_slots
        self.bodies: OrderedDict[str, Event] = OrderedDict()
        self.body_bytes = 0  # `_weight` of the versions in `bodies`
        self._first: OrderedDict[tuple[str, int, str], tuple[str, bytes]] = OrderedDict()
        # SAID -> witness -> signature: receipts of versions not seen yet, at most
        # MAX_EARLY versions of MAX_EARLY_EACH witnesses (made-up witnesses cost a peer one
        # signature each, so a version's list must not grow with what it sends)
        self._early: OrderedDict[str, dict[str, bytes]] = OrderedDict()

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
        for witness, signature in self._early.pop(event.said, {}).items():
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
            waiting = self._early.setdefault(said, {})
            if len(waiting) < MAX_EARLY_EACH:
                waiting.setdefault(witness, signature)  # the first a witness gave
            if len(self._early) > MAX_EARLY:
                self._early.popitem(last=False)
            return []
        if event.prefix != prefix or event.sn != sn:
            return []
        try:
            key = cesr.decode(witness, expect=Codes.ED25519N)[1]
        except ProtocolError:
            return []
        if not self._verify(key, signature, event.raw):
            return []
        slot = (prefix, sn, witness)
        first = self._first.get(slot)
        if first is None:
            self._first[slot] = (said, signature)
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


class Lag:
    """Events whose witnesses are slow to receipt them, checked `after` seconds on."""

    def __init__(self, after: float) -> None:
        self.after = after
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
        if said not in self._seen:
            self._seen.add(said)
            self._due.append((now + self.after, prefix, sn, said))

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


def _weight(event: Event) -> int:
    """What a kept version holds, estimated as the escrows estimate an entry (an interaction
    keeps only its anchors decoded)."""
    body = event.anchors if event.ilk is Ilk.IXN else event.ked
    return len(event.raw) + decoded_size(body) + ENTRY_OVERHEAD

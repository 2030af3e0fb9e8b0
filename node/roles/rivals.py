"""The duplicitous-event log: validly signed rivals a witness refused, kept and made known.

Theory of operation. A witness keeps the first version it sees at each sequence number and
refuses any other; its validator says `DUPLICITOUS` (with the evidence) only for a rival
signed by the keys in force at that sn, meeting their threshold (an interaction: the
current keys; a rotation: its own keys, committed to by the prior next digests). A rotation
replacing interactions above the last establishment event is a recovery: accepted, never a
rival; an interaction arriving after it is stale, rejected. Such a rival, refused, is exactly
what watchers exist to find, and maybe no one else ever saw it, so the witness (`Rivals`):

    keeps       the rival (its message: body and the controller signatures that verified)
                and the version it conflicts with, for identifiers it witnesses only
    publishes   the rival's message on the KEL's gossip shard when it is first kept, unless
                it came by that gossip (it is there already). The KEL topics' gossip
                validation passes any well-formed message, and a watcher's validator finds
                the conflict as for any version it hears: evidence, ruling, `duplicitous`.
                Gossip is lossy, and nothing else would bring the rival out again, so
                `REPEAT_AFTER` seconds later it is published once more, after the version
                held (other bytes, which the gossip's seen cache does not swallow, and
                enough for a watcher that lost that version too: two signed versions of one
                sn are duplicity even while both wait for receipts). At most `MAX_REPEATS`
                wait for their turn, the oldest left out
    serves      `{"t": "rivals", "i": prefix}`: the evidence of each rival kept of `prefix`
                (`DuplicityEvidence`, built from the log and the KEL's establishment events,
                verifiable offline), as many as fit in a page's byte budget
    asks        a co-witness's receipt (an `rct` couple of a witness the KEL designates) of
                a version we do not hold, at an sn where we hold another: a receipt signs
                the receipted event's body, so without that body it cannot even be checked,
                and proves nothing (anyone can write one naming any witness). What is
                verifiable is the version itself: the co-witness is asked for its event at
                that sn (a KEL page of one event), and the answer is judged like any event:
                a validly signed rival is kept and published, anything else is dropped.
                Since the answer is the co-witness's version whatever SAID the receipt
                named, each co-witness is asked about one (identifier, sn) once, and at most
                `ASKS_EACH` of them: gossiped receipts of made-up versions, which cost
                nothing to make, cannot turn a witness into a stream of queries. At most
                `MAX_ASKS` asks are in flight, and `MAX_ASKED` (identifier, sn) are
                remembered as asked about, oldest forgotten first

Bounds, so that a controller signing many rivals cannot grow a witness's memory: at most
`MAX_VERSIONS` rivals per (identifier, sn), further ones refused (one proves the duplicity;
more would only be more gossip); at most `MAX_SNS` sns per identifier, a rival at a lower sn
than the highest held replacing that one (a watcher's standing says from which sn an
identifier is duplicitous), others refused; and `MAX_BYTES` in all, each rival weighed as
its two messages plus `ENTRY_BYTES`, the oldest (identifier, sn) forgotten first. A rival
forgotten has been published already; forgotten, it may be kept and published again.

The log lives in memory only: a restarted witness starts with an empty one (the watchers
that heard its rivals keep the evidence durably). Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import cbor2

from dkms.protocol.duplicity import DuplicityEvidence
from dkms.protocol.ids import NodePrefix, Prefix, Said
from dkms.protocol.outcomes import Outcome
from dkms.protocol.stream import Attachments, Message, messagize
from dkms.protocol.validator import Validator

from .codes import Code
from .effects import Effect, Publish, Reply, Report, Send, SetTimer, Surface
from .inputs import Answered, RivalQuery, RivalRepeat
from .pages import PAGE_BYTES, kel_ask
from .topics import kel_topic

QUERY: Final = "rivals"  # the query type: {"t": "rivals", "i": prefix}
MAX_VERSIONS: Final = 4  # rivals kept per (identifier, sn)
MAX_SNS: Final = 8  # sns with rivals kept per identifier
MAX_BYTES: Final = 4 << 20  # what the log may hold in all (estimated)
# A rival kept beyond its two messages: the Rival object and its SAID, its slot (the key
# tuple, the dict, the ordered-dict node) and its entry in the per-identifier set. Measured
# at some 620 bytes for a slot of one rival (tracemalloc, 2,000 rivals).
ENTRY_BYTES: Final = 800
ASKS_EACH: Final = 8  # co-witnesses asked about one (identifier, sn), each once
MAX_ASKS: Final = 16  # asks in flight at once
REPEAT_AFTER: Final = 5.0  # seconds before a rival published is published once more
MAX_REPEATS: Final = 1000  # rivals waiting to be published again (some 300 bytes each)
MAX_ASKED: Final = 1024  # (identifier, sn) remembered as asked about (under 1.5 KB each)

Apply = Callable[[bytes, list[Effect]], None]  # the witness applying an answer's events


@dataclass(frozen=True, slots=True)
class Rival:
    """A validly signed version refused at (prefix, sn), and the one held there then."""

    said: str
    message: bytes  # the rival: body + the controller signatures that verified
    first: bytes  # the version held: body + controller signatures

    @property
    def weight(self) -> int:
        return len(self.message) + len(self.first) + ENTRY_BYTES


class Rivals:
    """A witness's duplicitous-event log, and its asks after rivals its co-witnesses receipted."""

    def __init__(
        self,
        validator: Validator,
        me: NodePrefix,
        *,
        max_bytes: int = MAX_BYTES,
        max_versions: int = MAX_VERSIONS,
        max_sns: int = MAX_SNS,
        page_bytes: int = PAGE_BYTES,
    ) -> None:
        self.validator = validator
        self.me = me
        self.max_bytes = max_bytes
        self.max_versions = max_versions
        self.max_sns = max_sns
        self.page_bytes = page_bytes
        # (prefix, sn) -> SAID -> rival, oldest slot first
        self._log: OrderedDict[tuple[str, int], dict[str, Rival]] = OrderedDict()
        self._sns: dict[str, set[int]] = {}  # prefix -> the sns it has slots at
        self.bytes = 0  # the weight of every rival kept
        # (prefix, sn) -> co-witnesses asked for their version there
        self._asked: OrderedDict[tuple[str, int], set[str]] = OrderedDict()
        self.asking = 0  # asks in flight
        # (when, prefix, sn, SAID): rivals to publish once more, in time order
        self._repeats: deque[tuple[float, str, int, str]] = deque(maxlen=MAX_REPEATS)
        self._repeating = False  # a RivalRepeat timer is set

    # ---------------------------------------------------------------- the log

    def held(self, prefix: str, sn: int, said: str) -> bool:
        return said in self._log.get((prefix, sn), ())

    def rivals(self, prefix: str) -> list[tuple[int, Rival]]:
        """The rivals kept of `prefix`, by sn."""
        sns = sorted(self._sns.get(prefix, ()))
        return [(sn, r) for sn in sns for r in self._log[(prefix, sn)].values()]

    def found(self, outcome: Outcome, now: float, *, heard: bool, effects: list[Effect]) -> bool:
        """A `DUPLICITOUS` outcome of the witness's validator, for an identifier it witnesses:
        keep the rival and, unless it was `heard` on the gossip, publish it (and once more
        later). True if kept."""
        evidence = outcome.evidence
        if evidence is None:
            return False
        prefix, sn = outcome.prefix, outcome.sn
        rival = Rival(outcome.said, evidence.second, evidence.first)
        slot = self._log.get((prefix, sn))
        if slot is not None and (rival.said in slot or len(slot) >= self.max_versions):
            return False
        if rival.weight > self.max_bytes:
            return False
        if slot is None:
            sns = self._sns.setdefault(prefix, set())
            if len(sns) >= self.max_sns:
                highest = max(sns)
                if sn > highest:
                    return False
                self._drop((prefix, highest))
            slot = self._log[(prefix, sn)] = {}
            self._sns.setdefault(prefix, set()).add(sn)
        slot[rival.said] = rival
        self._log.move_to_end((prefix, sn))  # the oldest news is forgotten first
        self.bytes += rival.weight
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._log)))
        how = "kept" if heard else "kept and published"
        effects.append(
            Report(
                "warning",
                f"rival {outcome.ilk} {outcome.said} of {prefix} at sn {sn:x} refused, {how} "
                f"in the duplicitous-event log: {outcome.reason}",
            )
        )
        if not heard:
            effects.append(Publish(kel_topic(prefix), rival.message))
            self._repeats.append((now + REPEAT_AFTER, prefix, sn, rival.said))
            if not self._repeating:
                self._repeating = True
                effects.append(SetTimer(RivalRepeat(), now + REPEAT_AFTER))
        return True

    def due(self, now: float) -> list[Effect]:
        """The `RivalRepeat` timer: publish again the rivals whose time came (those still
        kept), each after the version it conflicts with."""
        effects: list[Effect] = []
        while self._repeats and self._repeats[0][0] <= now:
            _, prefix, sn, said = self._repeats.popleft()
            rival = self._log.get((prefix, sn), {}).get(said)
            if rival is not None:
                effects.append(Publish(kel_topic(prefix), rival.first + rival.message))
        self._repeating = bool(self._repeats)
        if self._repeating:
            effects.append(SetTimer(RivalRepeat(), self._repeats[0][0]))
        return effects

    def _drop(self, key: tuple[str, int]) -> None:
        slot = self._log.pop(key)
        self.bytes -= sum(r.weight for r in slot.values())
        sns = self._sns[key[0]]
        sns.discard(key[1])
        if not sns:
            del self._sns[key[0]]

    # ---------------------------------------------------------------- queries

    def reply(self, ask: dict[Any, Any]) -> Reply:
        """`{"t": "rivals", "i": prefix}`: `{"witness", "i", "rivals": [evidence CBOR],
        "more"}`, the evidence of the rivals kept, by sn, within the page budget (at least
        one); `more` when some did not fit."""
        prefix = ask.get("i")
        if not isinstance(prefix, str):
            return Reply.refuse(Code.BAD_QUERY, "query needs an identifier prefix i")
        found: list[bytes] = []
        size = 0
        more = False
        for sn, rival in self.rivals(prefix):
            evidence = self.evidence(prefix, sn, rival)
            if evidence is None:
                continue
            body = evidence.to_cbor()
            if found and size + len(body) > self.page_bytes:
                more = True
                break
            found.append(body)
            size += len(body)
        answer = {"witness": self.me, "i": prefix, "rivals": found, "more": more}
        return Reply.accept(cbor2.dumps(answer))

    def evidence(self, prefix: str, sn: int, rival: Rival) -> DuplicityEvidence | None:
        """The evidence of `rival`: its two messages, with the establishment events of the
        KEL held that put the keys in force before `sn` (as the validator makes it)."""
        kel = self.validator.kel(prefix)
        if kel is None:
            return None
        establishment = []
        for authority in kel.authorities:
            if authority.sn >= sn:
                break
            record = self.validator.record(authority.said)
            if record is None:
                return None
            establishment.append(messagize(record.event, Attachments(sigs=record.sigs)))
        return DuplicityEvidence(prefix, sn, tuple(establishment), rival.first, rival.message)

    # ---------------------------------------------------------------- receipts of rivals

    def receipted(self, message: Message) -> list[Effect]:
        """Receipts (an `rct` message) heard: for each co-witness that receipted a version
        of an sn where our KEL holds another, ask it for that version."""
        rct = message.event
        prefix, sn, said = rct.prefix, rct.sn, rct.said
        kel = self.validator.kel(prefix)
        if kel is None or not message.attachments.couples:
            return []
        held = kel.at(sn)
        if held is None or held.event.said == said or self.validator.record(said) is not None:
            return []
        if self.held(prefix, sn, said):
            return []  # its body came already
        designated = set(held.authority.witnesses) | set(kel.authority.witnesses)
        key = (prefix, sn)
        asked = self._asked.get(key)
        effects: list[Effect] = []
        for witness, _ in message.attachments.couples:
            if self.asking >= MAX_ASKS or (asked is not None and len(asked) >= ASKS_EACH):
                break
            if witness == self.me or witness not in designated:
                continue  # a receipt by any other key proves nothing: made-up keys are free
            if asked is None:
                asked = self._asked[key] = set()
                while len(self._asked) > MAX_ASKED:
                    self._asked.popitem(last=False)
            if witness in asked:
                continue
            asked.add(witness)
            self.asking += 1
            peer = NodePrefix(witness)
            tag = RivalQuery(Prefix(prefix), sn, Said(said), peer)
            effects.append(Send(peer, Surface.QUERY, kel_ask(prefix, sn, 1), tag))
            effects.append(
                Report(
                    "info",
                    f"co-witness {witness} receipted {said}, not the {held.event.said} held at"
                    f" sn {sn:x} of {prefix}: asking it for that version",
                )
            )
        return effects

    def answered(self, tag: RivalQuery, answer: Answered, apply: Apply) -> list[Effect]:
        """A co-witness's answer: its version at the sn asked, applied like gossip (judged,
        and kept here if it is a validly signed rival)."""
        self.asking = max(self.asking - 1, 0)
        effects: list[Effect] = []
        if not answer.code.ok:
            effects.append(Report("debug", f"{tag}: no answer ({answer.reason})"))
            return effects
        apply(answer.payload, effects)
        if not self.held(tag.prefix, tag.sn, tag.said):
            effects.append(Report("debug", f"{tag.peer} did not hand over a signed {tag.said}"))
        return effects

    def table_sizes(self) -> dict[str, int]:
        return {
            "slots": len(self._log),
            "rivals": sum(len(s) for s in self._log.values()),
            "bytes": self.bytes,
            "asked": len(self._asked),
            "asking": self.asking,
            "repeats": len(self._repeats),
        }

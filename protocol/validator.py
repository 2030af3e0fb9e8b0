"""The KEL validator: feed it messages (and the time), read back outcomes and key state.

Theory of operation. Each event message is judged against the KEL of its identifier:

    no KEL yet, inception      -> incept          (signatures, witnesses, delegation)
    no KEL yet, anything else  -> escrow: out-of-order
    sn >  last + 1             -> escrow: out-of-order
    sn == last + 1             -> extend          (p must be the last SAID)
    sn <= last, same SAID      -> duplicate       (new receipts are kept)
    sn <= last, rotation above
      the last establishment   -> recover         (supersedes the interactions it replaces)
    sn <= last, otherwise      -> conflict        (duplicity if validly signed, else reject)

Judging an event runs three gates in order: controller signatures (escrow when partially
signed), witness receipts up to `bt` (escrow when partially witnessed), delegation anchor for
`dip`/`drt` (escrow until the delegator's KEL anchors it). Every escrow entry is keyed by the
event's SAID; a copy that arrives with more signatures or receipts merges into it. Whenever an
event is accepted, the escrows that could now move (later events of the same KEL, events this
KEL delegates) are examined again, until nothing moves.

Receipts (`rct` + `-C`) for an accepted event are verified and stored; for an escrowed event
they merge into its entry; for an event not seen yet they wait in a bounded receipt escrow.

The validator performs no I/O and reads no clock: `now` is an argument, and `expire(now)`
drops escrow entries that waited too long. Everything it decides comes back as `Outcome`s.

`forget(prefix)` drops a whole KEL (a node's storage policy evicting an identifier it does
not keep): what it held is as if never accepted, so the KEL may come again from sn 0.
`held_bytes(record)` estimates what one accepted event holds in memory, as the escrows
estimate their entries; it is what `forget` frees.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from . import crypto
from .cesr import IndexedSig, new_tuple
from .duplicity import DuplicityEvidence
from .errors import EventError, RemoteProtocolError
from .escrow import (
    COUPLE_BYTES,
    ENTRY_OVERHEAD,
    SIG_BYTES,
    SOURCE_BYTES,
    Budget,
    Escrow,
    EscrowLimits,
    Pending,
    Waiting,
    decoded_size,
)
from .events import INCEPTION, ROTATION, Event, Ilk
from .kel import Kel, Record
from .keystate import Authority, KeyState, authority_of
from .outcomes import Outcome, Status
from .signing import SigVerdict, Verifier, verify_controller, verify_witnesses
from .stream import Attachments, Message, messagize

# Enum members cost ~60 ns per lookup on CPython 3.11 (a descriptor); the per-event path
# reads these module constants instead.
_RCT = Ilk.RCT
_IXN = Ilk.IXN
_SATISFIED = SigVerdict.SATISFIED
_ACCEPTED = Status.ACCEPTED

# What one entry of the rivals table costs: the key tuple, a 44-character prefix, two SAIDs
# in a frozenset, and the table's own slot.
_RIVAL_BYTES = 600

_ESCROW_ORDER = (
    Waiting.OUT_OF_ORDER,
    Waiting.PARTIALLY_SIGNED,
    Waiting.PARTIALLY_WITNESSED,
    Waiting.DELEGATION,
)


class Validator:
    """Validates KEL messages for any number of identifiers, in memory."""

    def __init__(
        self,
        *,
        verify: Verifier = crypto.verify,
        limits: EscrowLimits | None = None,
        witness: str | None = None,
    ) -> None:
        """`witness` is the prefix of a witness running this validator: for the identifiers
        that designate it, its own first-seen judgement stands in for the `bt` receipts (it
        is the one about to receipt), as with keripy's witnesses. Other KELs need receipts."""
        self._verify = verify
        self._witness = witness
        self._limits = limits or EscrowLimits()
        self._kels: dict[str, Kel] = {}
        self._seen: dict[str, Record] = {}  # SAID -> record, for every event ever accepted
        self._escrowed: dict[str, Waiting] = {}  # SAID -> escrow holding the event
        budget = Budget(self._limits, self._escrowed)
        self._escrows = {w: Escrow(w, budget) for w in _ESCROW_ORDER}
        # Receipts for events not seen yet: receipted SAID -> the rct and its signatures.
        self._early: OrderedDict[str, Pending] = OrderedDict()
        self._early_bytes = 0  # their size estimates, bounded by max_receipt_bytes
        # Seal (i, s, d) -> (anchoring prefix, its sn, its SAID), for delegation approvals.
        self._anchors: dict[tuple[str, str, str], tuple[str, int, str]] = {}
        self._out: list[Outcome] = []
        # Escrowed rival pairs already reported (evidence travels in their outcomes); bounded
        # like the escrow they come from: a pair forgotten is at worst reported again.
        self._rivals: OrderedDict[tuple[str, int, frozenset[str]], None] = OrderedDict()

    # ------------------------------------------------------------------ queries

    def state(self, prefix: str) -> KeyState | None:
        kel = self._kels.get(prefix)
        return kel.state() if kel else None

    def kel(self, prefix: str) -> Kel | None:
        return self._kels.get(prefix)

    @property
    def prefixes(self) -> list[str]:
        return list(self._kels)

    def escrowed_sns(self, prefix: str) -> set[int]:
        """Sequence numbers of the events of `prefix` held in an escrow (not in its KEL)."""
        return {p.event.sn for e in self._escrows.values() for p in e.group(prefix)}

    def escrowed(self) -> dict[Waiting, list[Pending]]:
        return {w: list(e) for w, e in self._escrows.items()}

    def escrow_fill(self) -> dict[str, tuple[int, int]]:
        """(entries, bytes) held in each escrow, for metrics: the four event escrows by what
        they wait for, "early-receipts", and "rivals" (the escrowed duplicity pairs already
        reported: fixed-size keys, so its bytes are an estimate from its count)."""
        fill = {w.value: (len(e), e.bytes) for w, e in self._escrows.items()}
        fill["early-receipts"] = (len(self._early), self._early_bytes)
        fill["rivals"] = (len(self._rivals), len(self._rivals) * _RIVAL_BYTES)
        return fill

    def record(self, said: str) -> Record | None:
        return self._seen.get(said)

    def witnesses_of(self, version: Event) -> tuple[str, ...] | None:
        """The witness list `version` designates, which its indexed witness signatures (-B)
        point into: an accepted event's own, else, for a version not accepted (a rival), the
        one it would have: an inception's, or for an interaction the one in force at its sn.
        None for a rival rotation (its list depends on cuts and additions judged only on
        acceptance) and for an identifier not held."""
        record = self._seen.get(version.said)
        if record is not None:
            return record.authority.witnesses
        if version.ilk in INCEPTION:
            return tuple(version.ked["b"])
        kel = self._kels.get(version.prefix)
        if version.ilk is Ilk.IXN and kel is not None:
            return kel.authority_before(version.sn).witnesses
        return None

    def replay(self, prefix: str, start: int = 0) -> bytes:
        """The KEL from `start` as a CESR stream: each event with `-A`, `-B` and `-G`."""
        kel = self._kels.get(prefix)
        if kel is None:
            return b""
        return b"".join(_replay_message(r) for r in kel.chain[start:])

    # ------------------------------------------------------------------ forgetting

    def forget(self, prefix: str) -> int:
        """Drop the KEL of `prefix` and what is kept for it: its accepted events (`_seen`,
        superseded ones too) and the delegation anchors its events made. Return the bytes
        it held (the sum of `held_bytes` over its events; 0 when not held).

        Its escrowed events, early receipts and reported rivals stay: they are bounded and
        aged as ever, and an escrowed event of the prefix now waits for its inception again.
        Forgetting a KEL is safe only for a node that vouched for none of its events: a
        witness must never forget an identifier it receipted (it would accept, and receipt,
        another version); the caller decides (`node/roles/storage.py` forgets only KELs
        that name no witness, which no witness receipts)."""
        kel = self._kels.pop(prefix, None)
        if kel is None:
            return 0
        freed = 0
        for record in kel.first_seen:
            event = record.event
            if self._seen.get(event.said) is record:
                del self._seen[event.said]
            freed += held_bytes(record)
            anchors = event.anchors
            if anchors:
                for item in anchors:
                    seal = _seal_key(item)
                    if seal is not None and self._anchors.get(seal, ("",))[0] == prefix:
                        del self._anchors[seal]
        return freed

    # ------------------------------------------------------------------ inputs

    def process(self, message: Message, now: float, source: str = "") -> list[Outcome]:
        """Judge one message; return the outcomes of everything it settled, in order.

        Among them is the message's own (same SAID and ilk); the others are events it moved:
        released from escrow, superseded by a recovery, dropped from a full escrow.
        `source` names where the message came from (a peer; opaque): what it leaves in the
        escrows counts against that source's share of them. "" is local input or unknown.
        """
        out: list[Outcome] = []
        self._out = out
        event = message.event
        if self._interaction_in_order(message):
            pass
        elif event.ilk is _RCT:
            atc = message.attachments
            self._receipt(event, atc.couples, atc.wigs, now, source)
        elif self._escrowed or self._early:
            self._submit(Pending(event, now, message.attachments, source))
        elif self._judge(Pending(event, now, message.attachments, source)) and self._escrowed:
            self._settle(event.prefix)  # acceptance may have freed escrowed events
        self._out = []
        return out

    def _interaction_in_order(self, message: Message) -> bool:
        """The fast lane for most of any KEL: the next interaction, only signatures attached.

        It accepts exactly what the general path (`_judge` -> `_extend` -> `_gates`) accepts
        for such a message, without building a `Pending`; anything else goes the long way.
        """
        event = message.event
        if event.ilk is not _IXN or self._escrowed or self._early:
            return False
        kel = self._kels.get(event.prefix)
        atc = message.attachments
        if (
            kel is None
            or event.sn != kel.sn + 1
            or event.prior != kel.last_said
            or not kel.interactive
            or atc.wigs
            or atc.couples
            or atc.sources
        ):
            return False
        authority = kel.authority
        if authority.toad and self._witness not in authority.witnesses:
            return False
        check = verify_controller(event, atc.sigs, authority, None, self._verify)
        if check.verdict is not _SATISFIED:
            return False
        record = Record(event, check.verified, authority, {}, ())
        kel.append(record)
        self._accepted(record)
        return True

    def expire(self, now: float) -> list[Outcome]:
        """Drop escrow entries older than the age limit; report each as rejected."""
        out = []
        for escrow in self._escrows.values():
            for pending in escrow.expire(now):
                reason = f"dropped from escrow after waiting too long ({escrow.waiting})"
                out.append(_outcome(pending.event, Status.REJECTED, reason))
        cutoff = now - self._limits.max_age
        for said in [s for s, early in self._early.items() if early.since < cutoff]:
            early = self._early.pop(said)
            self._early_bytes -= early.size
            event = early.event
            out.append(_outcome(event, Status.REJECTED, "receipted event never arrived"))
        return out

    # ------------------------------------------------------------------ receipts

    def _receipt(
        self,
        rct: Event,
        couples: tuple[tuple[str, bytes], ...],
        wigs: tuple[IndexedSig, ...],
        now: float,
        source: str,
    ) -> None:
        said = rct.said
        record = self._seen.get(said)
        if record is not None:
            if record.event.prefix != rct.prefix or record.event.sn != rct.sn:
                self._emit(rct, Status.REJECTED, "receipt names a different prefix or sn")
                return
            good = verify_witnesses(record.event.raw, record.authority, wigs, couples, self._verify)
            if not good:
                self._emit(rct, Status.REJECTED, "no receipt signature verifies for a witness")
                return
            record.receipts.update(good)
            self._emit(rct, Status.ACCEPTED, f"{len(good)} witness receipt(s) stored")
            return
        where = self._escrowed.get(said)
        if where is not None:
            escrow = self._escrows[where]
            pending = escrow.pop(said)
            if pending is not None:
                pending.merge((), wigs, couples, ())
                self._submit(pending)
                if said in self._seen:
                    self._emit(rct, Status.ACCEPTED, "receipts stored with the accepted event")
                else:
                    self._emit(rct, Status.ESCROWED, "receipted event is escrowed", escrow.waiting)
                return
        limits = self._limits
        if len(rct.raw) > limits.max_event_bytes:
            self._emit(rct, Status.REJECTED, _too_big(rct, limits.max_event_bytes))
            return
        early = self._early.get(said)
        if early is None:
            early = self._early[said] = Pending(rct, now, None, source)
            early.weigh()
            self._early_bytes += early.size
        before = early.size
        early.merge((), wigs, couples, ())
        self._early_bytes += early.size - before
        while len(self._early) > limits.max_receipts or (
            self._early_bytes > limits.max_receipt_bytes and len(self._early) > 1
        ):
            old = self._early.popitem(last=False)[1]
            self._early_bytes -= old.size
            self._emit(old.event, Status.REJECTED, "receipt escrow full; dropped oldest receipts")
        self._emit(rct, Status.ESCROWED, "receipted event not seen yet", Waiting.OUT_OF_ORDER)

    # ------------------------------------------------------------------ events

    def _submit(self, pending: Pending) -> None:
        said = pending.event.said
        where = self._escrowed.get(said) if self._escrowed else None
        if where is not None:
            old = self._escrows[where].pop(said)
            if old is not None:
                old.merge(pending.sigs, pending.wigs, pending.couples, pending.sources)
                pending = old
        early = self._early.pop(said, None) if self._early else None
        if early is not None:
            self._early_bytes -= early.size
            pending.merge((), early.wigs, early.couples, ())
        if self._judge(pending):
            if early is not None:
                self._emit(early.event, Status.ACCEPTED, "receipts stored with the accepted event")
            if self._escrowed:
                self._settle(pending.event.prefix)

    def _judge(self, p: Pending) -> bool:
        """Route one pending event; True when it was accepted (the caller then settles)."""
        event = p.event
        kel = self._kels.get(event.prefix)
        try:
            if kel is not None and event.sn == kel.sn + 1 and event.ilk not in INCEPTION:
                if event.prior != kel.last_said:  # the common case first: the next event
                    if event.said in self._seen:  # e.g. a superseded event sent again
                        return self._duplicate(self._seen[event.said], p)
                    return self._reject(event, "prior event digest p does not match the KEL")
                accepted = self._extend(kel, p)
            elif kel is None:
                if event.ilk not in INCEPTION:
                    return self._escrow(p, Waiting.OUT_OF_ORDER, "its inception is not seen yet")
                accepted = self._incept(p)
            elif event.said in self._seen:
                return self._duplicate(self._seen[event.said], p)
            elif event.ilk in INCEPTION or event.sn <= kel.sn:
                if event.ilk in ROTATION and event.sn > kel.authority.sn:
                    accepted = self._recover(kel, p)
                else:
                    return self._conflict(kel, p)
            else:
                return self._escrow(p, Waiting.OUT_OF_ORDER, f"waiting for sn {kel.sn + 1:x}")
        except RemoteProtocolError as err:  # e.g. a key in a rotation that is not a key
            return self._reject(event, err.reason)
        return accepted

    def _incept(self, p: Pending) -> bool:
        event = p.event
        authority = authority_of(event, tuple(event.ked["b"]))
        _check_authority(authority)
        delegator = event.delegator or ""
        if delegator:
            dkel = self._kels.get(delegator)
            if dkel is not None and "DND" in dkel.traits:
                return self._reject(event, "the delegator does not delegate (DND)")
        traits = tuple(event.ked["c"])
        if not self._gates(p, authority, None, delegator):
            return False
        record = self._record(p, authority)
        self._kels[event.prefix] = Kel(record, traits, delegator)
        self._accepted(record)
        return True

    def _extend(self, kel: Kel, p: Pending) -> bool:
        event = p.event
        if event.ilk is Ilk.IXN:
            if not kel.interactive:
                if "EO" in kel.traits:
                    return self._reject(event, "establishment-only identifier (EO) cannot interact")
                return self._reject(event, "a non-transferable identifier has no further events")
            authority = kel.authority
            if not self._gates(p, authority, None, ""):
                return False
            record = self._record(p, authority)
        else:
            rotated = self._rotation_authority(kel, event)
            if rotated is None or not self._gates(p, rotated, kel.authority, kel.delegator):
                return False
            record = self._record(p, rotated)
        kel.append(record)
        self._accepted(record)
        return True

    def _recover(self, kel: Kel, p: Pending) -> bool:
        event = p.event
        previous = kel.at(event.sn - 1)
        if previous is None or event.prior != previous.event.said:
            return self._reject(event, "recovery rotation must chain to the event before it")
        authority = self._rotation_authority(kel, event)
        if authority is None or not self._gates(p, authority, kel.authority, kel.delegator):
            return False
        for dropped in kel.supersede_from(event.sn):
            self._emit(dropped.event, Status.SUPERSEDED, f"superseded by recovery {event.said}")
        record = self._record(p, authority)
        kel.append(record)
        self._accepted(record)
        return True

    def _rotation_authority(self, kel: Kel, event: Event) -> Authority | None:
        if (event.ilk is Ilk.DRT) != bool(kel.delegator):
            self._reject(event, "delegated identifiers rotate with drt, others with rot")
            return None
        if not kel.authority.transferable:
            self._reject(event, "identifier is non-transferable: it committed to no next keys")
            return None
        current = kel.authority.witnesses
        cuts, adds = event.ked["br"], event.ked["ba"]
        if len(set(cuts)) != len(cuts) or not set(cuts) <= set(current):
            raise EventError("witness cuts br must be distinct members of the witness list")
        kept = tuple(w for w in current if w not in cuts)
        if len(set(adds)) != len(adds) or set(adds) & set(kept) or set(adds) & set(cuts):
            raise EventError("witness additions ba must be distinct and new")
        authority = authority_of(event, kept + tuple(adds))
        _check_authority(authority)
        return authority

    def _gates(
        self, p: Pending, signing: Authority, prior: Authority | None, delegator: str
    ) -> bool:
        """Signatures, then witness receipts, then delegation; escrow or reject on failure."""
        event = p.event
        check = verify_controller(event, p.sigs, signing, prior, self._verify)
        if len(check.verified) != len(p.sigs):
            p.sigs = list(check.verified)  # escrows keep only signatures that verified
        if check.verdict is SigVerdict.PARTIAL:
            return self._escrow(p, Waiting.PARTIALLY_SIGNED, check.reason)
        if check.verdict is not SigVerdict.SATISFIED:
            return self._reject(event, check.reason)
        if signing.toad or p.wigs or p.couples:  # keep only receipts that verify
            good = verify_witnesses(event.raw, signing, p.wigs, p.couples, self._verify)
            p.couples, p.wigs = list(good.items()), []
            if len(good) < signing.toad and self._witness not in signing.witnesses:
                reason = f"{len(good)} of {signing.toad} witness receipts"
                return self._escrow(p, Waiting.PARTIALLY_WITNESSED, reason)
        if delegator and not self._anchored(event, delegator):
            return self._escrow(p, Waiting.DELEGATION, f"delegator {delegator} has not anchored it")
        return True

    def _anchored(self, event: Event, delegator: str) -> bool:
        """True when the delegator's KEL, as it stands now, anchors a seal of `event`."""
        where = self._anchors.get((event.prefix, f"{event.sn:x}", event.said))
        if where is None or where[0] != delegator:
            return False
        dkel = self._kels.get(delegator)
        anchoring = dkel.at(where[1]) if dkel is not None else None
        return anchoring is not None and anchoring.event.said == where[2]

    def _duplicate(self, record: Record, p: Pending) -> bool:
        good = verify_witnesses(record.event.raw, record.authority, p.wigs, p.couples, self._verify)
        record.receipts.update(good)
        kel = self._kels[record.event.prefix]
        if kel.at(record.event.sn) is not record:
            self._emit(p.event, Status.SUPERSEDED, "already superseded by a recovery rotation")
        else:
            self._emit(p.event, Status.KNOWN, "already accepted")
        return False

    def _conflict(self, kel: Kel, p: Pending) -> bool:
        event = p.event
        existing = kel.at(event.sn)
        if existing is None:  # an inception for a prefix whose KEL exists: sn 0 is taken
            existing = kel.chain[0]
        kinds = {event.ilk, existing.event.ilk}
        if Ilk.IXN in kinds and kinds & ROTATION:
            return self._reject(event, "stale: a rotation at this sequence number supersedes it")
        prior = kel.authority_before(event.sn)
        if event.ilk in INCEPTION:
            signing, prior_auth = authority_of(event, ()), None
        elif event.establishment:
            signing, prior_auth = authority_of(event, ()), prior
        else:
            signing, prior_auth = prior, None
        check = verify_controller(event, p.sigs, signing, prior_auth, self._verify)
        if check.verdict is not SigVerdict.SATISFIED:
            reason = f"conflicts with the accepted event at sn {event.sn:x}; {check.reason}"
            return self._reject(event, reason)
        evidence = self._evidence(
            kel,
            event.sn,
            _replay_message(existing, controller_only=True),
            messagize(event, Attachments(sigs=check.verified)),
        )
        reason = f"conflicts with accepted {existing.event.ilk} {existing.event.said}"
        self._out.append(_outcome(event, Status.DUPLICITOUS, reason, evidence=evidence))
        return False

    # ------------------------------------------------------------------ bookkeeping

    def _record(self, p: Pending, authority: Authority) -> Record:
        return Record(p.event, tuple(p.sigs), authority, dict(p.couples), tuple(p.sources))

    def _accepted(self, record: Record) -> None:
        event = record.event
        self._seen[event.said] = record
        anchors = event.anchors
        if anchors:
            for item in anchors:
                seal = _seal_key(item)
                if seal is not None:
                    self._anchors[seal] = (event.prefix, event.sn, event.said)
        fields = (_ACCEPTED, event.prefix, event.sn, event.said, event.ilk, "", None, None)
        self._out.append(new_tuple(Outcome, fields))  # Outcome(...), see cesr.new_tuple
        if self._escrowed:  # never on the fast lane, which needs empty escrows
            self._rivals_in_escrow(event, record.sigs, accepted=True)

    def _settle(self, prefix: str) -> None:
        """Re-examine escrows that an acceptance for `prefix` may have unblocked."""
        todo = [prefix]
        while todo:
            pre = todo.pop()
            for waiting in (Waiting.OUT_OF_ORDER, Waiting.DELEGATION):
                escrow = self._escrows[waiting]
                for pending in escrow.group(pre):
                    escrow.pop(pending.event.said)
                    if self._judge_quietly(pending):
                        todo.append(pending.event.prefix)

    def _judge_quietly(self, pending: Pending) -> bool:
        # An entry moving from one escrow to another is not news; report the rest.
        mark = len(self._out)
        accepted = self._judge(pending)
        moved = self._out[mark:]
        self._out[mark:] = [o for o in moved if o.status is not Status.ESCROWED]
        return accepted

    def _escrow(self, p: Pending, waiting: Waiting, reason: str) -> bool:
        event = p.event
        if waiting is Waiting.DELEGATION:
            group = event.delegator or self._kels[event.prefix].delegator
        else:
            group = event.prefix
        limit = self._limits.max_event_bytes
        if len(event.raw) > limit:
            return self._reject(event, _too_big(event, limit))
        gone = False
        for dropped, why in self._escrows[waiting].put(p, group):
            self._emit(dropped.event, Status.REJECTED, f"{why}; dropped oldest")
            gone = gone or dropped is p
        if gone:
            return False
        self._emit(event, Status.ESCROWED, reason, waiting)
        if waiting is Waiting.PARTIALLY_WITNESSED:
            self._rivals_in_escrow(p.event, tuple(p.sigs), accepted=False)
        return False

    def _rivals_in_escrow(
        self, event: Event, sigs: tuple[IndexedSig, ...], *, accepted: bool
    ) -> None:
        """Two fully signed versions at one sequence number are duplicity even while one of
        them waits for receipts: a controller that splits its witnesses may never get either
        fully witnessed (called as `event` enters that escrow), or shows one version to a few
        witnesses and another to enough of them (called as `event` is accepted). The outcome
        names the version that is not (yet) in the KEL."""
        kel = self._kels.get(event.prefix)
        if kel is None:
            return
        for other in self._escrows[Waiting.PARTIALLY_WITNESSED].group(event.prefix):
            rival = other.event
            kinds = {rival.ilk, event.ilk}
            if rival.sn != event.sn or rival.said == event.said:
                continue
            if Ilk.IXN in kinds and kinds & ROTATION:
                continue  # a recovery and what it replaces
            pair = (event.prefix, event.sn, frozenset((rival.said, event.said)))
            if pair in self._rivals:
                continue
            self._rivals[pair] = None
            if len(self._rivals) > self._limits.max_entries:
                self._rivals.popitem(last=False)
            rival_message = messagize(rival, Attachments(sigs=tuple(other.sigs)))
            message = messagize(event, Attachments(sigs=sigs))
            if accepted:
                evidence = self._evidence(kel, event.sn, message, rival_message)
                reason = f"conflicts with accepted {event.ilk} {event.said}"
                self._out.append(_outcome(rival, Status.DUPLICITOUS, reason, evidence=evidence))
            else:
                evidence = self._evidence(kel, event.sn, rival_message, message)
                reason = (
                    f"a second signed version of sn {event.sn:x}; {rival.said} also awaits receipts"
                )
                self._out.append(_outcome(event, Status.DUPLICITOUS, reason, evidence=evidence))

    def _evidence(self, kel: Kel, sn: int, first: bytes, second: bytes) -> DuplicityEvidence:
        """Evidence that `kel`'s controller signed both messages at `sn`, with the
        establishment events that put its keys in force (carried by the outcome)."""
        establishment = tuple(
            _replay_message(self._seen[a.said], controller_only=True)
            for a in kel.authorities
            if a.sn < sn
        )
        return DuplicityEvidence(kel.prefix, sn, establishment, first, second)

    def _reject(self, event: Event, reason: str) -> bool:
        self._emit(event, Status.REJECTED, reason)
        return False

    def _emit(
        self, event: Event, status: Status, reason: str = "", waiting: Waiting | None = None
    ) -> None:
        self._out.append(_outcome(event, status, reason, waiting))


def _outcome(
    event: Event,
    status: Status,
    reason: str = "",
    waiting: Waiting | None = None,
    evidence: DuplicityEvidence | None = None,
) -> Outcome:
    return Outcome(
        status, event.prefix, event.sn, event.said, event.ilk.value, reason, waiting, evidence
    )


def held_bytes(record: Record) -> int:
    """Roughly the bytes one accepted event holds in memory: its raw body, its decoded body
    (an interaction keeps only its anchors decoded), its signatures and receipts, and a flat
    charge for the objects that hold it, as `escrow.Pending` charges an escrowed event."""
    event = record.event
    body = decoded_size(event.anchors if event.ilk is _IXN else event.ked)
    return (
        len(event.raw)
        + body
        + ENTRY_OVERHEAD
        + SIG_BYTES * len(record.sigs)
        + COUPLE_BYTES * len(record.receipts)
        + SOURCE_BYTES * len(record.sources)
    )


def _too_big(event: Event, limit: int) -> str:
    return f"{len(event.raw)}-byte event is not escrowed: over the {limit}-byte limit"


def _check_authority(authority: Authority) -> None:
    authority.kt.check_size(len(authority.keys), "signing")
    authority.nt.check_size(len(authority.next_digests), "next")
    if not authority.kt.weighted and authority.kt.number < 1:
        raise EventError("signing threshold kt must be at least 1")
    count = len(authority.witnesses)
    if count and not 1 <= authority.toad <= count:
        raise EventError(f"witness threshold bt must be between 1 and {count}")
    if not count and authority.toad:
        raise EventError("witness threshold bt must be 0 without witnesses")


def _seal_key(item: Any) -> tuple[str, str, str] | None:
    if isinstance(item, dict) and len(item) == 3:
        i, s, d = item.get("i"), item.get("s"), item.get("d")
        if isinstance(i, str) and isinstance(s, str) and isinstance(d, str):
            return (i, s, d)
    return None


def _replay_message(record: Record, controller_only: bool = False) -> bytes:
    if controller_only:
        return messagize(record.event, Attachments(sigs=record.sigs))
    witnesses = record.authority.witnesses
    wigs = tuple(IndexedSig(witnesses.index(w), None, sig) for w, sig in record.receipts.items())
    return messagize(record.event, Attachments(sigs=record.sigs, wigs=wigs, sources=record.sources))

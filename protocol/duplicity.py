"""Duplicity evidence: two validly signed, conflicting events of one identifier at one sn.

The evidence carries everything needed to check it from the bytes alone: the identifier's
establishment events from inception up to the one in force before the contested sequence
number (each with its controller signatures), and the two conflicting messages with theirs.
Because a self-addressing prefix is the digest of its inception, and every rotation must be
signed by keys that the previous establishment event committed to, only the identifier's
controller can have produced that chain and the two signatures. Witness receipts are not
needed: the controller's signatures alone prove it signed two histories.

A rotation at a sequence number above the last establishment event may legitimately supersede
an interaction (recovery), so an interaction/rotation pair is never evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cbor2

from . import crypto
from .cbormap import cbor_map
from .errors import EvidenceError, ParseError, ProtocolError
from .events import INCEPTION, ROTATION, Ilk
from .keystate import Authority, authority_of
from .signing import SigVerdict, Verifier, verify_controller
from .stream import Message, parse_stream

EVIDENCE_TYPE = "dkms/duplicity/1"


@dataclass(frozen=True, slots=True)
class DuplicityEvidence:
    """Self-contained proof that `prefix` signed two different events at `sn`."""

    prefix: str
    sn: int
    establishment: tuple[bytes, ...]  # messages: inception .. authority in force before sn
    first: bytes  # message (body + controller signatures) first accepted
    second: bytes  # the conflicting message

    def to_cbor(self) -> bytes:
        out: bytes = cbor2.dumps(
            {
                "t": EVIDENCE_TYPE,
                "i": self.prefix,
                "s": self.sn,
                "e": list(self.establishment),
                "a": self.first,
                "b": self.second,
            }
        )
        return out

    @classmethod
    def from_cbor(cls, data: bytes) -> DuplicityEvidence:
        obj = cbor_map(data, "evidence")
        if obj.get("t") != EVIDENCE_TYPE:
            raise ParseError(f"not a {EVIDENCE_TYPE} evidence object")
        prefix, sn, est = obj.get("i"), obj.get("s"), obj.get("e")
        first, second = obj.get("a"), obj.get("b")
        if not (
            isinstance(prefix, str)
            and isinstance(sn, int)
            and sn >= 0
            and isinstance(est, list)
            and all(isinstance(m, bytes) for m in est)
            and isinstance(first, bytes)
            and isinstance(second, bytes)
        ):
            raise ParseError("evidence fields i, s, e, a, b are missing or of the wrong type")
        return cls(prefix, sn, tuple(est), first, second)

    def verify(self, verify: Verifier = crypto.verify) -> tuple[Message, Message]:
        """Check the evidence; return the two conflicting messages or raise `EvidenceError`."""
        try:
            authority = _establishment_chain(self.prefix, self.sn, self.establishment, verify)
            first = _one_message(self.first, "first event")
            second = _one_message(self.second, "second event")
        except EvidenceError:
            raise
        except ProtocolError as err:
            raise EvidenceError(f"evidence bytes are malformed: {err}") from None
        a, b = first.event, second.event
        for event in (a, b):
            if event.prefix != self.prefix or event.sn != self.sn:
                raise EvidenceError(f"event {event.said} is not at {self.prefix} sn {self.sn}")
        if a.said == b.said:
            raise EvidenceError("the two events are the same event")
        if {a.ilk, b.ilk} & {Ilk.IXN} and {a.ilk, b.ilk} & ROTATION:
            raise EvidenceError(
                "a rotation superseding an interaction is a recovery, not duplicity"
            )
        for message in (first, second):
            _check_signed(message, authority, verify)
        return first, second

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly description (SAIDs and ilks of both events)."""
        try:
            a = _one_message(self.first, "first").event
            b = _one_message(self.second, "second").event
            events = [{"d": a.said, "t": a.ilk.value}, {"d": b.said, "t": b.ilk.value}]
        except ProtocolError:
            events = []
        return {"i": self.prefix, "s": self.sn, "events": events}


def _one_message(data: bytes, what: str) -> Message:
    frames = parse_stream(data)
    if len(frames) != 1 or not isinstance(frames[0], Message):
        raise EvidenceError(f"{what} must be exactly one valid message")
    return frames[0]


def _establishment_chain(
    prefix: str, sn: int, messages: tuple[bytes, ...], verify: Verifier
) -> Authority | None:
    """Replay establishment events; return the authority in force before `sn`."""
    authority: Authority | None = None
    last_sn = -1
    for data in messages:
        message = _one_message(data, "establishment event")
        event = message.event
        if event.prefix != prefix or not event.establishment:
            raise EvidenceError("establishment list holds a foreign or non-establishment event")
        if event.sn <= last_sn or event.sn >= sn:
            raise EvidenceError("establishment events must ascend and precede the contested sn")
        if (authority is None) != (event.ilk in INCEPTION):
            raise EvidenceError("establishment list must start with the inception, and only once")
        signing = authority_of(event, ())
        check = verify_controller(event, message.attachments.sigs, signing, authority, verify)
        if check.verdict is not SigVerdict.SATISFIED:
            raise EvidenceError(f"establishment event at sn {event.sn}: {check.reason}")
        authority, last_sn = signing, event.sn
    if authority is None and sn > 0:
        raise EvidenceError("evidence lacks the identifier's inception")
    return authority


def _check_signed(message: Message, authority: Authority | None, verify: Verifier) -> None:
    event = message.event
    if event.establishment:
        signing, prior = authority_of(event, ()), authority
        if event.ilk in INCEPTION:
            prior = None
    elif authority is None:
        raise EvidenceError("an interaction needs the establishment events before it")
    else:
        signing, prior = authority, None
    check = verify_controller(event, message.attachments.sigs, signing, prior, verify)
    if check.verdict is not SigVerdict.SATISFIED:
        raise EvidenceError(f"event {event.said} is not validly signed: {check.reason}")

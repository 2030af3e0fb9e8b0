"""Witness duplicity evidence: one witness receipted two versions of one event.

A witness must keep the first version it sees at each sequence number and receipt no other.
Its receipt is an Ed25519 signature by the key its `B` prefix names, over the receipted event's
bytes, so two of its signatures over two different event bodies at one (prefix, sn) prove,
from the bytes alone, that it broke that rule. The bodies prove themselves (their SAIDs), and
no key state is needed: the witness prefix is its key.

A rotation at the sequence number of an interaction may legitimately replace it (recovery),
and a witness may receipt both; an interaction/rotation pair is therefore not evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cbor2

from . import cesr, crypto
from .cbormap import cbor_map
from .cesr import Codes
from .errors import EvidenceError, ParseError, ProtocolError
from .events import ROTATION, Event, Ilk, parse_event
from .signing import Verifier

EVIDENCE_TYPE = "dkms/witness-duplicity/1"


@dataclass(frozen=True, slots=True)
class WitnessDuplicity:
    """`witness` signed receipts of two different event bodies at (prefix, sn)."""

    witness: str  # the witness's non-transferable prefix (B...), which is its key
    first: bytes  # event body
    first_signature: bytes  # the witness's raw Ed25519 signature over `first`
    second: bytes
    second_signature: bytes

    def to_cbor(self) -> bytes:
        out: bytes = cbor2.dumps(
            {
                "t": EVIDENCE_TYPE,
                "w": self.witness,
                "a": self.first,
                "as": self.first_signature,
                "b": self.second,
                "bs": self.second_signature,
            }
        )
        return out

    @classmethod
    def from_cbor(cls, data: bytes) -> WitnessDuplicity:
        obj = cbor_map(data, "evidence")
        if obj.get("t") != EVIDENCE_TYPE:
            raise ParseError(f"not a {EVIDENCE_TYPE} evidence object")
        witness, first, first_sig = obj.get("w"), obj.get("a"), obj.get("as")
        second, second_sig = obj.get("b"), obj.get("bs")
        if not (
            isinstance(witness, str)
            and isinstance(first, bytes)
            and isinstance(first_sig, bytes)
            and isinstance(second, bytes)
            and isinstance(second_sig, bytes)
        ):
            raise ParseError("evidence fields w, a, as, b, bs are missing or of the wrong type")
        return cls(witness, first, first_sig, second, second_sig)

    def verify(self, verify: Verifier = crypto.verify) -> tuple[Event, Event]:
        """Check the evidence; return the two receipted events or raise `EvidenceError`."""
        try:
            key = cesr.decode(self.witness, expect=Codes.ED25519N)[1]
            first, second = parse_event(self.first), parse_event(self.second)
        except ProtocolError as err:
            raise EvidenceError(f"evidence bytes are malformed: {err}") from None
        if Ilk.RCT in (first.ilk, second.ilk):
            raise EvidenceError("receipts receipt events, not other receipts")
        if first.prefix != second.prefix or first.sn != second.sn:
            raise EvidenceError("the two events are not at one identifier and sequence number")
        if first.said == second.said:
            raise EvidenceError("the two events are the same event")
        ilks = {first.ilk, second.ilk}
        if Ilk.IXN in ilks and ilks & ROTATION:
            raise EvidenceError(
                "a rotation replacing an interaction is a recovery: both may be receipted"
            )
        for event, signature in ((first, self.first_signature), (second, self.second_signature)):
            if not verify(key, signature, event.raw):
                raise EvidenceError(f"the witness's receipt of {event.said} does not verify")
        return first, second

    def summary(self) -> dict[str, Any]:
        try:
            first, second = parse_event(self.first), parse_event(self.second)
        except ProtocolError:
            return {"w": self.witness, "events": []}
        return {
            "w": self.witness,
            "i": first.prefix,
            "s": first.sn,
            "events": [
                {"d": first.said, "t": first.ilk.value},
                {"d": second.said, "t": second.ilk.value},
            ],
        }

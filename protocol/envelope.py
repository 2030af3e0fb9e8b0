"""Signed envelopes: a CBOR body signed by one node's non-transferable key.

Jurors publish evidence and judges publish rulings inside an envelope, so anyone can tell
from the bytes alone who vouches for them; whether that signer may vouch (is on the
governance roster) is the reader's question, not the envelope's. The signature covers a
domain tag and the body, so an envelope signature can never pass for a KERI receipt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import cbor2

from . import cesr, crypto
from .cbormap import cbor_map
from .cesr import Codes
from .crypto import Signer
from .errors import EvidenceError, LocalProtocolError, ParseError, ProtocolError
from .signing import Verifier

ENVELOPE_TYPE: Final = "dkms/signed/1"
_DOMAIN: Final = b"dkms/signed/1\x00"
MAX_BODY: Final = 1 << 20  # an envelope body larger than this is refused unread


@dataclass(frozen=True, slots=True)
class Signed:
    """`body` signed by the node whose non-transferable prefix (`B...`) is `signer`."""

    signer: str
    body: bytes
    signature: bytes

    @classmethod
    def make(cls, signer: Signer, body: bytes) -> Signed:
        if signer.transferable:
            raise LocalProtocolError("envelopes are signed with a node's non-transferable key")
        return cls(signer.verfer, body, signer.sign_raw(_DOMAIN + body))

    @property
    def kind(self) -> str:
        """The body's type tag (its `t` field), or "" when it has none."""
        try:
            obj = cbor2.loads(self.body)
        except Exception:  # cbor2 raises many types on hostile input
            return ""
        tag = obj.get("t") if isinstance(obj, dict) else None
        return tag if isinstance(tag, str) else ""

    def to_cbor(self) -> bytes:
        out: bytes = cbor2.dumps(
            {"t": ENVELOPE_TYPE, "s": self.signer, "b": self.body, "g": self.signature}
        )
        return out

    @classmethod
    def from_cbor(cls, data: bytes) -> Signed:
        if len(data) > MAX_BODY + 1024:
            raise ParseError(f"envelope of {len(data)} bytes is over the {MAX_BODY} limit")
        obj = cbor_map(data, "envelope")
        if obj.get("t") != ENVELOPE_TYPE:
            raise ParseError(f"not a {ENVELOPE_TYPE} envelope")
        signer, body, signature = obj.get("s"), obj.get("b"), obj.get("g")
        if not (
            isinstance(signer, str) and isinstance(body, bytes) and isinstance(signature, bytes)
        ):
            raise ParseError("envelope fields s, b, g are missing or of the wrong type")
        return cls(signer, body, signature)

    def verify(self, verify: Verifier = crypto.verify) -> None:
        """Raise `EvidenceError` unless `signer`'s key signed the body."""
        try:
            key = cesr.decode(self.signer, expect=Codes.ED25519N)[1]
        except ProtocolError:
            raise EvidenceError(f"signer {self.signer!r} is not a node prefix (B...)") from None
        if not verify(key, self.signature, _DOMAIN + self.body):
            raise EvidenceError(f"the signature of {self.signer} does not verify")

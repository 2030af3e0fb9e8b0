"""Judges' rulings: "the accused was duplicitous from sn N", carrying the evidence it rests on.

A ruling embeds the evidence, so it can be checked offline like the evidence itself; a judge
signs it in an envelope (`envelope.Signed`), and readers accept it only from judges on the
current governance roster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import cbor2

from . import crypto
from .cbormap import cbor_map
from .errors import EvidenceError, ParseError
from .evidence import Accusation, parse_evidence, verify_evidence
from .signing import Verifier

RULING_TYPE: Final = "dkms/ruling/1"


@dataclass(frozen=True, slots=True)
class Ruling:
    """The judge's finding `accusation`, grounded in `evidence` (its CBOR bytes)."""

    accusation: Accusation
    evidence: bytes

    def to_cbor(self) -> bytes:
        a = self.accusation
        out: bytes = cbor2.dumps(
            {
                "t": RULING_TYPE,
                "k": a.kind,
                "a": a.accused,
                "i": a.prefix,
                "s": a.sn,
                "x": self.evidence,
            }
        )
        return out

    @classmethod
    def from_cbor(cls, data: bytes) -> Ruling:
        obj = cbor_map(data, "ruling")
        if obj.get("t") != RULING_TYPE:
            raise ParseError(f"not a {RULING_TYPE} ruling")
        kind, accused, prefix = obj.get("k"), obj.get("a"), obj.get("i")
        sn, evidence = obj.get("s"), obj.get("x")
        if not (
            kind in ("controller", "witness")
            and isinstance(accused, str)
            and isinstance(prefix, str)
            and isinstance(sn, int)
            and sn >= 0
            and isinstance(evidence, bytes)
        ):
            raise ParseError("ruling fields k, a, i, s, x are missing or of the wrong type")
        return cls(Accusation(str(kind), accused, prefix, sn, ("", "")), evidence)

    @classmethod
    def on(cls, evidence: bytes, verify: Verifier = crypto.verify) -> Ruling:
        """Rule on `evidence` (CBOR): verify it and find what it proves."""
        return cls(verify_evidence(parse_evidence(evidence), verify), evidence)

    def verify(self, verify: Verifier = crypto.verify) -> Accusation:
        """Check that the embedded evidence proves exactly what the ruling says."""
        proven = verify_evidence(parse_evidence(self.evidence), verify)
        claimed = self.accusation
        if proven[:4] != claimed[:4]:
            raise EvidenceError(
                f"the ruling accuses {claimed.accused} at sn {claimed.sn}, but its evidence "
                f"proves {proven.kind} duplicity of {proven.accused} at sn {proven.sn}"
            )
        return proven

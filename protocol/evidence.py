"""Any piece of duplicity evidence, and what it accuses: read, verify and explain.

Two kinds exist, each verifiable offline from its bytes alone:

    DuplicityEvidence   a controller signed two conflicting events at one (prefix, sn)
    WitnessDuplicity    a witness receipted two different versions of one event

`Accusation` names who is accused from which sequence number, so watchers can answer
"can this identifier be trusted" without re-reading the evidence.
"""

from __future__ import annotations

from typing import NamedTuple

from . import crypto
from .cbormap import cbor_map
from .duplicity import EVIDENCE_TYPE as CONTROLLER_TYPE
from .duplicity import DuplicityEvidence
from .errors import ParseError
from .signing import Verifier
from .witness_duplicity import EVIDENCE_TYPE as WITNESS_TYPE
from .witness_duplicity import WitnessDuplicity

Evidence = DuplicityEvidence | WitnessDuplicity


class Accusation(NamedTuple):
    """`accused` (an identifier or a witness) was duplicitous about `prefix` at `sn`."""

    kind: str  # "controller" or "witness"
    accused: str
    prefix: str
    sn: int
    saids: tuple[str, str]


def parse_evidence(data: bytes) -> Evidence:
    """Read either kind of evidence from CBOR, or raise `ParseError` saying why not."""
    tag = cbor_map(data, "evidence").get("t")
    if tag == CONTROLLER_TYPE:
        return DuplicityEvidence.from_cbor(data)
    if tag == WITNESS_TYPE:
        return WitnessDuplicity.from_cbor(data)
    raise ParseError(f"unknown evidence type {tag!r}: expected {CONTROLLER_TYPE} or {WITNESS_TYPE}")


def verify_evidence(evidence: Evidence, verify: Verifier = crypto.verify) -> Accusation:
    """Verify the evidence (raising `EvidenceError`) and return what it proves."""
    if isinstance(evidence, DuplicityEvidence):
        first, second = evidence.verify(verify)
        return Accusation(
            "controller",
            evidence.prefix,
            evidence.prefix,
            evidence.sn,
            (first.event.said, second.event.said),
        )
    a, b = evidence.verify(verify)
    return Accusation("witness", evidence.witness, a.prefix, a.sn, (a.said, b.said))


def explain(accusation: Accusation) -> str:
    """The accusation in plain words."""
    first, second = accusation.saids
    if accusation.kind == "controller":
        return (
            f"the controller of {accusation.prefix} signed two different events at sequence "
            f"number {accusation.sn}: {first} and {second}; both signatures verify against "
            "the keys its own key event log put in force, so only its controller (or a thief "
            "of its keys) could have made them"
        )
    return (
        f"witness {accusation.accused} receipted two different versions of event "
        f"{accusation.sn} of {accusation.prefix}: {first} and {second}; a witness must "
        "receipt only the first version it sees"
    )

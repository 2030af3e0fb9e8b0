"""Signed envelopes, governance rosters, evidence dispatch and rulings: round trips, what
verifies, what does not, and hostile bytes (only the library's own errors come out)."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dkms.node.testing.keys import seed
from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.duplicity import DuplicityEvidence
from dkms.protocol.envelope import Signed
from dkms.protocol.errors import (
    EvidenceError,
    LocalProtocolError,
    ProtocolError,
    RosterError,
)
from dkms.protocol.events import incept, interact, rotate
from dkms.protocol.evidence import explain, parse_evidence, verify_evidence
from dkms.protocol.kel import Kel
from dkms.protocol.roster import Roster, SignedRoster
from dkms.protocol.ruling import Ruling
from dkms.protocol.stream import Attachments, Message, messagize, parse_stream
from dkms.protocol.validator import Validator
from dkms.protocol.witness_duplicity import WitnessDuplicity

NODE = Signer(seed(9), transferable=False)
GOV_KEYS = [Signer(seed(1)), Signer(seed(2))]
GOV_NEXT = [Signer(seed(3)), Signer(seed(4))]


def signed(event_raw_signers: tuple[object, list[Signer]]) -> bytes:
    event, signers = event_raw_signers
    assert hasattr(event, "raw")
    sigs = tuple(s.sign_indexed(event.raw, i) for i, s in enumerate(signers))  # type: ignore[attr-defined]
    return messagize(event, Attachments(sigs=sigs))  # type: ignore[arg-type]


def governance_kel(rotated: bool = False) -> tuple[Validator, str]:
    icp = incept(
        [k.verfer for k in GOV_KEYS],
        next_digests=[next_key_digest(k.verfer) for k in GOV_NEXT],
        kt=2,
        nt=2,
    )
    validator = Validator()
    stream = signed((icp, GOV_KEYS))
    if rotated:
        rot = rotate(
            icp.prefix,
            [k.verfer for k in GOV_NEXT],
            prior=icp.said,
            sn=1,
            next_digests=[next_key_digest(Signer(seed(5)).verfer)],
            kt=2,
        )
        stream += signed((rot, GOV_NEXT))
    for frame in parse_stream(stream):
        assert isinstance(frame, Message)
        validator.process(frame, 0.0)
    return validator, icp.prefix


def kel_of(validator: Validator, prefix: str) -> Kel:
    kel = validator.kel(prefix)
    assert kel is not None
    return kel


def controller_evidence() -> bytes:
    key, nxt = Signer(seed(20)), Signer(seed(21))
    icp = incept([key.verfer], next_digests=[next_key_digest(nxt.verfer)])
    a = interact(icp.prefix, prior=icp.said, sn=1, anchors=[{"d": "a"}])
    b = interact(icp.prefix, prior=icp.said, sn=1, anchors=[{"d": "b"}])
    validator = Validator()
    evidence: list[DuplicityEvidence] = []
    for frame in parse_stream(signed((icp, [key])) + signed((a, [key])) + signed((b, [key]))):
        assert isinstance(frame, Message)
        evidence += [o.evidence for o in validator.process(frame, 0.0) if o.evidence]
    assert len(evidence) == 1
    return evidence[0].to_cbor()


# ---------------------------------------------------------------- envelopes


def test_envelope_round_trip_and_verify() -> None:
    envelope = Signed.make(NODE, cbor2.dumps({"t": "x"}))
    again = Signed.from_cbor(envelope.to_cbor())
    assert again == envelope
    again.verify()
    assert again.kind == "x"


def test_envelope_with_a_changed_body_or_signer_fails() -> None:
    envelope = Signed.make(NODE, b"body")
    with pytest.raises(EvidenceError, match="does not verify"):
        Signed(envelope.signer, b"bodY", envelope.signature).verify()
    other = Signer(seed(10), transferable=False).verfer
    with pytest.raises(EvidenceError, match="does not verify"):
        Signed(other, envelope.body, envelope.signature).verify()
    with pytest.raises(EvidenceError, match="not a node prefix"):
        Signed("Dnot-a-node", envelope.body, envelope.signature).verify()


def test_envelopes_are_signed_by_node_keys_only() -> None:
    with pytest.raises(LocalProtocolError):
        Signed.make(Signer(seed(11)), b"x")


# ---------------------------------------------------------------- rosters


def test_roster_signed_by_current_keys_verifies() -> None:
    validator, gov = governance_kel()
    roster = Roster(gov, 3, watchers=(NODE.verfer,), jurors=(NODE.verfer,))
    sr = SignedRoster.sign(roster, kel_of(validator, gov), GOV_KEYS)
    back = SignedRoster.from_cbor(sr.to_cbor())
    assert back.verify(kel_of(validator, gov)) == roster
    assert roster.roles_of(NODE.verfer) == ("watcher", "juror")


def test_roster_needs_the_signing_threshold() -> None:
    validator, gov = governance_kel()
    sr = SignedRoster.sign(Roster(gov, 1), kel_of(validator, gov), GOV_KEYS)
    half = SignedRoster(sr.roster, sr.body, sr.sn, sr.said, sr.sigs[:1])
    with pytest.raises(RosterError, match="threshold"):
        half.verify(kel_of(validator, gov))


def test_a_rotated_governance_key_can_sign_no_roster() -> None:
    before, gov = governance_kel()
    old = SignedRoster.sign(Roster(gov, 2), kel_of(before, gov), GOV_KEYS)
    after, _ = governance_kel(rotated=True)
    with pytest.raises(RosterError, match="rotated out"):
        old.verify(kel_of(after, gov))
    SignedRoster.sign(Roster(gov, 3), kel_of(after, gov), GOV_NEXT).verify(kel_of(after, gov))


def test_a_roster_for_another_governance_is_refused() -> None:
    validator, gov = governance_kel()
    sr = SignedRoster.sign(Roster(gov, 1), kel_of(validator, gov), GOV_KEYS)
    other, other_prefix = Validator(), None
    key = Signer(seed(30))
    icp = incept([key.verfer], next_digests=[next_key_digest(Signer(seed(31)).verfer)])
    for frame in parse_stream(signed((icp, [key]))):
        assert isinstance(frame, Message)
        other.process(frame, 0.0)
    other_prefix = icp.prefix
    with pytest.raises(RosterError, match="not"):
        sr.verify(kel_of(other, other_prefix))


def test_a_tampered_roster_body_fails() -> None:
    validator, gov = governance_kel()
    sr = SignedRoster.sign(Roster(gov, 1), kel_of(validator, gov), GOV_KEYS)
    forged = Roster(gov, 1, judges=(NODE.verfer,))
    bad = SignedRoster(forged, forged.body(), sr.sn, sr.said, sr.sigs)
    with pytest.raises(RosterError):
        bad.verify(kel_of(validator, gov))


# ---------------------------------------------------------------- evidence and rulings


def test_evidence_dispatch_verify_and_explain() -> None:
    body = controller_evidence()
    accusation = verify_evidence(parse_evidence(body))
    assert accusation.kind == "controller" and accusation.sn == 1
    assert "signed two different events" in explain(accusation)
    witness = Signer(seed(40), transferable=False)
    key = Signer(seed(20))
    icp = incept([key.verfer], next_digests=[next_key_digest(Signer(seed(21)).verfer)])
    a = interact(icp.prefix, prior=icp.said, sn=1, anchors=[{"d": "a"}])
    b = interact(icp.prefix, prior=icp.said, sn=1, anchors=[{"d": "b"}])
    wd = WitnessDuplicity(
        witness.verfer, a.raw, witness.sign_raw(a.raw), b.raw, witness.sign_raw(b.raw)
    )
    accused = verify_evidence(parse_evidence(wd.to_cbor()))
    assert accused.kind == "witness" and accused.accused == witness.verfer
    assert "receipted two different versions" in explain(accused)


def test_ruling_round_trip_and_a_ruling_that_overstates_fails() -> None:
    body = controller_evidence()
    ruling = Ruling.on(body)
    back = Ruling.from_cbor(ruling.to_cbor())
    assert back.verify() == ruling.accusation
    overstated = Ruling(ruling.accusation._replace(sn=0), body)
    with pytest.raises(EvidenceError, match="proves"):
        Ruling.from_cbor(overstated.to_cbor()).verify()


def test_unknown_evidence_type_is_a_parse_error() -> None:
    with pytest.raises(ProtocolError, match="unknown evidence type"):
        parse_evidence(cbor2.dumps({"t": "nope"}))


# ---------------------------------------------------------------- hostile bytes

READERS = [
    Signed.from_cbor,
    SignedRoster.from_cbor,
    Roster.from_body,
    parse_evidence,
    Ruling.from_cbor,
]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_library_errors(data: bytes) -> None:
    for read in READERS:
        with contextlib.suppress(ProtocolError):
            read(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_objects_raise_only_library_errors(data: st.DataObject) -> None:
    validator, gov = governance_kel()
    good = [
        Signed.make(NODE, controller_evidence()).to_cbor(),
        SignedRoster.sign(Roster(gov, 1), kel_of(validator, gov), GOV_KEYS).to_cbor(),
        Ruling.on(controller_evidence()).to_cbor(),
        controller_evidence(),
    ]
    blob = bytearray(data.draw(st.sampled_from(good)))
    at = data.draw(st.integers(0, len(blob) - 1))
    blob[at] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(blob)))
    for candidate in (bytes(blob), bytes(blob[:cut])):
        for read in READERS:
            try:
                obj = read(candidate)
            except ProtocolError:
                continue
            verify = getattr(obj, "verify", None)
            try:
                if isinstance(obj, SignedRoster):
                    obj.verify(kel_of(validator, gov))
                elif verify is not None:
                    verify()
                else:
                    verify_evidence(obj)  # type: ignore[arg-type]
            except ProtocolError:
                pass

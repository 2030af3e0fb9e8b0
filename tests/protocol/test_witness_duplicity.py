"""Witness duplicity evidence: two receipts by one witness of two versions of one event."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.errors import EvidenceError, ProtocolError
from dkms.protocol.events import incept, interact, rotate
from dkms.protocol.witness_duplicity import WitnessDuplicity

KEY, NEXT = Signer(bytes([1]) * 32), Signer(bytes([2]) * 32)
WITNESS = Signer(bytes([9]) * 32, transferable=False)
ICP = incept(
    [KEY.verfer], next_digests=[next_key_digest(NEXT.verfer)], witnesses=[WITNESS.verfer], toad=1
)
IXN_A = interact(ICP.prefix, prior=ICP.said, sn=1, anchors=[{"v": "a"}])
IXN_B = interact(ICP.prefix, prior=ICP.said, sn=1, anchors=[{"v": "b"}])
ROT = rotate(ICP.prefix, [NEXT.verfer], prior=ICP.said, sn=1, witnesses=[WITNESS.verfer], toad=1)


def evidence(
    a: bytes = IXN_A.raw, b: bytes = IXN_B.raw, signer: Signer = WITNESS
) -> WitnessDuplicity:
    return WitnessDuplicity(WITNESS.verfer, a, signer.sign_raw(a), b, signer.sign_raw(b))


def test_two_receipted_versions_prove_witness_duplicity() -> None:
    proof = evidence()
    first, second = WitnessDuplicity.from_cbor(proof.to_cbor()).verify()
    assert {first.said, second.said} == {IXN_A.said, IXN_B.said}
    assert proof.summary()["s"] == 1


def test_a_recovery_rotation_and_the_interaction_it_replaces_are_not_evidence() -> None:
    with pytest.raises(EvidenceError, match="recovery"):
        evidence(IXN_A.raw, ROT.raw).verify()


@pytest.mark.parametrize(
    ("proof", "why"),
    [
        (evidence(IXN_A.raw, IXN_A.raw), "same event"),
        (evidence(ICP.raw, IXN_B.raw), "not at one identifier and sequence number"),
        (evidence(signer=Signer(bytes([8]) * 32, transferable=False)), "does not verify"),
        (WitnessDuplicity(KEY.verfer, IXN_A.raw, b"", IXN_B.raw, b""), "malformed"),
    ],
)
def test_what_is_not_evidence_says_why(proof: WitnessDuplicity, why: str) -> None:
    with pytest.raises(EvidenceError, match=why):
        proof.verify()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_library_errors(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        WitnessDuplicity.from_cbor(data).verify()


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_any_byte_change_of_a_proof_is_caught_or_harmless(at: int, value: int) -> None:
    data = bytearray(evidence().to_cbor())
    at %= len(data)
    if data[at] == value:
        return
    data[at] = value
    try:
        first, second = WitnessDuplicity.from_cbor(bytes(data)).verify()
    except ProtocolError:
        return
    # Still valid only if the change left the two signed bodies as they were.
    assert {first.raw, second.raw} == {IXN_A.raw, IXN_B.raw}

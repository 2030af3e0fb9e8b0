"""A controller that signs two versions of one event and splits its witnesses between them:
neither version gets `bt` receipts, but the two signed versions are duplicity all the same."""

from __future__ import annotations

from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.duplicity import DuplicityEvidence
from dkms.protocol.events import Event, incept, interact, receipt, rotate
from dkms.protocol.outcomes import Status
from dkms.protocol.stream import Attachments, Message, messagize, parse_stream
from dkms.protocol.validator import Validator

KEY, NEXT = Signer(bytes([1]) * 32), Signer(bytes([2]) * 32)
WITNESSES = [Signer(bytes([20 + i]) * 32, transferable=False) for i in range(4)]
PREFIXES = [w.verfer for w in WITNESSES]
INCEPTION = incept(
    [KEY.verfer], next_digests=[next_key_digest(NEXT.verfer)], witnesses=PREFIXES, toad=3
)


def signed(
    event: Event, signer: Signer = KEY, receipted_by: list[Signer] | None = None
) -> list[Message]:
    sigs = (signer.sign_indexed(event.raw, 0),)
    out = parse_stream(messagize(event, Attachments(sigs=sigs)))
    for witness in receipted_by or []:
        rct = receipt(event.prefix, event.sn, event.said)
        couple = ((witness.verfer, witness.sign_raw(event.raw)),)
        out += parse_stream(messagize(rct, Attachments(couples=couple)))
    return [m for m in out if isinstance(m, Message)]


def test_two_signed_versions_each_receipted_by_half_the_witnesses_are_duplicity() -> None:
    icp = INCEPTION
    a = interact(icp.prefix, prior=icp.said, sn=1, anchors=[{"v": "a"}])
    b = interact(icp.prefix, prior=icp.said, sn=1, anchors=[{"v": "b"}])
    validator = Validator()
    outcomes = []
    for message in [
        *signed(icp, receipted_by=WITNESSES),
        *signed(a, receipted_by=WITNESSES[:2]),
        *signed(b, receipted_by=WITNESSES[2:]),
    ]:
        outcomes += validator.process(message, 0.0)
    flagged = [o for o in outcomes if o.status is Status.DUPLICITOUS]
    assert len(flagged) == 1 and flagged[0].said == b.said
    found = next(o.evidence for o in outcomes if o.evidence)
    proof = DuplicityEvidence.from_cbor(found.to_cbor())
    first, second = proof.verify()
    assert {first.event.said, second.event.said} == {a.said, b.said}
    assert validator.state(icp.prefix).sn == 0  # type: ignore[union-attr]


def test_a_recovery_waiting_for_receipts_beside_the_interaction_is_not_duplicity() -> None:
    icp = INCEPTION
    ixn = interact(icp.prefix, prior=icp.said, sn=1)
    rot = rotate(icp.prefix, [NEXT.verfer], prior=icp.said, sn=1, witnesses=PREFIXES, toad=3)
    validator = Validator()
    outcomes = []
    for message in [
        *signed(icp, receipted_by=WITNESSES),
        *signed(ixn, receipted_by=WITNESSES[:1]),
        *signed(rot, NEXT, receipted_by=WITNESSES[:1]),
    ]:
        outcomes += validator.process(message, 0.0)
    assert not [o for o in outcomes if o.status is Status.DUPLICITOUS]
    assert [o.evidence for o in outcomes if o.evidence] == []


def witnessed_in_one(event: Event, witnesses: list[Signer]) -> Message:
    """keripy's form of a witnessed event: its witnesses' indexed signatures attached to it."""
    wigs = tuple(w.sign_indexed(event.raw, WITNESSES.index(w), None) for w in witnesses)
    sigs = (KEY.sign_indexed(event.raw, 0),)
    [message] = parse_stream(messagize(event, Attachments(sigs=sigs, wigs=wigs)))
    assert isinstance(message, Message)
    return message


def test_a_version_accepted_while_another_waits_for_receipts_is_duplicity() -> None:
    # Version a is shown to two witnesses (below bt=3: it waits); version b arrives with three
    # witnesses' signatures on it, so it is accepted at once, beside a.
    icp = INCEPTION
    a = interact(icp.prefix, prior=icp.said, sn=1, anchors=[{"v": "a"}])
    b = interact(icp.prefix, prior=icp.said, sn=1, anchors=[{"v": "b"}])
    validator = Validator()
    outcomes = []
    for message in [
        *signed(icp, receipted_by=WITNESSES),
        *signed(a, receipted_by=WITNESSES[:2]),
        witnessed_in_one(b, WITNESSES[1:]),
    ]:
        outcomes += validator.process(message, 0.0)
    assert validator.state(icp.prefix).said == b.said  # type: ignore[union-attr]
    flagged = [o for o in outcomes if o.status is Status.DUPLICITOUS]
    assert [o.said for o in flagged] == [a.said]  # the version left out, once
    found = next(o.evidence for o in outcomes if o.evidence)
    first, second = DuplicityEvidence.from_cbor(found.to_cbor()).verify()
    assert (first.event.said, second.event.said) == (b.said, a.said)


def test_a_recovery_accepted_while_the_interaction_waits_is_not_duplicity() -> None:
    icp = INCEPTION
    ixn = interact(icp.prefix, prior=icp.said, sn=1)
    rot = rotate(icp.prefix, [NEXT.verfer], prior=icp.said, sn=1, witnesses=PREFIXES, toad=3)
    validator = Validator()
    outcomes = []
    wigs = tuple(w.sign_indexed(rot.raw, i, None) for i, w in enumerate(WITNESSES))
    [recovery] = parse_stream(
        messagize(rot, Attachments(sigs=(NEXT.sign_indexed(rot.raw, 0),), wigs=wigs))
    )
    assert isinstance(recovery, Message)
    for message in [*signed(icp, receipted_by=WITNESSES), *signed(ixn, receipted_by=WITNESSES[:2])]:
        outcomes += validator.process(message, 0.0)
    for message in [recovery]:
        outcomes += validator.process(message, 0.0)
    assert validator.state(icp.prefix).said == rot.said  # type: ignore[union-attr]
    assert not [o for o in outcomes if o.status is Status.DUPLICITOUS]
    assert not [o.evidence for o in outcomes if o.evidence]

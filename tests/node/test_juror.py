"""The juror's receipt detector: evidence from two receipted versions, within its bounds."""

from __future__ import annotations

from dkms.node.roles.juror import MAX_EARLY_EACH, Receipts
from dkms.protocol.crypto import Signer, next_key_digest, verify
from dkms.protocol.events import Event, incept, interact

KEY = Signer(bytes([1]) * 32)
WITNESS = Signer(bytes([5]) * 32, transferable=False)
OTHER = Signer(bytes([6]) * 32, transferable=False)


def versions(count: int) -> tuple[Event, list[Event]]:
    icp = incept([KEY.verfer], next_digests=[next_key_digest(Signer(bytes([2]) * 32).verfer)])
    return icp, [
        interact(icp.prefix, prior=icp.said, sn=1, anchors=[{"d": str(i)}]) for i in range(count)
    ]


def receipt(receipts: Receipts, event: Event, witness: Signer) -> list[object]:
    found = receipts.receipt(
        event.prefix, event.sn, event.said, witness.verfer, witness.sign_raw(event.raw)
    )
    return list(found)


def test_a_witness_receipting_two_versions_is_evidence_and_one_version_is_not() -> None:
    receipts = Receipts(verify)
    _, (a, b) = versions(2)
    receipts.body(a)
    receipts.body(b)
    assert receipt(receipts, a, WITNESS) == []
    assert receipt(receipts, a, WITNESS) == []  # the same version again
    assert receipt(receipts, a, OTHER) == []
    [evidence] = receipt(receipts, b, WITNESS)
    assert evidence.witness == WITNESS.verfer  # type: ignore[attr-defined]


def test_a_receipt_waits_for_the_version_it_signs() -> None:
    receipts = Receipts(verify)
    _, (a, b) = versions(2)
    receipts.body(a)
    assert receipt(receipts, a, WITNESS) == []
    assert receipt(receipts, b, WITNESS) == []  # b's body not seen yet
    assert len(receipts.body(b)) == 1


def test_memory_is_bounded_and_the_oldest_is_forgotten_first() -> None:
    receipts = Receipts(verify, max_bodies=3, max_slots=1)
    icp, (a, b, c) = versions(3)
    for event in (icp, a, b, c):
        receipts.body(event)
    assert list(receipts.bodies) == [a.said, b.said, c.said]  # the inception went first
    assert receipt(receipts, a, WITNESS) == []
    assert receipt(receipts, b, OTHER) == []  # takes the only slot: WITNESS's is forgotten
    assert receipt(receipts, c, WITNESS) == []  # so this is a first receipt again, no evidence
    assert len(receipt(receipts, b, WITNESS)) == 1  # but it remembers c now


def test_versions_kept_are_bounded_in_bytes_too() -> None:
    """A version is charged for its decoded body: 20,000 anchored empty maps are 60 KB on the
    wire and over a megabyte decoded, so two of them do not fit in 2 MiB."""
    icp, _ = versions(0)
    heavy = [
        interact(icp.prefix, prior=icp.said, sn=1, anchors=[{} for _ in range(20_000 + i)])
        for i in range(3)
    ]
    receipts = Receipts(verify, max_body_bytes=2 << 20)
    receipts.body(icp)
    for event in heavy:
        receipts.body(event)
        assert receipts.body_bytes <= 2 << 20
    assert list(receipts.bodies) == [heavy[-1].said]
    receipts.forget([heavy[-1].said, "Enot-kept"])
    assert (list(receipts.bodies), receipts.body_bytes) == ([], 0)


def test_receipts_waiting_for_one_version_are_bounded_per_version() -> None:
    """Formerly a list per version with no bound: one made-up SAID and a signature from
    each of a stream of made-up witnesses grew it without end. Now the first receipt of at
    most MAX_EARLY_EACH witnesses waits, and still becomes evidence once the body comes."""
    receipts = Receipts(verify)
    _, (a, b) = versions(2)
    receipts.body(a)
    assert receipt(receipts, a, WITNESS) == []
    assert receipt(receipts, b, WITNESS) == []  # waits for b's body: the first of WITNESS
    for n in range(MAX_EARLY_EACH * 20):  # b's body not seen: all would wait
        made_up = Signer(n.to_bytes(32, "big"), transferable=False)
        receipts.receipt(b.prefix, b.sn, b.said, made_up.verfer, made_up.sign_raw(b"junk"))
    assert len(receipts._early[b.said]) == MAX_EARLY_EACH
    [evidence] = receipts.body(b)  # WITNESS's receipt was kept, and is evidence
    assert evidence.witness == WITNESS.verfer

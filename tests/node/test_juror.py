"""The juror's detectors: evidence from two receipted versions, lag, within their bounds."""

from __future__ import annotations

import tracemalloc

from dkms.node.roles.juror import (
    EARLY_RECEIPT_BYTES,
    EARLY_VERSION_BYTES,
    MAX_EARLY_EACH,
    MAX_SLOT_BYTES,
    SLOT_BYTES,
    Lag,
    Names,
    Receipts,
    Throttle,
)
from dkms.protocol.crypto import Signer, next_key_digest, verify
from dkms.protocol.events import Event, incept, interact, rotate

KEY = Signer(bytes([1]) * 32)
NEXT = Signer(bytes([2]) * 32)
WITNESS = Signer(bytes([5]) * 32, transferable=False)
OTHER = Signer(bytes([6]) * 32, transferable=False)


def versions(count: int) -> tuple[Event, list[Event]]:
    icp = incept([KEY.verfer], next_digests=[next_key_digest(NEXT.verfer)])
    return icp, [
        interact(icp.prefix, prior=icp.said, sn=1, anchors=[{"d": str(i)}]) for i in range(count)
    ]


def held(kels: dict[str, set[str]]) -> Names:
    """`Receipts`' view of the KELs a node holds: prefix -> the witnesses they ever named."""

    def names(prefix: str, witness: str) -> bool | None:
        named = kels.get(prefix)
        return None if named is None else witness in named

    return names


def naming(*witnesses: Signer) -> Names:
    """The KEL of `versions` held, naming `witnesses`."""
    return held({versions(0)[0].prefix: {w.verfer for w in witnesses}})


def made_up(n: int) -> Signer:
    return Signer((n + 1000).to_bytes(32, "big"), transferable=False)


def receipt(receipts: Receipts, event: Event, witness: Signer) -> list[object]:
    found = receipts.receipt(
        event.prefix, event.sn, event.said, witness.verfer, witness.sign_raw(event.raw)
    )
    return list(found)


def test_a_witness_receipting_two_versions_is_evidence_and_one_version_is_not() -> None:
    receipts = Receipts(verify, names=naming(WITNESS, OTHER))
    _, (a, b) = versions(2)
    receipts.body(a)
    receipts.body(b)
    assert receipt(receipts, a, WITNESS) == []
    assert receipt(receipts, a, WITNESS) == []  # the same version again
    assert receipt(receipts, a, OTHER) == []
    [evidence] = receipt(receipts, b, WITNESS)
    assert evidence.witness == WITNESS.verfer  # type: ignore[attr-defined]


def test_a_receipt_waits_for_the_version_it_signs() -> None:
    receipts = Receipts(verify, names=naming(WITNESS))
    _, (a, b) = versions(2)
    receipts.body(a)
    assert receipt(receipts, a, WITNESS) == []
    assert receipt(receipts, b, WITNESS) == []  # b's body not seen yet
    assert len(receipts.body(b)) == 1


def test_memory_is_bounded_and_the_oldest_is_forgotten_first() -> None:
    receipts = Receipts(verify, names=naming(WITNESS, OTHER), max_bodies=3, max_slots=1)
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
    receipts = Receipts(verify, names=naming(), max_body_bytes=2 << 20)
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
    kels: dict[str, set[str]] = {}  # the KEL not held yet: any key's receipt may wait
    receipts = Receipts(verify, names=held(kels))
    _, (a, b) = versions(2)
    receipts.body(a)
    assert receipt(receipts, a, WITNESS) == []
    assert receipt(receipts, b, WITNESS) == []  # waits for b's body: the first of WITNESS
    for n in range(MAX_EARLY_EACH * 20):  # b's body not seen: all would wait
        key = made_up(n)
        receipts.receipt(b.prefix, b.sn, b.said, key.verfer, key.sign_raw(b"junk"))
    assert len(receipts._early[b.said]) == MAX_EARLY_EACH
    kels[b.prefix] = {WITNESS.verfer}  # its KEL has come, naming WITNESS
    receipts.body(a)  # and a's receipt by WITNESS with it (it was not held)
    assert receipt(receipts, a, WITNESS) == []
    [evidence] = receipts.body(b)  # WITNESS's receipt was kept, and is evidence
    assert evidence.witness == WITNESS.verfer


def test_receipts_by_keys_the_kel_never_named_take_no_slot() -> None:
    """Formerly every valid receipt took a first-receipt slot (some 550 bytes), whoever's
    key signed it: an attacker signing receipts of known events with fresh keys filled the
    table (a million slots). Only a witness of the KEL counts now."""
    receipts = Receipts(verify, names=naming(WITNESS))
    icp, (a, b) = versions(2)
    for event in (icp, a, b):
        receipts.body(event)
    for n in range(50):
        assert receipt(receipts, a, made_up(n)) == []
        assert receipt(receipts, b, made_up(n)) == []  # not evidence: not a witness
    assert receipt(receipts, a, OTHER) == []
    assert len(receipts._first) == 0
    assert receipt(receipts, a, WITNESS) == []
    assert len(receipts._first) == 1
    assert len(receipt(receipts, b, WITNESS)) == 1
    # A KEL not held: an interaction's receipts are not recorded (nothing says who its
    # witnesses are); an inception's are, by the witnesses it designates.
    unheld = Receipts(verify, names=held({}))
    listed = incept(
        [KEY.verfer], next_digests=[next_key_digest(NEXT.verfer)], witnesses=[WITNESS.verfer]
    )
    for event in (listed, a):
        unheld.body(event)
    for witness in (made_up(1), WITNESS):
        assert receipt(unheld, a, witness) == []
        assert receipt(unheld, listed, witness) == []
    assert list(unheld._first) == [(listed.prefix, 0, WITNESS.verfer)]


def test_a_rotation_adding_a_witness_counts_its_receipts_before_it_is_accepted() -> None:
    """The KEL held does not name a witness a rotation adds until the rotation is accepted,
    and that waits for the new witness's receipt: the rotation's own list counts."""
    receipts = Receipts(verify, names=naming(WITNESS))
    icp, _ = versions(0)
    rivals = [
        rotate(
            icp.prefix,
            [NEXT.verfer],
            prior=icp.said,
            sn=1,
            witnesses=[WITNESS.verfer],
            adds=[OTHER.verfer],
            anchors=[{"d": str(i)}],
        )
        for i in range(2)
    ]
    for event in (icp, *rivals):
        receipts.body(event)
    assert receipt(receipts, rivals[0], made_up(1)) == []
    assert receipt(receipts, rivals[0], OTHER) == []
    assert receipt(receipts, rivals[1], made_up(1)) == []
    [evidence] = receipt(receipts, rivals[1], OTHER)
    assert evidence.witness == OTHER.verfer  # type: ignore[attr-defined]


def test_first_receipts_are_bounded_in_bytes_and_the_estimate_is_not_short() -> None:
    witnesses = [made_up(n) for n in range(5)]
    receipts = Receipts(verify, names=naming(*witnesses), max_slot_bytes=3 * SLOT_BYTES)
    icp, (a, b) = versions(2)
    for event in (icp, a, b):
        receipts.body(event)
    for witness in witnesses:
        assert receipt(receipts, a, witness) == []
        assert receipts.slot_bytes <= 3 * SLOT_BYTES
    assert len(receipts._first) == 3
    assert receipt(receipts, b, witnesses[0]) == []  # its slot was the oldest: forgotten
    assert len(receipt(receipts, b, witnesses[-1])) == 1
    # What a slot really takes, with the witness prefix and the signature of each receipt
    # made anew (as parsing a receipt message does): SLOT_BYTES must not fall short, or the
    # default bound would not be what it says.
    assert MAX_SLOT_BYTES <= 32 << 20
    bodies = [interact(icp.prefix, prior=icp.said, sn=300 + i, anchors=[]) for i in range(40)]
    keys = [made_up(n) for n in range(50)]
    signed = [(k.verfer, k.sign_raw(b"any")) for k in keys]
    wide = Receipts(lambda key, sig, raw: True, names=lambda prefix, witness: True)
    for event in bodies:
        wide.body(event)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for event in bodies:
            for key, signature in signed:
                copy = (key.encode() + b"").decode(), bytes(bytearray(signature))
                wide.receipt(event.prefix, event.sn, event.said, *copy)
        taken = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(wide._first) == len(bodies) * len(keys)
    assert taken / len(wide._first) <= SLOT_BYTES, taken / len(wide._first)


def test_receipts_waiting_are_bounded_in_bytes_and_a_held_kel_s_non_witnesses_wait_not() -> None:
    receipts = Receipts(verify, names=naming(WITNESS))
    icp, (a,) = versions(1)
    for n in range(20):  # a's body not seen yet; its KEL is held, and never named these
        assert receipt(receipts, a, made_up(n)) == []
    assert (len(receipts._early), receipts.early_bytes) == (0, 0)
    assert receipt(receipts, a, WITNESS) == []  # a witness's does wait
    assert receipts.early_bytes == EARLY_VERSION_BYTES + EARLY_RECEIPT_BYTES
    receipts.body(icp)
    receipts.body(a)
    assert (len(receipts._early), receipts.early_bytes) == (0, 0)
    assert list(receipts._first) == [(a.prefix, 1, WITNESS.verfer)]
    # Of KELs not held, any key's may wait, within max_early_bytes.
    bound = 10 * (EARLY_VERSION_BYTES + 3 * EARLY_RECEIPT_BYTES)
    unheld = Receipts(verify, names=held({}), max_early_bytes=bound)
    for n in range(100):
        for k in range(3):
            key = made_up(k)
            unheld.receipt(f"Eprefix{n}", 1, f"Esaid{n}", key.verfer, key.sign_raw(b"x"))
            assert unheld.early_bytes <= bound
    assert list(unheld._early) == [f"Esaid{n}" for n in range(90, 100)]


def test_events_waiting_for_their_lag_check_are_bounded_oldest_first() -> None:
    """Formerly every event seen waited `after` seconds, with no bound on how many."""
    lag = Lag(10.0, max_due=3)
    for n in range(5):
        lag.seen("Eprefix", n, f"Esaid{n}", float(n))
    assert len(lag._due) == len(lag._seen) == 3
    lag.seen("Eprefix", 0, "Esaid0", 5.0)  # forgotten: seen anew
    found = lag.due(100.0, lambda said: None)
    assert [a["d"] for a in found] == ["Esaid3", "Esaid4", "Esaid0"]
    assert (len(lag._due), len(lag._seen)) == (0, 0)


def test_a_throttle_logs_the_first_lines_of_a_period_and_counts_the_rest() -> None:
    throttle = Throttle("anomalies", lines=2, every=60.0)
    assert throttle.lines(["a", "b", "c", "d"], 0.0) == ["a", "b"]
    assert throttle.lines(["e"], 30.0) == []
    assert throttle.lines([], 59.0) == []
    assert throttle.lines([], 61.0) == ["anomalies not logged in 60 s: 3"]
    assert throttle.lines(["f", "g", "h"], 62.0) == ["f", "g"]
    assert throttle.lines(["i"], 200.0) == ["anomalies not logged in 60 s: 1", "i"]
    assert throttle.lines([], 300.0) == []

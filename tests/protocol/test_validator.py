"""Validator scenarios built with the builders: escrows, receipts, delegation, recovery,
duplicity, bounds and replay. Every message goes through bytes (see `kel_kit.message`)."""

from __future__ import annotations

import itertools
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kel_kit import (
    VECTOR_FILES,
    Controller,
    feed,
    message,
    receipt,
    sign,
    signer,
    state_json,
    vector_id,
    witness,
)

from dkms.protocol import events
from dkms.protocol.crypto import Signer, digest
from dkms.protocol.duplicity import DuplicityEvidence
from dkms.protocol.escrow import EscrowLimits, Waiting
from dkms.protocol.events import Event, Ilk, Kind
from dkms.protocol.outcomes import Outcome, Status
from dkms.protocol.stream import Message, parse_stream
from dkms.protocol.thresholds import parse_threshold
from dkms.protocol.validator import Validator, held_bytes

kinds = pytest.mark.parametrize("kind", [Kind.CBOR, Kind.JSON])


def status_of(outcomes: list[Outcome], event: Event) -> Status:
    """The last status reported for `event` (a receipt shares its event's SAID, so skip rct)."""
    found = [o.status for o in outcomes if o.said == event.said and o.ilk != Ilk.RCT]
    assert found, f"no outcome for {event}"
    return found[-1]


def evidence_in(outcomes: list[Outcome]) -> list[DuplicityEvidence]:
    """The evidence the outcomes carry (the validator keeps none: it travels with them)."""
    return [o.evidence for o in outcomes if o.evidence is not None]


def waiting(validator: Validator) -> dict[Waiting, list[str]]:
    return {w: [p.event.said for p in ps] for w, ps in validator.escrowed().items() if ps}


def chain(validator: Validator, prefix: str) -> list[str]:
    kel = validator.kel(prefix)
    assert kel is not None
    return [r.event.said for r in kel.chain]


# ------------------------------------------------------------------------ out of order


def ten_event_kel(kind: Kind) -> tuple[Controller, list[Message]]:
    """icp, then ixn/rot in a fixed mix: 10 events, two keys, threshold 2."""
    ctl = Controller(("ten", kind), count=2, kind=kind)
    ctl.incept(kt=2, nt=2)
    for ilk in ["ixn", "ixn", "rot", "ixn", "rot", "ixn", "ixn", "rot", "ixn"]:
        if ilk == "ixn":
            ctl.interact(anchors=[{"n": len(ctl.events)}])
        else:
            ctl.rotate(kt=2, nt=2)
    return ctl, [ctl.signed(e) for e in ctl.events]


TEN = {kind: ten_event_kel(kind) for kind in (Kind.CBOR, Kind.JSON)}
IN_ORDER: dict[Kind, dict[str, Any] | None] = {}
for _kind, (_ctl, _messages) in TEN.items():
    _validator = Validator()
    feed(_validator, _messages)
    IN_ORDER[_kind] = state_json(_validator, _ctl.prefix)
    assert IN_ORDER[_kind] is not None and IN_ORDER[_kind]["sn"] == 9  # type: ignore[index]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from([Kind.CBOR, Kind.JSON]),
    order=st.permutations(range(10)),
    repeats=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 10)), max_size=4),
)
def test_out_of_order_arrival_reaches_the_in_order_state(
    kind: Kind, order: list[int], repeats: list[tuple[int, int]]
) -> None:
    ctl, messages = TEN[kind]
    arrival = [messages[i] for i in order]
    for which, where in repeats:  # duplicates anywhere in the stream change nothing
        arrival.insert(where, messages[which])
    validator = Validator()
    outcomes = feed(validator, arrival)
    assert state_json(validator, ctl.prefix) == IN_ORDER[kind]
    assert chain(validator, ctl.prefix) == [e.said for e in ctl.events]
    assert waiting(validator) == {}
    assert Status.REJECTED not in {o.status for o in outcomes}
    # Each event is accepted exactly once; a duplicate that comes later is only KNOWN.
    accepted = [o.said for o in outcomes if o.status is Status.ACCEPTED and o.ilk != Ilk.RCT]
    assert sorted(accepted) == sorted(e.said for e in ctl.events)
    assert all(status_of(outcomes, e) in (Status.ACCEPTED, Status.KNOWN) for e in ctl.events)


def test_event_before_its_inception_waits_for_it() -> None:
    ctl, messages = TEN[Kind.CBOR]
    validator = Validator()
    [first] = validator.process(messages[1], 0.0)
    assert first.status is Status.ESCROWED
    assert first.waiting is Waiting.OUT_OF_ORDER
    outcomes = validator.process(messages[0], 0.0)
    assert [o.said for o in outcomes] == [ctl.events[0].said, ctl.events[1].said]
    assert {o.status for o in outcomes} == {Status.ACCEPTED}


def test_wrong_prior_digest_is_rejected() -> None:
    ctl = Controller("prior")
    icp = ctl.incept()
    validator = Validator()
    validator.process(ctl.signed(icp), 0.0)
    bad = events.interact(ctl.prefix, prior=digest(b"not the inception"), sn=1)
    outcomes = validator.process(message(bad, sign(bad, ctl.current)), 0.0)
    assert status_of(outcomes, bad) is Status.REJECTED
    assert "prior" in outcomes[0].reason


# ------------------------------------------------------------------------ multisig


def test_partially_signed_multisig_merges_until_the_threshold() -> None:
    ctl = Controller("multisig", count=3)
    icp = ctl.incept(kt=2, nt=2)
    validator = Validator()
    [out] = validator.process(ctl.signed(icp, [0]), 0.0)
    assert (out.status, out.waiting) == (Status.ESCROWED, Waiting.PARTIALLY_SIGNED)
    [out] = validator.process(ctl.signed(icp, [0]), 0.0)  # the same signature counts once
    assert out.status is Status.ESCROWED
    outcomes = validator.process(ctl.signed(icp, [2]), 0.0)
    assert status_of(outcomes, icp) is Status.ACCEPTED
    record = validator.record(icp.said)
    assert record is not None
    assert sorted(s.index for s in record.sigs) == [0, 2]

    ixn = ctl.interact()
    assert status_of(validator.process(ctl.signed(ixn, [1]), 0.0), ixn) is Status.ESCROWED
    assert status_of(validator.process(ctl.signed(ixn, [0]), 0.0), ixn) is Status.ACCEPTED

    rot = ctl.rotate(kt=2, nt=2)
    assert status_of(validator.process(ctl.signed(rot, [1]), 0.0), rot) is Status.ESCROWED
    assert status_of(validator.process(ctl.signed(rot, [2]), 0.0), rot) is Status.ACCEPTED
    assert validator.state(ctl.prefix).keys == tuple(s.verfer for s in ctl.current)  # type: ignore[union-attr]
    assert waiting(validator) == {}


def test_partial_signatures_arriving_out_of_order_merge() -> None:
    ctl = Controller("multisig-ooo", count=2)
    icp = ctl.incept(kt=2, nt=2)
    ixn = ctl.interact()
    validator = Validator()
    feed(validator, [ctl.signed(ixn, [0]), ctl.signed(ixn, [1])])
    assert waiting(validator) == {Waiting.OUT_OF_ORDER: [ixn.said]}
    outcomes = validator.process(ctl.signed(icp), 0.0)
    assert status_of(outcomes, ixn) is Status.ACCEPTED


def test_signature_by_no_current_key_is_rejected() -> None:
    ctl = Controller("nokey", count=2)
    icp = ctl.incept(kt=2)
    validator = Validator()
    bad = message(icp, [signer("x").sign_indexed(icp.raw, 0), signer("y").sign_indexed(icp.raw, 5)])
    assert status_of(validator.process(bad, 0.0), icp) is Status.REJECTED
    assert validator.state(ctl.prefix) is None


# ------------------------------------------------------------------------ witnesses

WITNESSES = [witness(n) for n in range(4)]
WITS = [w.verfer for w in WITNESSES]


@pytest.mark.parametrize("order", list(itertools.permutations(["icp", "w0", "w1"])))
def test_witnessed_inception_with_receipts_before_and_after(order: tuple[str, ...]) -> None:
    ctl = Controller("witnessed")
    icp = ctl.incept(witnesses=WITS[:3], toad=2)
    arrivals = {
        "icp": ctl.signed(icp),
        "w0": receipt(icp, WITNESSES[0]),
        "w1": receipt(icp, WITNESSES[1]),
    }
    validator = Validator()
    outcomes = feed(validator, [arrivals[name] for name in order])
    assert status_of(outcomes, icp) is Status.ACCEPTED
    record = validator.record(icp.said)
    assert record is not None
    assert set(record.receipts) == set(WITS[:2])
    assert waiting(validator) == {}
    # A third receipt after acceptance is stored too; a stranger's is refused.
    [late] = validator.process(receipt(icp, WITNESSES[2]), 0.0)
    assert late.status is Status.ACCEPTED
    assert set(record.receipts) == set(WITS[:3])
    [stranger] = validator.process(receipt(icp, WITNESSES[3]), 0.0)
    assert stranger.status is Status.REJECTED


def test_receipts_must_come_from_distinct_designated_witnesses() -> None:
    ctl = Controller("distinct")
    icp = ctl.incept(witnesses=WITS[:3], toad=2)
    validator = Validator()
    outcomes = feed(
        validator,
        [
            ctl.signed(icp),
            receipt(icp, WITNESSES[0]),
            receipt(icp, WITNESSES[0]),
            receipt(icp, WITNESSES[3]),
        ],
    )
    assert status_of(outcomes, icp) is Status.ESCROWED
    assert waiting(validator) == {Waiting.PARTIALLY_WITNESSED: [icp.said]}
    forged = message(
        events.receipt(icp.prefix, 0, icp.said),
        couples=[(WITS[1], WITNESSES[1].sign_raw(b"something else"))],
    )
    feed(validator, [forged])
    assert validator.state(ctl.prefix) is None
    outcomes = validator.process(receipt(icp, WITNESSES[2]), 0.0)
    assert status_of(outcomes, icp) is Status.ACCEPTED


def test_witness_signatures_attached_to_the_event() -> None:
    ctl = Controller("wigs")
    icp = ctl.incept(witnesses=WITS[:3], toad=3)
    wigs = [w.sign_indexed(icp.raw, i, None) for i, w in enumerate(WITNESSES[:3])]
    validator = Validator()
    outcomes = validator.process(message(icp, sign(icp, ctl.current), wigs=wigs), 0.0)
    assert status_of(outcomes, icp) is Status.ACCEPTED


def test_receipt_naming_another_sn_is_rejected() -> None:
    ctl = Controller("rct-sn")
    icp = ctl.incept(witnesses=WITS[:1], toad=1)
    validator = Validator()
    feed(validator, [ctl.signed(icp), receipt(icp, WITNESSES[0])])
    wrong = message(
        events.receipt(icp.prefix, 1, icp.said), couples=[(WITS[0], WITNESSES[0].sign_raw(icp.raw))]
    )
    [out] = validator.process(wrong, 0.0)
    assert out.status is Status.REJECTED


def test_rotation_cuts_and_adds_witnesses() -> None:
    ctl = Controller("cuts")
    icp = ctl.incept(witnesses=WITS[:3], toad=2)
    validator = Validator()
    feed(validator, [ctl.signed(icp), receipt(icp, WITNESSES[0]), receipt(icp, WITNESSES[1])])
    rot = ctl.rotate(witnesses=WITS[:3], cuts=[WITS[0]], adds=[WITS[3]], toad=2)
    outcomes = feed(validator, [ctl.signed(rot), receipt(rot, WITNESSES[0])])
    assert status_of(outcomes, rot) is Status.ESCROWED  # a cut witness no longer counts
    outcomes = feed(validator, [receipt(rot, WITNESSES[3]), receipt(rot, WITNESSES[1])])
    assert status_of(outcomes, rot) is Status.ACCEPTED
    state = validator.state(ctl.prefix)
    assert state is not None
    assert state.witnesses == (WITS[1], WITS[2], WITS[3])  # survivors first, then additions
    assert state.toad == 2
    # An interaction is witnessed by the new list.
    ixn = ctl.interact()
    outcomes = feed(
        validator, [ctl.signed(ixn), receipt(ixn, WITNESSES[2]), receipt(ixn, WITNESSES[3])]
    )
    assert status_of(outcomes, ixn) is Status.ACCEPTED


@pytest.mark.parametrize(
    "change",
    [
        {"cuts": [WITS[3]]},  # not a witness
        {"cuts": [WITS[0], WITS[0]]},  # twice
        {"adds": [WITS[1]]},  # already a witness
        {"adds": [WITS[3], WITS[3]]},  # twice
        {"cuts": [WITS[0]], "adds": [WITS[0]]},  # cut and added at once
        {"toad": 4},  # more than the witnesses left
        {"toad": 0},  # witnesses, but no threshold
    ],
)
def test_invalid_witness_changes_are_rejected(change: dict[str, Any]) -> None:
    ctl = Controller("badcuts")
    icp = ctl.incept(witnesses=WITS[:3], toad=1)
    validator = Validator()
    feed(validator, [ctl.signed(icp), receipt(icp, WITNESSES[0])])
    rot = ctl.rotate(witnesses=WITS[:3], **{"toad": 1, **change})
    outcomes = feed(validator, [ctl.signed(rot), *(receipt(rot, w) for w in WITNESSES)])
    assert status_of(outcomes, rot) is Status.REJECTED
    assert validator.state(ctl.prefix).sn == 0  # type: ignore[union-attr]


# ------------------------------------------------------------------------ thresholds


@st.composite
def weighted(draw: st.DrawFn) -> list[list[str]]:
    clauses = draw(
        st.lists(
            st.lists(st.sampled_from(["1", "1/2", "1/3", "2/3", "0"]), min_size=1, max_size=3),
            min_size=1,
            max_size=3,
        )
    )
    for clause in clauses:
        if sum(Fraction(w) for w in clause) < 1:
            clause[-1] = "1"
    return clauses


def brute_force(clauses: list[list[str]], signed: set[int]) -> bool:
    at = 0
    for clause in clauses:
        if sum(Fraction(w) for i, w in enumerate(clause) if at + i in signed) < 1:
            return False
        at += len(clause)
    return True


@settings(max_examples=200, deadline=None)
@given(clauses=weighted(), data=st.data())
def test_weighted_threshold_semantics(clauses: list[list[str]], data: st.DataObject) -> None:
    size = sum(len(c) for c in clauses)
    signed = data.draw(st.sets(st.integers(0, size - 1)))
    nested = parse_threshold(clauses, "kt")
    assert nested.satisfied(signed) == brute_force(clauses, signed)
    if len(clauses) == 1:
        assert parse_threshold(clauses[0], "kt").satisfied(signed) == brute_force(clauses, signed)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clauses=weighted(), data=st.data())
def test_weighted_signing_threshold_in_the_validator(
    clauses: list[list[str]], data: st.DataObject
) -> None:
    size = sum(len(c) for c in clauses)
    signed = sorted(data.draw(st.sets(st.integers(0, size - 1), min_size=1)))
    ctl = Controller(("weighted", str(clauses)), count=size)
    icp = ctl.incept(kt=clauses, nt=clauses)
    validator = Validator()
    outcomes = validator.process(ctl.signed(icp, signed), 0.0)
    expected = Status.ACCEPTED if brute_force(clauses, set(signed)) else Status.ESCROWED
    assert status_of(outcomes, icp) is expected


def test_list_of_lists_threshold() -> None:
    kt = [["1/2", "1/2", "1/2"], ["1/3", "1/3", "1/3"]]
    ctl = Controller("lol", count=6)
    icp = ctl.incept(kt=kt, nt=kt)
    for partial in ([0, 1, 2], [0, 3, 4, 5], [0, 1, 3, 4]):
        outcomes = Validator().process(ctl.signed(icp, partial), 0.0)
        assert status_of(outcomes, icp) is Status.ESCROWED, partial
    validator = Validator()
    outcomes = validator.process(ctl.signed(icp, [1, 2, 3, 4, 5]), 0.0)
    assert status_of(outcomes, icp) is Status.ACCEPTED
    assert validator.state(ctl.prefix).kt == kt  # type: ignore[union-attr]


def test_weighted_next_threshold_must_be_met_by_the_revealed_keys() -> None:
    ctl = Controller("weighted-next", count=3)
    icp = ctl.incept(kt="1", nt=["1/2", "1/2", "1/2"])
    validator = Validator()
    validator.process(ctl.signed(icp), 0.0)
    rot = ctl.rotate(kt="1", nt="1")
    outcomes = validator.process(ctl.signed(rot, [2]), 0.0)  # kt met, prior nt not yet
    assert status_of(outcomes, rot) is Status.ESCROWED
    assert outcomes[0].waiting is Waiting.PARTIALLY_SIGNED
    outcomes = validator.process(ctl.signed(rot, [0]), 0.0)
    assert status_of(outcomes, rot) is Status.ACCEPTED


def test_rotation_to_uncommitted_keys_is_rejected() -> None:
    ctl = Controller("uncommitted")
    icp = ctl.incept()
    validator = Validator()
    validator.process(ctl.signed(icp), 0.0)
    stranger = signer("uncommitted key")
    rot = events.rotate(ctl.prefix, [stranger.verfer], prior=icp.said, sn=1)
    outcomes = validator.process(message(rot, sign(rot, [stranger])), 0.0)
    assert status_of(outcomes, rot) is Status.REJECTED


@pytest.mark.parametrize("kt", ["0", "3", ["1/2", "1/2", "1/2"], [["1/2"], ["1"]]])
def test_unsatisfiable_thresholds_are_rejected(kt: Any) -> None:
    ctl = Controller(("bad-kt", str(kt)), count=2)
    icp = ctl.incept(kt=kt)
    outcomes = Validator().process(ctl.signed(icp), 0.0)
    assert status_of(outcomes, icp) is Status.REJECTED


def test_establishment_only_identifier_cannot_interact() -> None:
    ctl = Controller("eo")
    icp = ctl.incept(traits=["EO"])
    ixn = ctl.interact()
    outcomes = feed(Validator(), [ctl.signed(icp), ctl.signed(ixn)])
    assert status_of(outcomes, ixn) is Status.REJECTED


def test_non_transferable_identifier_has_no_further_events() -> None:
    key = signer("nontrans", transferable=False)
    icp = events.incept([key.verfer], basic=True)
    validator = Validator()
    assert status_of(validator.process(message(icp, sign(icp, [key])), 0.0), icp) is (
        Status.ACCEPTED
    )
    ixn = events.interact(icp.prefix, prior=icp.said, sn=1)
    assert status_of(validator.process(message(ixn, sign(ixn, [key])), 0.0), ixn) is (
        Status.REJECTED
    )


# ------------------------------------------------------------------------ delegation


def delegation(
    kind: Kind = Kind.CBOR, **delegator_args: Any
) -> tuple[Controller, Controller, Event]:
    boss = Controller(("boss", kind), kind=kind)
    boss.incept(**delegator_args)
    worker = Controller(("worker", kind), kind=kind)
    dip = worker.incept(delegator=boss.prefix)
    assert dip.ilk is Ilk.DIP
    return boss, worker, dip


@kinds
def test_delegation_anchored_before_the_delegated_inception(kind: Kind) -> None:
    boss, worker, dip = delegation(kind)
    anchor = boss.interact(anchors=[events.seal(dip)])
    validator = Validator()
    feed(validator, [boss.signed(boss.events[0]), boss.signed(anchor)])
    outcomes = validator.process(worker.signed(dip, sources=[(1, anchor.said)]), 0.0)
    assert status_of(outcomes, dip) is Status.ACCEPTED
    assert validator.state(worker.prefix).delegator == boss.prefix  # type: ignore[union-attr]


@kinds
def test_delegation_anchored_after_the_delegated_inception(kind: Kind) -> None:
    boss, worker, dip = delegation(kind)
    validator = Validator()
    outcomes = feed(validator, [worker.signed(dip), boss.signed(boss.events[0])])
    assert status_of(outcomes, dip) is Status.ESCROWED
    assert waiting(validator) == {Waiting.DELEGATION: [dip.said]}
    anchor = boss.interact(anchors=[{"x": 1}, events.seal(dip)])
    outcomes = validator.process(boss.signed(anchor), 0.0)
    assert status_of(outcomes, anchor) is Status.ACCEPTED
    assert status_of(outcomes, dip) is Status.ACCEPTED
    assert waiting(validator) == {}

    drt = worker.rotate(delegated=True)
    assert drt.ilk is Ilk.DRT
    outcomes = validator.process(worker.signed(drt), 0.0)
    assert status_of(outcomes, drt) is Status.ESCROWED
    rot = boss.rotate(anchors=[events.seal(drt)])  # a rotation may anchor too
    outcomes = validator.process(boss.signed(rot), 0.0)
    assert status_of(outcomes, drt) is Status.ACCEPTED


def test_anchor_of_another_event_does_not_approve() -> None:
    boss, worker, dip = delegation()
    wrong = dict(events.seal(dip), s="1")
    validator = Validator()
    feed(validator, [boss.signed(boss.events[0]), boss.signed(boss.interact(anchors=[wrong]))])
    assert status_of(validator.process(worker.signed(dip), 0.0), dip) is Status.ESCROWED


def test_delegator_that_does_not_delegate() -> None:
    boss, worker, dip = delegation(traits=["DND"])
    validator = Validator()
    feed(
        validator,
        [boss.signed(boss.events[0]), boss.signed(boss.interact(anchors=[events.seal(dip)]))],
    )
    assert status_of(validator.process(worker.signed(dip), 0.0), dip) is Status.REJECTED


def test_delegated_identifier_must_rotate_with_drt() -> None:
    boss, worker, dip = delegation()
    validator = Validator()
    feed(
        validator,
        [
            boss.signed(boss.events[0]),
            boss.signed(boss.interact(anchors=[events.seal(dip)])),
            worker.signed(dip),
        ],
    )
    rot = worker.rotate()
    assert status_of(validator.process(worker.signed(rot), 0.0), rot) is Status.REJECTED


# ------------------------------------------------------------------------ recovery


def recovered(kind: Kind = Kind.CBOR) -> tuple[Controller, list[Event], Validator, list[Outcome]]:
    ctl = Controller(("recovery", kind), kind=kind)
    icp = ctl.incept()
    ixn1 = ctl.interact(anchors=[{"n": 1}])
    ixn2 = ctl.interact(anchors=[{"n": 2}])
    old = [ctl.signed(e) for e in (icp, ixn1, ixn2)]
    validator = Validator()
    feed(validator, old)
    assert validator.state(ctl.prefix).sn == 2  # type: ignore[union-attr]
    rot = ctl.rotate(sn=1, prior=icp.said)
    outcomes = validator.process(ctl.signed(rot), 0.0)
    return ctl, [icp, ixn1, ixn2, rot], validator, outcomes


@kinds
def test_recovery_rotation_supersedes_two_interactions(kind: Kind) -> None:
    ctl, (icp, ixn1, ixn2, rot), validator, outcomes = recovered(kind)
    assert status_of(outcomes, rot) is Status.ACCEPTED
    assert status_of(outcomes, ixn1) is Status.SUPERSEDED
    assert status_of(outcomes, ixn2) is Status.SUPERSEDED
    assert chain(validator, ctl.prefix) == [icp.said, rot.said]
    state = validator.state(ctl.prefix)
    assert state is not None
    assert (state.sn, state.ilk) == (1, Ilk.ROT)
    kel = validator.kel(ctl.prefix)
    assert kel is not None
    assert [r.event.said for r in kel.first_seen] == [e.said for e in (icp, ixn1, ixn2, rot)]
    # The superseded interactions stay superseded when they come again.
    again = validator.process(message(ixn1, sign(ixn1, ctl.keyset(0))), 0.0)
    assert status_of(again, ixn1) is Status.SUPERSEDED
    # The log goes on from the rotation, with the new keys only.
    ixn = ctl.interact()
    assert status_of(validator.process(message(ixn, sign(ixn, ctl.keyset(0))), 0.0), ixn) is (
        Status.REJECTED
    )
    assert status_of(validator.process(ctl.signed(ixn), 0.0), ixn) is Status.ACCEPTED


def test_every_superseded_event_stays_superseded() -> None:
    ctl, (_, ixn1, ixn2, _), validator, _ = recovered()
    for event in (ixn1, ixn2):
        again = validator.process(message(event, sign(event, ctl.keyset(0))), 0.0)
        assert status_of(again, event) is Status.SUPERSEDED, event.sn


def test_recovery_keeps_the_interactions_before_it() -> None:
    ctl = Controller("partial-recovery")
    icp = ctl.incept()
    ixn1, ixn2 = ctl.interact(), ctl.interact()
    validator = Validator()
    feed(validator, [ctl.signed(e) for e in (icp, ixn1, ixn2)])
    rot = ctl.rotate(sn=2, prior=ixn1.said)
    outcomes = validator.process(ctl.signed(rot), 0.0)
    assert status_of(outcomes, ixn2) is Status.SUPERSEDED
    assert chain(validator, ctl.prefix) == [icp.said, ixn1.said, rot.said]


def test_interaction_never_supersedes() -> None:
    ctl, (icp, _, _, rot), validator, _ = recovered()
    stale = events.interact(ctl.prefix, prior=icp.said, sn=1, anchors=[{"late": True}])
    outcomes = validator.process(message(stale, sign(stale, ctl.keyset(0))), 0.0)
    assert status_of(outcomes, stale) is Status.REJECTED
    assert evidence_in(outcomes) == []
    assert chain(validator, ctl.prefix) == [icp.said, rot.said]


# ------------------------------------------------------------------------ duplicity


@kinds
def test_duplicitous_interaction_produces_verifiable_evidence(kind: Kind) -> None:
    ctl = Controller(("duplicity", kind), kind=kind)
    icp = ctl.incept()
    ixn = ctl.interact(anchors=[{"version": 1}])
    twin = events.interact(ctl.prefix, prior=icp.said, sn=1, anchors=[{"version": 2}], kind=kind)
    validator = Validator()
    feed(validator, [ctl.signed(icp), ctl.signed(ixn)])
    outcomes = validator.process(message(twin, sign(twin, ctl.current)), 0.0)
    assert status_of(outcomes, twin) is Status.DUPLICITOUS
    [evidence] = evidence_in(outcomes)
    assert outcomes[0].evidence == evidence
    first, second = evidence.verify()
    assert (first.event, second.event) == (ixn, twin)
    assert (evidence.prefix, evidence.sn) == (ctl.prefix, 1)
    again = DuplicityEvidence.from_cbor(evidence.to_cbor())
    assert again == evidence
    assert again.verify() == (first, second)
    assert chain(validator, ctl.prefix) == [icp.said, ixn.said]  # the first one stays


def test_duplicitous_rotation_produces_verifiable_evidence() -> None:
    ctl = Controller("duplicity-rot")
    icp = ctl.incept()
    rot = ctl.rotate()
    twin = events.rotate(
        ctl.prefix,
        [s.verfer for s in ctl.current],
        prior=icp.said,
        sn=1,
        next_digests=ctl.digests(ctl.keyset(7)),
    )
    validator = Validator()
    feed(validator, [ctl.signed(icp), ctl.signed(rot)])
    outcomes = validator.process(message(twin, sign(twin, ctl.current)), 0.0)
    assert status_of(outcomes, twin) is Status.DUPLICITOUS
    [evidence] = evidence_in(outcomes)
    first, second = DuplicityEvidence.from_cbor(evidence.to_cbor()).verify()
    assert (first.event, second.event) == (rot, twin)


def test_two_inceptions_of_one_basic_prefix_are_duplicity() -> None:
    key = signer("basic-duplicity")
    first, second = (
        events.incept([key.verfer], next_digests=[digest(s.encode())], basic=True)
        for s in ("one future", "another future")
    )
    validator = Validator()
    validator.process(message(first, sign(first, [key])), 0.0)
    outcomes = validator.process(message(second, sign(second, [key])), 0.0)
    assert status_of(outcomes, second) is Status.DUPLICITOUS
    [evidence] = evidence_in(outcomes)
    assert (evidence.sn, evidence.establishment) == (0, ())
    a, b = DuplicityEvidence.from_cbor(evidence.to_cbor()).verify()
    assert (a.event, b.event) == (first, second)


def test_unsigned_conflict_is_rejected_not_evidence() -> None:
    ctl = Controller("conflict")
    icp = ctl.incept()
    ixn = ctl.interact()
    twin = events.interact(ctl.prefix, prior=icp.said, sn=1, anchors=["other"])
    validator = Validator()
    feed(validator, [ctl.signed(icp), ctl.signed(ixn)])
    outcomes = validator.process(message(twin, sign(twin, [signer("mallory")])), 0.0)
    assert status_of(outcomes, twin) is Status.REJECTED
    assert evidence_in(outcomes) == []


# ------------------------------------------------------------------------ escrow bounds


def test_full_escrow_drops_its_oldest_entry() -> None:
    ctl = Controller("bounded")
    icp = ctl.incept()
    ixns = [ctl.interact() for _ in range(5)]  # sn 1..5
    validator = Validator(limits=EscrowLimits(max_entries=3))
    validator.process(ctl.signed(icp), 0.0)
    outcomes = feed(validator, [ctl.signed(e) for e in ixns[1:]])  # sn 2..5: four entries
    dropped = [o for o in outcomes if o.status is Status.REJECTED]
    assert [o.said for o in dropped] == [ixns[1].said]
    assert "full" in dropped[0].reason
    assert waiting(validator) == {Waiting.OUT_OF_ORDER: [e.said for e in ixns[2:]]}
    outcomes = validator.process(ctl.signed(ixns[0]), 0.0)
    assert status_of(outcomes, ixns[0]) is Status.ACCEPTED
    assert validator.state(ctl.prefix).sn == 1  # type: ignore[union-attr]
    assert len(waiting(validator)[Waiting.OUT_OF_ORDER]) == 3  # still waiting for sn 2


def test_expire_drops_aged_entries() -> None:
    ctl = Controller("aged", count=2)
    icp = ctl.incept(kt=2, witnesses=WITS[:1], toad=1)
    other = Controller("aged-receipt").incept()
    validator = Validator(limits=EscrowLimits(max_age=10.0))
    feed(validator, [ctl.signed(icp, [0]), receipt(other, WITNESSES[0])], now=100.0)
    assert waiting(validator) == {Waiting.PARTIALLY_SIGNED: [icp.said]}
    assert validator.expire(105.0) == []
    ixn = ctl.interact()
    validator.process(ctl.signed(ixn), now=108.0)
    expired = validator.expire(110.5)
    assert {o.said for o in expired} == {icp.said, other.said}
    assert {o.status for o in expired} == {Status.REJECTED}
    assert waiting(validator) == {Waiting.OUT_OF_ORDER: [ixn.said]}
    assert [o.said for o in validator.expire(118.5)] == [ixn.said]
    assert waiting(validator) == {}
    # An expired event is judged afresh when it comes back.
    outcomes = validator.process(ctl.signed(icp), now=120.0)
    assert status_of(outcomes, icp) is Status.ESCROWED  # now only waiting for its witness
    assert outcomes[0].waiting is Waiting.PARTIALLY_WITNESSED


def test_receipt_escrow_is_bounded() -> None:
    validator = Validator(limits=EscrowLimits(max_receipts=2))
    unseen = [Controller(("unseen", n)).incept() for n in range(3)]
    outcomes = feed(validator, [receipt(e, WITNESSES[0]) for e in unseen])
    dropped = [o for o in outcomes if o.status is Status.REJECTED]
    assert [o.said for o in dropped] == [unseen[0].said]


# ------------------------------------------------------------------------ replay


def replayed(validator: Validator) -> Validator:
    """A fresh validator fed every KEL `validator` holds, in first-seen order of prefixes."""
    fresh = Validator()
    for prefix in validator.prefixes:
        for frame in parse_stream(validator.replay(prefix)):
            assert isinstance(frame, Message)
            fresh.process(frame, 0.0)
    return fresh


def replay_content(validator: Validator, prefix: str) -> list[tuple[Any, ...]]:
    out = []
    for frame in parse_stream(validator.replay(prefix)):
        assert isinstance(frame, Message)
        atc = frame.attachments
        out.append((frame.event, set(atc.sigs), set(atc.wigs), atc.couples, atc.sources))
    return out


def assert_same_kels(a: Validator, b: Validator) -> None:
    assert b.prefixes == a.prefixes
    for prefix in a.prefixes:
        assert state_json(b, prefix) == state_json(a, prefix)
        assert chain(b, prefix) == chain(a, prefix)
    assert b.escrowed() == {w: [] for w in Waiting}


def test_replay_revalidates_to_the_same_state() -> None:
    boss = Controller("replay-boss", count=3)
    boss.incept(kt=["1/2", "1/2", "1/2"], nt=2, witnesses=WITS[:3], toad=2)
    worker = Controller("replay-worker")
    dip = worker.incept(delegator=boss.prefix)
    validator = Validator()
    feed(validator, [boss.signed(boss.events[0]), receipt(boss.events[0], *WITNESSES[:2])])
    anchor = boss.interact(anchors=[events.seal(dip)])
    rot = boss.rotate(kt=2, nt=2, witnesses=WITS[:3], cuts=[WITS[2]], adds=[WITS[3]], toad=2)
    for event in (anchor, rot):
        feed(
            validator,
            [
                boss.signed(event, [0, 1]),
                receipt(event, WITNESSES[1], WITNESSES[3]),
                receipt(event, WITNESSES[0]),
            ],
        )
    feed(validator, [worker.signed(dip, sources=[(1, anchor.said)])])
    for _ in range(3):
        feed(validator, [worker.signed(worker.interact())])
    assert validator.state(boss.prefix).sn == 2  # type: ignore[union-attr]
    assert validator.state(worker.prefix).sn == 3  # type: ignore[union-attr]
    fresh = replayed(validator)
    assert_same_kels(validator, fresh)
    for prefix in (boss.prefix, worker.prefix):  # the same content (order within a group aside)
        assert replay_content(fresh, prefix) == replay_content(validator, prefix)
    assert len(parse_stream(validator.replay(worker.prefix, start=2))) == 2
    assert validator.replay("E" + "x" * 43) == b""


@pytest.mark.parametrize("path", VECTOR_FILES, ids=vector_id)
def test_replay_of_every_vector_revalidates_to_the_same_state(path: Any) -> None:
    validator = Validator()
    for frame in parse_stream(path.read_bytes()):
        if isinstance(frame, Message):
            validator.process(frame, 0.0)
    fresh = replayed(validator)
    for prefix in validator.prefixes:
        assert state_json(fresh, prefix) == state_json(validator, prefix)
        assert chain(fresh, prefix) == chain(validator, prefix)


def test_replay_with_unverified_couples() -> None:
    """Regression: with bt=0, couples attached to an event were stored unverified as its
    receipts, and replay() then raised ValueError (the couple's prefix is no witness)."""
    ctl = Controller("couples")
    icp = ctl.incept()
    stranger = witness("not designated")
    validator = Validator()
    msg = message(icp, sign(icp, ctl.current), couples=[(stranger.verfer, bytes(64))])
    assert status_of(validator.process(msg, 0.0), icp) is Status.ACCEPTED
    record = validator.record(icp.said)
    assert record is not None
    assert record.receipts == {}
    assert len(parse_stream(validator.replay(ctl.prefix))) == 1


# ------------------------------------------------------------------------ known bugs
#
# Regression tests: bugs found in review of `protocol/`, each with a minimal construction.


def icp_with_kt(kt: Any, key: Signer) -> Message:
    """A signed icp whose kt is whatever we say, built below the builder's checks."""
    ked = {
        "v": "",
        "t": "icp",
        "d": "",
        "i": "",
        "s": "0",
        "kt": kt,
        "k": [key.verfer],
        "nt": "0",
        "n": [],
        "bt": "0",
        "b": [],
        "c": [],
        "a": [],
    }
    icp = events.parse_event(events.saidify(ked, Kind.CBOR, ("d", "i")))
    return message(icp, sign(icp, [key]))


def test_weight_with_more_than_4300_digits() -> None:
    msg = icp_with_kt(["1" * 5000], signer("digits"))
    outcomes = Validator().process(msg, 0.0)
    assert status_of(outcomes, msg.event) is Status.REJECTED


def test_hostile_escrowed_event_does_not_break_a_valid_one() -> None:
    ctl = Controller("hostile-escrow")
    icp = ctl.incept()
    ixn = ctl.interact()
    ked = {
        "v": "",
        "t": "rot",
        "d": "",
        "i": ctl.prefix,
        "s": "2",
        "p": ixn.said,
        "kt": "1",
        "k": ["D" + "!" * 43],
        "nt": "0",
        "n": [],
        "bt": "0",
        "br": [],
        "ba": [],
        "a": [],
    }
    rot = events.parse_event(events.saidify(ked, Kind.CBOR, ("d",)))
    validator = Validator()
    feed(validator, [ctl.signed(icp), message(rot, sign(rot, ctl.next))])
    outcomes = validator.process(ctl.signed(ixn), 0.0)
    assert status_of(outcomes, ixn) is Status.ACCEPTED
    assert status_of(outcomes, rot) is Status.REJECTED


def test_early_receipt_with_indexed_witness_signatures() -> None:
    ctl = Controller("early-wigs")
    icp = ctl.incept(witnesses=WITS[:2], toad=2)
    body = events.receipt(icp.prefix, 0, icp.said)
    wigs = [w.sign_indexed(icp.raw, i, None) for i, w in enumerate(WITNESSES[:2])]
    validator = Validator()
    [early] = validator.process(message(body, wigs=wigs), 0.0)
    assert early.status is Status.ESCROWED
    outcomes = validator.process(ctl.signed(icp), 0.0)
    assert status_of(outcomes, icp) is Status.ACCEPTED


def test_garbage_signature_does_not_block_the_real_one() -> None:
    ctl = Controller("poison", count=2)
    icp = ctl.incept(kt=2, nt=2)
    validator = Validator()
    garbage = message(icp, [signer("mallory").sign_indexed(icp.raw, 0)])
    feed(validator, [ctl.signed(icp, [1]), garbage])
    outcomes = validator.process(ctl.signed(icp, [0]), 0.0)
    assert status_of(outcomes, icp) is Status.ACCEPTED


def test_superseded_anchor_does_not_approve_a_delegation() -> None:
    boss, worker, dip = delegation()
    icp = boss.events[0]
    anchor = boss.interact(anchors=[events.seal(dip)])
    validator = Validator()
    feed(validator, [boss.signed(icp), boss.signed(anchor)])
    recovery = boss.rotate(sn=1, prior=icp.said)  # supersedes the anchoring interaction
    assert status_of(validator.process(boss.signed(recovery), 0.0), anchor) is Status.SUPERSEDED
    outcomes = validator.process(worker.signed(dip), 0.0)
    assert status_of(outcomes, dip) is Status.ESCROWED


# ------------------------------------------------------------------------ forgetting


def test_forget_drops_a_kel_and_what_is_kept_for_it_so_it_can_come_again() -> None:
    boss, worker, dip = delegation()
    anchor = boss.interact(anchors=[events.seal(dip)])
    later = boss.interact(anchors=[{"x": 1}])
    stream = [boss.signed(e) for e in boss.events]
    validator = Validator()
    feed(validator, stream)
    kel = validator.kel(boss.prefix)
    assert kel is not None
    held = sum(held_bytes(r) for r in kel.first_seen)
    assert held > sum(len(e.raw) for e in boss.events)  # the decoded bodies count too

    assert validator.forget(boss.prefix) == held
    assert validator.forget(boss.prefix) == 0  # nothing left to forget
    assert validator.kel(boss.prefix) is None and validator.state(boss.prefix) is None
    assert all(validator.record(e.said) is None for e in (boss.events[0], anchor, later))
    assert boss.prefix not in validator.prefixes
    # The anchor its interaction made is gone with it: the delegated inception now waits.
    assert status_of(validator.process(worker.signed(dip), 0.0), dip) is Status.ESCROWED
    # The KEL may come again from sn 0, and then the delegated inception is accepted.
    outcomes = feed(validator, stream)
    assert [status_of(outcomes, e) for e in boss.events] == [Status.ACCEPTED] * 3
    assert status_of(outcomes, dip) is Status.ACCEPTED
    assert chain(validator, boss.prefix) == [e.said for e in boss.events]


def test_forget_leaves_other_kels_and_their_anchors_alone() -> None:
    boss, worker, dip = delegation()
    anchor = boss.interact(anchors=[events.seal(dip)])
    other = Controller("other")
    icp = other.incept()
    validator = Validator()
    feed(validator, [boss.signed(boss.events[0]), boss.signed(anchor), other.signed(icp)])
    validator.forget(other.prefix)
    assert validator.kel(other.prefix) is None
    assert validator.record(anchor.said) is not None
    assert status_of(validator.process(worker.signed(dip), 0.0), dip) is Status.ACCEPTED
    validator.forget(worker.prefix)  # a delegatee forgotten: its delegator's anchors stay
    assert status_of(validator.process(worker.signed(dip), 0.0), dip) is Status.ACCEPTED

"""Events: build -> serialize -> parse round-trips, and no single-byte change gets through.

Events are built by hypothesis from random seeds (1..5 keys), random thresholds (numbers,
fraction lists, lists of lists), witnesses, traits and anchors, in CBOR and JSON.
"""

from __future__ import annotations

import contextlib
import itertools
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kel_kit import (
    Controller,
    frames_until_error,
    library_errors_only,
    message,
    one,
    sign,
    signer,
    state_json,
)

from dkms.protocol import crypto, events
from dkms.protocol.crypto import Signer
from dkms.protocol.errors import EventError, ProtocolError
from dkms.protocol.events import Event, Ilk, Kind
from dkms.protocol.outcomes import Status
from dkms.protocol.stream import Frame, Message, messagize
from dkms.protocol.validator import Validator

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

kinds = st.sampled_from([Kind.CBOR, Kind.JSON])
seeds = st.binary(min_size=32, max_size=32)
saids = st.binary(min_size=8, max_size=8).map(crypto.digest)
sns = st.integers(1, 2**64)
WEIGHTS = ["1", "1/2", "1/3", "2/3", "1/4", "3/4", "0"]


@st.composite
def clause(draw: st.DrawFn, size: int) -> list[str]:
    weights = draw(st.lists(st.sampled_from(WEIGHTS), min_size=size, max_size=size))
    if sum(Fraction(w) for w in weights) < 1:
        weights[-1] = "1"
    return weights


@st.composite
def threshold(draw: st.DrawFn, size: int) -> int | list[str] | list[list[str]]:
    """A threshold that `size` keys can satisfy: a number, a fraction list, or clauses."""
    form = draw(st.sampled_from(["number", "flat", "clauses"]))
    if size == 0:
        return 0
    if form == "number":
        return draw(st.integers(1, size))
    if form == "flat" or size == 1:
        return draw(clause(size))
    cuts = sorted(draw(st.sets(st.integers(1, size - 1), max_size=size - 1)))
    bounds = [0, *cuts, size]
    return [draw(clause(b - a)) for a, b in itertools.pairwise(bounds)]


scalars = st.one_of(st.text(max_size=12), st.integers(-(2**70), 2**70), st.booleans(), st.none())
data_items = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def seal(draw: st.DrawFn) -> dict[str, str]:
    return {"i": draw(saids), "s": f"{draw(st.integers(0, 2**32)):x}", "d": draw(saids)}


anchors = st.lists(
    seal() | st.dictionaries(st.text(max_size=5), data_items, max_size=3), max_size=3
)


def signers_from(seed_list: list[bytes], transferable: bool = True) -> list[Signer]:
    return [Signer(s, transferable=transferable) for s in seed_list]


@st.composite
def key_lists(draw: st.DrawFn, min_size: int = 1) -> list[Signer]:
    return signers_from(draw(st.lists(seeds, min_size=min_size, max_size=5, unique=True)))


@st.composite
def witness_lists(draw: st.DrawFn) -> list[str]:
    seed_list = draw(st.lists(seeds, max_size=4, unique=True))
    return [s.verfer for s in signers_from(seed_list, transferable=False)]


@st.composite
def inceptions(draw: st.DrawFn, delegated: bool = False) -> Event:
    keys = draw(key_lists())
    nexts = draw(key_lists(min_size=0))
    wits = draw(witness_lists())
    kwargs: dict[str, Any] = {
        "next_digests": [crypto.next_key_digest(s.verfer) for s in nexts],
        "kt": draw(threshold(len(keys))),
        "nt": draw(threshold(len(nexts))),
        "witnesses": wits,
        "toad": draw(st.integers(1, len(wits))) if wits else 0,
        "traits": draw(st.lists(st.sampled_from(["EO", "DND", "NB"]), unique=True)),
        "anchors": draw(anchors),
        "kind": draw(kinds),
    }
    if delegated:
        kwargs["delegator"] = draw(saids)
    return events.incept([s.verfer for s in keys], **kwargs)


@st.composite
def basic_inceptions(draw: st.DrawFn) -> Event:
    transferable = draw(st.booleans())
    key = Signer(draw(seeds), transferable=transferable)
    nexts = [crypto.next_key_digest(s.verfer) for s in draw(key_lists())] if transferable else []
    return events.incept([key.verfer], next_digests=nexts, basic=True, kind=draw(kinds))


@st.composite
def rotations(draw: st.DrawFn, delegated: bool = False) -> Event:
    keys = draw(key_lists())
    nexts = draw(key_lists(min_size=0))
    before = draw(witness_lists())
    cuts = draw(st.lists(st.sampled_from(before), unique=True)) if before else []
    adds = [w for w in draw(witness_lists()) if w not in before]
    after = [w for w in before if w not in cuts] + adds
    return events.rotate(
        draw(saids),
        [s.verfer for s in keys],
        prior=draw(saids),
        sn=draw(sns),
        next_digests=[crypto.next_key_digest(s.verfer) for s in nexts],
        kt=draw(threshold(len(keys))),
        nt=draw(threshold(len(nexts))),
        witnesses=before,
        cuts=cuts,
        adds=adds,
        toad=draw(st.integers(1, len(after))) if after else 0,
        anchors=draw(anchors),
        delegated=delegated,
        kind=draw(kinds),
    )


@st.composite
def interactions(draw: st.DrawFn) -> Event:
    return events.interact(
        draw(saids), prior=draw(saids), sn=draw(sns), anchors=draw(anchors), kind=draw(kinds)
    )


@st.composite
def receipts(draw: st.DrawFn) -> Event:
    return events.receipt(draw(saids), draw(st.integers(0, 2**64)), draw(saids), kind=draw(kinds))


any_event = st.one_of(
    inceptions(),
    inceptions(delegated=True),
    basic_inceptions(),
    rotations(),
    rotations(delegated=True),
    interactions(),
    receipts(),
)


# ------------------------------------------------------------------------ round trips


@SETTINGS
@given(event=any_event)
def test_built_event_parses_back_to_itself(event: Event) -> None:
    again = events.parse_event(event.raw)
    assert again == event
    assert again.said == event.said
    assert again.prefix == event.prefix
    assert again.sn == event.sn
    assert again.ilk == event.ilk
    assert again.kind == event.kind
    assert again.ked == event.ked
    assert list(again.ked) == list(events.FIELDS[event.ilk])
    assert events.parse_event(event.raw, event.kind) == event
    assert event.ked["v"] == events.version_string(event.kind, len(event.raw))
    assert events.sniff(event.raw[:24]) == (event.kind, len(event.raw))
    assert event.raw == events.dumps(event.ked, event.kind)
    if event.ilk is not Ilk.RCT:
        assert event.said[0] == "E"
        assert len(event.said) == 44
    if event.ilk in (Ilk.ICP, Ilk.DIP) and event.prefix[0] == "E":
        assert event.prefix == event.said


@SETTINGS
@given(event=any_event, sig_seeds=st.lists(seeds, max_size=3))
def test_built_event_round_trips_through_the_stream(event: Event, sig_seeds: list[bytes]) -> None:
    sigs = [Signer(s).sign_indexed(event.raw, i) for i, s in enumerate(sig_seeds)]
    msg = message(event, sigs)
    assert msg.event == event
    assert msg.event.said == event.said
    assert msg.attachments.sigs == tuple(sigs)
    assert msg.serialize() == messagize(event, msg.attachments)


@SETTINGS
@given(data=st.data(), kind=kinds, count=st.integers(1, 5))
def test_same_seeds_build_the_same_bytes(data: st.DataObject, kind: Kind, count: int) -> None:
    seed_list = data.draw(st.lists(seeds, min_size=count, max_size=count, unique=True))
    kt = data.draw(threshold(count))
    anchor_list = data.draw(anchors)

    def build() -> tuple[bytes, bytes]:
        keys = [Signer(s).verfer for s in seed_list]
        icp = events.incept(
            keys, next_digests=[crypto.next_key_digest(k) for k in keys], kt=kt, kind=kind
        )
        ixn = events.interact(icp.prefix, prior=icp.said, sn=1, anchors=anchor_list, kind=kind)
        return icp.raw, ixn.raw

    assert build() == build()


@pytest.mark.parametrize("kind", [Kind.CBOR, Kind.JSON])
def test_kinds_sniff_and_lay_out_like_keripy(kind: Kind) -> None:
    ctl = Controller("layout", kind=kind)
    icp = ctl.incept()
    head = icp.raw[:24]
    if kind is Kind.JSON:
        assert head.startswith(b'{"v":"KERI10JSON')
    else:
        assert head[0] == 0xAD  # a map of 13 entries
        assert b"KERI10CBOR" in head
    assert events.sniff(head) == (kind, len(icp.raw))


# ------------------------------------------------------------------------ single-byte changes


def mutate(raw: bytes, at: int, value: int) -> bytes:
    return raw[:at] + bytes([value]) + raw[at + 1 :]


@st.composite
def one_byte_change(draw: st.DrawFn, raw: bytes) -> bytes:
    at = draw(st.integers(0, len(raw) - 1))
    value = draw(st.integers(0, 255).filter(lambda v: v != raw[at]))
    return mutate(raw, at, value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=any_event, data=st.data())
def test_any_single_byte_change_of_a_body_is_refused(event: Event, data: st.DataObject) -> None:
    """A changed body fails to parse, except a receipt, which then names something else.

    (Stronger than "or yields a different SAID": no change of a SAID'd body parses at all.
    A receipt has no SAID of its own, so a changed prefix or sn can still parse.)
    """
    changed = data.draw(one_byte_change(event.raw))
    if event.ilk is not Ilk.RCT:
        with pytest.raises(ProtocolError):
            events.parse_event(changed)
        return
    try:
        other = events.parse_event(changed)
    except ProtocolError:
        return
    assert (other.said, other.prefix, other.sn) != (event.said, event.prefix, event.sn)


def test_changed_said_is_an_event_error() -> None:
    icp = Controller("said").incept()
    said = icp.said.encode()
    forged = icp.raw.replace(said, said[:-1] + (b"A" if said[-1:] != b"A" else b"B"))
    with pytest.raises(EventError):
        events.parse_event(forged)


@st.composite
def signed_kels(draw: st.DrawFn) -> tuple[Controller, bytes, Event, bytes]:
    """An inception and a signed ixn or rot after it, with 1..3 keys and a random kt."""
    count = draw(st.integers(1, 3))
    ctl = Controller(("mutation", draw(seeds)), count=count, kind=draw(kinds))
    kt = draw(threshold(count))
    icp = ctl.incept(kt=kt, nt=kt)
    icp_bytes = ctl.signed(icp).serialize()
    if draw(st.booleans()):
        event = ctl.interact(anchors=draw(anchors))
    else:
        event = ctl.rotate(kt=kt, nt=kt, anchors=draw(anchors))
    return ctl, icp_bytes, event, ctl.signed(event).serialize()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kel=signed_kels(), data=st.data())
def test_single_byte_change_of_a_signed_event_never_moves_the_kel(
    kel: tuple[Controller, bytes, Event, bytes], data: st.DataObject
) -> None:
    """Mutate one byte of a signed ixn/rot message; feed icp, then the mutated bytes.

    Either the KEL stays at the inception, or what got accepted is the original event with
    (some of) its original signatures: a change to the bytes of a signature's code that keeps
    its meaning (for instance `A`->`B` on an interaction, where the prior-next position does
    not matter) is not a forgery. Nothing else, above all no changed body, is ever accepted.
    """
    ctl, icp_bytes, event, event_bytes = kel
    changed = data.draw(one_byte_change(event_bytes))
    validator = Validator()
    validator.process(one(icp_bytes), 0.0)
    before = state_json(validator, ctl.prefix)
    frames: list[Frame] = []
    with library_errors_only():
        frames, _ = frames_until_error(changed)
    statuses = []
    for frame in frames:
        if isinstance(frame, Message):
            with library_errors_only():
                statuses += [o.status for o in validator.process(frame, 0.0)]
    after = state_json(validator, ctl.prefix)
    if after == before:
        return
    record = validator.kel(ctl.prefix).at(1)  # type: ignore[union-attr]
    assert record is not None
    assert record.event.raw == event.raw
    originals = {s.raw for s in one(event_bytes).attachments.sigs}
    assert {s.raw for s in record.sigs} <= originals
    assert Status.ACCEPTED in statuses


@pytest.mark.parametrize("kind", [Kind.CBOR, Kind.JSON])
def test_every_single_byte_change_of_a_signed_ixn_is_refused(kind: Kind) -> None:
    """Exhaustive over positions (one replacement value each) for a one-key interaction."""
    ctl = Controller("exhaustive", kind=kind)
    icp = ctl.incept()
    ixn = ctl.interact(anchors=[{"i": icp.prefix, "s": "0", "d": icp.said}])
    good = ctl.signed(ixn).serialize()
    icp_msg = ctl.signed(icp)
    for at in range(len(good)):
        changed = mutate(good, at, good[at] ^ 0x01)
        validator = Validator()
        validator.process(icp_msg, 0.0)
        frames, _ = frames_until_error(changed)
        for frame in frames:
            if isinstance(frame, Message):
                with contextlib.suppress(ProtocolError):
                    validator.process(frame, 0.0)
        state = validator.state(ctl.prefix)
        assert state is not None
        assert state.sn == 0, f"byte {at} changed and the interaction was still accepted"


def test_signatures_are_checked_against_the_body() -> None:
    ctl = Controller("body")
    icp = ctl.incept()
    other = signer("someone else")
    validator = Validator()
    outcomes = validator.process(message(icp, sign(icp, [other])), 0.0)
    assert [o.status for o in outcomes] == [Status.REJECTED]
    assert validator.state(ctl.prefix) is None

"""Escrow byte budgets: entry sizes, the byte bound over all escrows, the per-event limit, each
source's share, the early-receipt byte bound and the fill the validator reports."""

from __future__ import annotations

from kel_kit import Controller, feed, receipt, witness

from dkms.protocol.escrow import EscrowLimits, Waiting
from dkms.protocol.events import Event
from dkms.protocol.outcomes import Outcome, Status
from dkms.protocol.stream import Message
from dkms.protocol.validator import Validator

OOO = Waiting.OUT_OF_ORDER.value


def orphans(name: str, count: int) -> tuple[Controller, list[Message]]:
    """`count` interactions of an identifier whose inception is never sent: all escrowed."""
    ctl = Controller(name)
    ctl.incept()
    ixns = [ctl.interact() for _ in range(count)]
    return ctl, [ctl.signed(e) for e in ixns]


def entry_size(msg: Message) -> int:
    validator = Validator()
    validator.process(msg, 0.0)
    entries, size = validator.escrow_fill()[OOO]
    assert entries == 1
    return size


def rejected(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.status is Status.REJECTED]


def held(validator: Validator) -> set[str]:
    return {p.event.said for ps in validator.escrowed().values() for p in ps}


def test_entry_size_counts_the_event_and_its_attachments() -> None:
    _, [msg] = orphans("size", 1)
    size = entry_size(msg)
    assert size > len(msg.event.raw) + 88  # its body, one signature and the entry's objects
    assert size < len(msg.event.raw) + 2048


def test_byte_bound_drops_the_oldest_entries() -> None:
    _, msgs = orphans("bytes", 6)  # sn 1..6, one hex digit: all the same size
    size = entry_size(msgs[0])
    validator = Validator(limits=EscrowLimits(max_bytes=3 * size + size // 2))
    outcomes = feed(validator, msgs)
    dropped = rejected(outcomes)
    assert [o.said for o in dropped] == [m.event.said for m in msgs[:3]]
    assert all("bytes" in o.reason and "full" in o.reason for o in dropped)
    assert held(validator) == {m.event.said for m in msgs[3:]}
    assert validator.escrow_fill()[OOO] == (3, 3 * size)


def test_byte_bound_spans_all_escrows() -> None:
    multi = Controller("multi", count=2)
    icp = multi.incept(kt=2, nt=2)
    _, msgs = orphans("spans", 3)
    partial = multi.signed(icp, [0])
    size = entry_size(msgs[0])
    probe = Validator()
    probe.process(partial, 0.0)
    entries, icp_size = probe.escrow_fill()[Waiting.PARTIALLY_SIGNED.value]
    assert entries == 1
    validator = Validator(limits=EscrowLimits(max_bytes=icp_size + 2 * size - 1))
    feed(validator, [partial])
    outcomes = feed(validator, msgs[:2])  # the partially signed inception is the oldest
    assert [o.said for o in rejected(outcomes)] == [icp.said]
    assert held(validator) == {m.event.said for m in msgs[:2]}


def big_interaction(ctl: Controller, size: int) -> Event:
    seals = [{"i": ctl.prefix, "s": f"{n:x}", "d": "E" + "x" * 43} for n in range(size // 100)]
    return ctl.interact(anchors=seals)


def test_oversized_event_is_not_escrowed() -> None:
    ctl = Controller("oversized")
    icp = ctl.incept()
    ixn1 = ctl.interact()
    big = big_interaction(ctl, 70_000)
    assert len(big.raw) > EscrowLimits().max_event_bytes
    validator = Validator()
    outcomes = validator.process(ctl.signed(big), 0.0)
    [own] = outcomes
    assert own.status is Status.REJECTED
    assert "not escrowed" in own.reason and str(EscrowLimits().max_event_bytes) in own.reason
    assert held(validator) == set()
    assert validator.escrow_fill()[OOO] == (0, 0)
    # In order it is judged at once, so it is accepted: the limit is the escrow's only.
    outcomes = feed(validator, [ctl.signed(icp), ctl.signed(ixn1), ctl.signed(big)])
    assert [o.status for o in outcomes] == [Status.ACCEPTED] * 3


def test_a_source_over_its_share_loses_only_its_own_entries() -> None:
    _, honest = orphans("honest", 2)
    _, attack = orphans("attacker", 12)
    size = entry_size(attack[0])
    # Room for 8 entries; a quarter of that (2 entries) per source.
    validator = Validator(limits=EscrowLimits(max_bytes=8 * size + size // 2))
    for msg in honest:
        validator.process(msg, 0.0, source="peer-b")
    outcomes: list[Outcome] = []
    for msg in attack:
        outcomes += validator.process(msg, 0.0, source="peer-a")
    attacker = {m.event.said for m in attack}
    dropped = rejected(outcomes)
    assert {o.said for o in dropped} <= attacker
    assert all("share" in o.reason for o in dropped)
    assert {m.event.said for m in honest} <= held(validator)
    assert len(held(validator) & attacker) == 2  # its two newest
    assert held(validator) & attacker == {m.event.said for m in attack[-2:]}


def test_a_source_share_bounds_entries_too() -> None:
    _, honest = orphans("honest-count", 2)
    _, attack = orphans("attacker-count", 30)  # tiny entries: count, not bytes, binds
    validator = Validator(limits=EscrowLimits(max_entries=8))
    for msg in honest:
        validator.process(msg, 0.0, source="peer-b")
    outcomes: list[Outcome] = []
    for msg in attack:
        outcomes += validator.process(msg, 0.0, source="peer-a")
    assert {o.said for o in rejected(outcomes)} <= {m.event.said for m in attack}
    assert {m.event.said for m in honest} <= held(validator)
    assert validator.escrow_fill()[OOO][0] == 4


def test_local_input_is_not_held_to_a_share() -> None:
    _, msgs = orphans("local", 6)
    validator = Validator(limits=EscrowLimits(max_entries=8))
    assert rejected(feed(validator, msgs)) == []
    assert validator.escrow_fill()[OOO][0] == 6


def test_early_receipt_escrow_is_bounded_in_bytes() -> None:
    unseen = [Controller(("early-bytes", n)).incept() for n in range(4)]
    rcts = [receipt(e, witness(0)) for e in unseen]
    probe = Validator()
    probe.process(rcts[0], 0.0)
    entries, size = probe.escrow_fill()["early-receipts"]
    assert entries == 1 and size > len(rcts[0].event.raw)
    validator = Validator(limits=EscrowLimits(max_receipt_bytes=2 * size + size // 2))
    outcomes = feed(validator, rcts)
    assert [o.said for o in rejected(outcomes)] == [e.said for e in unseen[:2]]
    assert validator.escrow_fill()["early-receipts"] == (2, 2 * size)
    # A receipted event arriving takes its receipts, and their bytes, out of the escrow.
    feed(validator, [Controller(("early-bytes", 3)).signed(unseen[3])])
    assert validator.escrow_fill()["early-receipts"] == (1, size)


def test_fill_reports_every_escrow_and_returns_to_zero() -> None:
    ctl, msgs = orphans("fill", 3)
    validator = Validator()
    fill = validator.escrow_fill()
    assert set(fill) == {w.value for w in Waiting} | {"early-receipts", "rivals"}
    assert all(v == (0, 0) for v in fill.values())
    feed(validator, msgs, now=10.0)
    feed(validator, [receipt(Controller("fill-rct").incept(), witness(0))], now=10.0)
    fill = validator.escrow_fill()
    assert fill[OOO][0] == 3 and fill[OOO][1] == sum(entry_size(m) for m in msgs)
    assert fill["early-receipts"][0] == 1
    feed(validator, [ctl.signed(ctl.events[0])])  # the inception releases all three
    assert validator.escrow_fill()[OOO] == (0, 0)
    validator.expire(10.0 + EscrowLimits().max_age + 1)
    assert all(v == (0, 0) for v in validator.escrow_fill().values())


def test_expired_and_released_entries_give_back_their_source_share() -> None:
    _, first = orphans("share-back-1", 2)
    _, second = orphans("share-back-2", 2)
    validator = Validator(limits=EscrowLimits(max_entries=8, max_age=5.0))
    for msg in first:
        validator.process(msg, 0.0, source="peer")
    validator.expire(10.0)
    outcomes: list[Outcome] = []
    for msg in second:
        outcomes += validator.process(msg, 10.0, source="peer")
    assert rejected(outcomes) == []
    assert held(validator) == {m.event.said for m in second}


def test_an_entry_is_charged_for_its_decoded_body() -> None:
    # A CBOR empty map is one byte on the wire and some 70 in memory: the raw size alone
    # would let 64 MiB of budget hold gigabytes.
    ctl = Controller("amplified")
    ctl.incept()
    ixn = ctl.interact(anchors=[{}] * 20_000)
    size = entry_size(ctl.signed(ixn))
    assert size > 60 * len(ixn.raw)

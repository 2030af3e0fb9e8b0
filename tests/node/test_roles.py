"""Controller and witnesses wired together in memory by the shared test driver
(`dkms.node.testing.driver`): no network, no clock."""

from __future__ import annotations

import pytest

from dkms.node.roles.codes import Code
from dkms.node.roles.controller import Controller, RetryPolicy
from dkms.node.roles.effects import (
    Blame,
    PersistEvent,
    PersistReceipts,
    Publish,
    Reply,
    Send,
    Surface,
)
from dkms.node.roles.inputs import Heard, Request
from dkms.node.roles.topics import kel_topic
from dkms.node.roles.witness import Witness
from dkms.node.testing.keys import node_signer, seed
from dkms.node.testing.witnessed import CONTROLLER, Witnessed
from dkms.protocol import crypto
from dkms.protocol.crypto import Signer
from dkms.protocol.events import interact, receipt
from dkms.protocol.ids import NodePrefix
from dkms.protocol.stream import Attachments, messagize

Net = Witnessed


def kel_of(w: Witness, prefix: str) -> list[str]:
    kel = w.validator.kel(prefix)
    return [r.event.said for r in kel.chain] if kel else []


def fully_witnessed(w: Witness, prefix: str) -> bool:
    kel = w.validator.kel(prefix)
    return kel is not None and all(len(r.receipts) >= r.authority.toad for r in kel.chain)


def test_incept_rotate_interact_with_four_witnesses() -> None:
    net = Net.of(5)
    w = net.prefixes
    first, extra = w[:4], w[4]
    net.run(net.controller.incept("alice", [seed(1)], [seed(2)], witnesses=first, toad=3, now=0.0))
    alice = net.controller.identity("alice").prefix
    net.run(
        net.controller.rotate("alice", [seed(3)], cuts=[first[0]], adds=[extra], toad=3, now=1.0)
    )
    net.run(net.controller.interact("alice", [{"d": "hello"}], now=2.0))
    assert net.controller.pending() == []
    expected = [e for e in kel_of(net.witness(w[1]), alice)]
    assert len(expected) == 3
    for prefix in w[1:]:  # the cut witness holds the first event only, plus what gossip gave
        assert kel_of(net.witness(prefix), alice) == expected
        assert fully_witnessed(net.witness(prefix), alice)
    assert net.controller.export("alice")  # the controller's own KEL is complete too
    assert net.controller.validator.state(alice).sn == 2  # type: ignore[union-attr]
    # Every event was persisted before it was receipted, and published.
    assert any(p.topic.startswith("/dkms/1/kel/") for _, p in net.published)


def test_one_witness_down_events_still_complete_and_it_is_retried() -> None:
    net = Net.of(4, retry=RetryPolicy(first=1.0, cap=4.0, attempts=3))
    net.down.add(net.prefixes[3])
    net.run(
        net.controller.incept("bob", [seed(4)], [seed(5)], witnesses=net.prefixes, toad=3, now=0.0)
    )
    said = net.controller.identity("bob").last_said
    assert net.controller.done(said)
    warnings = [r.message for r in net.reports if r.level == "warning"]
    assert any(net.prefixes[3] in m and "retry 1" in m for m in warnings)
    net.advance(1.0)  # first retry, fails again
    net.advance(2.0)  # second retry, fails: gives up after 3 attempts
    errors = [r.message for r in net.reports if r.level == "error"]
    assert any("gave up on witness" in m and net.prefixes[3] in m for m in errors)


def test_a_witness_back_up_before_giving_up_gets_the_event() -> None:
    net = Net.of(4, retry=RetryPolicy(first=1.0, cap=4.0, attempts=5))
    late = net.prefixes[3]
    net.down.add(late)
    net.gossip = False  # only the retry can bring it the event
    net.run(
        net.controller.incept("eve", [seed(6)], [seed(7)], witnesses=net.prefixes, toad=3, now=0.0)
    )
    prefix = net.controller.identity("eve").prefix
    assert kel_of(net.witness(late), prefix) == []
    net.down.clear()
    net.advance(1.0)
    assert len(kel_of(net.witness(late), prefix)) == 1


def test_conflicting_version_is_refused() -> None:
    net = Net.of(4)
    net.run(
        net.controller.incept(
            "carol", [seed(8)], [seed(9)], witnesses=net.prefixes, toad=3, now=0.0
        )
    )
    net.run(net.controller.interact("carol", [{"d": "one"}], now=1.0))
    ident = net.controller.identity("carol")
    kel = net.witness(net.prefixes[0]).validator.kel(ident.prefix)
    assert kel is not None
    # Same keys, same sn, different content: a second version of sn 1.
    other = interact(ident.prefix, prior=kel.chain[0].event.said, sn=1, anchors=[{"d": "two"}])
    message = messagize(other, Attachments(sigs=(Signer(seed(8)).sign_indexed(other.raw, 0),)))
    effects = net.submit(net.prefixes[0], message)
    reply = next(e for e in effects if isinstance(e, Reply))
    assert reply.code is Code.CONFLICT
    assert "conflicting version refused" in reply.reason
    assert not any(isinstance(e, PersistEvent | PersistReceipts) for e in effects)


def test_restarted_witness_keeps_what_it_receipted_and_never_signs_two_versions() -> None:
    net = Net.of(4)
    net.run(
        net.controller.incept(
            "dan", [seed(10)], [seed(11)], witnesses=net.prefixes, toad=3, now=0.0
        )
    )
    for i in range(3):
        net.run(net.controller.interact("dan", [{"n": i}], now=1.0 + i))
    prefix = net.controller.identity("dan").prefix
    target = net.prefixes[1]
    before = kel_of(net.witness(target), prefix)
    fresh = net.restart(target)
    assert kel_of(fresh, prefix) == before
    assert fully_witnessed(fresh, prefix)
    kel = fresh.validator.kel(prefix)
    assert kel is not None
    other = interact(prefix, prior=kel.chain[2].event.said, sn=3, anchors=[{"n": "other"}])
    message = messagize(other, Attachments(sigs=(Signer(seed(10)).sign_indexed(other.raw, 0),)))
    reply = next(e for e in net.submit(target, message) if isinstance(e, Reply))
    assert reply.code is Code.CONFLICT and "conflicting" in reply.reason


def test_gossip_gap_is_filled_by_asking_co_witnesses() -> None:
    net = Net.of(4)
    late = net.prefixes[3]
    net.run(
        net.controller.incept(
            "fay", [seed(12)], [seed(13)], witnesses=net.prefixes, toad=3, now=0.0
        )
    )
    net.down.add(late)
    net.run(net.controller.interact("fay", [{"n": 1}], now=1.0))  # late misses sn 1
    net.down.clear()
    net.controller.retry = RetryPolicy(attempts=1)  # no retries: only gossip can help
    net.run(net.controller.interact("fay", [{"n": 2}], now=2.0))
    prefix = net.controller.identity("fay").prefix
    assert kel_of(net.witness(late), prefix) == kel_of(net.witness(net.prefixes[0]), prefix)
    assert len(kel_of(net.witness(late), prefix)) == 3


def test_witness_refuses_events_that_do_not_name_it() -> None:
    net = Net.of(5)
    outsider = net.prefixes[4]
    net.run(
        net.controller.incept(
            "gus", [seed(14)], [seed(15)], witnesses=net.prefixes[:4], toad=3, now=0.0
        )
    )
    message = net.controller.export("gus")
    reply = next(e for e in net.submit(outsider, message) if isinstance(e, Reply))
    assert reply.code is Code.NOT_WITNESS and "not a designated witness" in reply.reason


def test_unreadable_submission_gets_a_clear_refusal() -> None:
    witness = Witness(node_signer(0))
    peer = NodePrefix(node_signer(1).verfer)
    effects = witness.step(Request(Surface.SUBMIT, peer, b"\x00garbage"), 0.0)
    blame, reply = effects
    assert isinstance(reply, Reply) and reply.code is Code.MALFORMED
    assert "unreadable submission" in reply.reason
    assert isinstance(blame, Blame) and blame.peer == peer


def test_local_only_identifier_needs_no_witnesses() -> None:
    net = Net.of(0)
    effects = net.controller.incept("solo", [seed(16)], [seed(17)], now=0.0)
    assert not any(isinstance(e, Send) for e in effects)
    assert net.controller.done(net.controller.identity("solo").last_said)


def test_witness_key_must_be_non_transferable() -> None:
    with pytest.raises(Exception, match="non-transferable"):
        Witness(Signer(seed(1)))


def test_controller_restores_an_identifier_from_its_seeds_and_kel() -> None:
    net = Net.of(4)
    net.run(
        net.controller.incept(
            "hal", [seed(18)], [seed(19)], witnesses=net.prefixes, toad=3, now=0.0
        )
    )
    net.run(net.controller.rotate("hal", [seed(20)], now=1.0))
    kept, kel = net.controller.secrets("hal"), net.controller.export("hal")
    again = Controller()
    ident = again.restore("hal", kept, kel, now=2.0)
    assert ident.prefix == net.controller.identity("hal").prefix
    assert ident.sn == 1
    net.add(CONTROLLER, again)
    net.run(again.interact("hal", [{"after": "restore"}], now=3.0))
    assert again.pending() == []
    assert again.validator.state(ident.prefix).sn == 2  # type: ignore[union-attr]


def test_receipts_a_witness_holds_already_are_not_checked_again() -> None:
    """Gossip and the receipt exchange bring each receipt several times; a witness checks
    a receipt once (checking every copy was most of its work for a KEL submitted in bulk)."""
    checked: list[bytes] = []

    def counting(key: bytes, signature: bytes, message: bytes) -> bool:
        checked.append(signature)
        return crypto.verify(key, signature, message)

    net = Net.of(4)
    first = net.prefixes[0]
    net.add(first, Witness(node_signer(0), verify=counting))
    net.run(
        net.controller.incept("ida", [seed(21)], [seed(22)], witnesses=net.prefixes, toad=3, now=0)
    )
    prefix = net.controller.identity("ida").prefix
    kel = net.witness(first).validator.kel(prefix)
    assert kel is not None and len(kel.last.receipts) == 4
    event = kel.last.event
    rct = receipt(event.prefix, event.sn, event.said)
    held = messagize(rct, Attachments(couples=tuple(kel.last.receipts.items())))
    checked.clear()
    (reply,) = net.witness(first).step(Request(Surface.RECEIPTS, NodePrefix("c"), held), 1.0)
    assert isinstance(reply, Reply) and reply.code is Code.OK
    assert net.witness(first).step(Heard(kel_topic(prefix), NodePrefix("c"), held), 1.0) == []
    assert checked == []
    forged = messagize(rct, Attachments(couples=((net.prefixes[1], b"\x01" * 64),)))
    (reply,) = net.witness(first).step(Request(Surface.RECEIPTS, NodePrefix("c"), forged), 1.0)
    assert isinstance(reply, Reply) and reply.code is Code.NO_RECEIPT
    assert checked == [b"\x01" * 64]


def test_a_witness_admits_its_own_gossip_and_still_judges_everything_else() -> None:
    net = Net.of(4)
    net.run(
        net.controller.incept(
            "hal", [seed(16)], [seed(17)], witnesses=net.prefixes[:4], toad=3, now=0.0
        )
    )
    witness = net.witness(net.prefixes[0])
    prefix = net.controller.identity("hal").prefix
    event = interact(prefix, prior=kel_of(witness, prefix)[-1], sn=1)
    message = messagize(event, Attachments(sigs=(Signer(seed(16)).sign_indexed(event.raw, 0),)))
    effects = witness.step(Request(Surface.SUBMIT, NodePrefix(CONTROLLER), message), 0.0)
    (gossip,) = [e for e in effects if isinstance(e, Publish)]
    assert gossip.topic == kel_topic(prefix)
    assert witness.admits(gossip.topic, bytes(gossip.payload))  # a copy, as libp2p hands it
    for junk in (gossip.payload[:-3], b"\x00junk", gossip.payload[:50]):
        assert not witness.admits(gossip.topic, junk)
    assert witness.admits(gossip.topic, message)  # parsed: well formed, though not ours

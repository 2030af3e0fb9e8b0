"""Checking a KEL an application was shown against a watcher's copy (`roles/checking.py`):
consistent, behind, ahead, duplicitous (evidence that verifies offline, kept, published and
held by the other watcher too), invalid (kept nowhere), a recovery rotation that is no alarm,
and the bounds of a check query. Pure: the in-memory driver, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cbor2

from dkms.node.roles import checking
from dkms.node.roles.checking import MAX_EVENTS
from dkms.node.roles.codes import Code
from dkms.node.roles.effects import Reply, Surface
from dkms.node.roles.inputs import Request
from dkms.node.roles.pages import page_message
from dkms.node.roles.watcher import Watcher
from dkms.node.testing.keys import node_signer, seed
from dkms.node.testing.witnessed import Witnessed
from dkms.protocol.cesr import IndexedSig
from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.events import Event, interact, rotate
from dkms.protocol.evidence import parse_evidence, verify_evidence
from dkms.protocol.ids import NodePrefix
from dkms.protocol.stream import Attachments, messagize

from .kit import governance

WATCHERS = [Signer(seed(140 + i), transferable=False) for i in range(2)]
GOV, BUNDLE = governance(
    watchers=tuple(w.verfer for w in WATCHERS),
    jurors=tuple(w.verfer for w in WATCHERS),
    judges=(WATCHERS[0].verfer,),
)
WITNESSES = [node_signer(i) for i in range(4)]
APP = NodePrefix("")  # the application asking: a libp2p peer of no standing


def network() -> Witnessed:
    """4 witnesses (bt = 3), a controller and two rostered watchers (both jurors)."""
    net = Witnessed.of(4)
    for signer in WATCHERS:
        net.add(signer.verfer, Watcher(signer, GOV))
        net.step(signer.verfer, Request(Surface.GOVERNANCE, NodePrefix(""), BUNDLE))
    return net


def watcher(net: Witnessed, i: int) -> Watcher:
    role = net.roles[WATCHERS[i].verfer]
    assert isinstance(role, Watcher)
    return role


def incepted(net: Witnessed, name: str, first: int, events: int = 2) -> str:
    ctl = net.controller
    net.run(
        ctl.incept(name, [seed(first)], [seed(first + 1)], witnesses=net.prefixes, toad=3, now=0)
    )
    for n in range(events):
        net.run(ctl.interact(name, [{"n": n}], now=net.now))
    return ctl.identity(name).prefix


def shown(net: Witnessed, prefix: str, start: int = 0, end: int | None = None) -> bytes:
    """The KEL as a witness serves it (events with signatures and receipts), sn start..end-1."""
    kel = net.witness(net.prefixes[0]).validator.kel(prefix)
    assert kel is not None
    return b"".join(page_message(r) for r in kel.chain[start:end])


def witnessed(event: Event, signers: Sequence[Signer], witnesses: Sequence[int]) -> bytes:
    """`event` signed by `signers` and receipted (indexed -B) by the witnesses numbered."""
    sigs = tuple(s.sign_indexed(event.raw, i) for i, s in enumerate(signers))
    wigs = tuple(IndexedSig(i, None, WITNESSES[i].sign_raw(event.raw)) for i in witnesses)
    return messagize(event, Attachments(sigs=sigs, wigs=wigs))


def check(net: Witnessed, i: int, prefix: str, data: bytes, start: int = 0) -> dict[str, Any]:
    """Watcher `i`'s answer to a check of `data`; what the check made it do is carried out."""
    reply = check_reply(net, i, cbor2.dumps({"t": "check", "i": prefix, "s": start, "k": data}))
    assert reply.code is Code.OK, reply.reason
    answer: dict[str, Any] = cbor2.loads(reply.payload)
    assert answer["watcher"] == WATCHERS[i].verfer and answer["i"] == prefix
    return answer


def check_reply(net: Witnessed, i: int, payload: bytes) -> Reply:
    effects = net.step(WATCHERS[i].verfer, Request(Surface.QUERY, APP, payload))
    assert isinstance(effects[-1], Reply)  # the answer comes after what the check persists
    return effects[-1]


def chain_of(net: Witnessed, prefix: str, i: int | None = None) -> list[Event]:
    """The events of `prefix`'s KEL as witness 0 holds it (watcher `i`'s, if given)."""
    role = net.witness(net.prefixes[0]) if i is None else watcher(net, i)
    kel = role.validator.kel(prefix)
    assert kel is not None
    return [r.event for r in kel.chain]


def held_sn(net: Witnessed, i: int, prefix: str) -> int | None:
    kel = watcher(net, i).validator.kel(prefix)
    return None if kel is None else kel.sn


def test_consistent_and_behind() -> None:
    net = network()
    prefix = incepted(net, "alice", 1)
    answer = check(net, 0, prefix, shown(net, prefix))
    assert answer["verdict"] == "consistent" and answer["matched"] == 3 and answer["taken"] == 0
    assert (answer["sn"], answer["standing"], answer["evidence"]) == (2, "ok", [])
    answer = check(net, 1, prefix, shown(net, prefix, end=2))
    assert answer["verdict"] == "behind" and answer["at"] == 2 and answer["matched"] == 2
    assert "1 event(s) more, up to sn 2" in answer["reason"]
    # A piece from sn 1 on (a long KEL is checked piece by piece).
    answer = check(net, 1, prefix, shown(net, prefix, start=1), start=1)
    assert answer["verdict"] == "consistent" and answer["matched"] == 2


def test_ahead_the_watcher_takes_what_it_lacked() -> None:
    net = network()
    prefix = incepted(net, "bob", 3, events=0)
    net.down.update(w.verfer for w in WATCHERS)  # the gossip of two more events is lost
    for n in range(2):
        net.run(net.controller.interact("bob", [{"n": n}], now=net.now))
    net.down.clear()
    assert held_sn(net, 0, prefix) == 0
    answer = check(net, 0, prefix, shown(net, prefix))
    assert answer["verdict"] == "ahead" and (answer["matched"], answer["taken"]) == (1, 2)
    assert answer["at"] == 1 and answer["sn"] == 2 and answer["standing"] == "ok"
    assert held_sn(net, 0, prefix) == 2  # held now, with the receipts: checked again, the same
    assert check(net, 0, prefix, shown(net, prefix))["verdict"] == "consistent"


def test_a_watcher_that_holds_nothing_takes_a_fully_witnessed_kel() -> None:
    net = network()
    net.down.update(w.verfer for w in WATCHERS)
    prefix = incepted(net, "cy", 7, events=1)
    net.down.clear()
    assert held_sn(net, 1, prefix) is None
    answer = check(net, 1, prefix, shown(net, prefix, start=1), start=1)
    assert answer["verdict"] == "ahead" and answer["taken"] == 0
    assert "holds nothing of it: check from sn 0" in answer["reason"]
    answer = check(net, 1, prefix, shown(net, prefix))
    assert answer["verdict"] == "ahead" and answer["taken"] == 2 and answer["sn"] == 1
    assert answer["standing"] == "ok"
    assert "lacked the 2 event(s) from sn 0, and holds them now" in answer["reason"]
    # A watcher told to watch other identifiers takes none of this one's events.
    picky = Signer(seed(150), transferable=False)
    net.add(picky.verfer, Watcher(picky, GOV, watch=frozenset({"Esomeone-else"})))
    ask = cbor2.dumps({"t": "check", "i": prefix, "s": 0, "k": shown(net, prefix)})
    reply = net.step(picky.verfer, Request(Surface.QUERY, APP, ask))[-1]
    assert isinstance(reply, Reply) and reply.code is Code.OK
    answer = cbor2.loads(reply.payload)
    assert answer["verdict"] == "ahead" and answer["taken"] == 0 and answer["sn"] is None
    assert "does not follow it" in answer["reason"]


def test_a_hidden_fork_is_duplicitous_and_every_watcher_holds_the_evidence() -> None:
    net = network()
    prefix = incepted(net, "mallory", 9, events=1)
    a = chain_of(net, prefix)[1]
    ident = net.controller.identity("mallory")
    b = interact(prefix, prior=a.prior, sn=1, anchors=[{"d": "pay eve"}])
    # Three colluding witnesses (bt = 3) receipt b directly: no witness ever holds it, and it
    # never reaches the gossip. The victim is shown the KEL with b.
    fork = shown(net, prefix, end=1) + witnessed(b, ident.signers, [0, 1, 2])
    answer = check(net, 0, prefix, fork)
    assert answer["verdict"] == "duplicitous" and answer["at"] == 1 and answer["matched"] == 1
    assert answer["standing"] == "duplicitous" and answer["duplicitous_from"] == 1
    proven = [verify_evidence(parse_evidence(e)) for e in answer["evidence"]]
    controller = [p for p in proven if p.kind == "controller"]
    assert [set(p.saids) for p in controller] == [{a.said, b.said}]
    assert proven[0].kind == "controller"  # the conflict found now comes first
    # The receipts on b caught the colluders too: each receipted a and b at sn 1.
    colluders = {p.accused for p in proven if p.kind == "witness"}
    assert colluders == {WITNESSES[i].verfer for i in (0, 1, 2)}
    assert chain_of(net, prefix, 0)[1] == a  # the watcher's own copy is as it was
    # The juror published it in its turn: the other watcher, never asked, holds it too.
    net.advance(1.0)
    for i in (0, 1):
        state = watcher(net, i).key_state(prefix)
        assert state["standing"] == "duplicitous" and state["duplicitous_from"] == 1
    # Checked again, or a piece that agrees with the watcher's copy: still duplicitous.
    assert check(net, 1, prefix, fork)["verdict"] == "duplicitous"
    answer = check(net, 1, prefix, shown(net, prefix))
    assert answer["verdict"] == "duplicitous" and answer["matched"] == 2
    assert "holds evidence that it is duplicitous from sn 1" in answer["reason"]


def test_invalid_content_is_answered_invalid_and_kept_nowhere() -> None:
    net = network()
    prefix = incepted(net, "dora", 11, events=1)
    ident = net.controller.identity("dora")
    kel = shown(net, prefix)
    a = chain_of(net, prefix)[1]
    thief = Signer(seed(99))
    forged = interact(prefix, prior=a.prior, sn=1, anchors=[{"d": "forged"}])
    short = interact(prefix, prior=a.said, sn=2, anchors=[{"d": "one receipt"}])
    unchained = interact(prefix, prior=a.said, sn=1, anchors=[{"d": "p is not sn 0's"}])
    other = incepted(net, "ed", 13, events=0)
    cases = {
        b"\xff\x00 not CESR": "do not read as CESR",
        b"": "holds no key events",
        shown(net, other): f"holds an event of {other}",
        shown(net, prefix, start=1): "must run from sn 0 on: sn 1 is not 0",
        shown(net, prefix, end=1) + witnessed(unchained, ident.signers, [0, 1, 2]): (
            "its event at sn 1 does not chain to the one before it"
        ),
        shown(net, prefix, end=1) + witnessed(forged, [thief], [0, 1, 2]): (
            "its ixn at sn 1 is rejected: conflicts with the accepted event at sn 1"
        ),
        kel + witnessed(short, ident.signers, [0]): (
            "its ixn at sn 2 cannot be verified: 1 of 3 witness receipts"
        ),
    }
    for data, why in cases.items():
        answer = check(net, 0, prefix, data)
        assert answer["verdict"] == "invalid", (why, answer)
        assert why in answer["reason"], answer["reason"]
        assert answer["evidence"] == [] and answer["standing"] == "ok"
    assert held_sn(net, 0, prefix) == 1
    assert watcher(net, 0).holdings.evidence == {}
    # More events than one piece may hold: refused before any is judged.
    more, prior = [], a.said
    for sn in range(2, MAX_EVENTS + 2):
        event = interact(prefix, prior=prior, sn=sn, anchors=[])
        more.append(witnessed(event, ident.signers, [0, 1, 2]))
        prior = event.said
    answer = check(net, 0, prefix, kel + b"".join(more))
    assert answer["verdict"] == "invalid" and f"over {MAX_EVENTS} events" in answer["reason"]
    assert held_sn(net, 0, prefix) == 1


def test_a_recovery_rotation_is_no_alarm_either_way() -> None:
    net = network()
    prefix = incepted(net, "rita", 15, events=1)
    chain = chain_of(net, prefix)
    nxt, after = Signer(seed(16)), Signer(seed(17))
    recovery = rotate(
        prefix,
        keys=[nxt.verfer],
        prior=chain[0].said,
        sn=1,
        next_digests=[next_key_digest(after.verfer)],
        witnesses=net.prefixes,
        toad=3,
    )
    stale = shown(net, prefix)  # what an application was shown before the recovery
    fixed = shown(net, prefix, end=1) + witnessed(recovery, [nxt], [0, 1, 2, 3])
    answer = check(net, 0, prefix, fixed)
    assert answer["verdict"] == "ahead" and answer["taken"] == 1 and answer["at"] == 1
    assert "recovery rotation at sn 1 superseded" in answer["reason"]
    assert answer["d"] == recovery.said and answer["evidence"] == []
    # The superseded interaction, shown to the watcher that holds the recovery: behind.
    answer = check(net, 0, prefix, stale)
    assert answer["verdict"] == "behind" and answer["at"] == 1
    assert (
        f"the rotation {recovery.said} this watcher holds at sn 1 supersedes it"
        in (answer["reason"])
    )
    assert answer["standing"] == "ok" and answer["evidence"] == []
    assert watcher(net, 0).holdings.evidence == {}


def test_malformed_checks_are_refused() -> None:
    net = network()
    prefix = incepted(net, "fay", 19, events=0)
    data = shown(net, prefix)
    bad = [
        {"t": "check", "s": 0, "k": data},
        {"t": "check", "i": 7, "k": data},
        {"t": "check", "i": prefix, "s": -1, "k": data},
        {"t": "check", "i": prefix, "s": True, "k": data},
        {"t": "check", "i": prefix, "k": "text"},
    ]
    for ask in bad:
        reply = check_reply(net, 0, cbor2.dumps(ask))
        assert reply.code is Code.BAD_QUERY, ask
    assert checking.ask(prefix, 0, data) == cbor2.dumps(
        {"t": "check", "i": prefix, "s": 0, "k": data}
    )

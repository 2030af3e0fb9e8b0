"""Controller and witnesses wired together in memory (the h11 way): no network, no clock.

`Net` performs the roles' effects synchronously: a `Send` becomes a call on the target role
and its `Reply` an `answer` on the sender; `Persist*` effects are appended to a per-witness
"disk" (replayed by `restart`); `Publish` is delivered to every other witness; timers fire
when `advance` moves the clock past them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import pytest

from dkms.node.roles.controller import Controller, RetryPolicy
from dkms.node.roles.effects import (
    Effect,
    PersistEvent,
    PersistReceipts,
    Publish,
    Reply,
    Report,
    Send,
    SetTimer,
    Surface,
)
from dkms.node.roles.witness import Witness
from dkms.protocol.crypto import Signer
from dkms.protocol.events import interact, receipt
from dkms.protocol.stream import Attachments, messagize

CONTROLLER = "controller"


def seed(n: int) -> bytes:
    return bytes([n]) * 32


def witness_signer(n: int) -> Signer:
    return Signer(bytes([200 + n]) * 32, transferable=False)


@dataclass
class Net:
    witnesses: dict[str, Witness]
    controller: Controller = field(default_factory=Controller)
    down: set[str] = field(default_factory=set)
    disk: dict[str, list[bytes]] = field(default_factory=dict)
    published: list[Publish] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)
    timers: dict[tuple[str, str], float] = field(default_factory=dict)
    now: float = 0.0
    gossip: bool = True
    _requests: int = 0

    @classmethod
    def of(cls, count: int, retry: RetryPolicy | None = None) -> Net:
        witnesses = [Witness(witness_signer(i)) for i in range(count)]
        net = cls({w.prefix: w for w in witnesses}, Controller(retry=retry))
        for w in witnesses:
            net.disk[w.prefix] = []
        return net

    @property
    def prefixes(self) -> list[str]:
        return list(self.witnesses)

    def run(self, effects: list[Effect], origin: str = CONTROLLER) -> None:
        queue: deque[tuple[str, Effect]] = deque((origin, e) for e in effects)
        while queue:
            who, effect = queue.popleft()
            queue.extend(self._perform(who, effect))

    def _perform(self, who: str, effect: Effect) -> list[tuple[str, Effect]]:
        if isinstance(effect, Send):
            return self._send(who, effect)
        if isinstance(effect, PersistEvent | PersistReceipts):
            message = effect.message if isinstance(effect, PersistEvent) else _rct(effect)
            self.disk[who].append(message)
        elif isinstance(effect, Publish):
            self.published.append(effect)
            if self.gossip:
                out: list[tuple[str, Effect]] = []
                for prefix, w in self.witnesses.items():
                    if prefix != who and prefix not in self.down:
                        out.extend((prefix, e) for e in w.heard(effect.payload, self.now))
                return out
        elif isinstance(effect, SetTimer):
            self.timers[(who, effect.key)] = effect.at
        elif isinstance(effect, Report):
            self.reports.append(effect)
        return []

    def _send(self, who: str, send: Send) -> list[tuple[str, Effect]]:
        self._requests += 1
        request = self._requests
        if send.to in self.down or send.to not in self.witnesses:
            return self._answer(who, send.tag, False, b"", "unreachable")
        target = self.witnesses[send.to]
        handler = {
            Surface.SUBMIT: target.submit,
            Surface.RECEIPTS: target.receipts,
            Surface.QUERY: target.query,
        }[send.surface]
        effects = handler(request, send.payload, self.now)
        out: list[tuple[str, Effect]] = []
        for effect in effects:  # performed in order: persistence lands before the reply
            if isinstance(effect, Reply):
                out.extend(self._answer(who, send.tag, effect.ok, effect.payload, effect.reason))
            else:
                out.extend(self._perform(send.to, effect))
        return out

    def _answer(
        self, who: str, tag: str, ok: bool, payload: bytes, reason: str
    ) -> list[tuple[str, Effect]]:
        if who == CONTROLLER:
            effects = self.controller.answer(tag, ok, payload, reason, self.now)
        else:
            effects = self.witnesses[who].answer(tag, ok, payload, reason, self.now)
        return [(who, e) for e in effects]

    def advance(self, seconds: float) -> None:
        self.now += seconds
        while True:
            due = sorted((at, k) for k, at in self.timers.items() if at <= self.now)
            if not due:
                return
            _, (who, key) = due[0]
            del self.timers[(who, key)]
            role = self.controller if who == CONTROLLER else self.witnesses[who]
            self.run(role.timer(key, self.now), who)

    def restart(self, prefix: str) -> Witness:
        """A fresh witness with the same key, rebuilt from what it persisted."""
        fresh = Witness(self.witnesses[prefix].signer)
        fresh.restore(b"".join(self.disk[prefix]), self.now)
        self.witnesses[prefix] = fresh
        return fresh


def _rct(effect: PersistReceipts) -> bytes:
    rct = receipt(effect.prefix, effect.sn, effect.said)
    return messagize(rct, Attachments(couples=effect.couples))


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
    expected = [e for e in kel_of(net.witnesses[w[1]], alice)]
    assert len(expected) == 3
    for prefix in w[1:]:  # the cut witness holds the first event only, plus what gossip gave
        assert kel_of(net.witnesses[prefix], alice) == expected
        assert fully_witnessed(net.witnesses[prefix], alice)
    assert net.controller.export("alice")  # the controller's own KEL is complete too
    assert net.controller.validator.state(alice).sn == 2  # type: ignore[union-attr]
    # Every event was persisted before it was receipted, and published.
    assert any(p.topic.startswith("/dkms/1/kel/") for p in net.published)


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
    assert kel_of(net.witnesses[late], prefix) == []
    net.down.clear()
    net.advance(1.0)
    assert len(kel_of(net.witnesses[late], prefix)) == 1


def test_conflicting_version_is_refused() -> None:
    net = Net.of(4)
    net.run(
        net.controller.incept(
            "carol", [seed(8)], [seed(9)], witnesses=net.prefixes, toad=3, now=0.0
        )
    )
    net.run(net.controller.interact("carol", [{"d": "one"}], now=1.0))
    ident = net.controller.identity("carol")
    kel = net.witnesses[net.prefixes[0]].validator.kel(ident.prefix)
    assert kel is not None
    # Same keys, same sn, different content: a second version of sn 1.
    other = interact(ident.prefix, prior=kel.chain[0].event.said, sn=1, anchors=[{"d": "two"}])
    message = messagize(other, Attachments(sigs=(Signer(seed(8)).sign_indexed(other.raw, 0),)))
    effects = net.witnesses[net.prefixes[0]].submit(99, message, 2.0)
    reply = next(e for e in effects if isinstance(e, Reply))
    assert not reply.ok
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
    before = kel_of(net.witnesses[target], prefix)
    fresh = net.restart(target)
    assert kel_of(fresh, prefix) == before
    assert fully_witnessed(fresh, prefix)
    kel = fresh.validator.kel(prefix)
    assert kel is not None
    other = interact(prefix, prior=kel.chain[2].event.said, sn=3, anchors=[{"n": "other"}])
    message = messagize(other, Attachments(sigs=(Signer(seed(10)).sign_indexed(other.raw, 0),)))
    reply = next(e for e in fresh.submit(7, message, 9.0) if isinstance(e, Reply))
    assert not reply.ok and "conflicting" in reply.reason


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
    assert kel_of(net.witnesses[late], prefix) == kel_of(net.witnesses[net.prefixes[0]], prefix)
    assert len(kel_of(net.witnesses[late], prefix)) == 3


def test_witness_refuses_events_that_do_not_name_it() -> None:
    net = Net.of(5)
    outsider = net.prefixes[4]
    net.run(
        net.controller.incept(
            "gus", [seed(14)], [seed(15)], witnesses=net.prefixes[:4], toad=3, now=0.0
        )
    )
    message = net.controller.export("gus")
    reply = next(e for e in net.witnesses[outsider].submit(1, message, 1.0) if isinstance(e, Reply))
    assert not reply.ok and "not a designated witness" in reply.reason


def test_unreadable_submission_gets_a_clear_refusal() -> None:
    witness = Witness(witness_signer(0))
    effects = witness.submit(1, b"\x00garbage", 0.0)
    assert effects == [Reply(1, False, reason=effects[0].reason)]  # type: ignore[union-attr]
    assert "unreadable submission" in effects[0].reason  # type: ignore[union-attr]


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
    net.controller = again
    net.run(again.interact("hal", [{"after": "restore"}], now=3.0))
    assert again.pending() == []
    assert again.validator.state(ident.prefix).sn == 2  # type: ignore[union-attr]

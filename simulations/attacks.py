"""Adversaries that act, driven through the roles as a real attacker's bytes reach them.

    equivocate  (`equivocations`) an identifier signs two interactions at its next sn and
                splits its witnesses between them; `colluding_witnesses` receipt the second
                too and gossip it
    spam        (`spammers`) relays publish invalid messages on the KEL shards
    rival       (`rivals`) an identifier makes an interaction of its own and, once it is fully
                witnessed, signs a rival version of it (same sn and prior, other anchors) and
                submits it to each of its witnesses. Their answers (codes, receipts of the
                rival) are counted, and at the end who holds it where: the witnesses'
                duplicitous-event logs, any validator that accepted it
    fork        (`forks`) an identifier makes an interaction, fully witnessed; `FORK_WAIT`
                seconds later its first `bt` witnesses, colluding (the adversary holds their
                keys), receipt a rival version, which no one gossips, and the KEL with that
                fork is handed to one victim: a relay, outside the witness and watcher set,
                standing for an application. The victim validates it on its own
                (`kelcheck.prepare`: what a victim that stopped there accepts, fooled) and
                checks it with every watcher through `node.client.kelcheck.check_kel`, as
                `dkms kel check` does (`Victim`); its verdict is `kelcheck.status` of the
                answers, when the last one is in
    malformed   (`malformed_senders`) relays send malformed requests and gossip to witnesses
                and watchers (`garbage.py`)

A rival and a fork are equivocations to the recorder (`Recorder.equivocation`): its detection
clocks and accusations count them as any other; a fork's clock starts when the victim is
handed it. The runner makes `Attacks` only for a scenario with rivals, forks or malformed
senders, and only then are its fields added to results.json (`summary`): the other
scenarios' results stay what they were.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import trio

from dkms.node.client import kelcheck
from dkms.node.client.home import CommandError
from dkms.node.roles.codes import Code
from dkms.node.roles.effects import Reply, Send, Surface
from dkms.node.roles.pages import page_message
from dkms.node.roles.topics import KEL_SHARDS, kel_topic, peer_parse
from dkms.node.runtime.transport import Answer, TransportError
from dkms.protocol.cesr import IndexedSig
from dkms.protocol.errors import ProtocolError
from dkms.protocol.events import Event, Ilk, interact, receipt
from dkms.protocol.ids import NodePrefix, Said
from dkms.protocol.stream import Attachments, Message, messagize

from .garbage import Garbage
from .record import Rival, stats
from .world import REQUEST_OVERHEAD, World

if TYPE_CHECKING:
    from .scenario import Scenario

FORK_WAIT: Final = 2.0  # seconds from an event fully witnessed to its fork shown
POLL: Final = 0.25  # seconds between looks at whether an attacker's own event is witnessed
CHECK_TIMEOUT: Final = 10.0  # seconds a victim's check waits for each answer
# What `Attacks.summary` adds to results.json (and `killed`, the list, when a node was killed);
# no other scenario's results have them.
RESULT_FIELDS: Final = ("nodes_killed", "rivals", "forks", "malformed")


# ---------------------------------------------------------------- equivocation, spam


def equivocate(world: World, node: int) -> None:
    """The identifier's keys sign two interactions at its next sn; version a goes to the
    first half of its witnesses, version b to the rest; colluders receipt b too."""
    ident = world.controller(node).identity("id")
    versions: list[tuple[Event, bytes]] = []
    for label in ("a", "b"):
        event = interact(
            ident.prefix, prior=ident.last_said, sn=ident.sn + 1, anchors=[{"v": label}]
        )
        sigs = tuple(s.sign_indexed(event.raw, i) for i, s in enumerate(ident.signers))
        versions.append((event, messagize(event, Attachments(sigs=sigs))))
    half = len(ident.witnesses) // 2
    groups = (ident.witnesses[:half], ident.witnesses[half:])
    world.record.equivocation(ident.prefix, versions[1][0].said, node)
    for (event, message), group in zip(versions, groups, strict=True):
        tag = Rival(Said(event.said))
        for witness in group:
            world.send(node, [Send(NodePrefix(witness), Surface.SUBMIT, message, tag)])
    colluders = groups[0][: world.sc.adversaries.colluding_witnesses]
    b, _ = versions[1]
    for witness in colluders:
        world.sim.after(0.5, _collude, world, world.node_of[witness], b)


def _collude(world: World, node: int, event: Event) -> None:
    role = world.witnesses[node]
    world.record.colluders.add(role.prefix)
    rct = receipt(event.prefix, event.sn, event.said)
    couple = ((role.prefix, role.signer.sign_raw(event.raw)),)
    message = event.raw + messagize(rct, Attachments(couples=couple))
    world.record.published(node, world.gossip.publish(node, kel_topic(event.prefix), message))


def spam(world: World, node: int) -> None:
    rng = world.sim.rng
    topic = f"/dkms/1/kel/{rng.randrange(KEL_SHARDS)}"
    world.gossip.publish(
        node, topic, b"\x00not a key event " + rng.getrandbits(64).to_bytes(8, "big")
    )
    world.record.spam += 1


# ---------------------------------------------------------------- rivals and forks


@dataclass
class Case:
    """One rival or fork: the version every witness accepted at (prefix, sn), and the other."""

    prefix: str
    sn: int
    first: str  # SAID of the version witnessed
    said: str  # SAID of the rival (or fork)
    answers: Counter[str] = field(default_factory=Counter)  # witnesses' codes, by name
    receipts: int = 0  # receipts of the rival handed back
    victim: int | None = None  # a fork's
    shown: float | None = None  # when the victim was handed the fork
    fooled: bool = False  # the fork validated on its own
    checked: list[kelcheck.Checked] = field(default_factory=list)
    concluded: float | None = None  # when the victim's last answer came in
    verdict: kelcheck.Exit | None = None


class Attacks:
    """The rivals, forks and malformed senders of one world, and what came of them."""

    def __init__(self, world: World) -> None:
        self.world = world
        a = world.sc.adversaries
        first = a.equivocations
        self.rivalling = world.controller_ids[first : first + a.rivals]
        self.forking = world.controller_ids[first + a.rivals : first + a.rivals + a.forks]
        free = [r for r in world.relay_ids if r not in world.gossip.silent][a.spammers :]
        self.victims = free[: a.forks]
        # At random: the lowest node ids come first wherever peers are taken in order.
        rest = free[a.forks :]
        count = min(a.malformed_senders, len(rest))
        senders = sorted(world.sim.rng.sample(rest, count)) if count else []
        self.garbage = Garbage(world, senders) if senders else None
        self.cases: dict[str, Case] = {}  # rival SAID -> case
        self.forks: list[Case] = []

    @staticmethod
    def wanted(sc: Scenario) -> bool:
        a = sc.adversaries
        return bool(a.rivals or a.forks or a.malformed_senders)

    def schedule(self) -> None:
        sc, sim = self.world.sc, self.world.sim
        attackers = [(n, self._rival) for n in self.rivalling]
        attackers += [(n, self._fork) for n in self.forking[: len(self.victims)]]
        for k, (node, then) in enumerate(attackers):
            sim.at(sc.duration / 3 + k * (sc.duration / 3) / len(attackers), self._own, node, then)
        if self.garbage is not None:
            self.garbage.schedule()

    def _own(self, node: int, then: Any) -> None:
        """The attacker's own interaction (once its last event is witnessed); `then(node)`
        once this one is."""
        world = self.world
        ctl = world.controller(node)
        if not ctl.done(ctl.identity("id").last_said):
            if world.sim.now < world.sc.duration:
                world.sim.after(POLL, self._own, node, then)
            return
        effects = ctl.interact("id", [{"own": node}], now=world.sim.now)
        world.perform(node, effects)
        world.record.stepped(node)
        self._witnessed(node, ctl.identity("id").last_said, then)

    def _witnessed(self, node: int, said: str, then: Any) -> None:
        world = self.world
        if world.controller(node).done(said):
            then(node)
        elif world.sim.now < world.sc.duration + world.sc.settle:
            world.sim.after(POLL, self._witnessed, node, said, then)

    def _other(self, node: int, label: str) -> tuple[Event, tuple[IndexedSig, ...], Case]:
        """Another version of the identifier's last event, signed by its keys."""
        ident = self.world.controller(node).identity("id")
        held = self.world.controller(node).validator.record(ident.last_said)
        assert held is not None and held.event.prior is not None
        event = interact(ident.prefix, prior=held.event.prior, sn=ident.sn, anchors=[{label: node}])
        sigs = tuple(s.sign_indexed(event.raw, i) for i, s in enumerate(ident.signers))
        return event, sigs, Case(ident.prefix, ident.sn, ident.last_said, event.said)

    def _rival(self, node: int) -> None:
        world = self.world
        event, sigs, case = self._other(node, "rival")
        self.cases[case.said] = case
        world.record.equivocation(case.prefix, case.said, node)
        message = messagize(event, Attachments(sigs=sigs))
        tag = Rival(Said(event.said))
        for witness in world.controller(node).identity("id").witnesses:
            world.send(node, [Send(NodePrefix(witness), Surface.SUBMIT, message, tag)])

    def answered(self, send: Send, answer: Reply) -> None:
        """A witness's answer to a rival (`World._answer`)."""
        assert isinstance(send.tag, Rival)
        case = self.cases.get(send.tag.said)
        if case is None:
            return  # an equivocation's version
        case.answers[answer.code.name.lower()] += 1
        try:
            frames = peer_parse(answer.payload) if answer.payload else []
        except ProtocolError:
            return
        case.receipts += sum(
            len(f.attachments.couples) + len(f.attachments.wigs)
            for f in frames
            if isinstance(f, Message) and f.event.ilk is Ilk.RCT and f.event.said == case.said
        )

    def _fork(self, node: int) -> None:
        victim = self.victims[self.forking.index(node)]
        self.world.sim.after(FORK_WAIT, self._show, node, victim)

    def _show(self, node: int, victim: int) -> None:
        """The fork, receipted by the first `bt` witnesses, handed to `victim`, who checks it."""
        world = self.world
        ctl = world.controller(node)
        ident = ctl.identity("id")
        event, sigs, case = self._other(node, "fork")
        colluders = ident.witnesses[: world.sc.bt]
        wigs = []
        for witness in colluders:
            role = world.witnesses[world.node_of[witness]]
            world.record.colluders.add(role.prefix)
            wigs.append(
                IndexedSig(ident.witnesses.index(witness), None, role.signer.sign_raw(event.raw))
            )
        kel = ctl.validator.kel(ident.prefix)
        assert kel is not None
        before = b"".join(page_message(r) for r in kel.chain[: case.sn])
        shown = before + messagize(event, Attachments(sigs=sigs, wigs=tuple(wigs)))
        case.victim, case.shown = victim, world.sim.now
        self.forks.append(case)
        world.record.equivocation(case.prefix, case.said, node)
        world.record.equivocations[case.prefix].t0 = world.sim.now
        Victim(world, victim, case).check(shown)

    # ---------------------------------------------------------------- results

    def summary(self) -> dict[str, Any]:
        w = self.world
        out: dict[str, Any] = {"nodes_killed": len(w.killed)}
        if w.killed:
            out["killed"] = [
                {"node": n, "role": _role(w, n), "error": why}
                for n, why in sorted(w.killed.items())
            ]
        if self.rivalling:
            out["rivals"] = self._rivals()
        if self.forking:
            out["forks"] = self._forks()
        if self.garbage is not None:
            out["malformed"] = self.garbage.summary()
        return out

    def _rivals(self) -> dict[str, Any]:
        w = self.world
        cases = list(self.cases.values())
        answers: Counter[str] = Counter()
        for case in cases:
            answers.update(case.answers)
        return {
            "signed": len(cases),
            "answers": dict(sorted(answers.items())),
            "receipts": sum(c.receipts for c in cases),
            # (witness, rival) pairs kept in a witness's duplicitous-event log
            "kept_by_witnesses": sum(
                r.rivals.held(c.prefix, c.sn, c.said) for c in cases for r in w.witnesses.values()
            ),
            "accepted_by_witnesses": _accepting(cases, w.witnesses.values()),
            "accepted_by_watchers": _accepting(cases, w.watchers.values()),
            "first_held_by_watchers": _holding_first(cases, w.watchers.values()),
            "ruled_fraction": self._ruled(cases),
        }

    def _forks(self) -> dict[str, Any]:
        cases = self.forks
        verdicts: Counter[str] = Counter(r.verdict for c in cases for r in c.checked)
        detected = [c for c in cases if c.verdict is kelcheck.Exit.DUPLICITOUS]
        return {
            "shown": len(cases),
            "fooled": sum(c.fooled for c in cases),
            "detected": len(detected),
            "verdicts": dict(sorted(verdicts.items())),
            "detect_ms": stats(
                [(c.concluded - c.shown) * 1000 for c in detected if c.concluded and c.shown],
                ("p50", "max"),
            ),
            "accepted_by_watchers": _accepting(cases, self.world.watchers.values()),
            "first_held_by_watchers": _holding_first(cases, self.world.watchers.values()),
            "ruled_fraction": self._ruled(cases),
        }

    def _ruled(self, cases: list[Case]) -> float | None:
        """Of the honest watchers, the share holding a judge's ruling on each case, averaged."""
        w = self.world
        honest = [w.watchers[v] for v in w.watcher_ids if v not in w.eclipsed]
        if not cases or not honest:
            return None
        held = [sum(bool(r.holdings.about(c.prefix)[1]) for r in honest) for c in cases]
        return round(sum(held) / (len(honest) * len(cases)), 6)


class Victim:
    """An application handed a KEL, checking it with every watcher as `dkms kel check` does:
    `kelcheck.prepare`, then `kelcheck.check_kel` for each watcher once the first piece has
    had its way there, answered by the watcher's role at that virtual time (`_Asker`)."""

    def __init__(self, world: World, node: int, case: Case) -> None:
        self.world, self.node, self.case = world, node, case

    def check(self, data: bytes) -> None:
        world, case = self.world, self.case
        try:
            shown = kelcheck.prepare(data, case.prefix)
        except CommandError:
            return  # it does not validate: no victim would take it
        case.fooled = shown.said == case.said
        size = len(shown.pieces[0][1]) + REQUEST_OVERHEAD
        for watcher in world.watcher_ids:
            out = world.links.delay(self.node, watcher, size, world.sim.now)
            if out is None:
                failed = kelcheck.Checked(world.prefix_of[watcher], reason="no answer: lost")
                world.sim.after(CHECK_TIMEOUT, self._answered, failed)
            else:
                world.sim.after(out, self._ask, watcher, shown)

    def _ask(self, watcher: int, shown: kelcheck.Shown) -> None:
        asker = _Asker(self.world, self.node)
        ask = partial(kelcheck.check_kel, asker, [self.world.prefix_of[watcher]], shown)
        (checked,) = trio.run(partial(ask, timeout=CHECK_TIMEOUT))
        self.world.sim.after(asker.elapsed, self._answered, checked)

    def _answered(self, checked: kelcheck.Checked) -> None:
        case = self.case
        case.checked.append(checked)
        if len(case.checked) == len(self.world.watcher_ids):
            case.concluded = self.world.sim.now
            case.verdict = kelcheck.status(case.checked)


class _Asker:
    """`kelcheck.Requester` in virtual time: each request is answered by the watcher's role
    at once (the first one's way there has elapsed already); `elapsed` adds up the rest of
    the check's travel, every later request's way there and every answer's way back."""

    def __init__(self, world: World, node: int) -> None:
        self.world, self.node = world, node
        self.elapsed = 0.0
        self.first = True

    async def request(self, to: str, surface: str, payload: bytes, timeout: float) -> Answer:
        world, node = self.world, self.node
        target = world.node_of.get(to)
        size = len(payload) + REQUEST_OVERHEAD
        world.requests += 1
        if target is None:
            raise TransportError(f"no node {to}")
        if not self.first:
            out = world.links.delay(node, target, size, world.sim.now)
            if out is None:
                raise TransportError("lost")
            self.elapsed += out
        self.first = False
        replies: list[Reply] = []
        if not world.serve(target, node, Surface(surface), payload, replies.append):
            return Answer(Code.NOT_SERVED, b"", "not served")
        answer = replies[0] if replies else Reply.refuse(Code.REFUSED, "no answer")
        back = world.links.delay(
            target, node, len(answer.payload) + REQUEST_OVERHEAD, world.sim.now
        )
        if back is None or answer.code is Code.UNREACHABLE:
            raise TransportError("timed out")
        self.elapsed += back
        return Answer(answer.code, answer.payload, answer.reason)


def _accepting(cases: list[Case], roles: Any) -> int:
    """(role, case) pairs where the role's validator accepted the rival or fork."""
    return sum(r.validator.record(c.said) is not None for c in cases for r in roles)


def _holding_first(cases: list[Case], roles: Any) -> int:
    """(role, case) pairs where the role's KEL holds the version witnessed at the case's sn."""
    held = 0
    for case in cases:
        for role in roles:
            kel = role.validator.kel(case.prefix)
            record = kel.at(case.sn) if kel is not None else None
            held += record is not None and record.event.said == case.first
    return held


def _role(world: World, node: int) -> str:
    if node in world.witnesses:
        return "witness"
    if node in world.watchers:
        return "watcher"
    return "controller" if node in world.controllers else "relay"

"""A simulated DKMS network: the real `node/roles` state machines on the gossip model.

Theory of operation. Node ids are 0..N-1; the scenario's seed shuffles which are witnesses,
watchers, controllers (one per identifier) and relays. Every node but the controllers joins
every KEL shard topic (a topic's overlay is built when first used) and watchers also join
`/dkms/1/duplicity`. Each role's effects become scheduled deliveries:

    Publish       gossip.publish (withholding witnesses drop theirs)
    Subscribe     gossip.subscribe
    Send          a request reaching the node named by prefix after one link delay; its
                  handler's `Reply` comes back after another, into the sender's `answer`
    SetTimer      the role's `timer(key)` at that time (a later SetTimer of a key replaces it)
    Persist*      kept in memory by the role itself: nothing to do
    Report        counted

Every signature check goes through one `MemoVerifier` and every gossip payload is parsed once
(`ParseCache`), shared by all nodes: the same bytes verify and parse the same way everywhere.
Watchers get the governance roster directly (all watchers jurors, the first honest one the
judge). What happens is recorded by `Recorder` (see `record.py`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from dkms.node.govcmd import roster_bundle
from dkms.node.roles.controller import Controller, RetryPolicy
from dkms.node.roles.effects import (
    Effect,
    Publish,
    Reply,
    Report,
    Send,
    SetTimer,
    Subscribe,
    Surface,
)
from dkms.node.roles.topics import (
    DUPLICITY_TOPIC,
    KEL_SHARDS,
    ParseCache,
    kel_topic,
    well_formed,
)
from dkms.node.roles.watcher import Watcher
from dkms.node.roles.witness import Witness
from dkms.protocol.crypto import MemoVerifier, Signer
from dkms.protocol.events import Event, interact, receipt
from dkms.protocol.roster import Roster
from dkms.protocol.stream import Attachments, BadFrame, Message, messagize

from .engine import Sim
from .gossip import Gossip, Msg
from .links import Links
from .record import Recorder
from .scenario import Scenario

Frames = list[Message | BadFrame]
Role = Witness | Watcher | Controller


class World:
    """Every node, its role, and the wiring of effects to the gossip and link models."""

    def __init__(self, scenario: Scenario, *, seed: int | None = None) -> None:
        self.sc = scenario
        self.sim = Sim(scenario.seed if seed is None else seed)
        rng = self.sim.rng
        n = scenario.nodes
        ids = list(range(n))
        rng.shuffle(ids)
        w, v, c = scenario.witnesses, scenario.watchers, scenario.identifiers
        self.witness_ids = sorted(ids[:w])
        self.watcher_ids = sorted(ids[w : w + v])
        self.controller_ids = sorted(ids[w + v : w + v + c])
        self.relay_ids = sorted(ids[w + v + c :])
        self.links = Links(scenario.link, rng, region=self._regions(n))
        self.parse = ParseCache(size=50_000)
        self.verify = MemoVerifier(size=200_000)
        self.gossip = Gossip(
            self.sim,
            self.links,
            scenario.gossip,
            n,
            validate=self._valid,
            receive=self._receive,
        )
        self.roles: dict[int, Role] = {}
        self.prefix_of: dict[int, str] = {}
        self.node_of: dict[str, int] = {}
        self.timers: dict[tuple[int, str], int] = {}
        self.requests = 0  # requests sent (results.json)
        self._request_ids = itertools.count(1)
        self.reports: dict[str, int] = {}
        self.withholding: set[int] = set()
        self.record = Recorder(self)
        self._make_roles()
        self._wire()

    # ---------------------------------------------------------------- building

    def _regions(self, n: int) -> list[int]:
        regions = len(self.sc.link.regions)
        if not regions:
            return []
        return [self.sim.rng.randrange(regions) for _ in range(n)]

    def _seed(self) -> bytes:
        return self.sim.rng.getrandbits(256).to_bytes(32, "big")

    def _make_roles(self) -> None:
        for node in self.witness_ids:
            role = Witness(
                Signer(self._seed(), transferable=False), verify=self.verify, parse=self.parse
            )
            self._name(node, role.prefix, role)
        gov = Controller(verify=self.verify)
        gov.incept("governance", [self._seed()], [self._seed()], now=0.0)
        self.governance = gov.identity("governance").prefix
        watchers = []
        for node in self.watcher_ids:
            role_w = Watcher(
                Signer(self._seed(), transferable=False),
                self.governance,
                verify=self.verify,
                parse=self.parse,
                anomaly_after=3600.0,
            )
            self._name(node, role_w.prefix, role_w)
            watchers.append(role_w)
        names = tuple(x.prefix for x in watchers)
        eclipsed = set(self.watcher_ids[: self.sc.adversaries.eclipsed_watchers])
        honest = [
            x.prefix for i, x in zip(self.watcher_ids, watchers, strict=True) if i not in eclipsed
        ]
        judge = (honest or list(names))[:1]
        bundle = roster_bundle(
            gov, "governance", Roster(self.governance, 1, names, names, tuple(judge))
        )
        for role_w in watchers:
            role_w.governance.offer(bundle, 0.0)
        for node in self.controller_ids:
            self.roles[node] = Controller(
                verify=self.verify, retry=RetryPolicy(first=0.5, attempts=4)
            )

    def _name(self, node: int, prefix: str, role: Role) -> None:
        self.roles[node] = role
        self.prefix_of[node] = prefix
        self.node_of[prefix] = node

    def _wire(self) -> None:
        sc, gossip, rng = self.sc, self.gossip, self.sim.rng
        a = sc.adversaries
        members = sorted(self.witness_ids + self.watcher_ids + self.relay_ids)
        sybils = sorted(rng.sample(self.relay_ids, int(a.sybil_fraction * len(self.relay_ids))))
        gossip.silent = set(sybils)
        self.sybils = sybils
        gossip.connect_randomly(members)
        self.eclipsed = self.watcher_ids[: a.eclipsed_watchers]
        for node in self.eclipsed:
            if not sybils:
                break
            for peer in list(gossip.conn[node]):
                gossip.conn[peer].discard(node)
            gossip.conn[node] = set(rng.sample(sybils, min(len(sybils), sc.gossip.degree)))
            for peer in gossip.conn[node]:
                gossip.conn[peer].add(node)
            gossip.only[node] = set(gossip.conn[node])
        self.withholding = set(sorted(self.witness_ids)[: a.withholding_witnesses])
        gossip.overlay = _overlay
        for node in members:
            gossip.subscribe(node, KEL_OVERLAY)
        for node in self.watcher_ids:
            gossip.subscribe(node, DUPLICITY_TOPIC)
        gossip.node_check[DUPLICITY_TOPIC] = self._admits

    # ---------------------------------------------------------------- gossip hooks

    def _valid(self, msg: Msg) -> bool:
        if msg.topic == DUPLICITY_TOPIC:
            return True  # judged per node (`_admits`)
        return well_formed(msg.payload, self.parse)

    def _admits(self, node: int, msg: Msg) -> bool:
        role = self.roles.get(node)
        return isinstance(role, Watcher) and role.admits(msg.topic, msg.payload)

    def _receive(self, node: int, msg: Msg) -> None:
        role = self.roles.get(node)
        if role is None or isinstance(role, Controller):
            return  # a relay: the gossip model did all there is to do
        self.perform(node, role.hear(msg.topic, msg.payload, self.sim.now))
        if isinstance(role, Watcher):
            self.record.watcher_heard(node, role, msg)

    # ---------------------------------------------------------------- effects

    def perform(
        self, node: int, effects: list[Effect], reply_to: Callable[[Reply], None] | None = None
    ) -> None:
        sim = self.sim
        for effect in effects:
            if isinstance(effect, Publish):
                if node not in self.withholding:
                    self.record.published(
                        node, self.gossip.publish(node, effect.topic, effect.payload)
                    )
            elif isinstance(effect, Send):
                self._request(node, effect)
            elif isinstance(effect, Reply):
                if reply_to is not None:
                    reply_to(effect)
            elif isinstance(effect, SetTimer):
                key = (node, effect.key)
                version = self.timers.get(key, 0) + 1
                self.timers[key] = version
                sim.at(max(effect.at, sim.now), self._timer, node, effect.key, version)
            elif isinstance(effect, Subscribe):
                self.gossip.subscribe(node, effect.topic)
            elif isinstance(effect, Report):
                self.reports[effect.level] = self.reports.get(effect.level, 0) + 1

    def _timer(self, node: int, key: str, version: int) -> None:
        if self.timers.get((node, key)) != version:
            return
        del self.timers[(node, key)]
        role = self.roles[node]
        self.perform(node, role.timer(key, self.sim.now))
        self.record.stepped(node, role)

    def _request(self, node: int, send: Send) -> None:
        target = self.node_of.get(send.to)
        self.requests += 1
        size = len(send.payload) + 64
        delay = None if target is None else self.links.delay(node, target, size, self.sim.now)
        if target is None or delay is None:
            self.sim.after(5.0, self._answer, node, send.tag, False, b"", "unreachable")
            return
        self.gossip.sent_msgs[node] += 1
        self.gossip.sent_bytes[node] += size
        self.sim.after(delay, self._handle, target, node, send)

    def _handle(self, node: int, sender: int, send: Send) -> None:
        self.record.request(node, send)
        role = self.roles.get(node)
        handler = _handler(role, send.surface)
        self.gossip.recv_msgs[node] += 1
        self.gossip.recv_bytes[node] += len(send.payload) + 64
        if handler is None:
            self.sim.after(0.0, self._answer, sender, send.tag, False, b"", "not served")
            return

        def reply(answer: Reply) -> None:
            delay = self.links.delay(node, sender, len(answer.payload) + 64, self.sim.now)
            if delay is None:
                self.sim.after(5.0, self._answer, sender, send.tag, False, b"", "timed out")
            else:
                self.sim.after(
                    delay, self._answer, sender, send.tag, answer.ok, answer.payload, answer.reason
                )

        self.perform(node, handler(next(self._request_ids), send.payload, self.sim.now), reply)
        self.record.stepped(node, role)

    def _answer(self, node: int, tag: str, ok: bool, payload: bytes, reason: str) -> None:
        if tag.startswith("equivocate:"):
            return  # the equivocator's own submissions: it wants no receipts, only confusion
        role = self.roles[node]
        self.perform(node, role.answer(tag, ok, payload, reason, self.sim.now))
        self.record.stepped(node, role)

    # ---------------------------------------------------------------- workload

    def controller(self, node: int) -> Controller:
        role = self.roles[node]
        assert isinstance(role, Controller)
        return role

    def incept(self, node: int) -> None:
        ctl = self.controller(node)
        rng, sc = self.sim.rng, self.sc
        witnesses = [
            self.prefix_of[w] for w in sorted(rng.sample(self.witness_ids, sc.witnesses_per_id))
        ]
        effects = ctl.incept(
            "id", [self._seed()], [self._seed()], witnesses=witnesses, toad=sc.bt, now=self.sim.now
        )
        self.record.created(node, ctl.identity("id").last_said, ctl.identity("id").prefix, 0)
        self.perform(node, effects)
        self.record.stepped(node, ctl)

    def interact(self, node: int, n: int) -> None:
        ctl = self.controller(node)
        ident = ctl.identity("id")
        if ctl.status(ident.last_said) != "done":
            self.record.skipped += 1  # the previous event is still being witnessed
            return
        effects = ctl.interact("id", [{"n": n}], now=self.sim.now)
        self.record.created(node, ctl.identity("id").last_said, ident.prefix, ctl.identity("id").sn)
        self.perform(node, effects)
        self.record.stepped(node, ctl)

    def equivocate(self, node: int) -> None:
        """The identifier's keys sign two interactions at its next sn; version a goes to the
        first half of its witnesses, version b to the rest; colluders receipt b too."""
        ctl = self.controller(node)
        ident = ctl.identity("id")
        versions: list[tuple[Event, bytes]] = []
        for label in ("a", "b"):
            event = interact(
                ident.prefix, prior=ident.last_said, sn=ident.sn + 1, anchors=[{"v": label}]
            )
            sigs = tuple(s.sign_indexed(event.raw, i) for i, s in enumerate(ident.signers))
            versions.append((event, messagize(event, Attachments(sigs=sigs))))
        half = len(ident.witnesses) // 2
        groups = (ident.witnesses[:half], ident.witnesses[half:])
        self.record.equivocation(ident.prefix, versions[1][0].said, node)
        for (event, message), group in zip(versions, groups, strict=True):
            for witness in group:
                self._request(
                    node, Send(witness, Surface.SUBMIT, message, f"equivocate:{event.said}")
                )
        colluders = groups[0][: self.sc.adversaries.colluding_witnesses]
        b, _ = versions[1]
        for witness in colluders:
            self.sim.after(0.5, self._collude, self.node_of[witness], b)

    def _collude(self, node: int, event: Event) -> None:
        role = self.roles[node]
        assert isinstance(role, Witness)
        self.record.colluders.add(role.prefix)
        rct = receipt(event.prefix, event.sn, event.said)
        couple = ((role.prefix, role.signer.sign_raw(event.raw)),)
        message = event.raw + messagize(rct, Attachments(couples=couple))
        self.record.published(node, self.gossip.publish(node, kel_topic(event.prefix), message))

    def spam(self, node: int) -> None:
        topic = f"/dkms/1/kel/{self.sim.rng.randrange(KEL_SHARDS)}"
        self.gossip.publish(
            node, topic, b"\x00not a key event " + self.sim.rng.getrandbits(64).to_bytes(8, "big")
        )
        self.record.spam += 1

    def start(self) -> None:
        for node, role in sorted(self.roles.items()):
            if isinstance(role, Witness | Watcher):
                self.perform(node, role.start(0.0))
        self.gossip.start()


KEL_OVERLAY = "/dkms/1/kel"


def _overlay(topic: str) -> str:
    return KEL_OVERLAY if topic.startswith("/dkms/1/kel/") else topic


def _handler(
    role: Role | None, surface: Surface
) -> Callable[[int, bytes, float], list[Effect]] | None:
    if isinstance(role, Witness):
        return {
            Surface.SUBMIT: role.submit,
            Surface.RECEIPTS: role.receipts,
            Surface.QUERY: role.query,
        }.get(surface)
    if isinstance(role, Watcher):
        return {Surface.QUERY: role.query, Surface.GOVERNANCE: role.govern}.get(surface)
    return None


__all__ = ["World"]

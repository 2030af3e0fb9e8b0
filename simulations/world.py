"""A simulated DKMS network: the real `node/roles` state machines on the gossip model.

Theory of operation. Node ids are 0..N-1; the scenario's seed shuffles which are witnesses,
watchers, controllers (one per identifier) and relays. Every node but the controllers joins
every KEL shard topic (a topic's overlay is built when first used) and watchers also join
`/dkms/1/duplicity`. Each role's effects become scheduled deliveries:

    Publish       batched per topic as the runtime does (`roles.outbox`), then
                  gossip.publish (withholding witnesses drop theirs)
    Subscribe     gossip.subscribe
    Send          batched per (peer, surface) as the runtime does (`roles.outbox`): one
                  request in flight each, reaching the node named by prefix after one link
                  delay; its `Reply` comes back after another, as `Answered` for every Send
                  the request carried
    SetTimer      `TimerFired(key)` at that time (a later SetTimer of a key replaces it)
    Persist*      kept in memory by the role itself: nothing to do
    Report, Blame counted

Roles are driven only through `roles.role.Role` (`start`, `surfaces`, `admits`, `step`); the
typed tables (`witnesses`, `watchers`, `controllers`) are for the workload and the recorder.

Every signature check goes through one `MemoVerifier` and every gossip payload is parsed once
(`ParseCache`), shared by all nodes: the same bytes verify and parse the same way everywhere.
Watchers get the governance roster directly (all watchers jurors, the first honest one the
judge). What happens is recorded by `Recorder` (see `record.py`).
"""

from __future__ import annotations

from collections.abc import Callable

from dkms.node.roles.codes import Code
from dkms.node.roles.controller import Controller, PushStatus, RetryPolicy
from dkms.node.roles.effects import (
    Blame,
    Effect,
    Publish,
    Reply,
    Report,
    Send,
    SetTimer,
    Subscribe,
    Surface,
    TimerKey,
)
from dkms.node.roles.governance import roster_bundle
from dkms.node.roles.inputs import Answered, Heard, Request, TimerFired
from dkms.node.roles.outbox import (
    GOSSIP,
    GOSSIP_BYTES,
    REQUEST_BYTES,
    REQUESTS,
    SENDS,
    TRAFFIC,
    Outbox,
    batched,
    joined,
)
from dkms.node.roles.role import Role
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
from dkms.protocol.ids import NodePrefix, Said
from dkms.protocol.roster import Roster
from dkms.protocol.stream import Attachments, BadFrame, Message, messagize

from .engine import Sim
from .gossip import Gossip, Msg
from .links import Links
from .record import Recorder, Rival
from .scenario import Scenario

Frames = list[Message | BadFrame]
REQUEST_OVERHEAD = 64  # bytes a request or an answer costs beyond its payload (framing, ids)


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
        # The workload is the simulator's own: its byte bound is far above what it makes.
        self.parse = ParseCache(size=50_000, max_bytes=1 << 30, max_entry=4 << 20)
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
        self.witnesses: dict[int, Witness] = {}
        self.watchers: dict[int, Watcher] = {}
        self.controllers: dict[int, Controller] = {}
        self.prefix_of: dict[int, str] = {}
        self.node_of: dict[str, int] = {}
        self.timers: dict[tuple[int, TimerKey], int] = {}
        self.requests = 0  # requests sent, the equivocators' own among them (results.json)
        # What the roles sent (batched as the runtime batches), named as the runtime's metrics.
        self.traffic: dict[str, int] = dict.fromkeys(TRAFFIC, 0)
        self.blames = 0
        self._outbox: Outbox[tuple[int, str, Surface], Send] = Outbox()
        self._gossip_box: Outbox[tuple[int, str], bytes] = Outbox()
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
            # Tails off: the results measure each event's own propagation, and a tail page
            # published in the last seconds of a run counts as a message not delivered.
            role = Witness(
                Signer(self._seed(), transferable=False),
                verify=self.verify,
                parse=self.parse,
                tails=False,
            )
            self.witnesses[node] = role
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
            self.watchers[node] = role_w
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
            ctl = Controller(verify=self.verify, retry=RetryPolicy(first=0.5, attempts=4))
            self.roles[node] = self.controllers[node] = ctl

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
        listening = bytearray(sc.nodes)  # relays have no role: nothing to hand them
        for node in self.roles:
            listening[node] = 1
        gossip.listening = listening

    # ---------------------------------------------------------------- gossip hooks

    def _valid(self, msg: Msg) -> bool:
        if msg.topic == DUPLICITY_TOPIC:
            return True  # judged per node (`_admits`)
        return well_formed(msg.payload, self.parse)

    def _admits(self, node: int, msg: Msg) -> bool:
        role = self.roles.get(node)
        return role is not None and role.admits(msg.topic, msg.payload)

    def _receive(self, node: int, msg: Msg) -> None:
        role = self.roles.get(node)
        if role is None:
            return  # a relay: the gossip model did all there is to do
        origin = NodePrefix(self.prefix_of.get(msg.origin, ""))
        self.perform(node, role.step(Heard(msg.topic, origin, msg.payload), self.sim.now))
        self.record.heard(node, msg)

    # ---------------------------------------------------------------- effects

    def perform(
        self, node: int, effects: list[Effect], reply_to: Callable[[Reply], None] | None = None
    ) -> None:
        sim = self.sim
        for effect in effects:
            if isinstance(effect, Publish):
                if node not in self.withholding and self._gossip_box.put(
                    (node, effect.topic), effect.payload, len(effect.payload)
                ):
                    sim.after(0.0, self._flush, node, effect.topic)
            elif isinstance(effect, Send):
                self.traffic[SENDS] += 1
                if not batched(effect):
                    self._count([effect])
                    self._request(node, [effect])
                elif self._outbox.put(
                    (node, effect.to, effect.surface), effect, len(effect.payload)
                ):
                    sim.after(0.0, self._drain, node, effect.to, effect.surface)
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
            elif isinstance(effect, Blame):
                self.blames += 1

    def _flush(self, node: int, topic: str) -> None:
        """What a node queued on a topic during one step goes out as one payload."""
        while (batch := self._gossip_box.take((node, topic))) is not None:
            payload = b"".join(batch)
            self.traffic[GOSSIP] += 1
            self.traffic[GOSSIP_BYTES] += len(payload)
            self.record.published(node, self.gossip.publish(node, topic, payload))

    def _drain(self, node: int, to: str, surface: Surface) -> None:
        """The next batch to `to` on `surface`, once the one before it was answered."""
        batch = self._outbox.take((node, to, surface))
        if batch is not None:
            self._count(batch)
            self._request(node, batch, lambda: self._drain(node, to, surface))

    def _count(self, sends: list[Send]) -> None:
        self.traffic[REQUESTS] += 1
        self.traffic[REQUEST_BYTES] += sum(len(s.payload) for s in sends)

    def _timer(self, node: int, key: TimerKey, version: int) -> None:
        if self.timers.get((node, key)) != version:
            return
        del self.timers[(node, key)]
        self.perform(node, self.roles[node].step(TimerFired(key), self.sim.now))
        self.record.stepped(node)

    def _request(
        self, node: int, sends: list[Send], then: Callable[[], None] | None = None
    ) -> None:
        """One request carrying `sends` (to one peer, on one surface); `then` runs once all
        their answers are in."""
        first = sends[0]
        target = self.node_of.get(first.to)
        payload = joined(sends)
        self.requests += 1
        size = len(payload) + REQUEST_OVERHEAD
        delay = None if target is None else self.links.delay(node, target, size, self.sim.now)
        if target is None or delay is None:
            failed = Reply.refuse(Code.UNREACHABLE, "unreachable")
            self.sim.after(5.0, self._answer, node, sends, failed, then)
            return
        self.gossip.sent_msgs[node] += 1
        self.gossip.sent_bytes[node] += size
        self.sim.after(delay, self._handle, target, node, sends, payload, then)

    def _handle(
        self,
        node: int,
        sender: int,
        sends: list[Send],
        payload: bytes,
        then: Callable[[], None] | None,
    ) -> None:
        first = sends[0]
        self.record.request(node, sends)
        role = self.roles.get(node)
        self.gossip.received(node, len(payload) + REQUEST_OVERHEAD)
        if role is None or first.surface not in role.surfaces:
            refused = Reply.refuse(Code.NOT_SERVED, "not served")
            self.sim.after(0.0, self._answer, sender, sends, refused, then)
            return

        def reply(answer: Reply) -> None:
            size = len(answer.payload) + REQUEST_OVERHEAD
            delay = self.links.delay(node, sender, size, self.sim.now)
            if delay is None:
                timeout = Reply.refuse(Code.UNREACHABLE, "timed out")
                self.sim.after(5.0, self._answer, sender, sends, timeout, then)
            else:
                self.sim.after(delay, self._answer, sender, sends, answer, then)

        request = Request(first.surface, NodePrefix(self.prefix_of.get(sender, "")), payload)
        self.perform(node, role.step(request, self.sim.now), reply)
        self.record.stepped(node)

    def _answer(
        self, node: int, sends: list[Send], answer: Reply, then: Callable[[], None] | None
    ) -> None:
        role = self.roles[node]
        for send in sends:
            if isinstance(send.tag, Rival):
                continue  # the equivocator's own submissions: it wants only confusion
            answered = Answered(send.tag, answer.code, answer.payload, answer.reason)
            self.perform(node, role.step(answered, self.sim.now))
        self.record.stepped(node)
        if then is not None:
            then()

    # ---------------------------------------------------------------- workload

    def controller(self, node: int) -> Controller:
        return self.controllers[node]

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
        self.record.stepped(node)

    def interact(self, node: int, n: int) -> None:
        ctl = self.controller(node)
        ident = ctl.identity("id")
        if ctl.status(ident.last_said) is not PushStatus.DONE:
            self.record.skipped += 1  # the previous event is still being witnessed
            return
        effects = ctl.interact("id", [{"n": n}], now=self.sim.now)
        self.record.created(node, ctl.identity("id").last_said, ident.prefix, ctl.identity("id").sn)
        self.perform(node, effects)
        self.record.stepped(node)

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
            tag = Rival(Said(event.said))
            for witness in group:
                self._request(node, [Send(NodePrefix(witness), Surface.SUBMIT, message, tag)])
        colluders = groups[0][: self.sc.adversaries.colluding_witnesses]
        b, _ = versions[1]
        for witness in colluders:
            self.sim.after(0.5, self._collude, self.node_of[witness], b)

    def _collude(self, node: int, event: Event) -> None:
        role = self.witnesses[node]
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
            self.perform(node, role.start(0.0))
        self.gossip.start()


KEL_OVERLAY = "/dkms/1/kel"


def _overlay(topic: str) -> str:
    return KEL_OVERLAY if topic.startswith("/dkms/1/kel/") else topic


__all__ = ["World"]

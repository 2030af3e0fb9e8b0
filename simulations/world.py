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
A role's `step` or `admits` that raises ends its node for the rest of the run, as the crash of
its process would (`killed`, gone from the gossip, unreachable); the runtime would answer a
request whose handler raised with `Code.FAILED`, but the role's state may be half-changed, so
the simulator takes the stricter reading. Adversaries that act are `attacks.py`'s.

Every signature check goes through one `MemoVerifier` and every gossip payload is parsed once
(`ParseCache`), shared by all nodes: the same bytes verify and parse the same way everywhere.
Watchers get the governance roster directly (all watchers jurors, the first honest one the
judge). What happens is recorded by `Recorder` (see `record.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

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
from dkms.node.roles.inputs import Answered, Heard, Input, Request, TimerFired
from dkms.node.roles.outbox import (
    GOSSIP,
    GOSSIP_BYTES,
    REQUEST_BYTES,
    REQUESTS,
    SENDS,
    TRAFFIC,
    Outbox,
    batched,
    joinable,
    joined,
)
from dkms.node.roles.role import Role
from dkms.node.roles.topics import (
    DUPLICITY_TOPIC,
    ParseCache,
    well_formed,
)
from dkms.node.roles.watcher import Watcher
from dkms.node.roles.witness import Witness
from dkms.protocol.crypto import MemoVerifier, Signer
from dkms.protocol.ids import NodePrefix
from dkms.protocol.roster import Roster
from dkms.protocol.stream import BadFrame, Message

from .capacity import Cpus
from .engine import Sim
from .gossip import Gossip, Msg
from .links import Links
from .record import Recorder, Rival
from .scenario import Scenario

if TYPE_CHECKING:
    from .attacks import Attacks

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
        if scenario.capacity.on:  # every node's CPU a queue (`capacity.py`)
            self.links.cpu = Cpus(scenario.capacity, n, self.sim)
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
        self.per_node = {DUPLICITY_TOPIC}  # topics whose gossip each node judges (`admits`)
        self.killed: dict[int, str] = {}  # node -> what its role raised
        self.record = Recorder(self)
        self._make_roles()
        self._wire()
        self.attacks: Attacks | None = None  # the runner's, when the scenario has them

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
        gossip.node_check[DUPLICITY_TOPIC] = self.admits
        listening = bytearray(sc.nodes)  # relays have no role: nothing to hand them
        for node in self.roles:
            listening[node] = 1
        gossip.listening = listening

    # ---------------------------------------------------------------- gossip hooks

    def _valid(self, msg: Msg) -> bool:
        if msg.topic in self.per_node:
            return True  # judged per node (`admits`)
        try:
            return well_formed(msg.payload, self.parse)
        except Exception:  # each node that judges it meets it (`admits`)
            return True

    def admits(self, node: int, msg: Msg) -> bool:
        role = self.roles.get(node)
        if role is None or node in self.killed:
            return False
        try:
            return role.admits(msg.topic, msg.payload)
        except Exception as err:  # the node's gossip validator died with it
            self.kill(node, err)
            return False

    def _receive(self, node: int, msg: Msg) -> None:
        if node not in self.roles:
            return  # a relay: the gossip model did all there is to do
        origin = NodePrefix(self.prefix_of.get(msg.origin, ""))
        self.perform(node, self.step(node, Heard(msg.topic, origin, msg.payload)))
        self.record.heard(node, msg)

    def step(self, node: int, event: Input) -> list[Effect]:
        """`node`'s role stepped now; one that raises is killed (nothing more of it runs)."""
        if node in self.killed:
            return []
        try:
            return self.roles[node].step(event, self.sim.now)
        except Exception as err:  # any exception would end its process
            self.kill(node, err)
            return []

    def kill(self, node: int, err: Exception) -> None:
        self.killed[node] = f"{type(err).__name__}: {err}"[:200]
        self.gossip.leave(node)

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
                    if self.links.cpu is None:
                        sim.after(0.0, self._flush, node, effect.topic)
                    else:  # out once its CPU is free: what it queues meanwhile joins in
                        sim.at(self.links.cpu.idle(node), self._flush, node, effect.topic)
            elif isinstance(effect, Send):
                self.traffic[SENDS] += 1
                if not batched(effect):
                    self._count([effect])
                    self.send(node, [effect])
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
        """What a node queued on a topic during one step goes out as one payload, on the
        topics whose payloads are streams (`outbox.joinable`); elsewhere one each."""
        while (batch := self._gossip_box.take((node, topic))) is not None:
            for payload in [b"".join(batch)] if joinable(topic) else batch:
                self.traffic[GOSSIP] += 1
                self.traffic[GOSSIP_BYTES] += len(payload)
                self.record.published(node, self.gossip.publish(node, topic, payload))

    def _drain(self, node: int, to: str, surface: Surface) -> None:
        """The next batch to `to` on `surface`, once the one before it was answered."""
        batch = self._outbox.take((node, to, surface))
        if batch is not None:
            self._count(batch)
            self.send(node, batch, lambda: self._drain(node, to, surface))

    def _count(self, sends: list[Send]) -> None:
        self.traffic[REQUESTS] += 1
        self.traffic[REQUEST_BYTES] += sum(len(s.payload) for s in sends)

    def _timer(self, node: int, key: TimerKey, version: int) -> None:
        if self.timers.get((node, key)) != version:
            return
        del self.timers[(node, key)]
        self.perform(node, self.step(node, TimerFired(key)))
        self.record.stepped(node)

    def send(self, node: int, sends: list[Send], then: Callable[[], None] | None = None) -> None:
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
        if self.links.cpu is None:
            self.sim.after(delay, self._handle, target, node, sends, payload, then)
        else:
            self.sim.after(delay, self._admit, target, node, sends, payload, then)

    def _admit(
        self,
        node: int,
        sender: int,
        sends: list[Send],
        payload: bytes,
        then: Callable[[], None] | None,
    ) -> None:
        """With capacity: a request lands at `node`, to be handled once its CPU gets to it,
        or refused at once (BUSY) while its request slots are full."""
        cpu = self.links.cpu
        assert cpu is not None
        done = cpu.request(node)
        if done is not None:
            self.sim.at(done, self._handle, node, sender, sends, payload, then)
            return
        busy = Reply.refuse(Code.BUSY, "too many requests in progress")
        delay = self.links.delay(node, sender, REQUEST_OVERHEAD, self.sim.now)
        if delay is None:
            self.sim.after(5.0, self._answer, sender, sends, busy, then)
        else:
            self.sim.after(delay, cpu.answer, sender, self._answer, sender, sends, busy, then)

    def _handle(
        self,
        node: int,
        sender: int,
        sends: list[Send],
        payload: bytes,
        then: Callable[[], None] | None,
    ) -> None:
        self.record.request(node, sends)

        def reply(answer: Reply) -> None:
            size = len(answer.payload) + REQUEST_OVERHEAD
            delay = self.links.delay(node, sender, size, self.sim.now)
            if delay is None:
                timeout = Reply.refuse(Code.UNREACHABLE, "timed out")
                self.sim.after(5.0, self._answer, sender, sends, timeout, then)
            elif self.links.cpu is None:
                self.sim.after(delay, self._answer, sender, sends, answer, then)
            else:  # read once the asker's CPU gets to it
                cpu, answered = self.links.cpu, self._answer
                self.sim.after(delay, cpu.answer, sender, answered, sender, sends, answer, then)

        if not self.serve(node, sender, sends[0].surface, payload, reply):
            refused = Reply.refuse(Code.NOT_SERVED, "not served")
            self.sim.after(0.0, self._answer, sender, sends, refused, then)

    def serve(
        self,
        node: int,
        sender: int,
        surface: Surface,
        payload: bytes,
        reply: Callable[[Reply], None],
    ) -> bool:
        """`node` answers a request from `sender` now, its `Reply` handed to `reply` (a node
        that died answers nothing: the asker's wait runs out); False if it serves no such
        surface."""
        role = self.roles.get(node)
        self.gossip.received(node, len(payload) + REQUEST_OVERHEAD)
        if role is None or surface not in role.surfaces:
            return False
        request = Request(surface, NodePrefix(self.prefix_of.get(sender, "")), payload)
        effects = self.step(node, request)
        if node in self.killed:
            reply(Reply.refuse(Code.UNREACHABLE, "the node is down"))
            return True
        self.perform(node, effects, reply)
        self.record.stepped(node)
        return True

    def _answer(
        self, node: int, sends: list[Send], answer: Reply, then: Callable[[], None] | None
    ) -> None:
        for send in sends:
            if isinstance(send.tag, Rival):
                if self.attacks is not None:
                    self.attacks.answered(send, answer)
                continue  # the equivocator's own submissions: it wants only confusion
            answered = Answered(send.tag, answer.code, answer.payload, answer.reason)
            self.perform(node, self.step(node, answered))
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

    def start(self) -> None:
        for node, role in sorted(self.roles.items()):
            self.perform(node, role.start(0.0))
        self.gossip.start()


KEL_OVERLAY = "/dkms/1/kel"


def _overlay(topic: str) -> str:
    return KEL_OVERLAY if topic.startswith("/dkms/1/kel/") else topic


__all__ = ["World"]

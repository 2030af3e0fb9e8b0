"""Malformed frames: relays that send witnesses and watchers bytes no honest node sends.

Theory of operation. Each sender (`malformed_senders` relays, `malformed_rate` frames a
second each) picks a kind at random, makes the bytes (`Maker`) and sends them the way a
peer's bytes reach a node:

    request  to a witness or watcher, on every surface: random bytes, a validly signed event
             truncated or with a byte changed, an identifier's next event signed by the
             wrong key (`forged`), oversized (an event body of 200 KiB, over the 64 KiB a
             peer's may have, or the same event over and over to 200 KiB, cut off; the
             transport refuses anything over 1 MiB before a role sees it), CBOR maps of
             every query type with fields of every wrong type (`query`), and junk roster
             bundles. The role answers through `World.serve` with the link delays of any
             request; the codes are counted
    gossip   published from the sender on a KEL shard, the duplicity, governance or locations
             topic: random bytes, truncated, oversized, forged (well formed: it passes gossip
             validation, spreads, and every role that hears it judges it), a CBOR map. Each
             sender is connected to a few witnesses and watchers, so its gossip reaches them
             first hand

Every topic's gossip is judged by each node's own `admits` (KEL shards after the shared
`well_formed` check, which is the same code), so a validator that raises ends its node (a
relay has no role: the shared check stands for its own). What passes goes to the role's
`step` as any gossip does, and a `step` that raises ends its node too (`World.step`): the
results' `nodes_killed` is whatever happened. Nothing here may touch a role but through
those entry points. Only `Sim.rng` is used.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Final

import cbor2

from dkms.node.roles.codes import Code
from dkms.node.roles.controller import Controller, Identity
from dkms.node.roles.effects import Reply, Surface
from dkms.node.roles.topics import (
    DUPLICITY_TOPIC,
    GOVERNANCE_TOPIC,
    KEL_TOPIC_PREFIX,
    LOCATIONS_TOPIC,
    kel_topic,
    kel_topics,
)
from dkms.protocol.events import interact
from dkms.protocol.stream import Attachments, messagize

from .gossip import Msg
from .world import REQUEST_OVERHEAD, World

REQUEST_KINDS: Final = ("random", "truncated", "flipped", "forged", "oversized", "query", "roster")
GOSSIP_KINDS: Final = ("random", "truncated", "forged", "oversized", "cbor")
QUERY_TYPES: Final = (
    "state",
    "kel",
    "evidence",
    "roster",
    "witnessed",
    "check",
    "tips",
    "loc",
    "digest",
    "shard",
    "rivals",
    "mbx",
    "rct",
    "nonesuch",
)
FIELDS: Final = ("i", "s", "n", "k", "w", "a", "v", "g", "d", "h", "l")
OVERSIZED: Final = 200 * 1024  # bytes of an oversized frame
REACH: Final = (4, 2)  # witnesses and watchers each sender is connected to


class Maker:
    """Malformed bytes of each kind, from a key of the sender's own and the identifiers' KELs
    as anyone may read them."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.rng = world.sim.rng
        own = Controller(verify=world.verify)
        seeds = [self.rng.getrandbits(256).to_bytes(32, "big") for _ in range(2)]
        own.incept("own", seeds[:1], seeds[1:], now=0.0)
        self.signer = own.identity("own").signers[0]
        self.valid = own.export("own")  # a validly signed inception with no witnesses

    def _bytes(self, size: int) -> bytes:
        return self.rng.getrandbits(8 * size).to_bytes(size, "big") if size else b""

    def _identifier(self) -> Identity | None:
        """One of the identifiers of the world, at random (None before any is incepted)."""
        ids = [c.identity("id") for c in self.world.controllers.values() if "id" in c.names]
        return ids[self.rng.randrange(len(ids))] if ids else None

    def _forged(self, anchor: Any) -> tuple[str, bytes]:
        """A real identifier and its next interaction, anchoring `anchor`, signed by the
        sender's key; the sender's own inception before any identifier is there."""
        ident = self._identifier()
        if ident is None:
            return "", self.valid
        event = interact(ident.prefix, prior=ident.last_said, sn=ident.sn + 1, anchors=[anchor])
        sig = self.signer.sign_indexed(event.raw, 0)
        return ident.prefix, messagize(event, Attachments(sigs=(sig,)))

    def make(self, kind: str) -> tuple[str, bytes]:
        """The bytes of `kind`, and the identifier they are about ("" when none)."""
        rng, valid = self.rng, self.valid
        if kind == "random":
            return "", self._bytes(rng.randrange(1, 4096))
        if kind == "truncated":
            return "", valid[: rng.randrange(1, len(valid))]
        if kind == "flipped":  # a validly signed event with one byte changed
            at = rng.randrange(len(valid))
            return "", valid[:at] + bytes([valid[at] ^ (1 + rng.randrange(255))]) + valid[at + 1 :]
        if kind == "forged":
            return self._forged({"x": rng.randrange(1 << 30)})
        if kind == "oversized":
            if rng.random() < 0.5:  # one event body over the limit a peer's may have
                return self._forged({"x": "A" * OVERSIZED})
            copies = valid * (OVERSIZED // len(valid) + 1)  # a stream cut off at its end
            return "", copies[: OVERSIZED - rng.randrange(1, len(valid))]
        if kind in ("query", "cbor"):
            ask: dict[Any, Any] = {"t": QUERY_TYPES[rng.randrange(len(QUERY_TYPES))]}
            for key in FIELDS:
                if rng.random() < 0.5:
                    ask[key] = self._value()
            return "", cbor2.dumps(ask)
        return "", cbor2.dumps([self._value(), self._bytes(rng.randrange(64))])  # a roster

    def _value(self) -> Any:
        rng = self.rng
        ident = self._identifier()
        prefix = ident.prefix if ident is not None else ""
        pool: list[Any] = [
            None,
            -1,
            0,
            2**70,
            1.5,
            True,
            "",
            "x" * rng.randrange(1, 300),
            prefix,
            self._bytes(rng.randrange(1, 200)),
            self.valid[: rng.randrange(1, len(self.valid))],
            [prefix, -1, None],
            {"i": prefix, 1: [2]},
            [[]] * rng.randrange(1, 50),
        ]
        return pool[rng.randrange(len(pool))]


class Garbage:
    """The malformed senders of one world: wiring, schedule, and what came of it."""

    def __init__(self, world: World, senders: list[int]) -> None:
        self.world = world
        self.senders = senders
        self.maker = Maker(world)
        self.sent: Counter[str] = Counter()
        self.answers: Counter[str] = Counter()
        rng, gossip = world.sim.rng, world.gossip
        for node in senders:
            for pool, count in zip((world.witness_ids, world.watcher_ids), REACH, strict=True):
                for peer in rng.sample(pool, min(count, len(pool))):
                    gossip.conn[node].add(peer)
                    gossip.conn[peer].add(node)
        world.per_node |= {GOVERNANCE_TOPIC, LOCATIONS_TOPIC}
        for topic in (*kel_topics(), DUPLICITY_TOPIC, GOVERNANCE_TOPIC, LOCATIONS_TOPIC):
            gossip.node_check[topic] = self._judge
        self.targets = sorted(world.witness_ids + world.watcher_ids)

    def _judge(self, node: int, msg: Msg) -> bool:
        if node in self.world.roles:
            return self.world.admits(node, msg)
        return msg.topic.startswith(KEL_TOPIC_PREFIX)  # a relay: the shared check was its own

    def schedule(self) -> None:
        sc, sim = self.world.sc, self.world.sim
        step = 1.0 / sc.adversaries.malformed_rate
        for node in self.senders:
            t = 1.0
            while t < sc.duration:
                sim.at(t, self.fire, node)
                t += step

    def fire(self, node: int) -> None:
        rng = self.world.sim.rng
        if rng.random() < 0.5:
            kind = REQUEST_KINDS[rng.randrange(len(REQUEST_KINDS))]
            self._request(node, kind)
        else:
            kind = GOSSIP_KINDS[rng.randrange(len(GOSSIP_KINDS))]
            self._publish(node, kind)

    def _request(self, node: int, kind: str) -> None:
        world, rng = self.world, self.world.sim.rng
        _, payload = self.maker.make(kind)
        if kind in ("truncated", "flipped", "forged"):
            surface = (Surface.SUBMIT, Surface.RECEIPTS)[rng.randrange(2)]
        elif kind == "query":
            surface = Surface.QUERY
        elif kind == "roster":
            surface = Surface.GOVERNANCE
        else:
            surface = list(Surface)[rng.randrange(len(Surface))]
        target = self.targets[rng.randrange(len(self.targets))]
        self.sent[f"request {kind}"] += 1
        ask(world, node, target, surface, payload, self._answered)

    def _answered(self, answer: Reply) -> None:
        self.answers[answer.code.name.lower()] += 1

    def _publish(self, node: int, kind: str) -> None:
        rng = self.world.sim.rng
        prefix, payload = self.maker.make(kind)
        topics = (DUPLICITY_TOPIC, GOVERNANCE_TOPIC, LOCATIONS_TOPIC)
        if prefix:
            topic = kel_topic(prefix)
        elif kind == "cbor" or rng.random() < 0.5:
            topic = topics[rng.randrange(len(topics))]
        else:
            topic = kel_topics()[rng.randrange(64)]
        self.sent[f"gossip {kind}"] += 1
        self.world.gossip.publish(node, topic, payload)

    def summary(self) -> dict[str, Any]:
        graylisting = {n for n, peer in self.world.gossip.graylisted if peer in self.senders}
        return {
            "senders": len(self.senders),
            "sent": dict(sorted(self.sent.items())),
            "answers": dict(sorted(self.answers.items())),
            "graylisting_nodes": len(graylisting),
        }


def ask(
    world: World, node: int, target: int, surface: Surface, payload: bytes, answered: Any
) -> None:
    """A request from `node` (a node with no role) to `target`, answered to `answered` (a
    `Reply`) after both ways' link delays, or `UNREACHABLE` after 5 s."""
    sim, links = world.sim, world.links
    size = len(payload) + REQUEST_OVERHEAD
    world.requests += 1
    delay = links.delay(node, target, size, sim.now)
    if delay is None:
        sim.after(5.0, answered, Reply.refuse(Code.UNREACHABLE, "unreachable"))
        return

    def reply(answer: Reply) -> None:
        back = links.delay(target, node, len(answer.payload) + REQUEST_OVERHEAD, sim.now)
        if back is None:
            sim.after(5.0, answered, Reply.refuse(Code.UNREACHABLE, "timed out"))
        else:
            sim.after(back, answered, answer)

    def handle() -> None:
        if not world.serve(target, node, surface, payload, reply):
            sim.after(0.0, answered, Reply.refuse(Code.NOT_SERVED, "not served"))

    sim.after(delay, handle)

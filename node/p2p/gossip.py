"""GossipSub wiring: content-addressed ids, our validators, drained subscriptions, paced publish.

What py-libp2p 0.8.1 does by default and what we do instead:

- Message ids are Blake3-256 of the payload (DESIGN.md), so the same CESR batch published by
  two witnesses is one message, and a message's id can be computed by anyone holding it.
- `strict_signing` stays on: the router's equivocation check keys messages by (from, seqno),
  so with unsigned messages anyone could claim a witness's next seqno first and have the
  witness's real message dropped as "equivocation" and the witness penalised. Signing cost
  ~5% of the CPU in a 4-host, 500-message run (one signature per publish, one verify per node
  per message). It also makes `from_peer` an authenticated origin; the payload's own KERI
  signatures are still what a validator must check.
- Adaptive gossip is off: on a network it scores as unhealthy it stretches the heartbeat to
  30-60 s and moves D_low/D_high away from what we set (`_adapt_gossip_parameters`).
- Spam protection is off (it drops above 10 msg/s per neighbour and topic).
- GossipSub v1.1 is offered, not v1.2+: py-libp2p's 1.2 sends an IDONTWANT to every mesh
  neighbour for every message, whatever its size: 500 messages among 4 hosts took 6,000
  extra control RPCs and 2.3x the CPU.
- Validators run on our own publishes too and silently drop what they reject: `publish` runs
  the validator first and raises `PublishRejected`, and the registered wrapper then accepts
  what we publish without checking it twice. A validator that raises rejects. py-libp2p
  caches each verdict by message id for 300 s: a validator must judge the payload alone
  (bad signature, malformed), never "not yet" (an event out of order must be accepted).
- A subscription's libp2p queue holds 32 messages and drops the rest; a task per topic moves
  them at once into our own, larger queue, counting what it still has to drop.
- `publish` has no back-pressure in libp2p (each neighbour's outbound queue holds 32 RPCs and
  drops silently); ours waits while any neighbour's queue is nearly full. 500 messages
  published at once among 4 hosts: 32 arrived without this wait (1,404 RPCs dropped), all 500
  with it. libp2p offers no event for "queue drained": this is a short poll, bounded by
  `publish_wait`, made by one publisher at a time (the others queue behind it for their turn).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import blake3
import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.score import ScoreParams, TopicScoreParams

from .config import GossipConfig
from .errors import MessageTooLarge, PublishRejected
from .guards import FaultLog, GuardedPubsub
from .identity import peer_name

logger = logging.getLogger(__name__)

Validator = Callable[[bytes], bool]
QUEUE_POLL = 0.005  # seconds between looks at the neighbours' outbound queues
ANNOUNCE_WAIT = 10.0  # seconds to wait for a registering peer before giving up on it


class Gossip(NamedTuple):
    """One message from a subscription: its (authenticated) origin and its payload."""

    from_peer: str
    payload: bytes


def message_id(msg: Any) -> bytes:
    """Blake3-256 of the payload (DESIGN.md: the gossip message id)."""
    digest: bytes = blake3.blake3(msg.data).digest()
    return digest


def build_router(config: GossipConfig) -> GossipSub:
    return GossipSub(
        protocols=[PROTOCOL_ID_V11, PROTOCOL_ID],
        degree=config.degree,
        degree_low=config.degree_low,
        degree_high=config.degree_high,
        heartbeat_interval=config.heartbeat_interval,
        gossip_history=config.gossip_history,
        spam_protection_enabled=config.spam_protection,
        adaptive_gossip_enabled=False,
        score_params=ScoreParams(
            p4_invalid_messages=TopicScoreParams(
                weight=config.invalid_penalty, cap=1000.0, decay=config.invalid_decay
            ),
            # Protocol faults (guards.py) cost `FAULT_PENALTY` each, decaying like invalid messages.
            p5_behavior_penalty_weight=1.0,
            p5_behavior_penalty_decay=config.invalid_decay,
            graylist_threshold=config.graylist_threshold,
        ),
    )


def build_pubsub(
    host: IHost, router: GossipSub, config: GossipConfig, faults: FaultLog | None = None
) -> GuardedPubsub:
    return GuardedPubsub(
        host,
        router,
        strict_signing=config.strict_signing,
        msg_id_constructor=message_id,
        faults=faults,
    )


class QueueBytes:
    """The payload bytes all of a node's subscription queues hold together, and their bound."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0


class Subscription:
    """Messages of one topic, in arrival order; iterate it, or `receive()` one at a time.

    Our own publishes do not come back here (py-libp2p delivers them locally; `GuardedPubsub.
    notify_subscriptions` stops that: nothing wants them, and they took queue room). A
    payload seen in the last 120 s (the seen cache, by Blake3 id) is not delivered again,
    whoever sends it. The queue holds at most `buffer` messages, and all subscriptions'
    queues together at most `queued.limit` payload bytes: past either, new messages are
    dropped (and counted), as libp2p drops them from its own small queue; gossip is lossy,
    and a follower catches up on what it missed (`roles/follower.py`).
    """

    def __init__(self, topic: str, buffer: int, queued: QueueBytes | None = None) -> None:
        self.topic = topic
        self.dropped = 0  # messages lost because our own queue was full
        self._queued = queued if queued is not None else QueueBytes(1 << 62)
        self._send, self._receive = trio.open_memory_channel[Gossip](buffer)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Gossip:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def receive(self) -> Gossip:
        """The next message; `trio.EndOfChannel` once the host has shut down."""
        item = await self._receive.receive()
        self._queued.used -= len(item.payload)
        return item

    async def drain(self, source: Any) -> None:
        """Move messages from libp2p's subscription into ours until it ends (runs as a task).

        Everything libp2p's queue holds is taken each time this task runs, not one message:
        that queue holds 32 and drops the rest, and a burst of RPCs read from one buffer
        (a peer's sender joins what it has queued into one write) hands it several per turn."""
        ready = getattr(source, "receive_channel", None)  # TrioSubscriptionAPI's channel
        async with self._send:
            async for msg in source:
                self._take(msg)
                while ready is not None:
                    try:
                        waiting = ready.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    self._take(waiting)

    def _take(self, msg: Any) -> None:
        item = Gossip(peer_name(ID(msg.from_id)), bytes(msg.data))
        queued = self._queued
        try:
            if queued.used + len(item.payload) > queued.limit:
                raise trio.WouldBlock
            self._send.send_nowait(item)
            queued.used += len(item.payload)
        except trio.WouldBlock:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                logger.warning(
                    "topic %s: reader too slow, %d messages dropped",
                    self.topic,
                    self.dropped,
                )


class GossipLayer:
    """Our face of one `Pubsub`: subscribe, publish, validators."""

    def __init__(self, pubsub: Pubsub, config: GossipConfig) -> None:
        self.pubsub = pubsub
        self.config = config
        self._nursery: trio.Nursery | None = None
        self._subscriptions: dict[str, Subscription] = {}
        self._sources: dict[str, Any] = {}  # libp2p subscriptions not drained yet
        self._validators: dict[str, Validator] = {}
        self._gate = trio.Lock()  # publishers waiting for room go through it one at a time
        self.queued = QueueBytes(config.subscription_bytes)  # shared by our subscriptions

    def start(self, nursery: trio.Nursery) -> None:
        """Begin draining; subscriptions made before this (before listening) start now."""
        self._nursery = nursery
        for topic, source in self._sources.items():
            nursery.start_soon(self._subscriptions[topic].drain, source)
        self._sources.clear()

    async def subscribe(self, topic: str) -> Subscription:
        existing = self._subscriptions.get(topic)
        if existing is not None:
            return existing
        sub = Subscription(topic, self.config.subscription_buffer, self.queued)
        self._subscriptions[topic] = sub
        registering = [
            pid
            for pid in list(self.pubsub.host.get_network().connections)
            if pid not in self.pubsub.peers
        ]
        source = await self.pubsub.subscribe(topic)
        if self._nursery is None:
            self._sources[topic] = source
            return sub
        self._nursery.start_soon(sub.drain, source)
        for pid in registering:
            self._nursery.start_soon(self._announce_late, pid, topic)
        return sub

    async def _announce_late(self, peer_id: ID, topic: str) -> None:
        """Tell a peer whose pubsub stream was still registering that we joined `topic`.

        py-libp2p can miss it: its hello may be built before our subscription and its
        broadcast skip the not-yet-registered peer. A repeated subscription is harmless.
        """
        try:
            await self.pubsub.wait_for_peer(peer_id, timeout=ANNOUNCE_WAIT)
        except trio.TooSlowError:
            return
        queue = self.pubsub.peer_queues.get(peer_id)
        if queue is not None and topic in self.pubsub.topic_ids:
            sub = rpc_pb2.RPC.SubOpts(subscribe=True, topicid=topic)
            queue.push(rpc_pb2.RPC(subscriptions=[sub]))

    def set_validator(self, topic: str, fn: Validator) -> None:
        self._validators[topic] = fn
        me = self.pubsub.my_id

        def check(forwarder: ID, msg: Any) -> bool:
            if forwarder == me:  # our own publish: `publish` already ran `fn`
                return True
            return _accepts(fn, topic, msg.data)

        self.pubsub.set_topic_validator(topic, check, False)

    async def publish(self, topic: str, payload: bytes) -> None:
        if len(payload) > self.config.max_payload:
            raise MessageTooLarge(
                f"gossip payload of {len(payload)} bytes exceeds {self.config.max_payload}"
            )
        fn = self._validators.get(topic)
        if fn is not None and not _accepts(fn, topic, payload):
            raise PublishRejected(f"our validator for {topic} rejects this payload")
        if self._roomy():
            await self.pubsub.publish(topic, payload)
        else:
            await self._publish_when_room(topic, payload)

    def mesh_peers(self, topic: str) -> list[str]:
        router = self.pubsub.router
        mesh: dict[str, set[ID]] = getattr(router, "mesh", {})
        return sorted(peer_name(pid) for pid in mesh.get(topic, set()))

    def _roomy(self) -> bool:
        """Whether every neighbour's outbound queue is below `queue_high_water`."""
        high = self.config.queue_high_water
        return all(len(q) < high for q in self.pubsub.peer_queues.values())

    async def _publish_when_room(self, topic: str, payload: bytes) -> None:
        """Publish once no neighbour's queue is nearly full, or after `publish_wait`.

        Publishers that find a queue full go through `_gate` one at a time: the one holding
        it polls the queues, publishes, and lets the next look. Each polling on its own (a
        flusher per topic: dozens under load) cost some 6% of a loaded witness's CPU in
        trio's sleeps alone (py-spy, benchmarks/network.py), and those that saw room at the
        same poll all published at once."""
        async with contextlib.AsyncExitStack() as turn:  # the gate, if it came in time
            with trio.move_on_after(self.config.publish_wait) as waited:
                await turn.enter_async_context(self._gate)
                while not self._roomy():
                    await trio.sleep(QUEUE_POLL)
            if waited.cancelled_caught:
                logger.warning("publishing with full neighbour queues: messages may be dropped")
            await self.pubsub.publish(topic, payload)


def _accepts(fn: Validator, topic: str, payload: bytes) -> bool:
    try:
        return bool(fn(payload))
    except Exception:
        logger.exception("validator for %s raised; message rejected", topic)
        return False

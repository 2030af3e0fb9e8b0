"""Containing a peer's faults inside py-libp2p 0.8.1: its bytes end its stream, never the node.

What 0.8.1 does, each seen against a real `dkms-node` process, and what this module does:

- **Malformed pubsub RPCs end the process.** `Pubsub.continuously_read_stream` parses each
  length-prefixed frame with protobuf and catches only stream, size and connection errors: a
  `DecodeError` (the six bytes `05ffffffffff` on a new `/meshsub/1.1.0` stream suffice)
  escapes through the connection's nursery and the swarm's, and ends the host. So does any
  exception from the router's control handling of a well-formed but hostile RPC, and from
  `push_msg`, which runs as a pubsub service task (an exception there stops the service).
  `GuardedPubsub` catches them: the peer's stream is reset, its gossip score lowered (P5,
  behaviour penalty) and the fault counted.
- **Two tasks write one peer's pubsub stream at once.** The per-peer sender task, the flush of
  messages pending at registration and the replay of recent messages to a new peer all call
  `write_msg` on the same stream. Yamux splits a write into frames as the peer's window allows
  and waits between them, so when the peer lags (under load, or resumed from SIGSTOP) two RPCs
  interleave and the peer reads garbage: with the fault above, honest load alone killed every
  witness of a 4-node network. `GuardedPubsub.write_msg` holds a lock per stream: one writer.
- **Any other protocol handler that raises** (identify push, ping, whatever a future release
  adds) would take the same path. `guard_stream_handler` wraps the swarm's one entry point for
  inbound streams, so what a handler lets escape resets that stream and is counted, and the
  connection and the node go on.

Each patch is tested against the unpatched behaviour (tests/p2p/test_guards.py) and pinned to
py-libp2p 0.8.1 (pyproject.toml): a new release must be read again before the pin moves.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Final

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamClosed, StreamReset
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import RpcQueue

from .hotpaths import PUSHING_OWN, BufferedReads, framed, quick_verdicts, send_queued
from .identity import peer_name

logger = logging.getLogger(__name__)

FAULT_PENALTY: Final = 10.0  # behaviour penalty (P5) per fault; squared and weighted by score
LOG_EVERY: Final = 10.0  # seconds between log lines about peer faults (a flood must not flood logs)

StreamHandler = Callable[[INetStream], Awaitable[None]]


class FaultLog:
    """Counts peer faults by kind; logs the first and then at most one summary per interval."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._logged_at = -LOG_EVERY
        self._unlogged = 0

    def record(self, peer: ID | None, kind: str, error: BaseException) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        now = time.monotonic()
        if now - self._logged_at < LOG_EVERY:
            self._unlogged += 1
            return
        more = f" (and {self._unlogged} more faults since the last line)" if self._unlogged else ""
        who = peer_name(peer) if peer is not None else "an unknown peer"
        logger.warning(
            "peer %s broke %s: %s; its stream was reset%s",
            who,
            kind,
            _describe(error),
            more,
        )
        self._logged_at = now
        self._unlogged = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _describe(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


def _peer_of(stream: INetStream) -> ID | None:
    try:
        peer: ID = stream.muxed_conn.peer_id
    except Exception:
        return None
    return peer


async def _reset(stream: INetStream) -> None:
    with trio.move_on_after(1.0):
        try:
            await stream.reset()
        except Exception:
            logger.debug("resetting a faulty stream failed", exc_info=True)


class GuardedPubsub(Pubsub):
    """`Pubsub` whose peers' faults end their stream, not the node, with one writer per stream."""

    def __init__(self, *args: object, faults: FaultLog | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        quick_verdicts(self)  # hotpaths.py: an O(1) verdict cache
        self.faults = faults or FaultLog()
        self._write_locks: weakref.WeakKeyDictionary[INetStream, trio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    async def write_msg(self, stream: INetStream, rpc_msg: rpc_pb2.RPC) -> bool:
        return await self.write_framed(stream, framed(rpc_msg))

    async def write_framed(self, stream: INetStream, data: bytes) -> bool:
        """Write length-prefixed RPCs (`hotpaths.framed`) as one write, one writer per stream;
        False once the stream is closed or reset (the peer is then dropped, as 0.8.1 does)."""
        lock = self._write_locks.get(stream)
        if lock is None:
            lock = self._write_locks[stream] = trio.Lock()
        async with lock:
            try:
                await stream.write(data)
            except (StreamClosed, StreamReset):
                self._handle_dead_peer(stream.muxed_conn.peer_id)
                return False
            return True

    async def handle_sending_messages(
        self, peer_id: ID, stream: INetStream, queue: RpcQueue
    ) -> None:
        """The peer's sender task: what is queued goes in one write (`hotpaths.send_queued`)."""
        await send_queued(self, peer_id, stream, queue, self.write_framed)

    async def continuously_read_stream(self, stream: INetStream) -> None:
        try:
            # Reads served from one muxer read of what has arrived (hotpaths.py).
            await super().continuously_read_stream(BufferedReads(stream))  # type: ignore[arg-type]
        except Exception as error:  # trio.Cancelled is a BaseException and passes
            peer = _peer_of(stream)
            self.faults.record(peer, "pubsub", error)
            self._penalise(peer)
            await _reset(stream)
            if peer is not None:
                self._handle_dead_peer(peer)

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        # Our own publish, signed by us just now: its signature is not checked again.
        token = PUSHING_OWN.set(msg if msg_forwarder == self.my_id else None)
        try:
            await super().push_msg(msg_forwarder, msg)
        except Exception as error:
            self.faults.record(msg_forwarder, "pubsub message", error)
            self._penalise(msg_forwarder)
        finally:
            PUSHING_OWN.reset(token)

    def notify_subscriptions(self, publish_message: rpc_pb2.Message) -> None:
        """Hand a message to our subscriptions, unless it is our own publish: 0.8.1 delivers
        those too, and the runtime only drops them, after they took room in the
        subscription queues (counted in bytes against what peers send) and a task's turn."""
        if PUSHING_OWN.get() is publish_message:
            return
        super().notify_subscriptions(publish_message)

    def _penalise(self, peer: ID | None) -> None:
        scorer = getattr(self.router, "scorer", None)
        if peer is not None and scorer is not None:
            scorer.penalize_behavior(peer, FAULT_PENALTY)


def guard_stream_handler(swarm: Swarm, faults: FaultLog) -> None:
    """Wrap the swarm's entry point for inbound streams: a handler's exception resets that
    stream (and is counted) instead of ending the connection's nursery and the node."""
    inner: StreamHandler = swarm.common_stream_handler

    async def guarded(stream: INetStream) -> None:
        try:
            await inner(stream)
        except Exception as error:
            try:
                protocol = str(stream.get_protocol() or "stream negotiation")
            except Exception:
                protocol = "stream negotiation"
            faults.record(_peer_of(stream), protocol, error)
            await _reset(stream)

    swarm.set_stream_handler(guarded)

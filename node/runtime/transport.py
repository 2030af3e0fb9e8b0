"""What the runtime needs from a network, and an in-memory one for tests.

`Transport` is the seam between the node runtime and libp2p: request/response on the
`/dkms/1/...` surfaces, addressed by witness prefix, and gossip topics. `dkms.node.p2p` is the
real one; `MemoryNetwork` wires nodes together inside one trio process (the ddht way), so the
runtime's own logic (ordering of persistence and replies, group commit, timers, retries) can be
tested quickly and deterministically. Both deliver the same bytes to the same handlers.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import trio

from dkms.node.roles.codes import Code


class Answer(NamedTuple):
    """What a peer answered: its code, its payload, and why (for a refusal)."""

    code: Code
    payload: bytes = b""
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.code.ok


Handler = Callable[[str, bytes], Awaitable[tuple[Code, bytes, str]]]  # (peer, request) -> answer
Check = Callable[[bytes], bool]  # gossip validation: forward (and deliver) this payload?


class TransportError(Exception):
    """A request could not be delivered or answered (unreachable, timed out)."""


class Transport(Protocol):
    @property
    def prefix(self) -> str: ...

    def handle(self, surface: str, handler: Handler) -> None: ...

    async def request(self, to: str, surface: str, payload: bytes, timeout: float) -> Answer: ...

    async def publish(self, topic: str, payload: bytes) -> None: ...

    async def subscribe(
        self, topic: str, check: Check | None = None
    ) -> AsyncIterator[tuple[str, bytes]]: ...


@dataclass
class MemoryNetwork:
    """Nodes in one process: requests are direct calls, gossip is fan-out to subscribers."""

    nodes: dict[str, MemoryTransport] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)

    def join(self, prefix: str) -> MemoryTransport:
        node = MemoryTransport(prefix, self)
        self.nodes[prefix] = node
        return node


@dataclass
class MemoryTransport:
    prefix: str
    network: MemoryNetwork
    handlers: dict[str, Handler] = field(default_factory=dict)
    topics: dict[str, list[trio.MemorySendChannel[tuple[str, bytes]]]] = field(default_factory=dict)
    checks: dict[str, Check] = field(default_factory=dict)

    def handle(self, surface: str, handler: Handler) -> None:
        self.handlers[surface] = handler

    async def request(self, to: str, surface: str, payload: bytes, timeout: float) -> Answer:
        target = self.network.nodes.get(to)
        if target is None or to in self.network.down or surface not in target.handlers:
            await trio.lowlevel.checkpoint()
            raise TransportError(f"{to} is unreachable")
        with trio.move_on_after(timeout) as scope:
            return Answer(*await target.handlers[surface](self.prefix, payload))
        assert scope.cancelled_caught
        raise TransportError(f"{to} did not answer within {timeout:g} s")

    async def publish(self, topic: str, payload: bytes) -> None:
        for prefix, node in self.network.nodes.items():
            if prefix == self.prefix or prefix in self.network.down:
                continue
            check = node.checks.get(topic)
            if check is not None and not check(payload):
                continue  # the subscriber's validator refused it
            for channel in node.topics.get(topic, []):
                # A slow or gone subscriber loses gossip, as with libp2p.
                with contextlib.suppress(
                    trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError
                ):
                    channel.send_nowait((self.prefix, payload))
        await trio.lowlevel.checkpoint()

    async def subscribe(
        self, topic: str, check: Check | None = None
    ) -> trio.MemoryReceiveChannel[tuple[str, bytes]]:
        if check is not None:
            self.checks[topic] = check
        send, receive = trio.open_memory_channel[tuple[str, bytes]](math.inf)
        self.topics.setdefault(topic, []).append(send)
        await trio.lowlevel.checkpoint()
        return receive

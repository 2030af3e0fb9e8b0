"""The runtime's `Transport` over a libp2p host: witnesses addressed by their prefix."""

from __future__ import annotations

from collections.abc import AsyncIterator

from dkms.node.p2p import (
    Introduction,
    P2PError,
    P2PHost,
    Subscription,
    parse_introduction,
    peer_id_from_prefix,
)
from dkms.node.roles.topics import well_formed
from dkms.node.runtime.transport import Answer, Check, Handler, TransportError


class P2PTransport:
    """Requests go to a prefix: its known introduction if any, else the peer id it implies."""

    def __init__(self, host: P2PHost, introductions: list[Introduction] | None = None) -> None:
        self.host = host
        self.book: dict[str, Introduction] = {i.prefix: i for i in introductions or []}

    @property
    def prefix(self) -> str:
        return self.host.prefix

    def learn(self, introduction: str | Introduction) -> Introduction:
        intro = (
            introduction
            if isinstance(introduction, Introduction)
            else parse_introduction(introduction)
        )
        self.book[intro.prefix] = intro
        return intro

    def handle(self, surface: str, handler: Handler) -> None:
        self.host.handle(surface, handler)

    async def request(self, to: str, surface: str, payload: bytes, timeout: float) -> Answer:
        target = self.book.get(to)
        try:
            response = await self.host.request(
                target if target is not None else peer_id_from_prefix(to),
                surface,
                payload,
                timeout,
            )
        except (P2PError, ValueError) as err:
            raise TransportError(str(err)) from None
        return Answer(response.code, response.payload, response.reason)

    async def publish(self, topic: str, payload: bytes) -> None:
        try:
            await self.host.publish(topic, payload)
        except P2PError as err:  # gossip is best effort: witnesses also answer queries
            raise TransportError(str(err)) from None

    async def subscribe(
        self, topic: str, check: Check | None = None
    ) -> AsyncIterator[tuple[str, bytes]]:
        self.host.set_validator(topic, check or well_formed)
        subscription = await self.host.subscribe(topic)
        return _pairs(subscription)


async def _pairs(subscription: Subscription) -> AsyncIterator[tuple[str, bytes]]:
    async for gossip in subscription:
        yield gossip.from_peer, gossip.payload

"""Getting a controller's events witnessed over libp2p, from a command or a program.

`session` opens an ephemeral libp2p host (a random identity, listening where `Options` says)
for one command's duration: a controller only ever dials witnesses, and nothing should link
one run to the next. `push` hands a controller's events to their witnesses and returns once
they are fully witnessed (and the receipts shared among the witnesses), or raises a
`CommandError` naming each witness that failed and why (`Tracked` keeps the last failure of
each).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import trio

from dkms.node.client.controller import ControllerClient, WitnessingFailed
from dkms.node.client.home import CommandError, Home, Options
from dkms.node.p2p import Introduction, P2PError, open_host
from dkms.node.p2p.transport import P2PTransport
from dkms.node.roles.controller import Controller
from dkms.node.roles.effects import Effect, Send, Surface
from dkms.node.runtime.transport import Answer, Check, Handler, Transport, TransportError


@asynccontextmanager
async def session(intros: Iterable[Introduction], options: Options) -> AsyncIterator[P2PTransport]:
    """A transport over a fresh libp2p host that knows where `intros` listen."""
    started = False
    try:
        async with open_host(os.urandom(32), options.listen) as host:
            started = True
            transport = P2PTransport(host)
            for intro in intros:
                transport.learn(intro)
            yield transport
    except (P2PError, OSError) as err:
        if started:
            raise
        raise CommandError(f"cannot start a libp2p host on {options.listen}: {err}") from None


class Tracked:
    """A transport that keeps each node's last failure, to say why witnessing failed."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.failures: dict[str, str] = {}  # witness -> why its last submission failed

    @property
    def prefix(self) -> str:
        return self.inner.prefix

    def handle(self, surface: str, handler: Handler) -> None:
        self.inner.handle(surface, handler)

    async def request(self, to: str, surface: str, payload: bytes, timeout: float) -> Answer:
        try:
            answer = await self.inner.request(to, surface, payload, timeout)
        except TransportError as err:
            if surface == Surface.SUBMIT:
                self.failures[to] = str(err)
            raise
        if surface == Surface.SUBMIT:
            if answer.ok:
                self.failures.pop(to, None)
            else:
                self.failures[to] = f"{to} refused: {answer[2]}"
        return answer

    async def publish(self, topic: str, payload: bytes) -> None:
        await self.inner.publish(topic, payload)

    async def subscribe(
        self, topic: str, check: Check | None = None
    ) -> AsyncIterator[tuple[str, bytes]]:
        return await self.inner.subscribe(topic, check)


async def push(
    ctl: Controller,
    effects: list[Effect],
    said: str,
    home: Home,
    *,
    what: str,
    timeout: float,
    options: Options,
) -> None:
    """Perform a controller command's effects; return once `said` is fully witnessed."""
    witnesses = sorted({e.to for e in effects if isinstance(e, Send)})
    if not witnesses:  # a local-only identifier: its own validator already accepted it
        if not ctl.done(said):
            raise CommandError(f"{what} was not accepted by its own controller")
        return
    async with session(home.introductions(witnesses), options) as transport:
        tracked = Tracked(transport)
        client = ControllerClient(ctl, tracked)
        problem = ""
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            with trio.move_on_after(timeout) as scope:
                try:
                    await client.witnessed(effects, said)
                except WitnessingFailed:
                    problem = "could not gather enough witness receipts"
            if scope.cancelled_caught:
                problem = f"was not fully witnessed within {timeout:g} s"
            if not problem:  # let the witnesses' receipt exchange (agreement) go out
                with trio.move_on_after(options.settle):
                    await client.runtime.quiet()
            nursery.cancel_scope.cancel()
    if problem:
        failed = "; ".join(
            r if w in r else f"{w}: {r}" for w, r in sorted(tracked.failures.items())
        )
        raise CommandError(
            f"{what} {problem} ({failed or 'no witness answered in time'}); "
            "its keys are kept: run the same command again to retry"
        )

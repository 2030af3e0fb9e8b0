"""Getting a controller's events witnessed over libp2p, from a command or a program.

`session` opens an ephemeral libp2p host (a random identity, listening where `Options` says)
for one command's duration: a controller only ever dials witnesses, and nothing should link
one run to the next. `push` hands a controller's events to their witnesses and returns once
they are fully witnessed (and the receipts shared among the witnesses), or raises
`NotWitnessed`. Either way it says which witnesses answered (their addresses are then known
to be right) and what each may hold of the event (`Fate`), which is what `dkms id abandon`
later decides by. Refusals are told apart by their code, never by their wording.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

import trio

from dkms.node.client.controller import ControllerClient, WitnessingFailed
from dkms.node.client.home import CommandError, Home, Options
from dkms.node.client.locating import LocatingTransport, NodeRef, bootstrap_of
from dkms.node.p2p import Introduction, MessageTooLarge, P2PError, PeerUnreachable, open_host
from dkms.node.roles.codes import Code
from dkms.node.roles.controller import Controller
from dkms.node.roles.effects import Effect, Send, Surface
from dkms.node.runtime.transport import Answer, Check, Handler, Transport, TransportError


class Fate(IntEnum):
    """What a witness may hold of an event pushed to it; the higher, the more it may hold."""

    UNREACHED = 0  # no connection was ever made: it cannot have received the event
    REFUSED = 1  # it answered with a refusal that keeps nothing (e.g. invalid, busy)
    MAYBE = 2  # it may have received the event: no answer came, or it kept it aside
    ACCEPTED = 3  # it answered yes: it holds the event


# Refusals after which the witness has not kept the event; any other refusal may have.
_KEPT_NOTHING: Final = frozenset(
    {
        Code.TOO_LARGE,
        Code.BUSY,
        Code.RATE_LIMITED,
        Code.NOT_SERVED,
        Code.MALFORMED,
        Code.INVALID,
        Code.CONFLICT,
        Code.SUPERSEDED,
        Code.NOT_WITNESS,
        Code.UNKNOWN,
        Code.QUOTA,
    }
)
# Refusals that sending the same event to the same witness again cannot turn into a receipt.
HOPELESS: Final = frozenset(
    {
        Code.TOO_LARGE,
        Code.NOT_SERVED,
        Code.MALFORMED,
        Code.INVALID,
        Code.CONFLICT,
        Code.SUPERSEDED,
        Code.NOT_WITNESS,
        Code.QUOTA,
    }
)


@dataclass(slots=True)
class Outcome:
    """What the witnesses of one push did: `fates`, the last refusal `codes`, and the
    witnesses that `answered` at all (so the address they were dialled at is theirs)."""

    fates: dict[str, Fate] = field(default_factory=dict)
    codes: dict[str, Code] = field(default_factory=dict)
    answered: set[str] = field(default_factory=set)

    def note(self, witness: str, fate: Fate) -> None:
        self.fates[witness] = max(fate, self.fates.get(witness, Fate.UNREACHED))


class NotWitnessed(CommandError):
    """Too few receipts: the message says which witnesses failed and why; `hopeless` when
    too few witnesses remain that could still receipt this very event."""

    def __init__(
        self, message: str, outcome: Outcome, *, problem: str, failed: str, hopeless: bool
    ) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.problem = problem
        self.failed = failed
        self.hopeless = hopeless

    @property
    def conflicts(self) -> list[str]:
        """The witnesses that hold another version of the event."""
        return sorted(w for w, c in self.outcome.codes.items() if c is Code.CONFLICT)


@asynccontextmanager
async def session(
    nodes: Iterable[Introduction | NodeRef], options: Options
) -> AsyncIterator[LocatingTransport]:
    """A transport over a fresh libp2p host that knows where `nodes` listen: those named by
    prefix alone are looked up at once through `options.bootstrap` (a CommandError says why
    one cannot be found), and any other node without a known address when it is first asked
    (`locating.LocatingTransport`)."""
    bootstrap = bootstrap_of(options)
    named = [n if isinstance(n, NodeRef) else NodeRef(n.prefix, n) for n in nodes]
    started = False
    try:
        async with open_host(os.urandom(32), options.listen) as host:
            started = True
            transport = LocatingTransport(host, bootstrap)
            for node in named:
                if node.intro is not None:
                    transport.learn(node.intro)
            await _locate([n.prefix for n in named if n.intro is None], transport)
            yield transport
    except (P2PError, OSError) as err:
        if started:
            raise
        raise CommandError(f"cannot start a libp2p host on {options.listen}: {err}") from None


async def findable(nodes: Iterable[NodeRef], options: Options) -> None:
    """Check that the nodes named by prefix alone can be found (`session` says why one
    cannot), before anything is made for them."""
    bare = [n for n in nodes if n.intro is None]
    if bare:
        async with session(bare, options):
            pass


async def _locate(prefixes: list[str], transport: LocatingTransport) -> None:
    """Find where the nodes named by prefix alone listen; a CommandError if one is unknown."""
    why: dict[str, str] = {}

    async def one(prefix: str) -> None:
        answer = await transport.locate(prefix)
        if answer is not None:
            why[prefix] = answer

    async with trio.open_nursery() as nursery:
        for prefix in dict.fromkeys(prefixes):
            nursery.start_soon(one, prefix)
    if why:
        raise CommandError("; ".join(why[p] for p in prefixes if p in why))


class Tracked:
    """A transport that keeps each witness's last failure and what it may hold (`outcome`)."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.failures: dict[str, str] = {}  # witness -> why its last submission failed
        self.outcome = Outcome()

    @property
    def prefix(self) -> str:
        return self.inner.prefix

    def handle(self, surface: str, handler: Handler) -> None:
        self.inner.handle(surface, handler)

    async def request(self, to: str, surface: str, payload: bytes, timeout: float) -> Answer:
        submit = surface == Surface.SUBMIT
        try:
            answer = await self.inner.request(to, surface, payload, timeout)
        except TransportError as err:
            if submit:
                self.failures[to] = str(err)
                # `from None` hides the p2p error as the cause, not as the context
                undelivered = isinstance(err.__context__, PeerUnreachable | MessageTooLarge)
                self.outcome.note(to, Fate.UNREACHED if undelivered else Fate.MAYBE)
            raise
        except BaseException:  # cut short (the push timed out): it may have been delivered
            if submit:
                self.outcome.note(to, Fate.MAYBE)
            raise
        self.outcome.answered.add(to)
        if submit:
            if answer.ok:
                self.failures.pop(to, None)
                self.outcome.codes.pop(to, None)
                self.outcome.note(to, Fate.ACCEPTED)
            else:
                self.failures[to] = f"{to} refused: {answer.reason or answer.code.text}"
                self.outcome.codes[to] = answer.code
                kept = answer.code not in _KEPT_NOTHING
                self.outcome.note(to, Fate.MAYBE if kept else Fate.REFUSED)
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
    intros: Iterable[Introduction] = (),
    toad: int,
    what: str,
    timeout: float,
    options: Options,
) -> Outcome:
    """Perform a controller command's effects; return once `said` is fully witnessed.

    `intros`: where witnesses listen for this push (they take precedence over the address
    book, which this does not change); `toad`: the receipts the event needs."""
    witnesses = sorted({e.to for e in effects if isinstance(e, Send)})
    if not witnesses:  # a local-only identifier: its own validator already accepted it
        if not ctl.done(said):
            raise CommandError(f"{what} was not accepted by its own controller")
        return Outcome()
    where = {i.prefix: i for i in home.introductions(witnesses)}
    where |= {i.prefix: i for i in intros}
    async with session(where.values(), options) as transport:
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
    outcome = tracked.outcome
    for witness in witnesses:  # no request seen to end: assume the worst
        outcome.fates.setdefault(witness, Fate.MAYBE)
    if not problem:
        return outcome
    failed = "; ".join(r if w in r else f"{w}: {r}" for w, r in sorted(tracked.failures.items()))
    failed = failed or "no witness answered in time"
    able = [w for w in witnesses if outcome.codes.get(w) not in HOPELESS]
    hopeless = len(able) < toad
    advice = (
        "running the same command again cannot help"
        if hopeless
        else "its keys are kept: run the same command again to retry"
    )
    raise NotWitnessed(
        f"{what} {problem} ({failed}); {advice}",
        outcome,
        problem=problem,
        failed=failed,
        hopeless=hopeless,
    )

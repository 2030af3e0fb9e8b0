"""The runtime: performs the effects that node roles return, over a transport and a store.

Theory of operation. Roles are synchronous and run inside one trio task tree, so a role's
state is only ever touched by one step at a time. Each step's effects are performed in order:

    PersistEvent/PersistReceipts  collected, then made durable (group commit) before any later
                                  effect of the step runs: no receipt leaves for an event a
                                  crash could make us forget
    Reply                         becomes the answer of the request being handled
    Send                          batched per (peer, surface) by `roles.outbox` (one request in
                                  flight each); each Send's answer comes back as `Answered`
    Publish                       batched per topic by `roles.outbox`, flushed by one task
                                  (and the topic subscribed, to hear the others)
    Subscribe                     listen to a topic without publishing (watchers); gossip
                                  validation asks the role's `admits`
    SetTimer                      `TimerFired(key)` at that time (one timer per key)
    Report                        a log line
    Blame                         the peer's request budget is cut (`ratelimit.PeerBuckets`)

Requests come in on the role's `surfaces` as `Request`s, gossip as `Heard`: the runtime knows
the role only through `roles.role.Role`.

Group commit: concurrent steps hand their persist effects to one committer task, which writes
everything waiting in one transaction (in a worker thread, since SQLite blocks), so durability
does not cap throughput.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import trio

from dkms.protocol.ids import NodePrefix

if TYPE_CHECKING:
    # libp2p pulls in trio-typing, whose trio-stubs shadow trio's own types for mypy.
    from trio_typing import TaskStatus

from dkms.node.roles.codes import Code
from dkms.node.roles.effects import (
    PERSIST,
    Blame,
    Effect,
    Persist,
    PersistEvent,
    Publish,
    Reply,
    Report,
    Send,
    SetTimer,
    Subscribe,
    Surface,
    TimerKey,
)
from dkms.node.roles.inputs import Answered, Heard, Input, Request, TimerFired
from dkms.node.roles.outbox import (
    GOSSIP,
    GOSSIP_BYTES,
    REQUEST_BYTES,
    REQUESTS,
    SENDS,
    Outbox,
    batched,
    joinable,
    joined,
)
from dkms.node.roles.role import Role
from dkms.node.roles.topics import LOCATIONS_TOPIC
from dkms.node.runtime.metrics import Metrics
from dkms.node.runtime.ratelimit import PeerBuckets, RateLimit
from dkms.node.runtime.transport import Answer, Transport, TransportError

log = logging.getLogger("dkms.node")
BLAME_COST = 100.0  # requests taken from a peer's budget for each thing it is blamed for

_IN_PLACE = (*PERSIST, Report, SetTimer, Subscribe, Blame)  # performed without waiting
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class Durable(Protocol):
    """Where persist effects go (`dkms.node.store.Store`); `apply` returns once durable.

    A store may set `blocking = False` (an in-memory one) to be called without a thread.
    """

    def apply(self, effects: Sequence[Persist]) -> None: ...


class StorageFailure(Exception):
    """The store could not make a batch durable; nothing that depended on it was released."""


class GroupCommitter:
    """Makes persist effects durable, many steps' worth per transaction, in step order.

    `enqueue` is synchronous, so each step's effects join the queue in the order the roles
    produced them (the order events were accepted) before anything else can run; `wait(ticket)`
    returns once everything enqueued up to that ticket is durable. A step with nothing to
    persist waits for the latest ticket, so no answer can overtake an earlier step's data (a
    receipt for a resubmitted event waits for the first submission's commit).
    """

    def __init__(self, store: Durable | None) -> None:
        self._store = store
        self._queue: list[Persist] = []
        self._enqueued = 0  # ticket of the last entry queued
        self._durable = 0  # every entry up to this ticket is durable
        self._wake = trio.Event()
        self._progress = trio.Event()
        self._error: BaseException | None = None
        self.commits = 0
        self.batched = 0

    def enqueue(self, effects: list[Persist]) -> int:
        """Queue a step's persist effects; return the ticket to `wait` for."""
        if self._store is not None and effects:
            self._queue.extend(effects)
            self._enqueued += 1
            self._wake.set()
        return self._enqueued

    async def wait(self, ticket: int) -> None:
        while self._durable < ticket and self._error is None:
            await self._progress.wait()
        if self._error is not None:
            raise StorageFailure(str(self._error)) from self._error

    async def commit(self, effects: list[Persist]) -> None:
        await self.wait(self.enqueue(effects))

    async def run(self) -> None:
        store = self._store
        if store is None:
            return
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            if not self._queue:
                continue
            batch, self._queue = self._queue, []
            upto, entries = self._enqueued, self._enqueued - self._durable
            try:
                if getattr(store, "blocking", True):  # disk I/O: keep the event loop free
                    await trio.to_thread.run_sync(store.apply, batch)
                else:
                    store.apply(batch)
            except Exception as exc:  # a full disk must not kill the node: refuse, then stop
                self._error = exc
                log.error("storage failure, %d effects not stored: %s", len(batch), exc)
            else:
                self._durable = upto
                self.commits += 1
                self.batched += entries
            self._progress.set()
            self._progress = trio.Event()


class Runtime:
    """Drives one role: its surfaces served, its gossip heard, its effects performed."""

    def __init__(
        self,
        role: Role,
        transport: Transport,
        store: Durable | None = None,
        *,
        request_timeout: float = 5.0,
        rate_limit: RateLimit | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.role = role
        self.metrics = metrics or Metrics()
        self.buckets = PeerBuckets(rate_limit or RateLimit())
        self.transport = transport
        self.committer = GroupCommitter(store)
        self.request_timeout = request_timeout
        # After every step `changed` is set (and replaced), for occasional observers, and
        # `after_step` is called: how a client releases just the waiters whose wait is over,
        # instead of waking every waiting task on every step.
        self.changed = trio.Event()
        self.after_step: Callable[[], None] | None = None
        # Set (and replaced) after each step whose writes are durable: what waits for new
        # events or receipts (an HTTP mailbox stream) waits on, since a query's step writes
        # nothing and so streams asking the role do not wake one another.
        self.stored = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._timers: dict[TimerKey, trio.CancelScope] = {}
        self._topics: set[str] = set()
        self._fatal: StorageFailure | None = None
        self._outbox: Outbox[tuple[str, Surface], Send] = Outbox()
        self._unanswered = 0  # Sends queued or in flight whose answer is not yet performed
        self._gossip_box: Outbox[str, bytes] = Outbox()

    @staticmethod
    def now() -> float:
        return trio.current_time()

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the role's surfaces and perform its start effects; run until cancelled."""
        for surface in sorted(self.role.surfaces):
            self._serve(surface)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.committer.run)
            await self.perform(self.role.start(self.now()))
            task_status.started()
            await trio.sleep_forever()
        if self._fatal is not None:
            raise self._fatal

    async def step(self, event: Input) -> Reply | None:
        """Hand one input to the role and perform what it returns; its Reply, if any."""
        return await self.perform(self.role.step(event, self.now()))

    def _serve(self, surface: Surface) -> None:
        async def handler(peer: str, payload: bytes) -> tuple[Code, bytes, str]:
            self.metrics.count("requests", help="requests answered", surface=surface.value)
            if not self.admit(peer):
                log.debug("refused %s from %s: rate limit", surface.value, peer)
                return Code.RATE_LIMITED, b"", "rate limited: slow down and retry"
            return await self.answer(surface, peer, payload)

        self.transport.handle(surface.value, handler)

    def admit(self, peer: str) -> bool:
        """Whether `peer` may make a request now (its rate limit); a refusal is counted.
        Other adapters (`node/http/`) ask this once per request, as libp2p's handler does."""
        if self.buckets.allow(peer, self.now()):
            return True
        self.metrics.count("rate_limited", help="requests refused by the rate limit")
        return False

    async def answer(self, surface: Surface, peer: str, payload: bytes) -> tuple[Code, bytes, str]:
        """A request on one of the role's surfaces, from `peer`, answered by the role: the
        one path by which any adapter's requests reach it (`admit` first)."""
        reply = await self.step(Request(surface, NodePrefix(peer), payload))
        if reply is None or not reply.ok:
            self.metrics.count("refusals", help="requests refused", surface=surface.value)
        if reply is None:
            return Code.REFUSED, b"", "no answer"
        return reply.code, reply.payload, reply.reason

    async def perform(self, effects: Sequence[Effect]) -> Reply | None:
        """Perform one step's effects in order; return its Reply, if any."""
        reply: Reply | None = None
        durable: list[Persist] = [e for e in effects if isinstance(e, PERSIST)]
        ticket = self.committer.enqueue(durable)  # before any await: keeps acceptance order
        self.metrics.count(
            "events_stored",
            sum(isinstance(e, PersistEvent) for e in durable),
            help="events made durable",
        )
        waited = False
        try:
            for effect in effects:
                if isinstance(effect, _IN_PLACE):
                    if isinstance(effect, SetTimer):
                        self._set_timer(effect)
                    elif isinstance(effect, Subscribe):
                        await self._subscribe(effect.topic)
                    elif isinstance(effect, Report):
                        log.log(_LEVELS.get(effect.level, logging.INFO), "%s", effect.message)
                    elif isinstance(effect, Blame):
                        self._blame(effect)
                    continue
                if not waited:  # nothing leaves before what it may depend on is durable
                    await self.committer.wait(ticket)
                    waited = True
                if isinstance(effect, Reply):
                    reply = effect
                elif isinstance(effect, Send):
                    self._queue_send(effect)
                elif isinstance(effect, Publish):
                    self.metrics.count("published", help="gossip messages published")
                    self._publish(effect)
            if not waited:
                await self.committer.wait(ticket)
            if durable:
                self.stored.set()
                self.stored = trio.Event()
        except StorageFailure as err:
            # The role already believes what the store failed to keep; carrying on could hand
            # out receipts for events a restart would forget. Refuse, then stop the node: a
            # restart rebuilds the role from what the store did keep.
            self._stop(err)
            return Reply.refuse(Code.STORAGE, f"storage failure: {err}")
        finally:
            self._changed()
        return reply

    # ---------------------------------------------------------------- internals

    def _queue_send(self, send: Send) -> None:
        """Batched by `roles.outbox`: one request in flight per (peer, surface)."""
        if self._nursery is None:
            raise RuntimeError("the runtime is not running")
        self._unanswered += 1
        self.metrics.count(SENDS, help="requests the role asked for (before batching)")
        if not batched(send):
            self._nursery.start_soon(self._request, [send])
        elif self._outbox.put((send.to, send.surface), send, len(send.payload)):
            self._nursery.start_soon(self._drain_outbox, (send.to, send.surface))

    async def _drain_outbox(self, key: tuple[str, Surface]) -> None:
        while (batch := self._outbox.take(key)) is not None:
            await self._request(batch)

    async def _request(self, sends: list[Send]) -> None:
        first, payload = sends[0], joined(sends)
        self.metrics.count(REQUESTS, help="requests sent (a batch counts once)")
        self.metrics.count(REQUEST_BYTES, len(payload), help="payload bytes of requests sent")
        try:
            answer = await self.transport.request(
                first.to, first.surface.value, payload, self.request_timeout
            )
        except TransportError as err:
            answer = Answer(Code.UNREACHABLE, b"", str(err))
        for send in sends:
            try:
                await self.step(Answered(send.tag, answer.code, answer.payload, answer.reason))
            finally:
                self._unanswered -= 1
                self._changed()

    async def quiet(self) -> None:
        """Return once every request sent has been answered, and what that caused was sent
        and answered too (e.g. the witness agreement after an event completes)."""
        while self._unanswered:
            await self.changed.wait()

    def _publish(self, publish: Publish) -> None:
        """Queue gossip; a flusher per topic publishes what queued as one payload, so replies
        never wait on gossip and a busy node sends fewer, larger messages."""
        if self._gossip_box.put(publish.topic, publish.payload, len(publish.payload)):
            assert self._nursery is not None
            self._nursery.start_soon(self._flush_gossip, publish.topic)

    async def _subscribe(self, topic: str) -> None:
        """Subscribe now (so a node that subscribes before it connects announces all its
        topics in its first hello, not in one message per topic that small libp2p queues
        drop), then hear the topic in a task of its own."""
        if topic in self._topics or self._nursery is None:
            return
        self._topics.add(topic)
        admits = self.role.admits

        def check(payload: bytes) -> bool:
            return admits(topic, payload)

        channel = await self.transport.subscribe(topic, check)
        self._nursery.start_soon(self._hear, topic, channel)

    async def _flush_gossip(self, topic: str) -> None:
        await self._subscribe(topic)
        while (batch := self._gossip_box.take(topic)) is not None:
            payloads = [b"".join(batch)] if joinable(topic) else batch
            for payload in payloads:
                await self._publish_one(topic, payload)

    async def _publish_one(self, topic: str, payload: bytes) -> None:
        if topic == LOCATIONS_TOPIC:  # a record every few minutes, not per-event traffic
            self.metrics.count("locations_published", help="location records published")
        else:
            self.metrics.count(GOSSIP, help="gossip payloads published (a batch counts once)")
            self.metrics.count(GOSSIP_BYTES, len(payload), help="payload bytes published")
        try:
            await self.transport.publish(topic, payload)
        except TransportError as err:  # best effort: co-witnesses also answer queries
            log.warning("could not publish on %s: %s", topic, err)

    async def _hear(self, topic: str, channel: AsyncIterator[tuple[str, bytes]]) -> None:
        try:
            async for peer, payload in channel:
                if peer != self.transport.prefix:  # our own, relayed back to us
                    await self.step(Heard(topic, NodePrefix(peer), payload))
        finally:
            # Close the subscription's iterator here, even when cancelled, rather than leave
            # a suspended async generator for the garbage collector to finalize.
            aclose = getattr(channel, "aclose", None)
            if aclose is not None:
                with trio.CancelScope(shield=True):
                    await aclose()

    def _blame(self, blame: Blame) -> None:
        log.info("blamed %s: %s", blame.peer, blame.reason)
        self.metrics.count("blames", help="peers blamed for what they sent")
        if blame.peer:
            self.buckets.charge(blame.peer, self.now(), BLAME_COST)

    def _set_timer(self, timer: SetTimer) -> None:
        old = self._timers.pop(timer.key, None)
        if old is not None:
            old.cancel()
        scope = trio.CancelScope()
        self._timers[timer.key] = scope
        if self._nursery is not None:
            self._nursery.start_soon(self._fire, timer, scope)

    async def _fire(self, timer: SetTimer, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep_until(timer.at)
            if self._timers.get(timer.key) is scope:
                del self._timers[timer.key]
            await self.step(TimerFired(timer.key))

    def _stop(self, error: StorageFailure) -> None:
        if self._fatal is None:
            log.critical("stopping: %s; restart the node to recover from its store", error)
            self._fatal = error
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()
        if self.after_step is not None:
            self.after_step()

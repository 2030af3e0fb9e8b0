"""The runtime: performs the effects that node roles return, over a transport and a store.

Theory of operation. Roles are synchronous and run inside one trio task tree, so a role's
state is only ever touched by one step at a time. Each step's effects are performed in order:

    PersistEvent/PersistReceipts  collected, then made durable (group commit) before any later
                                  effect of the step runs: no receipt leaves for an event a
                                  crash could make us forget
    Reply                         becomes the answer of the request being handled
    Send                          queued per (peer, surface): one request in flight each, and
                                  what queued meanwhile goes next as one CESR stream; each
                                  Send's answer goes to role.answer
    Publish                       queued per topic and flushed by one task, batched likewise
                                  (and the topic subscribed, to hear the others)
    Subscribe                     listen to a topic without publishing (watchers); gossip
                                  validation asks the role's `admits`, when it has one
    SetTimer                      role.timer(key) at that time (one timer per key)
    Report                        a log line

Group commit: concurrent steps hand their persist effects to one committer task, which writes
everything waiting in one transaction (in a worker thread, since SQLite blocks), so durability
does not cap throughput.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import trio

if TYPE_CHECKING:
    # libp2p pulls in trio-typing, whose trio-stubs shadow trio's own types for mypy.
    from trio_typing import TaskStatus

from .metrics import Metrics
from .ratelimit import PeerBuckets, RateLimit
from .roles.effects import (
    PERSIST,
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
)
from .transport import Answer, Transport, TransportError

log = logging.getLogger("dkms.node")
BATCH = 256 * 1024  # bytes at most in one batched request or gossip payload

Hear = Callable[[str, bytes, float], list[Effect]]  # (topic, payload, now) -> effects
_IN_PLACE = (*PERSIST, Report, SetTimer, Subscribe)  # effects performed without waiting
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


class Role(Protocol):
    def answer(
        self, tag: str, ok: bool, payload: bytes, reason: str, now: float
    ) -> list[Effect]: ...

    def timer(self, key: str, now: float) -> list[Effect]: ...


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
    """Performs one role's effects; handlers for requests are added with `serve`."""

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
        self._nursery: trio.Nursery | None = None
        self._timers: dict[str, trio.CancelScope] = {}
        self._topics: set[str] = set()
        self._gossip: Hear | None = None
        self._requests = itertools.count(1)
        self._fatal: StorageFailure | None = None
        self._outbox: dict[tuple[str, Surface], list[Send]] = {}
        self._unanswered = 0  # Sends queued or in flight whose answer is not yet performed
        self._gossip_box: dict[str, list[bytes]] = {}

    @staticmethod
    def now() -> float:
        return trio.current_time()

    async def run(
        self,
        start: list[Effect] | None = None,
        *,
        gossip: Hear | None = None,
        task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run until cancelled; `gossip(topic, payload, now)` receives what is heard on the
        topics we publish to or subscribe to."""
        self._gossip = gossip
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.committer.run)
            await self.perform(start or [])
            task_status.started()
            await trio.sleep_forever()
        if self._fatal is not None:
            raise self._fatal

    def serve(self, surface: Surface, step: Callable[[int, bytes, float], list[Effect]]) -> None:
        """Answer requests on `surface` with the role's `step(request, payload, now)`."""

        async def handler(peer: str, payload: bytes) -> Answer:
            self.metrics.count("requests", help="requests answered", surface=surface.value)
            if not self.buckets.allow(peer, self.now()):
                log.debug("refused %s from %s: rate limit", surface.value, peer)
                self.metrics.count("rate_limited", help="requests refused by the rate limit")
                return False, b"", "rate limited: slow down and retry"
            reply = await self.perform(step(next(self._requests), payload, self.now()))
            if reply is None or not reply.ok:
                self.metrics.count("refusals", help="requests refused", surface=surface.value)
            if reply is None:
                return False, b"", "no answer"
            return reply.ok, reply.payload, reply.reason

        self.transport.handle(surface.value, handler)

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
        except StorageFailure as err:
            # The role already believes what the store failed to keep; carrying on could hand
            # out receipts for events a restart would forget. Refuse, then stop the node: a
            # restart rebuilds the role from what the store did keep.
            self._stop(err)
            return Reply(reply.request if reply else 0, False, reason=f"storage failure: {err}")
        finally:
            self._changed()
        return reply

    # ---------------------------------------------------------------- internals

    def _queue_send(self, send: Send) -> None:
        """Requests to one peer on one surface go one at a time; what queues meanwhile goes
        in the next request as one CESR stream (submissions and receipts concatenate)."""
        if self._nursery is None:
            raise RuntimeError("the runtime is not running")
        self._unanswered += 1
        if send.surface is Surface.QUERY:
            self._nursery.start_soon(self._request, [send])
            return
        key = (send.to, send.surface)
        box = self._outbox.get(key)
        if box is not None:
            box.append(send)
            return
        self._outbox[key] = [send]
        self._nursery.start_soon(self._drain_outbox, key)

    async def _drain_outbox(self, key: tuple[str, Surface]) -> None:
        while self._outbox[key]:
            box = self._outbox[key]
            size, count = 0, 0
            while count < len(box) and (count == 0 or size + len(box[count].payload) <= BATCH):
                size += len(box[count].payload)
                count += 1
            self._outbox[key] = box[count:]
            await self._request(box[:count])
        del self._outbox[key]

    async def _request(self, sends: list[Send]) -> None:
        first = sends[0]
        payload = b"".join(s.payload for s in sends)
        try:
            ok, answer, reason = await self.transport.request(
                first.to, first.surface.value, payload, self.request_timeout
            )
        except TransportError as err:
            ok, answer, reason = False, b"", str(err)
        for send in sends:
            try:
                await self.perform(self.role.answer(send.tag, ok, answer, reason, self.now()))
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
        box = self._gossip_box.get(publish.topic)
        if box is not None:
            box.append(publish.payload)
            return
        self._gossip_box[publish.topic] = [publish.payload]
        assert self._nursery is not None
        self._nursery.start_soon(self._flush_gossip, publish.topic)

    async def _subscribe(self, topic: str) -> None:
        """Subscribe now (so a node that subscribes before it connects announces all its
        topics in its first hello, not in one message per topic that small libp2p queues
        drop), then hear the topic in a task of its own."""
        if topic in self._topics or self._gossip is None or self._nursery is None:
            return
        self._topics.add(topic)
        admits = getattr(self.role, "admits", None)
        check: Callable[[bytes], bool] | None = None
        if admits is not None:

            def check(payload: bytes) -> bool:
                return bool(admits(topic, payload))

        channel = await self.transport.subscribe(topic, check)
        self._nursery.start_soon(self._hear, topic, channel)

    async def _flush_gossip(self, topic: str) -> None:
        await self._subscribe(topic)
        while self._gossip_box[topic]:
            box = self._gossip_box[topic]
            size, count = 0, 0
            while count < len(box) and (count == 0 or size + len(box[count]) <= BATCH):
                size += len(box[count])
                count += 1
            self._gossip_box[topic] = box[count:]
            try:
                await self.transport.publish(topic, b"".join(box[:count]))
            except TransportError as err:  # best effort: co-witnesses also answer queries
                log.warning("could not publish on %s: %s", topic, err)
        del self._gossip_box[topic]

    async def _hear(self, topic: str, channel: AsyncIterator[tuple[str, bytes]]) -> None:
        assert self._gossip is not None
        try:
            async for peer, payload in channel:
                if peer != self.transport.prefix:  # libp2p hands us our own messages too
                    await self.perform(self._gossip(topic, payload, self.now()))
        finally:
            # Close the subscription's iterator here, even when cancelled, rather than leave
            # a suspended async generator for the garbage collector to finalize.
            aclose = getattr(channel, "aclose", None)
            if aclose is not None:
                with trio.CancelScope(shield=True):
                    await aclose()

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
            await self.perform(self.role.timer(timer.key, self.now()))

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

"""The runtime performing role effects over the in-memory transport, on trio's virtual clock.

These check what only the runtime can get wrong: persistence lands before the receipt that
depends on it, concurrent steps share commits, timers and retries fire, gossip is heard, and a
storage failure refuses instead of receipting.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import cbor2
import pytest
import trio
import trio.testing

from dkms.node.client.controller import ControllerClient, WitnessingFailed
from dkms.node.roles.codes import Code
from dkms.node.roles.controller import Controller, RetryPolicy
from dkms.node.roles.effects import PersistEvent, PersistReceipts, Send, Surface
from dkms.node.roles.witness import Witness
from dkms.node.runtime.loop import BLAME_COST, Runtime, StorageFailure
from dkms.node.runtime.ratelimit import RateLimit
from dkms.node.runtime.transport import Answer, MemoryNetwork
from dkms.node.testing.keys import node_signer, seed
from dkms.protocol.crypto import Signer

Persist = PersistEvent | PersistReceipts



@dataclass
class FakeStore:
    """Records batches; `fail` makes apply raise (a full disk)."""

    batches: list[list[Persist]] = field(default_factory=list)
    fail: bool = False
    blocking: bool = False  # in memory: no worker thread (which autojump_clock cannot see)

    def apply(self, effects: Sequence[Persist]) -> None:
        if self.fail:
            raise OSError("disk full")
        self.batches.append(list(effects))

    @property
    def saids(self) -> set[str]:
        return {e.said for b in self.batches for e in b if isinstance(e, PersistEvent)}


@dataclass
class Cluster:
    net: MemoryNetwork
    witnesses: list[Witness]
    stores: list[FakeStore]
    client: ControllerClient


@asynccontextmanager
async def cluster(count: int, retry: RetryPolicy | None = None) -> AsyncIterator[Cluster]:
    net = MemoryNetwork()
    witnesses = [Witness(node_signer(i)) for i in range(count)]
    stores = [FakeStore() for _ in witnesses]
    client = ControllerClient(Controller(retry=retry), net.join("controller"))
    async with trio.open_nursery() as nursery:
        for witness, store in zip(witnesses, stores, strict=True):
            runtime = Runtime(witness, net.join(witness.prefix), store)
            await nursery.start(runtime.run)
        await nursery.start(client.run)
        yield Cluster(net, witnesses, stores, client)
        nursery.cancel_scope.cancel()


def kel_saids(witness: Witness, prefix: str) -> list[str]:
    kel = witness.validator.kel(prefix)
    return [r.event.said for r in kel.chain] if kel else []


async def test_events_are_witnessed_and_stored_by_every_witness() -> None:
    with trio.fail_after(10):
        async with cluster(4) as c:
            ctl = c.client.controller
            prefixes = [w.prefix for w in c.witnesses]
            effects = ctl.incept("alice", [seed(1)], [seed(2)], witnesses=prefixes, toad=3, now=0.0)
            await c.client.witnessed(effects, ctl.identity("alice").last_said)
            for n in range(5):
                effects = ctl.interact("alice", [{"n": n}], now=1.0)
                await c.client.witnessed(effects, ctl.identity("alice").last_said)
            alice = ctl.identity("alice").prefix
            await trio.testing.wait_all_tasks_blocked()
            expected = kel_saids(c.witnesses[0], alice)
            assert len(expected) == 6
            for witness, store in zip(c.witnesses, c.stores, strict=True):
                assert kel_saids(witness, alice) == expected
                assert store.saids == set(expected)


async def test_persistence_happens_before_the_receipt_is_released() -> None:
    order: list[str] = []

    class OrderedStore(FakeStore):
        def apply(self, effects: Sequence[Persist]) -> None:
            order.extend(f"stored {e.said}" for e in effects if isinstance(e, PersistEvent))

    net = MemoryNetwork()
    witness = Witness(Signer(seed(200), transferable=False))
    runtime = Runtime(witness, net.join(witness.prefix), OrderedStore())
    ctl = Controller()
    effects = ctl.incept("bob", [seed(3)], [seed(4)], witnesses=[witness.prefix], toad=1, now=0.0)
    message = next(e for e in effects if isinstance(e, Send)).payload
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.run)
            caller = net.join("caller")
            code, _, reason = await caller.request(witness.prefix, Surface.SUBMIT.value, message, 5)
            order.append("replied")
            nursery.cancel_scope.cancel()
    assert code.ok, reason
    assert order == [f"stored {ctl.identity('bob').last_said}", "replied"]


async def test_concurrent_submissions_share_commits() -> None:
    with trio.fail_after(10):
        async with cluster(1) as c:
            ctl = c.client.controller
            w = c.witnesses[0].prefix
            async with trio.open_nursery() as nursery:  # twenty identifiers pushed at once
                for i in range(20):
                    effects = ctl.incept(
                        f"x{i}", [seed(80 + i)], [seed(120 + i)], witnesses=[w], toad=1, now=0.0
                    )
                    nursery.start_soon(c.client.witnessed, effects, ctl.identity(f"x{i}").last_said)
            store = c.stores[0]
            assert len(store.saids) >= 20
            assert len(store.batches) < 20  # group commit put several steps in one batch


async def test_a_down_witness_is_retried_and_events_still_complete(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(120):
        async with cluster(4, retry=RetryPolicy(first=1.0, cap=8.0, attempts=10)) as c:
            late = c.witnesses[3]
            c.net.down.add(late.prefix)
            ctl = c.client.controller
            prefixes = [w.prefix for w in c.witnesses]
            effects = ctl.incept(
                "carol",
                [seed(5)],
                [seed(6)],
                witnesses=prefixes,
                toad=3,
                now=c.client.runtime.now(),
            )
            said = ctl.identity("carol").last_said
            await c.client.witnessed(effects, said)
            assert ctl.status(said) == "done"
            c.net.down.clear()
            await trio.sleep(20)  # virtual: the retry timer brings the laggard the event
            assert kel_saids(late, ctl.identity("carol").prefix) == [said]


async def test_too_many_witnesses_down_fails_clearly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(300):
        async with cluster(4, retry=RetryPolicy(first=1.0, cap=2.0, attempts=3)) as c:
            for w in c.witnesses[:2]:
                c.net.down.add(w.prefix)
            ctl = c.client.controller
            effects = ctl.incept(
                "dan",
                [seed(7)],
                [seed(8)],
                witnesses=[w.prefix for w in c.witnesses],
                toad=3,
                now=c.client.runtime.now(),
            )
            with pytest.raises(WitnessingFailed):
                await c.client.witnessed(effects, ctl.identity("dan").last_said)


async def test_storage_failure_refuses_and_stops_the_node() -> None:
    net = MemoryNetwork()
    witness = Witness(Signer(seed(200), transferable=False))
    runtime = Runtime(witness, net.join(witness.prefix), FakeStore(fail=True))
    ctl = Controller()
    effects = ctl.incept("eve", [seed(9)], [seed(11)], witnesses=[witness.prefix], toad=1, now=0.0)
    message = next(e for e in effects if isinstance(e, Send)).payload
    answers: list[Answer] = []

    async def submit() -> None:
        answers.append(
            await net.join("caller").request(witness.prefix, "/dkms/1/submit", message, 5)
        )

    stopped = pytest.RaisesGroup(pytest.RaisesExc(StorageFailure, match="disk full"))
    with trio.fail_after(10), stopped:
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.run)
            nursery.start_soon(submit)
    code, _, reason = answers[0]
    assert code is Code.STORAGE and "storage failure" in reason


async def test_no_receipt_overtakes_the_commit_it_depends_on() -> None:
    # The first submission's event is still being written when the same event comes again:
    # the second receipt must wait for that write, although its own step stores nothing.
    gate = threading.Event()
    order: list[str] = []

    class SlowStore(FakeStore):
        def apply(self, effects: Sequence[Persist]) -> None:
            gate.wait(5)
            order.append("durable")

    net = MemoryNetwork()
    witness = Witness(Signer(seed(201), transferable=False))
    runtime = Runtime(witness, net.join(witness.prefix), SlowStore(blocking=True))  # a thread
    ctl = Controller()
    effects = ctl.incept("fay", [seed(12)], [seed(13)], witnesses=[witness.prefix], toad=1, now=0.0)
    message = next(e for e in effects if isinstance(e, Send)).payload

    async def submit(name: str) -> None:
        answer = await net.join(name).request(witness.prefix, "/dkms/1/submit", message, 10)
        assert answer.ok, answer.reason
        order.append(f"receipt to {name}")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.run)
            async with trio.open_nursery() as requests:
                requests.start_soon(submit, "first")
                await trio.testing.wait_all_tasks_blocked()
                requests.start_soon(submit, "second")
                await trio.testing.wait_all_tasks_blocked()
                assert order == []  # neither receipt left while the write is pending
                gate.set()
            nursery.cancel_scope.cancel()
    assert order[0] == "durable"
    assert sorted(order[1:]) == ["receipt to first", "receipt to second"]


async def test_a_peer_that_sends_garbage_is_blamed_and_slowed_down() -> None:
    """A witness blames the sender of an unreadable submission; the runtime takes the blame
    out of that peer's request budget, so it is refused while an honest peer is served."""
    net = MemoryNetwork()
    witness = Witness(node_signer(0))
    limit = RateLimit(rate=0.001, burst=150.0)  # no refill to speak of within the test
    runtime = Runtime(witness, net.join(witness.prefix), FakeStore(), rate_limit=limit)
    query = cbor2.dumps({"t": "state", "i": "Eunknown"})
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.run)
            mallory, alice = net.join("mallory"), net.join("alice")
            first = await mallory.request(witness.prefix, Surface.SUBMIT.value, b"\x00junk", 5)
            assert first.code is Code.MALFORMED
            assert runtime.metrics.value("blames") == 1
            # One blame costs BLAME_COST requests: 150 - 1 - 100 leaves 49 for mallory.
            assert BLAME_COST == 100
            codes = [
                (await mallory.request(witness.prefix, Surface.QUERY.value, query, 5)).code
                for _ in range(50)
            ]
            assert codes.count(Code.RATE_LIMITED) == 1 and codes[-1] is Code.RATE_LIMITED
            answer = await alice.request(witness.prefix, Surface.QUERY.value, query, 5)
            assert answer.code is Code.UNKNOWN  # served: refused for what it asked, not limited
            nursery.cancel_scope.cancel()

"""Gossip among four real hosts on 127.0.0.1: delivery, validators, limits, shutdown."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio

from dkms.node.p2p import (
    Gossip,
    HostConfig,
    MessageTooLarge,
    P2PHost,
    PeerUnreachable,
    PublishRejected,
    Subscription,
    open_host,
)
from dkms.node.p2p.gossip import QueueBytes
from dkms.node.p2p.identity import peer_id_from_prefix
from dkms.node.testing.keys import node_signer

TOPIC = "/dkms/1/kel/7"
LIMIT = 30  # seconds any test may take


@asynccontextmanager
async def clique(count: int, config: HostConfig | None = None) -> AsyncIterator[list[P2PHost]]:
    """`count` hosts subscribed to TOPIC (before listening), all bootstrapped from the first."""
    async with AsyncExitStack() as stack:
        hosts = [
            await stack.enter_async_context(
                open_host(bytes([i + 1]) * 32, config=config, topics=[TOPIC])
            )
            for i in range(count)
        ]
        async with trio.open_nursery() as nursery:
            for host in hosts[1:]:
                nursery.start_soon(host.connect, [hosts[0].introduction])
        for host in hosts:
            await host.wait_for_peers(count - 1)
        # D_low (4) exceeds the peers there are, so each mesh takes all of them; libp2p
        # signals each graft, so this waits on events, not on time.
        for host in hosts:
            for other in hosts:
                if other is not host:
                    await host.pubsub.wait_for_mesh(other.peer_id, TOPIC, timeout=LIMIT)
        yield hosts


async def collect(
    sub: Subscription, want: Callable[[dict[bytes, float]], bool]
) -> dict[bytes, float]:
    """Payloads (with arrival times) read from `sub` until `want` says enough."""
    got: dict[bytes, float] = {}
    async for item in sub:
        got[item.payload] = time.perf_counter()
        if want(got):
            break
    return got


async def publish_and_collect(
    origin: P2PHost, subs: list[Subscription], payloads: list[bytes]
) -> tuple[list[dict[bytes, float]], dict[bytes, float]]:
    """Publish `payloads` from `origin`; what each subscription got (and when), and send times."""
    results: list[dict[bytes, float]] = [{} for _ in subs]
    sent: dict[bytes, float] = {}

    async def reader(i: int) -> None:
        results[i] = await collect(subs[i], lambda got: len(got) == len(payloads))

    async with trio.open_nursery() as nursery:
        for i in range(len(subs)):
            nursery.start_soon(reader, i)
        for payload in payloads:
            sent[payload] = time.perf_counter()
            await origin.publish(TOPIC, payload)
    return results, sent


async def assert_nothing_queued(sub: Subscription) -> None:
    with trio.move_on_after(0.2):
        got = await sub.receive()
        raise AssertionError(f"{got} was queued")


async def test_every_host_gets_every_message() -> None:
    count = 50
    with trio.fail_after(LIMIT):
        async with clique(4) as hosts:
            subs = [await h.subscribe(TOPIC) for h in hosts]
            assert await hosts[1].subscribe(TOPIC) is subs[1]
            for o in (0, 3):  # the bootstrap node and a leaf
                origin = hosts[o]
                tag = origin.prefix[:8].encode()
                payloads = [b"%s %03d " % (tag, n) + b"x" * 280 for n in range(count)]
                listening = [sub for i, sub in enumerate(subs) if i != o]
                others, sent = await publish_and_collect(origin, listening, payloads)
                for got in others:
                    assert set(got) == set(payloads)
                await assert_nothing_queued(subs[o])  # the origin is not handed its own
                latencies = sorted(got[p] - sent[p] for got in others for p in got)
                first = min(sent.values())
                print(
                    f"\n{count} msgs from host {o} to 3 others: published in "
                    f"{(max(sent.values()) - first) * 1000:.0f} ms, all delivered in "
                    f"{(max(max(got.values()) for got in others) - first) * 1000:.0f} ms; "
                    f"latency p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, "
                    f"max {latencies[-1] * 1000:.0f} ms"
                )
            assert [s.dropped for s in subs] == [0, 0, 0, 0]


async def test_publishers_at_once_wait_for_room_and_nothing_is_dropped() -> None:
    """400 publishes started together (as a busy node's flushers, one per topic, publish):
    the neighbours' outbound queues (32 RPCs each in py-libp2p) fill, the publishers wait for
    room one at a time, and every other host's subscriber gets every message."""
    count = 400
    with trio.fail_after(LIMIT):
        async with clique(3) as hosts:
            own, *subs = [await h.subscribe(TOPIC) for h in hosts]
            payloads = [b"burst %03d " % n + b"x" * 280 for n in range(count)]
            results: list[dict[bytes, float]] = [{} for _ in subs]

            async def reader(i: int) -> None:
                results[i] = await collect(subs[i], lambda got: len(got) == count)

            async with trio.open_nursery() as nursery:
                for i in range(len(subs)):
                    nursery.start_soon(reader, i)
                async with trio.open_nursery() as publishers:
                    for payload in payloads:
                        publishers.start_soon(hosts[0].publish, TOPIC, payload)
            assert [len(got) for got in results] == [count] * len(subs)
            assert [s.dropped for s in subs] == [0] * len(subs)
            await assert_nothing_queued(own)


async def test_sender_of_a_message_is_its_origin() -> None:
    with trio.fail_after(LIMIT):
        async with clique(3) as (_, b, c):
            sub = await c.subscribe(TOPIC)
            await b.publish(TOPIC, b"from b")
            assert await sub.receive() == Gossip(b.prefix, b"from b")


async def test_validators_stop_what_they_reject() -> None:
    with trio.fail_after(LIMIT):
        async with clique(4) as hosts:
            origin, receivers = hosts[0], hosts[1:]
            rejected_all = [trio.Event() for _ in receivers]

            def make_validator(done: trio.Event) -> Callable[[bytes], bool]:
                rejected = 0

                def validate(payload: bytes) -> bool:
                    nonlocal rejected
                    if payload.startswith(b"RAISE"):
                        rejected += 1
                        if rejected == 7:
                            done.set()
                        raise ValueError("a validator that raises rejects")
                    if payload.startswith(b"BAD"):
                        rejected += 1
                        if rejected == 7:
                            done.set()
                        return False
                    return True

                return validate

            for host, done in zip(receivers, rejected_all, strict=True):
                host.set_validator(TOPIC, make_validator(done))
            subs = [await h.subscribe(TOPIC) for h in receivers]
            good = [b"GOOD %d" % n for n in range(10)]
            bad = [b"BAD %d" % n for n in range(5)] + [b"RAISE %d" % n for n in range(2)]
            for n, payload in enumerate(good):  # the origin has no validator: it sends all
                await origin.publish(TOPIC, payload)
                if n < len(bad):
                    await origin.publish(TOPIC, bad[n])
            for done in rejected_all:
                await done.wait()  # every receiver saw, and rejected, all seven
            await origin.publish(TOPIC, b"GOOD END")
            for sub in subs:
                got = await collect(sub, lambda got: b"GOOD END" in got)
                assert set(got) == {*good, b"GOOD END"}


async def test_own_validator_and_size_limit_refuse_to_publish() -> None:
    with trio.fail_after(LIMIT):
        async with clique(2) as (a, _):
            a.set_validator(TOPIC, lambda payload: not payload.startswith(b"BAD"))
            with pytest.raises(PublishRejected):
                await a.publish(TOPIC, b"BAD")
            a.set_validator(TOPIC, lambda payload: 1 / 0 == 0)
            with pytest.raises(PublishRejected):
                await a.publish(TOPIC, b"anything")
            with pytest.raises(MessageTooLarge):
                await a.publish(TOPIC, b"x" * (a.config.gossip.max_payload + 1))


async def test_largest_payload_crosses_and_late_subscriptions_work() -> None:
    late = "/dkms/1/governance"
    with trio.fail_after(LIMIT):
        async with clique(3) as hosts:
            # Subscribed after the connections exist: the announcement must still arrive.
            subs = [await h.subscribe(late) for h in hosts]
            for host in hosts:
                for other in hosts:
                    if other is not host:
                        await host.pubsub.wait_for_mesh(other.peer_id, late, timeout=LIMIT)
            biggest = bytes(hosts[0].config.gossip.max_payload)
            await hosts[1].publish(late, biggest)
            for sub in (subs[0], subs[2]):  # the publisher is not handed its own
                assert (await sub.receive()).payload == biggest


async def test_four_hosts_shut_down_cleanly_within_five_seconds() -> None:
    with trio.fail_after(LIMIT):
        async with clique(4) as hosts:
            subs = [await h.subscribe(TOPIC) for h in hosts]
            await hosts[2].publish(TOPIC, b"last words")
            for sub in subs[:2] + subs[3:]:  # the publisher is not handed its own
                assert (await sub.receive()).payload == b"last words"
            addrs = [h.introduction for h in hosts]
            start = time.perf_counter()
        # Cancel scopes must nest, so the exit is timed rather than bounded on its own.
        elapsed = time.perf_counter() - start
        print(f"\n4 hosts shut down in {elapsed * 1000:.0f} ms")
        assert elapsed < 5
        for sub in subs:  # readers see the end, not a hang
            with pytest.raises(trio.EndOfChannel):
                await sub.receive()
        async with open_host(b"\x09" * 32, config=HostConfig(dial_timeout=2)) as late:
            for addr in addrs:  # nothing listens there any more
                with pytest.raises(PeerUnreachable):
                    await late.request(addr, "/dkms/1/query", b"")


async def test_a_peer_sending_garbage_is_graylisted() -> None:
    # Each message our validator rejects costs its sender 10; below -100 it is ignored.
    with trio.fail_after(LIMIT):
        async with clique(2) as (origin, receiver):
            rejected = trio.Event()
            count = 0

            def validate(payload: bytes) -> bool:
                nonlocal count
                if payload.startswith(b"BAD"):
                    count += 1
                    if count == 12:
                        rejected.set()
                    return False
                return True

            receiver.set_validator(TOPIC, validate)
            sub = await receiver.subscribe(TOPIC)
            await origin.publish(TOPIC, b"GOOD before")
            assert (await sub.receive()).payload == b"GOOD before"
            scorer = receiver.router.scorer
            assert not scorer.is_graylisted(origin.peer_id, [TOPIC])
            for n in range(12):
                await origin.publish(TOPIC, b"BAD %d" % n)
            await rejected.wait()
            assert scorer.is_graylisted(origin.peer_id, [TOPIC])


PEER = peer_id_from_prefix(node_signer(3).verfer)


class _Msg:
    """What py-libp2p's subscription yields: an origin peer id and the payload."""

    def __init__(self, data: bytes) -> None:
        self.from_id = PEER.to_bytes()
        self.data = data


async def _messages(payloads: list[bytes]) -> AsyncIterator[_Msg]:
    for data in payloads:
        yield _Msg(data)
        await trio.lowlevel.checkpoint()


@pytest.mark.trio
async def test_subscription_queues_are_bounded_in_bytes_together() -> None:
    """Formerly 4,096 messages per topic whatever their size (64 KEL topics of 1 MiB
    payloads: 256 GiB): a node reading slower than a flood arrives now drops what would take
    all its queues together over `subscription_bytes`, and reading frees the room."""
    queued = QueueBytes(10_000)
    first, second = Subscription("a", 4096, queued), Subscription("b", 4096, queued)
    with trio.fail_after(5):
        await first.drain(_messages([b"x" * 4000] * 2))
        await second.drain(_messages([b"y" * 4000] * 2))  # only 2,000 bytes left: dropped
        assert (first.dropped, second.dropped, queued.used) == (0, 2, 8000)
        assert (await first.receive()).payload == b"x" * 4000
        assert queued.used == 4000
        third = Subscription("c", 4096, queued)
        await third.drain(_messages([b"z" * 4000]))
        assert third.dropped == 0 and queued.used == 8000

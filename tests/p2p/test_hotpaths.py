"""py-libp2p hot paths done once (node/p2p/hotpaths.py), against real hosts on 127.0.0.1."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.pubsub import gossipsub, pubsub, validators
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pb.rpc_pb2 import RPC
from libp2p.pubsub.rpc_queue import RpcQueue
from libp2p.stream_muxer.yamux.yamux import YamuxStream
from libp2p.tools.anyio_service.trio_tasks import FunctionTask
from libp2p.utils.varint import decode_varint_with_size

from dkms.node.p2p import P2PHost, open_host
from dkms.node.p2p import hotpaths as hotpaths_module
from dkms.node.p2p.hotpaths import (
    LruVerdicts,
    _OwnRecord,
    _RecordMemo,
    framed,
    install,
    remember_signed_records,
    send_queued,
)

TOPIC = "/dkms/1/kel/3"
LIMIT = 30


@asynccontextmanager
async def meshed() -> AsyncIterator[tuple[P2PHost, P2PHost]]:
    """Two hosts on TOPIC, b in a's mesh."""
    async with (
        open_host(b"\x01" * 32, topics=[TOPIC]) as a,
        open_host(b"\x02" * 32, topics=[TOPIC]) as b,
    ):
        await a.connect([b.introduction])
        await b.pubsub.wait_for_mesh(a.peer_id, TOPIC, timeout=LIMIT)
        yield a, b


@pytest.fixture
def checks() -> Iterator[list[tuple[bytes, bool]]]:
    """Every record check 0.8.1's own code makes, with its outcome."""
    made: list[tuple[bytes, bool]] = []
    remember_signed_records()  # what building a host does (stack.build_libp2p_host)
    memo = pubsub.maybe_consume_signed_record
    assert isinstance(memo, _RecordMemo)
    original = memo.check

    def counting(msg: RPC, host: IHost, peer_id: ID) -> bool:
        ok = original(msg, host, peer_id)
        made.append((msg.senderRecord, ok))
        return ok

    memo.check = counting
    try:
        yield made
    finally:
        memo.check = original


async def test_a_peers_record_is_checked_once_not_twice_per_rpc(
    checks: list[tuple[bytes, bool]],
) -> None:
    with trio.fail_after(LIMIT):
        async with (
            open_host(b"\x01" * 32, topics=[TOPIC]) as a,
            open_host(b"\x02" * 32, topics=[TOPIC]) as b,
        ):
            assert gossipsub.maybe_consume_signed_record is pubsub.maybe_consume_signed_record
            await a.connect([b.introduction])
            await b.pubsub.wait_for_mesh(a.peer_id, TOPIC, timeout=LIMIT)
            sub = await b.subscribe(TOPIC)
            for n in range(40):
                await a.publish(TOPIC, b"event %d" % n)
            got = set()
            async for item in sub:
                got.add(item.payload)
                if len(got) == 40:
                    break
            # 40 messages (and the subscription and graft RPCs) from one peer with one
            # record: a check or two per side, where 0.8.1 made two per RPC (80 and more).
            assert 1 <= len(checks) <= 4, len(checks)
            assert all(ok for _, ok in checks)


def test_a_bad_record_is_checked_every_time_and_a_good_one_once() -> None:
    calls: list[bytes] = []

    def check(msg: RPC, host: IHost, peer_id: ID) -> bool:
        calls.append(msg.senderRecord)
        return msg.senderRecord == b"good"

    class Host:
        """Stands for a host: the memo keeps one table per host."""

    memo = _RecordMemo(check)
    host, peer = Host(), ID(b"\x00\x01peer")
    good, bad, none = RPC(senderRecord=b"good"), RPC(senderRecord=b"bad"), RPC()
    results = [memo(m, host, peer) for m in (good, good, bad, bad, none, good)]  # type: ignore[arg-type]
    assert results == [True, True, False, False, True, True]
    assert calls == [b"good", b"bad", b"bad"]
    other_host = Host()  # each host keeps its own peerstore: it checks for itself
    assert memo(good, other_host, peer)  # type: ignore[arg-type]
    assert calls[-1] == b"good" and len(calls) == 4


async def test_pubsub_reads_cost_one_window_update_per_muxer_read_not_per_varint_byte(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    updates: list[int] = []
    real = YamuxStream.send_window_update

    async def counting(self: YamuxStream, increment: int, skip_lock: bool = False) -> None:
        updates.append(increment)
        await real(self, increment, skip_lock)

    with trio.fail_after(LIMIT):
        async with meshed() as (a, b):
            sub = await b.subscribe(TOPIC)
            monkeypatch.setattr(YamuxStream, "send_window_update", counting)
            for n in range(40):  # one RPC each: publish waits for nothing
                await a.publish(TOPIC, b"x" * 300 + b"%d" % n)
                async for _ in sub:
                    break
            # 40 RPCs of ~400 bytes (2-byte varint): py-libp2p alone sent 3 window updates
            # per RPC (two varint bytes, the body), 120 or more; now one per muxer read.
            assert len(updates) <= 45, len(updates)


async def test_our_record_is_made_once_per_few_seconds_not_per_rpc(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install()
    own = pubsub.env_to_send_in_RPC
    assert isinstance(own, _OwnRecord)
    assert gossipsub.env_to_send_in_RPC is own
    made: list[bytes] = []
    issue = own.issue

    def counting(host: IHost) -> tuple[bytes, bool]:
        envelope, fresh = issue(host)
        made.append(envelope)
        return envelope, fresh

    monkeypatch.setattr(own, "issue", counting)
    with trio.fail_after(LIMIT):
        async with meshed() as (a, b):
            sub = await b.subscribe(TOPIC)
            for n in range(40):
                await a.publish(TOPIC, b"%d" % n)
                async for _ in sub:
                    break
            # A host asks again only when its peerstore holds a newer record (identify makes
            # one once it listens); 0.8.1 listed the addresses for every RPC, 40 and more.
            assert 1 <= len(made) <= 4, len(made)


async def test_tasks_pubsub_starts_for_messages_skip_the_search_for_a_parent() -> None:
    install()
    searched: list[int] = []
    iterate = FunctionTask.iterate_tasks.__func__  # type: ignore[attr-defined]

    def counting(cls: type[FunctionTask], *tasks: object) -> object:
        searched.append(len(tasks))
        return iterate(cls, *tasks)

    with trio.fail_after(LIMIT):
        async with meshed() as (a, b):
            sub = await b.subscribe(TOPIC)
            manager = b.pubsub.manager
            # From a task no manager runs (as a connection's stream handler): no parent, and
            # no search; from one of the manager's own tasks: that task, found as before.
            found: list[object] = []

            async def child() -> None:
                found.append(manager._find_parent_task(trio.lowlevel.current_task()))

            FunctionTask.iterate_tasks = classmethod(counting)  # type: ignore[method-assign,assignment]
            try:
                assert manager._find_parent_task(trio.lowlevel.current_task()) is None
                assert searched == []
                for n in range(20):
                    await a.publish(TOPIC, b"%d" % n)
                    async for _ in sub:
                        break
                assert searched == []  # 20 push_msg tasks started, no search
                manager.run_task(child)
                while not found:
                    await trio.lowlevel.checkpoint()
                assert isinstance(found[0], FunctionTask) and searched
            finally:
                FunctionTask.iterate_tasks = classmethod(iterate)  # type: ignore[method-assign,assignment]


def _rpc(n: int) -> RPC:
    rpc = RPC()
    message = rpc.publish.add()
    message.data = b"payload %d " % n + b"x" * 200
    message.topicIDs.append("/dkms/1/kel/7")
    return rpc


def _unframed(data: bytes) -> list[RPC]:
    out, at = [], 0
    while at < len(data):
        length, size = decode_varint_with_size(data[at:])
        at += size
        out.append(RPC.FromString(data[at : at + length]))
        at += length
    return out


async def test_a_peers_queued_rpcs_go_in_one_write_each_framed_as_before() -> None:
    """Five RPCs queued before the sender runs: one write, holding the five in order, each
    with its length prefix (the bytes 0.8.1's write_msg would have written one by one); then
    a lone RPC goes at once, alone; a closed queue ends the sender."""
    queue = RpcQueue()
    for n in range(5):
        assert queue.push(_rpc(n))
    writes: list[bytes] = []
    wrote = trio.Event()

    async def write(stream: object, data: bytes) -> bool:
        writes.append(data)
        wrote.set()
        return True

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_queued, None, ID(b"peer"), None, queue, write)
            await wrote.wait()
            assert len(writes) == 1
            assert _unframed(writes[0]) == [_rpc(n) for n in range(5)]
            assert writes[0] == b"".join(framed(_rpc(n)) for n in range(5))
            queue.push(_rpc(5))
            await trio.testing.wait_all_tasks_blocked()
            assert len(writes) == 2 and _unframed(writes[1]) == [_rpc(5)]
            queue.close()
    assert len(writes) == 2


def test_lru_verdicts_answer_as_libp2ps_cache_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same 3,000 random gets, puts and expiries on 0.8.1's `ValidationCache` and on
    `LruVerdicts` (size 50, ttl 10 s, the clock moved by hand): the same answers throughout,
    the same entries at the end (the eviction order is the same LRU)."""
    now = [1000.0]
    monkeypatch.setattr(pubsub.time, "time", lambda: now[0])
    monkeypatch.setattr(hotpaths_module.time, "time", lambda: now[0])
    theirs, ours = pubsub.ValidationCache(10, 50), LruVerdicts(10, 50)
    rng = random.Random(7)
    for _ in range(3000):
        key = b"m%d" % rng.randrange(120)
        roll = rng.random()
        if roll < 0.45:
            result = pubsub.ValidationResult(rng.random() < 0.5, now[0])
            theirs.put(key, result)
            ours.put(key, result)
        elif roll < 0.95:
            assert ours.get(key) == theirs.get(key)
        else:
            now[0] += rng.random() * 4
            if rng.random() < 0.2:
                theirs.clear_expired()
                ours.clear_expired()
    assert dict(ours.cache) == theirs.cache
    assert list(ours.cache) == theirs.access_order


async def test_our_own_messages_are_not_verified_again_and_every_peers_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Host a publishes 20 messages: 0.8.1 verified each one's signature at a itself (it had
    just signed it) and at b; now only b does. A message claiming a's origin that a did not
    sign (its signature flipped) is still refused at b."""
    checked: list[bytes] = []
    verify = validators.signature_validator

    def counting(msg: Any) -> bool:
        checked.append(bytes(msg.from_id))
        return bool(verify(msg))

    monkeypatch.setattr(validators, "signature_validator", counting)
    counted = hotpaths_module.SIGNATURE_CHECKS.count  # the process's metric: same count as ours
    with trio.fail_after(LIMIT):
        async with meshed() as (a, b):
            sub = await b.subscribe(TOPIC)
            for n in range(20):
                await a.publish(TOPIC, b"own %d" % n)
            got = [await sub.receive() for _ in range(20)]
            assert sorted(g.payload for g in got) == sorted(b"own %d" % n for n in range(20))
            a_id = a.libp2p.get_id().to_bytes()
            assert checked == [a_id] * 20  # b's checks; none at a
            forged = rpc_pb2.Message(
                from_id=a_id, data=b"forged", seqno=b"\x00" * 8, topicIDs=[TOPIC]
            )
            forged.signature = b"\x01" * 64
            await b.pubsub.push_msg(a.libp2p.get_id(), forged)
            assert checked[-1] == a_id and len(checked) == 21
            assert hotpaths_module.SIGNATURE_CHECKS.count - counted == 21
            with trio.move_on_after(0.5):
                extra = await sub.receive()
                raise AssertionError(f"a forged message was delivered: {extra}")


def test_pending_queues_are_pruned_as_libp2p_prunes_them(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """3,000 random appends (in time order, as publish makes them), prunes and clock moves on
    two routers' queues for 3 peers, one pruned by 0.8.1's `_prune_pending_messages`, one by
    ours (ttl 5 s, at most 20 per peer): the same queues throughout, and no warning logged."""
    now = [1000.0]
    monkeypatch.setattr(gossipsub.time, "time", lambda: now[0])
    monkeypatch.setattr(hotpaths_module.time, "time", lambda: now[0])
    limits = {"max_pending_messages_per_peer": 20, "pending_messages_ttl": 5.0}
    routers = [gossipsub.GossipSub([], 6, 4, 12, **limits) for _ in range(2)]
    prunes = (hotpaths_module.ORIGINAL_PRUNE, hotpaths_module._prune_pending)
    peers = [ID(b"peer%d" % n) for n in range(3)]
    rng = random.Random(11)
    over_cap = 0  # prunes that found a queue over the cap
    for n in range(3000):
        peer = rng.choice(peers)
        roll = rng.random()
        if roll < 0.9:
            over_cap += len(routers[1]._pending_messages.get(peer, ())) > 20
            for router, prune in zip(routers, prunes, strict=True):
                caplog.clear()
                prune(router, peer)
                if prune is hotpaths_module._prune_pending:
                    assert not caplog.records  # 0.8.1's warns at every prune over the cap
            if roll < 0.6:
                for router in routers:
                    router._pending_messages[peer].append((now[0], RPC(publish=[])))
        else:
            now[0] += rng.random() * 2
        theirs, ours = (dict(r._pending_messages) for r in routers)
        assert {p: [t for t, _ in q] for p, q in ours.items()} == {
            p: [t for t, _ in q] for p, q in theirs.items()
        }, n
    assert over_cap > 50
    install()  # as every host does
    assert gossipsub.GossipSub._prune_pending_messages is hotpaths_module._prune_pending

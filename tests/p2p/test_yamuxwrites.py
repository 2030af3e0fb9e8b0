"""yamuxwrites.py: two of py-libp2p 0.8.1's Yamux connections, each end writing to the other
while it opens streams, over a pipe with no buffer (trio's lockstep pair: a write returns only
once the peer has read it, which is where a loaded socket ends up).

Unpatched, each end's frame reader stops to ACK the streams the other opens and waits on the
connection's write lock, held by a stream writer waiting for the other end to read: both
readers wait on each other for good (the first test shows it, so a release that fixes this
shows too). With `FrameWriter`, readers only queue their answers and every stream's exchange
completes. Also: frames keep their order, waiting writers share one write, a write that makes
no progress gives the connection up, and a peer that never reads cannot grow the reader's
queue past its cap.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from libp2p.peer.id import ID
from libp2p.stream_muxer.exceptions import MuxedConnUnavailable
from libp2p.stream_muxer.yamux.yamux import Yamux

from dkms.node.p2p import yamuxwrites
from dkms.node.p2p.yamuxwrites import FrameWriter

STREAMS = 24
PAYLOAD = 3000
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # unawaited libp2p internals


class Pipe:
    """What Yamux needs of a secured connection, over one end of a trio stream pair."""

    def __init__(self, stream: trio.abc.Stream, initiator: bool) -> None:
        self._stream = stream
        self.is_initiator = initiator
        self.writes: list[bytes] = []

    async def read(self, n: int | None = None) -> bytes:
        return await self._stream.receive_some(n)

    async def write(self, data: bytes) -> None:
        self.writes.append(data)
        await self._stream.send_all(data)

    async def close(self) -> None:
        await self._stream.aclose()

    def get_remote_address(self) -> None:
        return None


@asynccontextmanager
async def connected(patched: bool) -> AsyncIterator[tuple[Yamux, Yamux]]:
    left, right = trio.testing.lockstep_stream_pair()
    a = Yamux(Pipe(left, True), ID(b"a"), is_initiator=True)  # type: ignore[arg-type]
    b = Yamux(Pipe(right, False), ID(b"b"), is_initiator=False)  # type: ignore[arg-type]
    if patched:
        FrameWriter(a).install()
        FrameWriter(b).install()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.start)
        nursery.start_soon(b.start)
        await a.event_started.wait()
        await b.event_started.wait()
        yield a, b
        nursery.cancel_scope.cancel()


async def exchange_both_ways(a: Yamux, b: Yamux) -> int:
    """Each end opens `STREAMS` streams to the other and writes `PAYLOAD` bytes on each while
    serving the other's: how many streams delivered everything."""
    delivered = [0]

    async def serve(muxer: Yamux) -> None:
        async with trio.open_nursery() as handlers:
            for _ in range(STREAMS):
                stream: Any = await muxer.accept_stream()
                handlers.start_soon(drain, stream)

    async def drain(stream: Any) -> None:
        got = 0
        while got < PAYLOAD:
            got += len(await stream.read(PAYLOAD - got))
        delivered[0] += 1

    async def send(muxer: Yamux) -> None:
        stream = await muxer.open_stream()
        await stream.write(b"x" * PAYLOAD)

    async with trio.open_nursery() as nursery:
        for muxer in (a, b):
            nursery.start_soon(serve, muxer)
            for _ in range(STREAMS):
                nursery.start_soon(send, muxer)
    return delivered[0]


async def test_unpatched_yamux_readers_deadlock_on_each_other() -> None:
    with trio.move_on_after(5) as waited:
        async with connected(patched=False) as (a, b):
            await exchange_both_ways(a, b)
    assert waited.cancelled_caught, "0.8.1's Yamux no longer deadlocks: read yamuxwrites.py again"


async def test_with_frame_writers_every_stream_gets_through_both_ways() -> None:
    with trio.fail_after(20):
        async with connected(patched=True) as (a, b):
            assert await exchange_both_ways(a, b) == 2 * STREAMS
            # and the connection still works afterwards
            assert await exchange_both_ways(a, b) == 2 * STREAMS


async def test_frames_keep_their_order_and_waiting_writers_share_a_write() -> None:
    left, right = trio.testing.lockstep_stream_pair()
    pipe = Pipe(left, True)
    muxer = Yamux(pipe, ID(b"a"), is_initiator=True)  # type: ignore[arg-type]
    writer = FrameWriter(muxer)
    writer.install()
    frames = [bytes([i]) * 12 for i in range(40)]
    received = bytearray()

    async def read_all() -> None:
        while len(received) < 12 * len(frames):
            received.extend(await right.receive_some())

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for frame in frames:  # in this order; all but the first wait for the first write
                nursery.start_soon(muxer._write_frame, frame)
                await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(read_all)
    assert bytes(received) == b"".join(frames)
    assert pipe.writes == [frames[0], b"".join(frames[1:])]  # the 39 waiting: one write


async def test_a_write_without_progress_gives_the_connection_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(yamuxwrites, "WRITE_STALL", 0.5)
    left, _unread = trio.testing.lockstep_stream_pair()  # nobody ever reads the other end
    muxer = Yamux(Pipe(left, True), ID(b"a"), is_initiator=True)  # type: ignore[arg-type]
    writer = FrameWriter(muxer)
    writer.install()
    with trio.fail_after(10):
        with pytest.raises(MuxedConnUnavailable):
            await muxer._write_frame(b"\x00" * 12)
        assert writer.failed is not None and "no progress" in writer.failed
        with pytest.raises(MuxedConnUnavailable):  # and every later write at once
            await muxer._write_frame(b"\x00" * 12)


async def test_a_peer_that_never_reads_cannot_grow_the_readers_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reader's answers (pings, ACKs) to a peer that reads nothing: queued up to the cap,
    then the connection is given up; the reader itself never waits."""
    monkeypatch.setattr(yamuxwrites, "READER_CAP", 12 * 100)
    left, _unread = trio.testing.lockstep_stream_pair()
    muxer = Yamux(Pipe(left, True), ID(b"a"), is_initiator=True)  # type: ignore[arg-type]
    writer = FrameWriter(muxer)
    writer.install()
    writer._reader = trio.lowlevel.current_task()  # this task plays the frame reader
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            muxer._nursery = nursery
            for _ in range(100):
                await muxer._write_frame(b"\x00" * 12)  # returns at once: only queued
            assert writer.failed is None
            await muxer._write_frame(b"\x00" * 12)
            assert writer.failed is not None and "unread" in writer.failed
            nursery.cancel_scope.cancel()


async def test_the_readers_frames_go_out_in_order_from_one_background_task() -> None:
    """50 answers queued by the reader while nothing is being written: one task writes them
    (not one task per frame), in order, joined."""
    left, right = trio.testing.lockstep_stream_pair()
    pipe = Pipe(left, True)
    muxer = Yamux(pipe, ID(b"a"), is_initiator=True)  # type: ignore[arg-type]
    writer = FrameWriter(muxer)
    writer.install()
    writer._reader = trio.lowlevel.current_task()  # this task plays the frame reader
    started: list[int] = []
    write_in_turn = writer._write_in_turn

    async def counted() -> None:
        started.append(1)
        await write_in_turn()

    writer._write_in_turn = counted  # type: ignore[method-assign]
    frames = [bytes([i]) * 12 for i in range(50)]
    received = bytearray()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            muxer._nursery = nursery
            for frame in frames:
                await muxer._write_frame(frame)  # only queued: the reader never waits
            while len(received) < 12 * len(frames):
                received.extend(await right.receive_some())
            nursery.cancel_scope.cancel()
    assert started == [1]
    assert bytes(received) == b"".join(frames) and pipe.writes == [b"".join(frames)]

"""One writer per Yamux connection, which its frame reader never waits on.

Theory of operation. py-libp2p 0.8.1's Yamux writes every frame under one connection lock
(`Yamux._write_frame`), and its frame reader (`handle_incoming`) writes too: the ACK or RST
for each stream a peer opens, the answer to each ping. So a reader can wait on a write, and a
write waits on the peer reading. Under load in both directions that is a deadlock between two
nodes: each one's socket buffer is full of frames for the other, each one's reader is parked
on the connection lock (held by a stream writer stuck on the full buffer) to ACK a new stream,
so neither reads again. Nothing times out: the connection stays up, every stream on it and
every new one hangs. (Seen in the 32 x 500 bulk load: a watcher's requests to two witnesses
went unanswered for good while the same witnesses answered new connections at once.)

`FrameWriter` replaces `_write_frame` on each connection (`install`). Frames queue in the order
they are given (Yamux needs that order: a stream's SYN before its data, its data before its
FIN). Whoever finds no write in progress writes what is queued, joined into one Noise message
and one system call where several wait, and goes on until its own frame is out; the others
wait for theirs. The reader only queues: its frames (12 bytes each) go out with the next
write, or a task of their own when nothing is being written, and it goes straight back to
reading. Its queue is bounded (`READER_CAP` bytes): a peer that makes us answer without ever
reading the answers has its connection closed.

Each write is shielded (a Noise write cut short breaks the connection: its nonce is spent
before the socket is taken), and bounded: a write that makes no progress for `WRITE_STALL`
seconds means the peer stopped reading, and the connection is closed (every waiting writer
then fails with `MuxedConnUnavailable`, as on any closed connection). A writer cancelled while
it waits leaves its frame queued: it is written in order, as if the cancel came just after.

Pinned to py-libp2p 0.8.1 (pyproject.toml) and tested against it
(tests/p2p/test_yamuxwrites.py).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Final

import trio
from libp2p.stream_muxer.exceptions import MuxedConnUnavailable
from libp2p.stream_muxer.yamux.yamux import Yamux

from .identity import peer_name

logger = logging.getLogger(__name__)

JOIN: Final = 65_519  # bytes joined into one write: one Noise message's plaintext
READER_CAP: Final = 64 * 1024  # bytes the frame reader may have queued (about 5,000 frames)
WRITE_STALL: Final = 30.0  # seconds one write may take before the peer is given up on


class FrameWriter:
    """The frames one Yamux connection writes, in order; see the module's comment."""

    def __init__(self, muxer: Yamux) -> None:
        self._muxer = muxer
        self._queue: deque[tuple[bytes, bool]] = deque()  # (frame, queued by the reader)
        self._queued_by_reader = 0  # bytes
        self._given = 0  # frames queued so far
        self._written = 0  # frames written so far
        self._progress = trio.Event()  # set after each write (then replaced)
        self._writing = False
        self._background = False  # a task to write the reader's frames is started, not run
        self._waiting = 0  # writers waiting for their frame
        self._reader: trio.lowlevel.Task | None = None
        self.failed: str | None = None

    def install(self) -> None:
        muxer = self._muxer
        read_frames = muxer.handle_incoming

        async def handle_incoming() -> None:
            self._reader = trio.lowlevel.current_task()
            await read_frames()

        muxer.handle_incoming = handle_incoming  # type: ignore[method-assign]
        muxer._write_frame = self.write_frame  # type: ignore[method-assign]

    async def write_frame(self, data: bytes) -> None:
        """Queue the frame `data`; unless the caller is the frame reader, return once it is
        written."""
        if self.failed is not None:
            raise MuxedConnUnavailable(self.failed)
        by_reader = trio.lowlevel.current_task() is self._reader
        self._queue.append((data, by_reader))
        mine = self._given
        self._given += 1
        if by_reader:
            self._queued_by_reader += len(data)
            if self._queued_by_reader > READER_CAP:
                self._fail(f"the peer left {self._queued_by_reader} bytes of answers unread")
            elif not self._writing:
                self._write_in_background()
            return
        self._waiting += 1
        try:
            while self._written <= mine:
                if self.failed is not None:
                    raise MuxedConnUnavailable(self.failed)
                if self._writing:
                    await self._progress.wait()
                else:
                    await self._write_queued(until=mine)
        finally:
            self._waiting -= 1

    def _write_in_background(self) -> None:
        nursery = self._muxer._nursery
        if nursery is None or self._background:  # not started or over; or one is on its way
            return
        self._background = True
        nursery.start_soon(self._write_in_turn)

    async def _write_in_turn(self) -> None:
        self._background = False
        await self._write_queued(None)

    async def _write_queued(self, until: int | None) -> None:
        """Write queued frames until frame `until` is out (`None`: until the queue is empty,
        or another writer waits to take over)."""
        if self._writing:
            return
        self._writing = True
        try:
            while self._queue and self.failed is None:
                await self._write_some()
                if until is not None and self._written > until and self._waiting > 1:
                    break  # ours is out: the next waiter carries on
                if until is None and self._waiting:
                    break
        finally:
            self._writing = False
            self._wake()

    async def _write_some(self) -> None:
        parts: list[bytes] = []
        size = 0
        reader_bytes = 0
        queue = self._queue
        while queue and size < JOIN:
            frame, by_reader = queue.popleft()
            parts.append(frame)
            size += len(frame)
            if by_reader:
                reader_bytes += len(frame)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + WRITE_STALL
            try:
                await self._muxer.secured_conn.write(data)
            except Exception as exc:  # the connection broke: reset, closed (the peer left)
                self._fail(f"write failed: {type(exc).__name__}: {exc}", logging.DEBUG)
                return
        if scope.cancelled_caught:
            self._fail(f"a write made no progress for {WRITE_STALL:g} s")
            return
        self._written += len(parts)
        self._queued_by_reader -= reader_bytes
        self._wake()

    def _wake(self) -> None:
        """Wake every writer waiting on progress (each looks again at where things stand)."""
        self._progress.set()
        self._progress = trio.Event()

    def _fail(self, why: str, level: int = logging.WARNING) -> None:
        """Give the connection up: waiting writers fail, the socket is closed (which ends the
        reader, and with it every stream). A peer that stops reading is worth a warning; one
        that left (a failed write) is not."""
        if self.failed is not None:
            return
        self.failed = why
        self._queue.clear()
        self._progress.set()
        logger.log(level, "connection to %s closed: %s", peer_name(self._muxer.peer_id), why)
        nursery = self._muxer._nursery
        if nursery is not None:
            nursery.start_soon(self._close)

    async def _close(self) -> None:
        with trio.move_on_after(5.0):
            try:
                await self._muxer.secured_conn.close()
            except Exception:  # already closed, or breaking anyway
                logger.debug("closing a failed connection", exc_info=True)

"""Bounding what a peer can make one connection buffer, inside py-libp2p 0.8.1's Yamux.

Yamux gives each stream a receive window: the bytes a peer may send before we read. What it
sends is kept in the stream's buffer until the stream's reader takes it. In 0.8.1:

- **The window grows to 16 MiB per stream** (`MAX_WINDOW_SIZE`, auto-tuned as the reader
  keeps up), so a peer that sends fast and then outruns a busy node leaves up to 16 MiB in
  each of its streams: in the memory benchmark a watcher held 10 MB in eight gossip streams'
  buffers. Our largest message is 1 MiB (`framing.DEFAULT_MAX_MESSAGE`) and loopback or LAN
  round trips are short, so `WINDOW` (1 MiB) costs no throughput: `cap_window` sets it.
- **A peer that ignores the window is buffered anyway**, without limit: 0.8.1 logs "peer
  exceeded receive window" and keeps the bytes. `YamuxGuard` gives each Yamux connection
  stream buffers that take at most `BUFFER_CAP` bytes (twice the window: an honest peer never comes
  near it). Beyond, the bytes are dropped and the stream is reset on our side, as if the
  peer had sent RST: its reader's next read fails and its handler closes it, which
  tells the peer; the fault is counted.

Pinned to py-libp2p 0.8.1 (pyproject.toml) and tested against it (tests/p2p/test_yamuxguard.py).
"""

from __future__ import annotations

from typing import Any, Final

from libp2p.abc import IMuxedConn, ISecureConn
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.stream_muxer.yamux import yamux
from libp2p.stream_muxer.yamux.yamux import Yamux

from .guards import FaultLog
from .yamuxwrites import FrameWriter

WINDOW: Final = 1 << 20
BUFFER_CAP: Final = 2 * WINDOW


def cap_window(window: int = WINDOW) -> None:
    """Keep every Yamux stream's receive window at most `window` bytes (process-wide)."""
    yamux.MAX_WINDOW_SIZE = window


class _Buffer(bytearray):
    """One stream's receive buffer: `extend` (how 0.8.1 appends what arrives) keeps it under
    its guard's `cap`; once past it, the stream is reset and the rest dropped."""

    def __init__(self, guard: YamuxGuard, muxer: Yamux, stream_id: int) -> None:
        super().__init__()
        self._guard = guard
        self._muxer = muxer
        self._stream_id = stream_id
        self._overflowed = False

    def extend(self, data: Any) -> None:
        if self._overflowed:
            return  # the stream is reset: what still comes is dropped
        if len(self) + len(data) <= self._guard.cap:
            super().extend(data)
        else:
            self._overflowed = True
            bytearray.clear(self)
            self._guard.overflowed(self._muxer, self._stream_id)


class _Buffers(dict[int, bytearray]):
    """`Yamux.stream_buffers`, whose new buffers are `_Buffer`s."""

    def __init__(self, guard: YamuxGuard, muxer: Yamux) -> None:
        super().__init__()
        self._guard = guard
        self._muxer = muxer

    def __setitem__(self, stream_id: int, buffer: bytearray) -> None:
        if type(buffer) is bytearray:
            bounded = _Buffer(self._guard, self._muxer, stream_id)
            bytearray.extend(bounded, buffer)
            buffer = bounded
        super().__setitem__(stream_id, buffer)


class YamuxGuard:
    """Bounds the stream buffers of every Yamux connection a swarm makes to `cap` bytes each.

    0.8.1 builds its Yamux connections itself (`MuxerMultistream.new_conn` names the class),
    so the guard wraps that method and gives each new connection bounded buffers before it
    starts reading, and its own frame writer (`yamuxwrites.py`)."""

    def __init__(self, faults: FaultLog, cap: int = BUFFER_CAP) -> None:
        self.faults = faults
        self.cap = cap

    def install(self, swarm: Swarm) -> None:
        multistream = swarm.upgrader.muxer_multistream
        original = multistream.new_conn

        async def new_conn(conn: ISecureConn, peer_id: ID) -> IMuxedConn:
            muxed = await original(conn, peer_id)
            if isinstance(muxed, Yamux):
                muxed.stream_buffers = _Buffers(self, muxed)
                FrameWriter(muxed).install()  # its reader never waits on a write
            return muxed

        multistream.new_conn = new_conn  # type: ignore[method-assign]

    def overflowed(self, muxer: Yamux, stream_id: int) -> None:
        """Reset `stream_id` on our side, as a peer's RST would: its reader is woken and
        finds the stream ended."""
        stream = muxer.streams.get(stream_id)
        if stream is not None and not stream.reset_received:
            stream.closed = True
            stream.reset_received = True
            self.faults.record(
                muxer.peer_id,
                "yamux window",
                ValueError(f"sent past the receive window on stream {stream_id}"),
            )
        event = muxer.stream_events.get(stream_id)
        if event is not None:
            event.set()

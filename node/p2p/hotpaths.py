"""Work py-libp2p 0.8.1 repeats for every pubsub RPC, done once.

**Reads.** Pubsub reads each RPC's varint length one byte at a time, then its body: two to
four muxer reads per RPC, and Yamux answers every read with a window update, a frame of its
own (Noise-encrypted, one system call; the peer decrypts and parses it). `BufferedReads`
gives pubsub a stream whose reads are served from one muxer read of whatever has arrived (up
to `READ_CHUNK` bytes): one read and one window update for many RPCs under load, one per RPC
when idle. It holds at most `READ_CHUNK` bytes beyond what pubsub asked for.

**Signed records.** Every RPC a peer sends carries its signed peer record (an Envelope: a
protobuf holding the peer's addresses and an Ed25519 signature), and 0.8.1 checks it *twice* for
every RPC it receives (`Pubsub.continuously_read_stream`, then `GossipSub.handle_rpc`): parse,
verify the signature, compare peer ids, store it in the peerstore. A peer sends the same bytes
until its addresses change, so under load this was some 5% of a witness's and a watcher's CPU
(py-spy, benchmarks/network.py). `remember_signed_records` makes each host remember, per peer,
the record bytes it accepted in the last `RECHECK_AFTER` seconds, and accept those bytes again
without the work. Anything else (a new record, a record that failed, one accepted longer ago,
which also renews its time in the peerstore) goes through 0.8.1's own check. At most
`REMEMBERED` records per host, the oldest forgotten first.

Pinned to py-libp2p 0.8.1 (pyproject.toml) and tested against it (tests/p2p/test_hotpaths.py).
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID
from libp2p.pubsub import gossipsub, pubsub
from libp2p.pubsub.pb.rpc_pb2 import RPC

READ_CHUNK: Final = 64 * 1024
REMEMBERED: Final = 4096
RECHECK_AFTER: Final = 600.0  # seconds; the peerstore keeps a record 7,200 s

_NAME: Final = "maybe_consume_signed_record"  # imported by name into both modules

Check = Callable[[RPC, IHost, ID], bool]


class BufferedReads:
    """`stream`, with reads taken from one muxer read of what has arrived (see above)."""

    def __init__(self, stream: INetStream) -> None:
        self.stream = stream
        self._buffer = bytearray()

    async def read(self, n: int | None = None) -> bytes:
        if not self._buffer:
            chunk = await self.stream.read(READ_CHUNK)  # what has arrived, up to READ_CHUNK
            if not chunk:
                return b""
            if n is not None and n >= 0 and len(chunk) <= n:
                return chunk
            self._buffer += chunk
        if n is None or n < 0 or n >= len(self._buffer):
            out = bytes(self._buffer)
            self._buffer.clear()
            return out
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    def __getattr__(self, name: str) -> object:
        return getattr(self.stream, name)


class _RecordMemo:
    def __init__(self, check: Check) -> None:
        self.check = check
        self._hosts: weakref.WeakKeyDictionary[IHost, OrderedDict[tuple[bytes, bytes], float]]
        self._hosts = weakref.WeakKeyDictionary()

    def __call__(self, msg: RPC, host: IHost, peer_id: ID) -> bool:
        if not msg.HasField("senderRecord"):
            return True
        seen = self._hosts.get(host)
        if seen is None:
            seen = self._hosts[host] = OrderedDict()
        key = (peer_id.to_bytes(), msg.senderRecord)
        now = time.monotonic()
        accepted = seen.get(key)
        if accepted is not None and now - accepted < RECHECK_AFTER:
            return True
        ok = self.check(msg, host, peer_id)
        if ok:
            seen[key] = now
            seen.move_to_end(key)
            while len(seen) > REMEMBERED:
                seen.popitem(last=False)
        else:
            seen.pop(key, None)
        return ok


def remember_signed_records() -> None:
    """Install the memo in both places 0.8.1 checks records (process-wide, idempotent)."""
    current = getattr(pubsub, _NAME)
    if isinstance(current, _RecordMemo):
        return
    memo = _RecordMemo(current)
    setattr(pubsub, _NAME, memo)
    setattr(gossipsub, _NAME, memo)

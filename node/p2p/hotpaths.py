"""Work py-libp2p 0.8.1 repeats for every pubsub RPC, done once.

**Reads.** Pubsub reads each RPC's varint length one byte at a time, then its body: two to
four muxer reads per RPC, and Yamux answers every read with a window update, a frame of its
own (Noise-encrypted, one system call; the peer decrypts and parses it). `BufferedReads`
gives pubsub a stream whose reads are served from one muxer read of whatever has arrived (up
to `READ_CHUNK` bytes): one read and one window update for many RPCs under load, one per RPC
when idle. It holds at most `READ_CHUNK` bytes beyond what pubsub asked for. Serving an RPC's body
from the buffer yields first (a trio checkpoint), so the tasks the previous RPC started run
before the next is read: libp2p hands each message to its subscription through a queue of
32 and drops what does not fit.

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

**Our own record, per RPC sent.** To put its signed record in each RPC, 0.8.1 first lists the
host's addresses (`BasicHost.get_addrs`, building Multiaddr objects) to see whether the cached
record still matches them: some 6% of a witness's main thread under load. `reuse_own_record`
keeps each host's record bytes for `OWN_RECORD_FRESH` seconds while the peerstore holds the
same record: an address change shows in the record that much later.

**Parents of pubsub's tasks.** Pubsub starts a task per message received
(`manager.run_task(push_msg, ...)`), and 0.8.1's service manager first searches its whole task
tree for the calling task, to make the new task its child: some 8% of the main thread with a
few hundred tasks. The caller is a connection's stream handler, never one of the manager's
tasks, so the search always fails. `quick_task_parents` remembers which trio tasks run the
managers' tasks and answers "none" at once for any other; the search is made, as before, only
when the caller is one of them.

**Validation verdicts.** Pubsub caches each message's verdict by id (`ValidationCache`, 1,000
entries), its LRU order kept in a list: every `get` and `put` searches and edits that list,
some 70 us per message received or published once it is full (cProfile of a witness).
`LruVerdicts` keeps the same entries, ttl and size in an ordered dict: O(1) each.

**Our own messages' signatures.** With strict signing, `publish` signs each message and
hands it to `push_msg`, which verifies that signature like any peer's (key extraction,
protobuf copies, an Ed25519 verify: some 250 us per publish in a witness's cProfile).
`own_messages_trusted` skips that one check for that one message object while our own
publish is pushed (a context variable set by `GuardedPubsub.push_msg` when the forwarder is
this host, which no peer's message can claim: the forwarder is the peer whose stream it came
on; the check compares object identity, so nothing else passes unverified).

**Writes.** Each peer's sender task (`Pubsub.handle_sending_messages`) writes one RPC at a
time: a Yamux frame, a Noise message and a system call each, and as many frames and
decryptions at the peer. Under load a peer's queue holds many (at most 32): `send_queued`
takes every RPC queued at once (up to `SEND_BYTES`) and writes them, each with its own length
prefix as before, in one write. The bytes on the stream are the same; there are fewer writes.

**Queues for peers not subscribed.** Each publish also appends the message to a queue kept
for every connected peer not subscribed to its topic (0.8.1 flushes a peer's queue when it
subscribes; the router's message cache is replayed to it then too), and first prunes that
queue by rebuilding it whole: about 23 us per publish per such peer with the queue at its
100 entries (50 under cProfile in a witness), plus a warning logged every time. A controller
connected to a witness is such a peer, and so is any idle connection: 300 of them (py-libp2p's
default connection limit) would have cost some 7 ms per publish. `quick_pending_prune` drops
the expired head and the excess instead (entries are appended in time order): the same
entries kept, about 1 us, no log line.

Pinned to py-libp2p 0.8.1 (pyproject.toml) and tested against it (tests/p2p/test_hotpaths.py).
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, Final

import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID
from libp2p.pubsub import floodsub, gossipsub, pubsub, validators
from libp2p.pubsub.pb.rpc_pb2 import RPC
from libp2p.pubsub.rpc_queue import RpcQueue
from libp2p.tools.anyio_service.trio_manager import TrioManager
from libp2p.tools.anyio_service.trio_tasks import FunctionTask
from libp2p.utils.varint import encode_varint_prefixed

READ_CHUNK: Final = 64 * 1024
SEND_BYTES: Final = 64 * 1024  # RPCs joined into one write, at most (one is never cut)
OWN_RECORD_FRESH: Final = 5.0  # seconds
REMEMBERED: Final = 4096
RECHECK_AFTER: Final = 600.0  # seconds; the peerstore keeps a record 7,200 s

_SEEN: Final = "_dkms_records_seen"  # attributes our patches keep on a host
_OWN: Final = "_dkms_own_record"
_NAME: Final = "maybe_consume_signed_record"  # imported by name into both modules

Check = Callable[[RPC, IHost, ID], bool]


class BufferedReads:
    """`stream`, with reads taken from one muxer read of what has arrived (see above)."""

    def __init__(self, stream: INetStream) -> None:
        self.stream = stream
        self._buffer = bytearray()

    async def read(self, n: int | None = None) -> bytes:
        if self._buffer and (n is None or n > 1):
            # An RPC's body served from what is buffered: let the tasks it started run (its
            # push_msg, and the task moving it from libp2p's 32-message subscription queue
            # to ours) before the next one, or a burst of RPCs that arrived together would
            # overflow that queue and be dropped. Not for the one-byte reads of a length.
            await trio.lowlevel.checkpoint()
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

    def __call__(self, msg: RPC, host: IHost, peer_id: ID) -> bool:
        if not msg.HasField("senderRecord"):
            return True
        # Kept on the host object itself: hosts of one process (tests, the simulator's real
        # runs) must not share it, and identity is what tells them apart.
        seen: OrderedDict[tuple[bytes, bytes], float] | None = getattr(host, _SEEN, None)
        if seen is None:
            seen = OrderedDict()
            setattr(host, _SEEN, seen)
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


def install() -> None:
    """Every patch of this module (process-wide, idempotent)."""
    remember_signed_records()
    reuse_own_record()
    quick_task_parents()
    own_messages_trusted()
    quick_pending_prune()


_PRUNE: Final = "_prune_pending_messages"
ORIGINAL_PRUNE: Final = getattr(gossipsub.GossipSub, _PRUNE)  # 0.8.1's, for the tests


def quick_pending_prune() -> None:
    """`GossipSub._prune_pending_messages` without rebuilding the queue (see above)."""
    setattr(gossipsub.GossipSub, _PRUNE, _prune_pending)


def _prune_pending(self: gossipsub.GossipSub, peer_id: ID) -> None:
    """Forget a peer's queued messages older than the router's ttl, then all but its newest
    `_max_pending_messages_per_peer`; drop the queue once empty (as 0.8.1's prune)."""
    queue = self._pending_messages.get(peer_id)
    if queue is None:
        return
    oldest = time.time() - self._pending_messages_ttl
    expired = 0
    for stamp, _ in queue:  # in the order appended: stops at the first one still fresh
        if stamp >= oldest:
            break
        expired += 1
    excess = len(queue) - expired - self._max_pending_messages_per_peer
    del queue[: expired + max(excess, 0)]
    if not queue:
        self._pending_messages.pop(peer_id, None)


_VALIDATOR: Final = "signature_validator"
PUSHING_OWN: ContextVar[object] = ContextVar("dkms_pushing_own_message", default=None)


def own_messages_trusted() -> None:
    """Skip the signature check of a message this host just signed (see above)."""
    setattr(pubsub, _VALIDATOR, _signature_checked)  # pubsub imported it by name


class _Checks:
    """How many gossip message signatures this process verified (a metric)."""

    count = 0


SIGNATURE_CHECKS: Final = _Checks()


def _signature_checked(msg: Any) -> bool:
    if PUSHING_OWN.get() is msg:
        return True
    SIGNATURE_CHECKS.count += 1
    return bool(validators.signature_validator(msg))


_ENVELOPE: Final = "env_to_send_in_RPC"
_ENVELOPE_USERS: Final = (pubsub, gossipsub, floodsub)  # each imported it by name


class _OwnRecord:
    def __init__(self, issue: Callable[[IHost], tuple[bytes, bool]]) -> None:
        self.issue = issue

    def __call__(self, host: IHost) -> tuple[bytes, bool]:
        now = time.monotonic()
        local = host.get_peerstore().get_local_record()
        kept: tuple[object, bytes, float] | None = getattr(host, _OWN, None)
        # Only while the peerstore's record is the one we checked: anything else that made
        # a new one (identify does) has a higher seq, and peers refuse an older one.
        if kept is not None and kept[0] is local and now - kept[2] < OWN_RECORD_FRESH:
            return kept[1], False
        envelope, made = self.issue(host)
        setattr(host, _OWN, (host.get_peerstore().get_local_record(), envelope, now))
        return envelope, made


def reuse_own_record() -> None:
    current = getattr(pubsub, _ENVELOPE)
    if isinstance(current, _OwnRecord):
        return
    own = _OwnRecord(current)
    for module in _ENVELOPE_USERS:
        setattr(module, _ENVELOPE, own)


_MANAGED: weakref.WeakSet[trio.lowlevel.Task] = weakref.WeakSet()


class _QuickProperty(property):
    """`FunctionTask.trio_task`, noting each trio task that runs a manager's task."""


def quick_task_parents() -> None:
    prop = FunctionTask.trio_task
    if isinstance(prop, _QuickProperty):
        return
    assert isinstance(prop, property) and prop.fset is not None
    setter = prop.fset
    search = TrioManager._find_parent_task

    def set_trio_task(self: FunctionTask, value: trio.lowlevel.Task) -> None:
        setter(self, value)
        _MANAGED.add(value)

    def find_parent_task(self: TrioManager, trio_task: trio.lowlevel.Task) -> object:
        if trio_task not in _MANAGED:
            return None  # what the search finds for a task no manager runs
        return search(self, trio_task)

    FunctionTask.trio_task = _QuickProperty(prop.fget, set_trio_task)
    TrioManager._find_parent_task = find_parent_task


def framed(rpc: RPC) -> bytes:
    """`rpc` as `Pubsub.write_msg` puts it on the stream: its length (uvarint), then it."""
    return encode_varint_prefixed(rpc.SerializeToString())


async def send_queued(
    pubsub: pubsub.Pubsub,
    peer_id: ID,
    stream: INetStream,
    queue: RpcQueue,
    write: Callable[[INetStream, bytes], Awaitable[bool]],
) -> None:
    """A peer's sender loop, as 0.8.1's, writing what is queued together (`write`: the bytes
    on `stream`, False once it is closed)."""
    try:
        while True:
            rpc = await queue.pop()
            if rpc is None:  # closed: the peer left
                return
            parts = [framed(rpc)]
            size = len(parts[0])
            while size < SEND_BYTES and (more := queue._queue.pop()) is not None:
                parts.append(framed(more))
                size += len(parts[-1])
            if not await write(stream, parts[0] if len(parts) == 1 else b"".join(parts)):
                return
    except Exception:
        pubsub._handle_dead_peer(peer_id)


class LruVerdicts(pubsub.ValidationCache):
    """`pubsub.ValidationCache` (same ttl, size, eviction: oldest used first) on an ordered
    dict instead of a list searched on every use."""

    def __init__(self, ttl: int = 300, max_size: int = 1000) -> None:
        super().__init__(ttl, max_size)
        self.cache: OrderedDict[bytes, pubsub.ValidationResult] = OrderedDict()

    def get(self, msg_id: bytes) -> pubsub.ValidationResult | None:
        result = self.cache.get(msg_id)
        if result is None:
            return None
        if time.time() - result.timestamp > self.ttl:
            del self.cache[msg_id]
            return None
        self.cache.move_to_end(msg_id)
        return result

    def put(self, msg_id: bytes, result: pubsub.ValidationResult) -> None:
        while len(self.cache) >= self.max_size and self.cache:  # as 0.8.1: room made first
            self.cache.popitem(last=False)
        self.cache[msg_id] = result
        self.cache.move_to_end(msg_id)

    def _remove(self, msg_id: bytes) -> None:
        self.cache.pop(msg_id, None)


def quick_verdicts(target: pubsub.Pubsub) -> None:
    """Give `target` an `LruVerdicts` with its cache's ttl and size (before it runs)."""
    old = target.validation_cache
    target.validation_cache = LruVerdicts(old.ttl, old.max_size)

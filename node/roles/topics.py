"""Gossip topics: their names, what may be forwarded on them, and a cache of parsed payloads.

KEL topics are sharded by prefix so their number stays bounded. `well_formed` is the KEL
topics' gossip validation (the bytes alone decide). `ParseCache` lets validation and the role
share one parse of a payload; it is bounded in entries and in the bytes its parsed payloads
hold, so hostile payloads that decode to far more than their size cannot grow a node's memory.

`peer_parse` is how a node reads a peer's KERI bytes (gossip, answers, submissions, bundles):
`parse_stream` with event bodies (and each message's attachments) of at most
`PEER_BODY_BYTES`. A body is decoded in one piece, and a CBOR body of empty maps holds some 66
times its size once decoded: a 1 MiB one took 66 MB for as long as it was being judged, so a
few peers sending them at once took a node's memory up by hundreds of MB, and Python keeps
that high-water mark. The limit is the escrows' `max_event_bytes` (64 KiB, over a hundred
times an ordinary event; an inception naming 1,000 witnesses is 45 KB): a larger event could
never wait in an escrow anyway. A node's own store is replayed without it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

import blake3

from dkms.protocol.errors import ProtocolError
from dkms.protocol.escrow import EscrowLimits
from dkms.protocol.events import Ilk
from dkms.protocol.stream import BadFrame, Message, parse_stream

Parse = Callable[[bytes], list[Message | BadFrame]]  # parse_stream, or a cache of it
PEER_BODY_BYTES: Final = EscrowLimits().max_event_bytes  # largest event body read from a peer
Parsed = list[Message | BadFrame] | ProtocolError  # what parse_stream returned, or raised

KEL_SHARDS: Final = 64
DUPLICITY_TOPIC: Final = "/dkms/1/duplicity"
GOVERNANCE_TOPIC: Final = "/dkms/1/governance"
LOCATIONS_TOPIC: Final = "/dkms/1/locations"  # signed location records (locations.py)
KEL_TOPIC_PREFIX: Final = "/dkms/1/kel/"  # then the shard


def peer_parse(data: bytes) -> list[Message | BadFrame]:
    """`parse_stream` for a peer's bytes: bodies and attachments of at most `PEER_BODY_BYTES`
    each (a larger one is a `ParseError` naming the limit)."""
    return parse_stream(data, PEER_BODY_BYTES)


def shard_of(prefix: str, shards: int = KEL_SHARDS) -> int:
    """The shard of `prefix`: its Blake3 digest modulo `shards` (gossip topics and the
    reconciliation's summaries, `reconcile.py`, cut the prefix space the same way)."""
    digest = blake3.blake3(prefix.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:4], "big") % shards


def kel_topic(prefix: str, shards: int = KEL_SHARDS) -> str:
    """`/dkms/1/kel/<shard>`: the shard is the prefix's Blake3 digest modulo `shards`."""
    return f"{KEL_TOPIC_PREFIX}{shard_of(prefix, shards)}"


def kel_topics(shards: int = KEL_SHARDS) -> list[str]:
    return [f"{KEL_TOPIC_PREFIX}{shard}" for shard in range(shards)]


# What a parsed payload holds beyond its decoded bodies: the payload itself (the cache's key),
# each event's raw bytes, the attachments decoded (about twice their text), and per frame the
# Message, Event and Attachments objects with their small fields.
PAYLOAD_COPIES: Final = 3
FRAME_BYTES: Final = 400
CACHE_BYTES: Final = 8 << 20  # a node's cache: at most this weight in all (8 MiB)


class ParseCache:
    """`parse_stream` memoised by payload, bounded in entries and in bytes (oldest out). A
    node's gossip validation and its role read each payload through one, so it is parsed once;
    the simulator shares one across all its nodes.

    The byte bound is on what the parsed form holds, not on the payload's length: a CBOR empty
    map is one byte on the wire and some 70 in memory, so a 1 MiB gossip payload can decode to
    66 MB and 64 of them to 4 GB. Each entry is weighed (`weigh`: a walk of its decoded bodies
    that stops at `max_entry`); a payload heavier than `max_entry` is parsed but not kept (it
    is parsed again when read again), and the oldest entries go while the total is over
    `max_bytes`.
    """

    def __init__(
        self, size: int = 64, max_bytes: int = CACHE_BYTES, max_entry: int | None = None
    ) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.max_entry = max_bytes // 8 if max_entry is None else min(max_entry, max_bytes)
        self.weight = 0  # of the entries held
        self._cache: OrderedDict[bytes, tuple[Parsed, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._cache)

    def __call__(self, data: bytes) -> list[Message | BadFrame]:
        entry = self._cache.get(data)
        if entry is None:
            hit: Parsed
            try:
                hit = peer_parse(data)
            except ProtocolError as err:
                hit = err
            weight = weigh(data, hit, self.max_entry)
            if weight is not None:
                self._keep(data, hit, weight)
        else:
            hit = entry[0]
        if isinstance(hit, ProtocolError):
            raise hit
        return hit

    def _keep(self, data: bytes, hit: Parsed, weight: int) -> None:
        cache = self._cache
        cache[data] = (hit, weight)
        self.weight += weight
        while len(cache) > self.size or self.weight > self.max_bytes:
            _, (_, gone) = cache.popitem(last=False)
            self.weight -= gone


def weigh(payload: bytes, parsed: Parsed, cap: int) -> int | None:
    """Roughly the bytes `payload` and its parsed form hold (as `protocol.escrow.decoded_size`
    counts a decoded body), or None once that is over `cap`: the walk stops there, so weighing
    a hostile payload costs no more than weighing `cap` bytes of it."""
    total = PAYLOAD_COPIES * len(payload)
    if isinstance(parsed, ProtocolError):
        return total + FRAME_BYTES if total + FRAME_BYTES <= cap else None
    total += FRAME_BYTES * len(parsed)
    if total > cap:
        return None
    todo: list[Any] = [
        (f.event.anchors if f.event.ilk is Ilk.IXN else f.event.ked)
        for f in parsed
        if isinstance(f, Message)
    ]
    pop, extend = todo.pop, todo.extend
    while todo:
        item = pop()
        kind = type(item)
        if kind is dict:
            total += 64 + 40 * len(item)
            extend(item.keys())
            extend(item.values())
        elif kind is list or kind is tuple:
            total += 56 + 8 * len(item)
            extend(item)
        elif kind is str or kind is bytes:
            total += 49 + len(item)
        else:
            total += 32
        if total > cap:
            return None
    return total


def well_formed(payload: bytes, parse: Parse = peer_parse) -> bool:
    """Gossip validation for KEL topics: forward only payloads that frame into valid KERI
    messages.

    It judges the bytes alone (libp2p caches the verdict per message id, so it must never
    say "not yet"): garbage is dropped and costs its sender, while a validly formed conflicting
    event passes, since rejecting conflicts here would hide what watchers exist to see.
    """
    try:
        frames = parse(payload)
    except ProtocolError:
        return False
    return bool(frames) and all(isinstance(f, Message) for f in frames)

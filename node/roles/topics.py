"""Gossip topic names. KEL topics are sharded by prefix so their number stays bounded."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Final

import blake3

from dkms.protocol.errors import ProtocolError
from dkms.protocol.stream import BadFrame, Message, parse_stream

Parse = Callable[[bytes], list[Message | BadFrame]]  # parse_stream, or a cache of it

KEL_SHARDS: Final = 64
DUPLICITY_TOPIC: Final = "/dkms/1/duplicity"
GOVERNANCE_TOPIC: Final = "/dkms/1/governance"


def kel_topic(prefix: str, shards: int = KEL_SHARDS) -> str:
    """`/dkms/1/kel/<shard>`: the shard is the prefix's Blake3 digest modulo `shards`."""
    shard = int.from_bytes(blake3.blake3(prefix.encode("ascii")).digest()[:4], "big") % shards
    return f"/dkms/1/kel/{shard}"


def kel_topics(shards: int = KEL_SHARDS) -> list[str]:
    return [f"/dkms/1/kel/{shard}" for shard in range(shards)]


class ParseCache:
    """`parse_stream` memoised by payload (bounded, oldest out). A node's gossip validation
    and its role read each payload through one, so it is parsed once; the simulator shares
    one across all its nodes."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._cache: OrderedDict[bytes, list[Message | BadFrame] | ProtocolError] = OrderedDict()

    def __call__(self, data: bytes) -> list[Message | BadFrame]:
        hit = self._cache.get(data)
        if hit is None:
            try:
                hit = parse_stream(data)
            except ProtocolError as err:
                hit = err
            self._cache[data] = hit
            if len(self._cache) > self.size:
                self._cache.popitem(last=False)
        if isinstance(hit, ProtocolError):
            raise hit
        return hit


def well_formed(payload: bytes, parse: Parse = parse_stream) -> bool:
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

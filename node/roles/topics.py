"""Gossip topic names. KEL topics are sharded by prefix so their number stays bounded."""

from __future__ import annotations

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


def well_formed(payload: bytes) -> bool:
    """Gossip validation for KEL topics: forward only payloads that frame into valid KERI
    messages.

    It judges the bytes alone (libp2p caches the verdict per message id, so it must never
    say "not yet"): garbage is dropped and costs its sender, while a validly formed conflicting
    event passes, since rejecting conflicts here would hide what watchers exist to see.
    """
    try:
        frames = parse_stream(payload)
    except ProtocolError:
        return False
    return bool(frames) and all(isinstance(f, Message) for f in frames)

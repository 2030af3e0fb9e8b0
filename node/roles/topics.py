"""Gossip topic names. KEL topics are sharded by prefix so their number stays bounded."""

from __future__ import annotations

from typing import Final

import blake3

KEL_SHARDS: Final = 64
DUPLICITY_TOPIC: Final = "/dkms/1/duplicity"
GOVERNANCE_TOPIC: Final = "/dkms/1/governance"


def kel_topic(prefix: str, shards: int = KEL_SHARDS) -> str:
    """`/dkms/1/kel/<shard>`: the shard is the prefix's Blake3 digest modulo `shards`."""
    shard = int.from_bytes(blake3.blake3(prefix.encode("ascii")).digest()[:4], "big") % shards
    return f"/dkms/1/kel/{shard}"

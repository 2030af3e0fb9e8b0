"""Deterministic keys for tests and benchmarks: never for anything real."""

from __future__ import annotations

from dkms.protocol.crypto import Signer


def seed(n: int) -> bytes:
    """A 32-byte seed that is `n` repeated (0 <= n < 256)."""
    return bytes([n]) * 32


def node_signer(n: int) -> Signer:
    """The non-transferable key of test node `n` (a witness's or a watcher's)."""
    return Signer(seed(200 + n), transferable=False)

"""Per-peer request rate limits: a token bucket for each peer, refilled with the time passed."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

MAX_PEERS: Final = 10_000  # buckets kept; the least recently seen peer's is dropped first


@dataclass(frozen=True, slots=True)
class RateLimit:
    """`rate` requests per second on average, with bursts of up to `burst`."""

    rate: float = 1000.0  # above what one py-libp2p connection carries: a guard against floods
    burst: float = 2000.0


class PeerBuckets:
    """Decides whether a peer may make a request now; `now` comes from the caller's clock."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when

    def allow(self, peer: str, now: float) -> bool:
        tokens, then = self._buckets.pop(peer, (self.limit.burst, now))
        tokens = min(self.limit.burst, tokens + (now - then) * self.limit.rate)
        allowed = tokens >= 1.0
        self._buckets[peer] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > MAX_PEERS:
            self._buckets.popitem(last=False)
        return allowed

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
        tokens = self._refill(peer, now)
        allowed = tokens >= 1.0
        self._keep(peer, tokens - 1.0 if allowed else tokens, now)
        return allowed

    def charge(self, peer: str, now: float, cost: float) -> None:
        """Take `cost` requests from `peer`'s budget (it may go below zero: a blamed peer
        waits for its budget to refill before it is served again)."""
        self._keep(peer, self._refill(peer, now) - cost, now)

    def _refill(self, peer: str, now: float) -> float:
        tokens, then = self._buckets.pop(peer, (self.limit.burst, now))
        return min(self.limit.burst, tokens + (now - then) * self.limit.rate)

    def _keep(self, peer: str, tokens: float, now: float) -> None:
        self._buckets[peer] = (tokens, now)
        if len(self._buckets) > MAX_PEERS:
            self._buckets.popitem(last=False)

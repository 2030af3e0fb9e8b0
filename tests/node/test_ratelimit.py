"""Per-peer token buckets."""

from __future__ import annotations

from dkms.node.runtime.ratelimit import PeerBuckets, RateLimit


def test_burst_then_refill() -> None:
    buckets = PeerBuckets(RateLimit(rate=10, burst=3))
    assert [buckets.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert buckets.allow("b", 0.0)  # another peer has its own bucket
    assert not buckets.allow("a", 0.05)  # half a token
    assert buckets.allow("a", 0.2)
    assert buckets.allow("a", 100.0) and buckets.allow("a", 100.0) and buckets.allow("a", 100.0)
    assert not buckets.allow("a", 100.0)  # refill is capped at the burst


def test_a_charge_takes_from_the_budget_and_it_refills() -> None:
    buckets = PeerBuckets(RateLimit(rate=10, burst=3))
    buckets.charge("a", 0.0, 13)  # blamed: 3 - 13 = -10 tokens
    assert not buckets.allow("a", 0.0)
    assert not buckets.allow("a", 1.0)  # -10 + 10 = 0: still nothing to spend
    assert buckets.allow("a", 1.2)
    assert buckets.allow("b", 0.0)  # only the blamed peer pays

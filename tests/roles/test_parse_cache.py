"""The parse cache (roles/topics.py) is bounded in bytes, not only in entries: a gossip payload
of a few KiB can decode to megabytes, and the cache must not keep 64 of those."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from dkms.node.roles.topics import ParseCache, weigh
from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.errors import ProtocolError
from dkms.protocol.events import Event, incept, interact
from dkms.protocol.stream import Attachments, messagize, parse_stream

KEY = Signer(bytes([7]) * 32)
ICP = incept([KEY.verfer], next_digests=[next_key_digest(Signer(bytes([8]) * 32).verfer)])


def signed(event: Event) -> bytes:
    return messagize(event, Attachments(sigs=(KEY.sign_indexed(event.raw, 0),)))


def bomb(n: int, maps: int = 20_000) -> bytes:
    """An interaction anchoring `maps` empty maps: 20 KB on the wire, about 1.5 MB decoded."""
    return signed(interact(ICP.prefix, prior=ICP.said, sn=n + 1, anchors=[{}] * maps))


def batch(n: int, events: int = 40) -> bytes:
    """Ordinary gossip: `events` small interactions (about 11 KB)."""
    parts, prior = [], ICP.said
    for sn in range(1, events + 1):
        event = interact(ICP.prefix, prior=prior, sn=sn, anchors=[{"n": n, "sn": sn}])
        parts.append(signed(event))
        prior = event.said
    return b"".join(parts)


def retained(cache: ParseCache, payloads: list[bytes]) -> int:
    """Bytes still allocated after `cache` has parsed every payload (the results dropped)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for payload in payloads:
            cache(payload)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_payloads_that_decode_large_do_not_fill_memory() -> None:
    """64 payloads of 20 KB each (1.3 MB on the wire) decode to about 95 MB: the cache used
    to keep all of them (it counted entries only)."""
    payloads = [bomb(n) for n in range(64)]
    cache = ParseCache(max_bytes=16 << 20)  # each bomb (about 1.5 MB) under max_entry (2 MiB)
    kept = retained(cache, payloads)
    assert kept < cache.max_bytes + (4 << 20), f"the cache keeps {kept / 1e6:.0f} MB"
    assert cache.weight <= cache.max_bytes
    assert 0 < len(cache) < 64


def test_the_weight_follows_what_the_parsed_form_holds() -> None:
    small, heavy = batch(0), bomb(0)
    light = weigh(small, parse_stream(small), 1 << 30)
    big = weigh(heavy, parse_stream(heavy), 1 << 30)
    assert light is not None and big is not None
    assert 2 * len(small) < light < 20 * len(small)
    assert big > 50 * len(heavy)  # the maps, not the bytes
    assert weigh(heavy, parse_stream(heavy), big - 1) is None  # the walk stops at the cap


def test_ordinary_gossip_is_still_parsed_once() -> None:
    cache = ParseCache()
    payloads = [batch(n) for n in range(10)]
    first = [cache(p) for p in payloads]
    assert all(cache(p) is parsed for p, parsed in zip(payloads, first, strict=True))
    assert len(cache) == 10


def test_a_payload_over_the_entry_cap_is_parsed_each_time_and_not_kept() -> None:
    cache = ParseCache(max_bytes=1 << 20, max_entry=512 << 10)
    payload = bomb(0, maps=10_000)  # about 0.7 MB decoded
    ordinary = batch(0)
    kept = cache(ordinary)
    one, two = cache(payload), cache(payload)
    assert one is not two and one == two
    assert len(cache) == 1 and cache(ordinary) is kept


def test_the_oldest_go_first_while_over_either_bound() -> None:
    payloads = [batch(n) for n in range(6)]
    weights = [weigh(p, parse_stream(p), 1 << 30) or 0 for p in payloads]
    budget = sum(weights[:3]) + 1
    cache = ParseCache(size=64, max_bytes=budget, max_entry=budget)
    parsed = [cache(p) for p in payloads]
    assert len(cache) == 3 and cache.weight <= cache.max_bytes
    assert all(cache(p) is r for p, r in zip(payloads[3:], parsed[3:], strict=True))
    assert cache(payloads[0]) is not parsed[0]
    by_count = ParseCache(size=2)
    for p in payloads:
        by_count(p)
    assert len(by_count) == 2


def test_unreadable_payloads_are_cached_as_their_error() -> None:
    cache = ParseCache()
    for _ in range(2):
        with pytest.raises(ProtocolError):
            cache(b"\xa1not keri")
    assert len(cache) == 1

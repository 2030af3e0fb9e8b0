"""The discrete-event loop: a time-ordered queue of `(time, sequence, action, args)` and one
seeded random generator for everything random, so one scenario with one seed always unfolds
the same way.

Time is virtual seconds (a float). `at`/`after` schedule a call; `run(until)` pops actions in
time order (ties in scheduling order) and calls them. Nothing here reads a clock or the
operating system's randomness.

The queue is a calendar of buckets `1/SLOTS` of a virtual second wide: the bucket being
played is a heap (`heap`, every entry in it due no later than the end of bucket `cur`); later
entries wait unsorted in their bucket's list (`later`, keyed by bucket number, the numbers in
the heap `keys`) and a bucket is heapified when play reaches it. The order is exactly the one
a single heap gives, but a heap of millions of in-flight messages (a million nodes) is never
built: each push is an append, each pop sifts a heap of about 15 us of virtual time's entries
(buckets that narrow keep that heap small at a million nodes: heappop on a bucket of
thousands of entries was a quarter of a 100,000-node run's time at 1 ms buckets).

An entry is `(when, seq, action, args)`, or one a `driver` understands (the gossip model's
deliveries are `(when, seq, msg, node, sender)`, played by its own inlined loop); a driver,
when set, runs `run` in place of the plain loop here.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from heapq import heapify, heappop, heappush
from typing import Any

Action = Callable[..., Any]
Entry = tuple[Any, ...]  # (when, seq, ...): ordered by when, then seq
Driver = Callable[[float, "Callable[[float], None] | None", float], None]
SLOTS = 65536.0  # buckets per virtual second


class Sim:
    """Virtual time, the event queue, and the simulation's one random generator."""

    __slots__ = ("cur", "driver", "heap", "keys", "later", "now", "rng", "seq", "steps")

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.steps = 0
        # Public for the gossip model's inlined hot loop; everything else uses `at`/`after`.
        self.heap: list[Entry] = []  # the current bucket (and anything due before it)
        self.cur = -1  # the bucket `heap` holds
        self.later: dict[int, list[Entry]] = {}  # bucket -> its entries, unsorted
        self.keys: list[int] = []  # heap of the buckets in `later`
        self.seq = itertools.count()
        self.driver: Driver | None = None

    def push(self, entry: Entry) -> None:
        """Queue an entry whose first two items are its time and `next(self.seq)`."""
        slot = int(entry[0] * SLOTS)
        if slot <= self.cur:
            heappush(self.heap, entry)
            return
        bucket = self.later.get(slot)
        if bucket is None:
            self.later[slot] = [entry]
            heappush(self.keys, slot)
        else:
            bucket.append(entry)

    def at(self, when: float, action: Action, *args: Any) -> None:
        self.push((when, next(self.seq), action, args))

    def after(self, delay: float, action: Action, *args: Any) -> None:
        self.push((self.now + delay, next(self.seq), action, args))

    @property
    def pending(self) -> int:
        return len(self.heap) + sum(len(bucket) for bucket in self.later.values())

    def advance(self, until: float) -> bool:
        """Make the next non-empty bucket due by `until` the current heap; False if none."""
        keys = self.keys
        if not keys or keys[0] / SLOTS > until:
            return False
        slot = heappop(keys)
        heap = self.later.pop(slot)
        heap += self.heap  # entries pushed at or before `cur` (none once it is drained)
        heapify(heap)
        self.heap, self.cur = heap, slot
        return True

    def run(
        self,
        until: float,
        *,
        progress: Callable[[float], None] | None = None,
        every: float = 1.0,
    ) -> None:
        """Run every action due up to `until` (virtual seconds); `progress(now)` is called
        each time virtual time passes another `every` seconds."""
        if self.driver is not None:
            self.driver(until, progress, every)
            return
        mark = self.now + every
        steps = 0
        while True:
            heap = self.heap
            if not heap or heap[0][0] > until:
                if heap or not self.advance(until):
                    break
                continue
            when, _, action, args = heappop(heap)
            self.now = when
            action(*args)
            steps += 1
            if progress is not None and when >= mark:
                progress(when)
                mark = when + every
        self.now = max(self.now, until)
        self.steps += steps

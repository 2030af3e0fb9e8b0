"""The discrete-event loop: a heap of `(time, sequence, action, args)` and one seeded random
generator for everything random, so one scenario with one seed always unfolds the same way.

Time is virtual seconds (a float). `at`/`after` schedule a call; `run(until)` pops actions in
time order (ties in scheduling order) and calls them. Nothing here reads a clock or the
operating system's randomness.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from typing import Any

Action = Callable[..., Any]


class Sim:
    """Virtual time, the event heap, and the simulation's one random generator."""

    __slots__ = ("heap", "now", "rng", "seq", "steps")

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.steps = 0
        # Public for the gossip model's inlined hot loop; everything else uses `at`/`after`.
        self.heap: list[tuple[float, int, Action, tuple[Any, ...]]] = []
        self.seq = itertools.count()

    def at(self, when: float, action: Action, *args: Any) -> None:
        heapq.heappush(self.heap, (when, next(self.seq), action, args))

    def after(self, delay: float, action: Action, *args: Any) -> None:
        heapq.heappush(self.heap, (self.now + delay, next(self.seq), action, args))

    @property
    def pending(self) -> int:
        return len(self.heap)

    def run(
        self,
        until: float,
        *,
        progress: Callable[[float], None] | None = None,
        every: float = 1.0,
    ) -> None:
        """Run every action due up to `until` (virtual seconds); `progress(now)` is called
        each time virtual time passes another `every` seconds."""
        heap = self.heap
        pop = heapq.heappop
        mark = self.now + every
        steps = 0
        while heap and heap[0][0] <= until:
            when, _, action, args = pop(heap)
            self.now = when
            action(*args)
            steps += 1
            if progress is not None and when >= mark:
                progress(when)
                mark = when + every
        self.now = max(self.now, until)
        self.steps += steps

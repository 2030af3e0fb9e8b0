"""The one interface every role offers its drivers (runtime, simulator, test driver).

A role is a pure state machine: inputs in (`inputs.Input`), effects out (`effects.Effect`).
Drivers know nothing else about it: which surfaces it answers requests on, which gossip it
lets through, what it does at start, and `step`.
"""

from __future__ import annotations

from typing import Protocol

from .effects import Effect, Surface
from .inputs import Input


class Role(Protocol):
    @property
    def surfaces(self) -> frozenset[Surface]:
        """The request surfaces this role answers on (others are not served)."""
        ...

    def start(self, now: float) -> list[Effect]:
        """What to do when the node starts (subscriptions, first timers, first asks)."""
        ...

    def admits(self, topic: str, payload: bytes) -> bool:
        """Gossip validation: deliver (and forward to other peers) this payload?

        It must judge the bytes alone, never "not yet": libp2p caches the verdict."""
        ...

    def step(self, event: Input, now: float) -> list[Effect]:
        """One input in, the effects it causes out, to be performed in order."""
        ...

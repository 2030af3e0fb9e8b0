"""Tails: a witness gossips the end of a KEL again once the KEL has gone quiet.

Theory of operation. Gossip is lossy: under load a neighbour's queue is full and a message is
dropped, and a paused or restarting peer misses what went by. A follower that lost an event
in the middle of a KEL learns of the gap from the next event and asks for it
(`follower.py`), but one that lost a KEL's *last* events has nothing to tell it so: it stays
behind until the controller makes another event, maybe never (a bulk load of 32 KELs left
both watchers 15 and 30 events short for good).

So a witness notes each KEL it witnesses as it changes (`changed`: an event accepted, or its
receipts complete), and once the KEL has been quiet for `QUIET` seconds it publishes the
KEL's last `TAIL_EVENTS` events with every receipt it holds, as one page (`pages.kel_page`).
It does so again at each of `SHOTS` (30 s and 120 s after the last change), one event more
each time: a tail gossiped while the network was still flooded may be lost as well (a bulk
load of 32 KELs left a watcher 499 events short of one, its first tail dropped).
A follower that held them drops the copy cheaply; one that missed them gets them, and, if it
missed more before them, a gap to ask for. The page's bytes differ from the event's first
publications (receipts as indexed signatures), so gossip's seen cache does not swallow it;
witnesses holding the same receipts publish identical pages, which the cache then merges.
A KEL extended without pause is not republished until it pauses. At most `MAX_WAITING` KELs
wait their turn (the oldest republished early if more come). Pure: times come in.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from dkms.protocol.validator import Validator

from .effects import Effect, Publish, SetTimer
from .inputs import Tail
from .pages import kel_page
from .topics import kel_topic

SHOTS: Final = (5.0, 30.0, 120.0)  # seconds after a KEL's last change that its tail goes out
QUIET: Final = SHOTS[0]
EVERY: Final = 1.0  # seconds between looks at the KELs waiting
TAIL_EVENTS: Final = 2  # events republished the first time (one more each time after)
TAIL_BYTES: Final = 64 << 10  # at most, in one page (the last event goes in any case)
MAX_WAITING: Final = 10_000


class Tails:
    """The KELs a witness will republish the tail of, by when."""

    def __init__(self, validator: Validator, *, enabled: bool = True) -> None:
        self.validator = validator
        self.enabled = enabled
        # One queue per shot, prefix -> when: each in time order (a shot's delay is fixed).
        self._due: list[OrderedDict[str, float]] = [OrderedDict() for _ in SHOTS]
        self._timer = False  # a Tail timer is set
        self.published = 0

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._due)

    def changed(self, prefix: str, now: float) -> list[Effect]:
        """`prefix`'s KEL changed: its tail goes out `SHOTS[0]` s from now unless it changes
        again, then again at each later shot."""
        if not self.enabled:
            return []
        for queue in self._due:
            queue.pop(prefix, None)
        first = self._due[0]
        first[prefix] = now + SHOTS[0]
        effects: list[Effect] = []
        while len(self) > MAX_WAITING:
            later = next((q for q in reversed(self._due[1:]) if q), None)
            if later is not None:
                later.popitem(last=False)  # a repeat forgone
            else:
                effects += self._publish(first.popitem(last=False)[0], 0)
        if not self._timer:
            self._timer = True
            effects.append(SetTimer(Tail(), now + EVERY))
        return effects

    def due(self, now: float) -> list[Effect]:
        """The `Tail` timer: publish the tails of the KELs quiet long enough."""
        effects: list[Effect] = []
        for shot, queue in enumerate(self._due):
            while queue:
                prefix, when = next(iter(queue.items()))
                if when > now:
                    break
                del queue[prefix]
                effects += self._publish(prefix, shot)
                if shot + 1 < len(SHOTS):
                    self._due[shot + 1][prefix] = now + SHOTS[shot + 1] - SHOTS[shot]
        self._timer = len(self) > 0
        if self._timer:
            effects.append(SetTimer(Tail(), now + EVERY))
        return effects

    def _publish(self, prefix: str, shot: int) -> list[Effect]:
        kel = self.validator.kel(prefix)
        if kel is None:  # forgotten since
            return []
        events = TAIL_EVENTS + shot  # other bytes each time: the seen caches let it through
        page = kel_page(kel, max(0, kel.sn + 1 - events), TAIL_BYTES)
        self.published += 1
        return [Publish(kel_topic(prefix), page.data)]

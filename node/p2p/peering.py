"""Peer-exchange policy: whom to remember, whom to dial, whom to list. No I/O.

Theory of operation. A node keeps the introductions it has learnt (bootstrap entries, peers
that dialled it and told it their address, peers listed by others), newest last, at most
`MAX_KNOWN`. When it has too few connections it asks its peers whom they know and dials
some of the candidates (`to_dial`); a peer that could not be dialled is not tried again
before a back-off that doubles from `RETRY_FIRST` to `RETRY_MAX` (`failed`). When asked, it
lists the peers it knows, the ones it is connected to first (`listing`). The bootstrap peers
it was configured with are tried again while it has too few connections, however often they
failed, with a back-off that doubles from `BOOT_FIRST` to only `BOOT_MAX`: a node that started
before its bootstrap peer must join it soon after it comes up (`bootstrap_due`). Both choices are
shuffled so load spreads over the network rather than onto the first peers listed; the
shuffling comes from the random generator the caller hands in, so a seeded node (or a test)
makes the same choices every run. `neighbours.Neighbours` does the dialling and the asking.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any, Final, Generic, Protocol, TypeVar

MAX_KNOWN: Final = 1024  # introductions remembered (oldest forgotten first)
RETRY_FIRST: Final = 5.0  # seconds before dialling again a peer that failed
RETRY_MAX: Final = 300.0
BOOT_FIRST: Final = 1.0  # seconds before dialling a bootstrap peer again
BOOT_MAX: Final = 5.0

P = TypeVar("P", bound=Hashable)  # a peer's id
I = TypeVar("I")  # noqa: E741 - an introduction


class Shuffler(Protocol):
    def shuffle(self, x: list[Any]) -> None: ...


class PeerBook(Generic[P, I]):
    """The introductions a node knows, and the back-off of the ones that failed."""

    def __init__(self, rng: Shuffler, *, max_known: int = MAX_KNOWN) -> None:
        self._rng = rng
        self._max_known = max_known
        self.known: dict[P, I] = {}
        self._retry: dict[P, tuple[float, float]] = {}  # peer -> (not before, last delay)
        self.bootstrap: dict[P, I] = {}  # the configured bootstrap peers
        self._boot_retry: dict[P, tuple[float, float]] = {}
        self.boot_errors: dict[P, str] = {}  # why each bootstrap peer last failed

    def set_bootstrap(self, peers: dict[P, I]) -> None:
        self.bootstrap = dict(peers)

    def bootstrap_due(self, connected: set[P], now: float) -> list[tuple[P, I]]:
        """The bootstrap peers not connected whose back-off is over."""
        return [
            (peer, intro)
            for peer, intro in self.bootstrap.items()
            if peer not in connected and self._boot_retry.get(peer, (0.0, 0.0))[0] <= now
        ]

    def bootstrap_failed(self, peer: P, now: float, why: str) -> None:
        delay = min(self._boot_retry.get(peer, (0.0, BOOT_FIRST / 2))[1] * 2, BOOT_MAX)
        self._boot_retry[peer] = (now + delay, delay)
        self.boot_errors[peer] = why

    def next_bootstrap(self, connected: set[P]) -> float | None:
        """When the next bootstrap peer not connected may be dialled (None: none to dial)."""
        times = [
            self._boot_retry.get(peer, (0.0, 0.0))[0]
            for peer in self.bootstrap
            if peer not in connected
        ]
        return min(times) if times else None

    def remember(self, peer: P, intro: I) -> None:
        self.known.pop(peer, None)  # re-insert: newest last
        self.known[peer] = intro
        while len(self.known) > self._max_known:
            del self.known[next(iter(self.known))]

    def to_dial(
        self,
        candidates: dict[P, I],
        connected: set[P],
        me: P,
        wanted: int,
        now: float,
    ) -> list[tuple[P, I]]:
        """Up to `wanted` candidates (what peers listed, and what we know) to dial now."""
        pool = dict(candidates)
        for peer, intro in self.known.items():
            pool.setdefault(peer, intro)
        fresh = [
            (peer, intro)
            for peer, intro in pool.items()
            if peer not in connected and peer != me and self._retry.get(peer, (0.0, 0.0))[0] <= now
        ]
        if wanted <= 0:
            return []
        self._rng.shuffle(fresh)
        return fresh[:wanted]

    def failed(self, peer: P, now: float) -> None:
        delay = min(self._retry.pop(peer, (0.0, RETRY_FIRST / 2))[1] * 2, RETRY_MAX)
        self._retry[peer] = (now + delay, delay)  # newest last
        while len(self._retry) > self._max_known:  # peers listed to us can be made up
            del self._retry[next(iter(self._retry))]

    def dialled(self, peer: P, intro: I) -> None:
        self._retry.pop(peer, None)
        self._boot_retry.pop(peer, None)
        self.boot_errors.pop(peer, None)
        self.remember(peer, intro)

    def listing(self, asker: P | None, live: Iterable[P], limit: int) -> list[I]:
        """What to tell `asker`: the peers we know but it, those we reach now first."""
        reach = set(live)
        others = [(peer, intro) for peer, intro in self.known.items() if peer != asker]
        self._rng.shuffle(others)
        others.sort(key=lambda item: item[0] not in reach)
        return [intro for _, intro in others[:limit]]

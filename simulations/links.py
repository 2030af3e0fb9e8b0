"""The network under the gossip: latency per link, loss, regions, bandwidth, partitions, churn.

`Links.delay(a, b, size)` says how long a message of `size` bytes from node `a` takes to reach
node `b`, or None when it is lost (random loss, a partition between them, either node down).
Latency comes from one distribution per link draw:

    constant   always `median_ms`
    uniform    between `low_ms` and `high_ms`
    lognormal  median `median_ms`, shape `sigma` (the usual heavy right tail of real links)

`processing_ms` adds a fixed time to every message, as if each receiver had a CPU of its own
that is never busy: a rough stand-in that keeps no queue. Real py-libp2p nodes spend
milliseconds of CPU per message and fall behind under load; to model that, give the scenario
calibrated `[capacity]` costs (`capacity.py`, set as `cpu`): then `delay` is the wire alone and
each message queues for its receiver's CPU when it lands. With regions, each node sits in one
region and a link's draw gets the regions' entry of the inter-region matrix added. With
`bandwidth_kbps`, a node's uplink serialises what it sends: each message waits for the ones
before it to leave, then takes size / bandwidth.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .capacity import Cpus

TABLE = 1 << 16  # latency samples drawn per simulation


@dataclass(frozen=True)
class LinkModel:
    kind: str = "lognormal"
    median_ms: float = 50.0
    sigma: float = 0.5
    low_ms: float = 20.0
    high_ms: float = 80.0
    loss: float = 0.0
    bandwidth_kbps: float = 0.0  # 0: unlimited
    processing_ms: float = 0.0  # CPU time a node spends on each message it receives
    regions: tuple[str, ...] = ()
    region_ms: tuple[tuple[float, ...], ...] = ()  # extra one-way ms between regions

    def check(self) -> LinkModel:
        if self.kind not in ("constant", "uniform", "lognormal"):
            raise ValueError(f"link kind must be constant, uniform or lognormal, not {self.kind!r}")
        if self.median_ms < 0 or self.low_ms < 0 or self.high_ms < self.low_ms:
            raise ValueError("link latencies must be >= 0 with low_ms <= high_ms")
        if self.processing_ms < 0:
            raise ValueError("processing_ms must be >= 0")
        if not 0 <= self.loss < 1:
            raise ValueError("loss must be in [0, 1)")
        if self.regions and (
            len(self.region_ms) != len(self.regions)
            or any(len(row) != len(self.regions) for row in self.region_ms)
        ):
            raise ValueError("region_ms must be a square matrix, one row per region")
        return self


@dataclass
class Links:
    model: LinkModel
    rng: random.Random
    region: list[int] = field(default_factory=list)  # node -> region index
    down: set[int] = field(default_factory=set)
    side: dict[int, int] = field(default_factory=dict)  # partitioned: node -> its side
    busy_until: dict[int, float] = field(default_factory=dict)
    lost: int = 0
    cpu: Cpus | None = None  # with capacity: every node's CPU queue

    def __post_init__(self) -> None:
        m = self.model
        # Latency draws come from a table of TABLE samples of the distribution, drawn once from
        # the simulation's generator and indexed by random bits: one cheap call per message.
        extra = m.processing_ms / 1000.0
        if m.kind == "constant":
            table = [m.median_ms / 1000.0 + extra]
        elif m.kind == "uniform":
            table = [self.rng.uniform(m.low_ms, m.high_ms) / 1000.0 + extra for _ in range(TABLE)]
        else:
            mu = math.log(max(m.median_ms, 1e-6) / 1000.0)
            table = [self.rng.lognormvariate(mu, m.sigma) + extra for _ in range(TABLE)]
        self.table = table
        self.bits = max(len(table).bit_length() - 1, 0)
        self._matrix = [[ms / 1000.0 for ms in row] for row in m.region_ms]

    def _draw(self) -> float:
        return self.table[self.rng.getrandbits(self.bits)] if self.bits else self.table[0]

    @property
    def regional(self) -> bool:
        """Links between regions get the inter-region matrix's latency added."""
        return bool(self._matrix)

    def plain(self) -> bool:
        """No loss, regions, bandwidth, capacity, partition or node down: a delay is one table
        draw and a message is handled the moment it lands."""
        m = self.model
        return bool(
            self.bits
            and self.cpu is None
            and not (self.down or self.side or m.loss or m.bandwidth_kbps or self._matrix)
        )

    def delay(self, a: int, b: int, size: int, now: float) -> float | None:
        if self.down and (a in self.down or b in self.down):
            return None
        side = self.side
        if side and side.get(a, 0) != side.get(b, 0):
            return None
        model = self.model
        if model.loss and self.rng.random() < model.loss:
            self.lost += 1
            return None
        delay = self._draw()
        if self._matrix:
            delay += self._matrix[self.region[a]][self.region[b]]
        if model.bandwidth_kbps:
            leave = max(now, self.busy_until.get(a, 0.0)) + size * 8 / (model.bandwidth_kbps * 1000)
            self.busy_until[a] = leave
            delay += leave - now
        return delay

    def partition(self, groups: list[set[int]]) -> None:
        """Cut the network into `groups` (nodes in none stay with group 0)."""
        self.side = {node: i for i, group in enumerate(groups) for node in group}

    def heal(self) -> None:
        self.side = {}

"""Capacity: every node's CPU as a queue, with py-libp2p's bounded queues and our BUSY refusals.

Without it (the default) a node handles whatever reaches it the moment it lands, however much
that is: the model then reports a delivery ratio of 1.0 at loads real nodes cannot carry.
With `[capacity]` costs set, a message that lands at node `b` waits for `b`'s CPU:

    arrival    send time + the link's delay (`Links.delay`: wire, regions, bandwidth)
    handled    max(arrival, when b's CPU is next free) + the message's cost; the CPU is then
               busy until that moment (first come, first served: by arrival time, since the
               queue is taken when the message lands)
    costs      `gossip_ms` for a gossip copy b does not hold yet (decode, validate, hand to
               the role, forward), `duplicate_ms` for a copy it holds or has queued already
               (py-libp2p decodes every copy before its seen cache drops it), `request_ms`
               for a request b serves and for an answer b receives. Sending is not charged
               apart: a copy's cost is what it takes its sender and its receiver together
    drops      py-libp2p queues at most 32 RPCs per peer and drops what comes on a full queue
               (LIBP2P-NOTES.md): a gossip copy from `a` lands while `queue` copies from `a`
               still wait for b's CPU is dropped (counted; lazy IHAVE/IWANT may repair it)
    BUSY       a request that lands while `slots` requests wait for or hold b's CPU is refused
               with `Code.BUSY` at once (the node's request slots, `max_inbound_requests`);
               the asker's `RetryPolicy` retries it later
    sharing    `cpus = 0`: every node has a CPU of its own (a deployment); `cpus = k`: all
               nodes share k CPUs, node i on CPU i mod k (`dkms-sim run --real` puts every
               node in one process: one CPU for all of them); `share`: the part of a core
               each CPU gets (a process on a machine busy with other work gets less: its
               costs take 1/share as long)

What the queues did goes to results.json's `capacity` (only when it is on, so results of a
scenario without it are unchanged): copies dropped, requests refused, and how busy the
busiest CPU was. The costs are calibrated against real nodes in `benchmarks/saturation.py`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .engine import Action, Sim

if TYPE_CHECKING:
    from .gossip import Gossip, Msg


@dataclass(frozen=True)
class Capacity:
    gossip_ms: float = 0.0  # CPU for a gossip copy a node does not hold yet
    duplicate_ms: float = 0.0  # ... for one it holds, or has queued, already
    request_ms: float = 0.0  # ... for a request it serves, or an answer it receives
    queue: int = 32  # copies from one peer waiting for a node's CPU; more are dropped
    slots: int = 256  # requests waiting or in progress at a node; more are refused (BUSY)
    cpus: int = 0  # 0: a CPU per node; k: every node shares k CPUs
    share: float = 1.0  # of a core each CPU gets (less on a machine busy with other work)

    @property
    def on(self) -> bool:
        return bool(self.gossip_ms or self.duplicate_ms or self.request_ms)

    def check(self) -> Capacity:
        if min(self.gossip_ms, self.duplicate_ms, self.request_ms) < 0:
            raise ValueError("capacity costs must be >= 0")
        if self.queue < 1 or self.slots < 1 or self.cpus < 0 or not 0 < self.share <= 1:
            raise ValueError("capacity queue and slots must be >= 1, cpus >= 0, 0 < share <= 1")
        return self


class Cpus:
    """Each CPU's queue (when it is next free), and what waits at each node."""

    def __init__(self, capacity: Capacity, nodes: int, sim: Sim) -> None:
        self.cap = capacity
        self.sim = sim
        self.shared = capacity.cpus
        self.free = [0.0] * (capacity.cpus or nodes)  # CPU -> when it is next free
        self.used = [0.0] * len(self.free)  # CPU -> seconds spent working
        per_s = 1 / (1000.0 * capacity.share)  # CPU ms -> seconds of the CPU's time
        self.gossip_s = capacity.gossip_ms * per_s
        self.duplicate_s = capacity.duplicate_ms * per_s
        self.request_s = capacity.request_ms * per_s
        # When each waiting item will be handled, oldest first: gossip per (node, peer) and
        # requests per node; items handled by now are popped when the next one lands.
        self.waiting: dict[tuple[int, int], deque[float]] = {}
        self.requests: dict[int, deque[float]] = {}
        self.dropped = 0
        self.refused = 0

    def take(self, node: int, cost: float) -> float:
        """`node`'s CPU works `cost` seconds on something landing now; when it is done."""
        cpu = node % self.shared if self.shared else node
        done = max(self.sim.now, self.free[cpu]) + cost
        self.free[cpu] = done
        self.used[cpu] += cost
        return done

    def copy(self, node: int, peer: int, held: bool) -> float | None:
        """A gossip copy from `peer` lands at `node`: when it is handled, None if dropped."""
        now = self.sim.now
        key = (node, peer)
        waiting = self.waiting.get(key)
        if waiting is None:
            waiting = self.waiting[key] = deque()
        while waiting and waiting[0] <= now:
            waiting.popleft()
        if len(waiting) >= self.cap.queue:
            self.dropped += 1
            return None
        done = self.take(node, self.duplicate_s if held else self.gossip_s)
        waiting.append(done)
        return done

    def request(self, node: int) -> float | None:
        """A request lands at `node`: when it is served, None if refused (BUSY)."""
        now = self.sim.now
        waiting = self.requests.get(node)
        if waiting is None:
            waiting = self.requests[node] = deque()
        while waiting and waiting[0] <= now:
            waiting.popleft()
        if len(waiting) >= self.cap.slots:
            self.refused += 1
            return None
        done = self.take(node, self.request_s)
        waiting.append(done)
        return done

    def answer(self, node: int, action: Action, *args: Any) -> None:
        """An answer lands at `node`: `action(*args)` once its CPU has read it."""
        self.sim.at(self.take(node, self.request_s), action, *args)

    def summary(self) -> dict[str, Any]:
        span = max(self.sim.now, 1e-9)
        return {
            "gossip_dropped": self.dropped,
            "requests_refused": self.refused,
            "busiest_cpu": round(max(self.used, default=0.0) / span, 6),
        }


def land(gossip: Gossip, msg: Msg, node: int, frm: int) -> None:
    """A gossip copy from `frm` lands at `node`: queued for its CPU as the delivery
    `(when, seq, msg, node, sender)` that `Gossip.drive` plays, or dropped. A copy is charged
    as a duplicate when the node holds the message or an earlier copy waits in its queue
    (`Msg.eta[node]` finite: set here, as the plain path sets it, to that copy's time)."""
    cpu = gossip.links.cpu
    assert cpu is not None
    eta = msg.eta
    held = bool(msg.got[node]) or (eta is not None and eta[node] != math.inf)
    done = cpu.copy(node, frm, held)
    if done is None:
        return
    if eta is not None and not held:
        eta[node] = done
    sim = gossip.sim
    sim.push((done, next(sim.seq), msg, node, frm))


__all__ = ["Capacity", "Cpus", "land"]

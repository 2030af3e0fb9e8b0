"""Capacity: every node's CPU as a queue, with py-libp2p's bounded queues and our BUSY refusals.

Without it (the default) a node handles whatever reaches it the moment it lands, however much
that is: the model then reports a delivery ratio of 1.0 at loads real nodes cannot carry.
With `[capacity]` costs set, a message that lands at node `b` waits for `b`'s CPU:

    arrival    send time + the link's delay (`Links.delay`: wire, regions, bandwidth)
    handled    max(arrival, when b's CPU is next free) + the message's cost; the CPU is then
               busy until that moment (first come, first served: by arrival time, since the
               queue is taken when the message lands)
    turns      requests and answers do not wait for the whole gossip backlog: trio runs
               each stream's reader as a task of its own, in turn, so a request waits a turn
               of every stream with copies queued at that CPU, at each of the `TURNS` tasks
               it passes through: handled after max(the requests before it, cost x TURNS x
               (1 + such streams)); the gossip queue is pushed back by its cost. With one
               FIFO the model's witnesses slowed with the gossip backlog, where real ones
               kept receipting within about a second while watchers fell seconds behind
    costs      `gossip_ms` for a gossip copy b does not hold yet (decode, validate, hand to
               the role, forward), `duplicate_ms` for a copy it holds or has queued already
               (py-libp2p decodes every copy before its seen cache drops it), `request_ms`
               for a request b serves and for an answer b receives. Sending is not charged
               apart: a copy's cost is what it takes its sender and its receiver together
    batching   a node's gossip goes out once its CPU has worked through what was queued
               before it (`idle`), so what it publishes meanwhile joins the same payload, as
               the runtime's outbox does under load
    drops      py-libp2p queues at most 32 RPCs per peer and drops what comes on a full queue
               (LIBP2P-NOTES.md); that queue fills once the stream's flow-control window
               (Yamux: 256 KiB) is full of copies b has not read. So a gossip copy from `a`
               that lands while `queue` + `window_kb` / its size copies from `a` still wait
               for b's CPU is dropped (counted; lazy IHAVE/IWANT may repair it)
    BUSY       a request that lands while `slots` requests wait for or hold b's CPU is refused
               with `Code.BUSY` at once (the node's request slots, `max_inbound_requests`);
               the asker's `RetryPolicy` retries it later
    sharing    `cpus = 0`: every node has a CPU of its own (a deployment); `cpus = k`: all
               nodes share k CPUs, node i on CPU i mod k (`dkms-sim run --real` puts every
               node in one process: one CPU for all of them); `share`: the part of a core
               each CPU gets (a process on a machine busy with other work gets less: its
               costs take 1/share as long)

What the queues did goes to results.json's `capacity` (only when it is on, so results of a
scenario without it are unchanged): copies dropped, requests refused, and the work given to
the busiest CPU over the run's length (above 1: more than it could do). The costs are
calibrated against real nodes by `benchmarks/saturation.py` (README, "Capacity").
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .engine import Action, Sim

if TYPE_CHECKING:
    from .gossip import Gossip, Msg

# Tasks a request (or an answer) passes through at a node, each waiting its turn: the
# session's reader, the handler (the role's step), the store's group commit, the writer.
TURNS = 4


@dataclass(frozen=True)
class Capacity:
    gossip_ms: float = 0.0  # CPU for a gossip copy a node does not hold yet
    duplicate_ms: float = 0.0  # ... for one it holds, or has queued, already
    request_ms: float = 0.0  # ... for a request it serves, or an answer it receives
    queue: int = 32  # RPCs py-libp2p queues to one peer before it drops more
    window_kb: float = 256.0  # ... on top of what the stream's flow-control window holds
    slots: int = 256  # requests waiting or in progress at a node; more are refused (BUSY)
    cpus: int = 0  # 0: a CPU per node; k: every node shares k CPUs
    share: float = 1.0  # of a core each CPU gets (less on a machine busy with other work)

    @property
    def on(self) -> bool:
        return bool(self.gossip_ms or self.duplicate_ms or self.request_ms)

    def check(self) -> Capacity:
        if min(self.gossip_ms, self.duplicate_ms, self.request_ms) < 0:
            raise ValueError("capacity costs must be >= 0")
        if self.queue < 1 or self.slots < 1 or self.cpus < 0 or self.window_kb < 0:
            raise ValueError("capacity queue and slots must be >= 1, cpus and window_kb >= 0")
        if not 0 < self.share <= 1:
            raise ValueError("capacity share must be in (0, 1]")
        return self


class Cpus:
    """Each CPU's queue (when it is next free), and what waits at each node."""

    def __init__(self, capacity: Capacity, nodes: int, sim: Sim) -> None:
        self.cap = capacity
        self.sim = sim
        self.shared = capacity.cpus
        self.free = [0.0] * (capacity.cpus or nodes)  # CPU -> when it is next free
        self.ahead = [0.0] * len(self.free)  # CPU -> when its requests' queue is done
        self.used = [0.0] * len(self.free)  # CPU -> seconds spent working
        per_s = 1 / (1000.0 * capacity.share)  # CPU ms -> seconds of the CPU's time
        self.gossip_s = capacity.gossip_ms * per_s
        self.duplicate_s = capacity.duplicate_ms * per_s
        self.request_s = capacity.request_ms * per_s
        self.window = int(capacity.window_kb * 1024)
        # When each waiting item will be handled, oldest first: gossip per (node, peer) and
        # requests per node; items handled by now are popped when the next one lands.
        self.waiting: dict[int, dict[int, deque[float]]] = {}  # node -> peer -> done times
        self.requests: dict[int, deque[float]] = {}
        self.dropped = 0
        self.refused = 0

    def take(self, node: int, cost: float, ahead: bool = False) -> float:
        """`node`'s CPU works `cost` seconds on something landing now; when it is done.
        `ahead`: a request or an answer, which takes turns with every gossip stream that
        has copies waiting at that CPU rather than waiting for them all (and pushes the
        gossip queue back by its cost)."""
        cpu = node % self.shared if self.shared else node
        now = self.sim.now
        self.used[cpu] += cost
        if ahead:
            queued = self.ahead[cpu] = max(now, self.ahead[cpu]) + cost
            self.free[cpu] = max(now, self.free[cpu]) + cost
            return max(queued, now + cost * TURNS * (1 + self._busy_streams(node, now)))
        done = max(now, self.free[cpu]) + cost
        self.free[cpu] = done
        return done

    def idle(self, node: int) -> float:
        """When `node`'s CPU has done all the gossip queued for it so far."""
        return max(self.sim.now, self.free[node % self.shared if self.shared else node])

    def _busy_streams(self, node: int, now: float) -> int:
        """Gossip streams with copies still waiting at `node`'s CPU (every node's, shared)."""
        nodes = self.waiting.values() if self.shared else [self.waiting.get(node, {})]
        return sum(1 for streams in nodes for q in streams.values() if q and q[-1] > now)

    def copy(self, node: int, peer: int, held: bool, size: int) -> float | None:
        """A gossip copy of `size` bytes from `peer` lands at `node`: when it is handled,
        None if dropped."""
        now = self.sim.now
        streams = self.waiting.get(node)
        if streams is None:
            streams = self.waiting[node] = {}
        waiting = streams.get(peer)
        if waiting is None:
            waiting = streams[peer] = deque()
        while waiting and waiting[0] <= now:
            waiting.popleft()
        if len(waiting) >= self.cap.queue + self.window // size:
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
        done = self.take(node, self.request_s, ahead=True)
        waiting.append(done)
        return done

    def answer(self, node: int, action: Action, *args: Any) -> None:
        """An answer lands at `node`: `action(*args)` once its CPU has read it."""
        self.sim.at(self.take(node, self.request_s, ahead=True), action, *args)

    def summary(self) -> dict[str, Any]:
        span = max(self.sim.now, 1e-9)
        return {
            "gossip_dropped": self.dropped,
            "requests_refused": self.refused,
            # work given to the busiest CPU over the run's length (above 1: more than it did)
            "busiest_cpu_load": round(max(self.used, default=0.0) / span, 6),
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
    done = cpu.copy(node, frm, held, msg.size)
    if done is None:
        return
    if eta is not None and not held:
        eta[node] = done
    sim = gossip.sim
    sim.push((done, next(sim.seq), msg, node, frm))


__all__ = ["Capacity", "Cpus", "land"]

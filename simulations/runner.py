"""Run one scenario: schedule its workload and adversaries on a `World`, run virtual time,
and hand back what happened (`results`) and what it cost the machine (`perf`).

Workload: each identifier is incepted in the first virtual second; from t=2 s until
`duration`, one interaction every 1/`event_rate` seconds, from the honest identifiers in
turn (one whose previous event is still being witnessed skips its turn). Equivocating
identifiers equivocate once each, spread over the middle of the run. Spammers publish
invalid messages at `spam_rate`; a partition cuts a fraction of the relays off between `at`
and `heal`; churn takes relays away for `downtime` seconds at `rate` per second. Rivals,
forks and malformed senders are `attacks.Attacks`' to schedule (their identifiers, after
the equivocators', make no honest traffic either), and to add to the results.
"""

from __future__ import annotations

import gc
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .attacks import Attacks, equivocate, spam
from .record import Recorder
from .scenario import Scenario
from .world import World

Progress = Callable[[float, World], None]


@dataclass
class Outcome:
    results: dict[str, Any]
    perf: dict[str, Any]
    record: Recorder


def run(scenario: Scenario, *, progress: Progress | None = None) -> Outcome:
    started, cpu = time.perf_counter(), time.process_time()
    world = World(scenario)
    if Attacks.wanted(scenario):
        world.attacks = Attacks(world)
    built, cpu_built = time.perf_counter(), time.process_time()
    _schedule(world)
    world.start()
    end = scenario.duration + scenario.settle
    with _quiet_gc():
        world.sim.run(
            end, progress=(lambda now: progress(now, world)) if progress else None, every=1.0
        )
    wall = time.perf_counter() - started
    cpu_run = time.process_time() - cpu_built
    results = world.record.summary()
    if world.attacks is not None:
        results.update(world.attacks.summary())
    elif world.killed:
        results["nodes_killed"] = len(world.killed)
    deliveries = max(world.gossip.deliveries, 1)
    perf = {
        "wall_s": round(wall, 3),
        "setup_s": round(built - started, 3),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "us_per_delivery": round((time.perf_counter() - built) / deliveries * 1e6, 3),
        # CPU time: on a machine shared with other work, wall time says more about them.
        "cpu_s": round(time.process_time() - cpu, 3),
        "cpu_us_per_delivery": round(cpu_run / deliveries * 1e6, 3),
        "virtual_per_wall": round(end / wall, 3) if wall else None,
        "steps": world.sim.steps,
        "python": sys.version.split()[0],
    }
    return Outcome(results, perf, world.record)


def _schedule(world: World) -> None:
    sc, sim = world.sc, world.sim
    controllers = world.controller_ids
    for i, node in enumerate(controllers):
        sim.at(i / max(len(controllers), 1), world.incept, node)
    a = sc.adversaries
    cheaters = controllers[: a.equivocations]
    honest = controllers[a.equivocations + a.rivals + a.forks :]
    if honest:
        step = 1.0 / sc.event_rate
        t, n = 2.0, 0
        while t < sc.duration:
            sim.at(t, world.interact, honest[n % len(honest)], n)
            t += step
            n += 1
    for k, node in enumerate(cheaters):
        at = sc.duration / 3 + k * (sc.duration / 3) / max(len(cheaters), 1)
        sim.at(at, equivocate, world, node)
    spammers = [r for r in world.relay_ids if r not in world.gossip.silent][
        : sc.adversaries.spammers
    ]
    for node in spammers:
        t = 1.0
        while t < sc.duration:
            sim.at(t, spam, world, node)
            t += 1.0 / sc.adversaries.spam_rate
    part = sc.partition
    if part.fraction > 0 and part.heal > part.at:
        cut = set(sim.rng.sample(world.relay_ids, int(part.fraction * len(world.relay_ids))))
        everyone = set(range(sc.nodes)) - cut
        sim.at(part.at, world.links.partition, [everyone, cut])
        sim.at(part.heal, world.links.heal)
    if sc.churn.rate > 0:
        t = 1.0
        while t < sc.duration:
            sim.at(t, _churn, world)
            t += 1.0 / sc.churn.rate
    if world.attacks is not None:
        world.attacks.schedule()


def _churn(world: World) -> None:
    rng = world.sim.rng
    up = [r for r in world.relay_ids if r not in world.links.down]
    if not up:
        return
    node = up[rng.randrange(len(up))]
    world.gossip.leave(node)
    world.sim.after(world.sc.churn.downtime, world.gossip.rejoin, node)


@contextmanager
def _quiet_gc() -> Iterator[None]:
    """Run with the world built so far frozen out of the cycle collector, and collections
    rarer: a large run keeps millions of queue entries alive, and each collection would walk
    them and every node's sets again (a seventh of the time at 10,000 nodes). Nothing in the
    simulation depends on when the collector runs."""
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / (1024 * 1024)

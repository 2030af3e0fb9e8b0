"""Calibration: the same scenario on real nodes (py-libp2p hosts on 127.0.0.1, SQLite stores,
`dkms.node.localnet`) in real time, producing the same results fields as the simulator.

Witnesses and rostered watchers are real nodes; relays are watchers the roster does not name
(they listen to all KEL gossip and relay it); every identifier is driven by one controller
node. The workload follows `runner._schedule` in wall-clock seconds. What the simulator
counts per gossip message (deliveries, duplicates, bytes) is not visible through py-libp2p,
so those fields are None; `delivery_ratio` is the share of (event, gossip member) pairs where
the member ended up holding the event, which on a lossless run is the simulator's ratio too.
Keep it small (up to ~30 nodes): py-libp2p costs milliseconds of CPU per gossip delivery.
"""

from __future__ import annotations

import logging
import random
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import trio

from dkms.node.p2p.logs import quiet_libp2p
from dkms.node.roles.holdings import Standing
from dkms.node.roles.outbox import TRAFFIC
from dkms.node.runtime.loop import Runtime
from dkms.node.testing.localnet import LocalNet, local_network

from .record import per_event, stats
from .scenario import Adversaries, Scenario, ScenarioError

MAX_REAL_NODES = 40


def run_real(scenario: Scenario) -> tuple[dict[str, Any], dict[str, Any]]:
    unmodelled = _not_real(scenario)
    if unmodelled:
        raise ScenarioError(
            f"--real runs honest nodes and equivocations only, not {', '.join(unmodelled)}: "
            "use the simulator for those"
        )
    if scenario.nodes > MAX_REAL_NODES:
        raise ScenarioError(
            f"--real runs at most {MAX_REAL_NODES} nodes in one process (asked {scenario.nodes})"
        )
    quiet_libp2p()
    logging.getLogger("dkms").setLevel(logging.ERROR)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dkms-sim-real-") as tmp:
        results = trio.run(_run, scenario, Path(tmp))
    perf = {"wall_s": round(time.perf_counter() - started, 3), "python": sys.version.split()[0]}
    return results, perf


def _not_real(scenario: Scenario) -> list[str]:
    """The scenario's settings that `run_real` would silently leave out, by name."""
    out = [
        f"adversaries.{f.name}"
        for f in fields(Adversaries)
        if f.name not in _REAL_ADVERSARIES
        and getattr(scenario.adversaries, f.name) != getattr(_NO_ADVERSARIES, f.name)
        and not f.name.endswith("_rate")  # a rate alone, with no senders, does nothing
    ]
    if scenario.partition.fraction:
        out.append("partition")
    if scenario.churn.rate:
        out.append("churn")
    return out


_REAL_ADVERSARIES = frozenset({"equivocations"})
_NO_ADVERSARIES = Adversaries()


class _Clocks:
    def __init__(self, net: LocalNet, start: float) -> None:
        self.net = net
        self.start = start
        self.created: dict[str, float] = {}
        self.owner: dict[str, str] = {}
        self.witnessed: dict[str, float] = {}
        self.held: dict[str, dict[str, float]] = {}  # said -> watcher -> time
        self.t0: dict[str, float] = {}  # equivocating prefix -> second version accepted
        self.second: dict[str, str] = {}
        self.detected: dict[str, dict[str, float]] = {}

    def watch(self) -> None:
        for host in self.net.watchers:
            runtime = self.net.runtimes[host.prefix]
            runtime.after_step = _bound(self._watcher_step, host.prefix, runtime)
        for host in self.net.witnesses:
            runtime = self.net.runtimes[host.prefix]
            runtime.after_step = _bound(self._witness_step, host.prefix, runtime)

    def _watcher_step(self, name: str, runtime: Runtime) -> None:
        role = self.net.watcher_role(name)
        now = trio.current_time()
        for said, held in self.held.items():
            if name not in held and role.validator.record(said) is not None:
                held[name] = now
        for prefix, found in self.detected.items():
            standing, _ = role.holdings.standing(prefix, True)
            if name not in found and standing is Standing.DUPLICITOUS:
                found[name] = now

    def _witness_step(self, name: str, runtime: Runtime) -> None:
        role = self.net.witness_role(name)
        for prefix, said in self.second.items():
            if prefix not in self.t0 and role.validator.record(said) is not None:
                self.t0[prefix] = trio.current_time()


def _bound(fn: Any, name: str, runtime: Runtime) -> Any:
    return lambda: fn(name, runtime)


async def _run(sc: Scenario, tmp: Path) -> dict[str, Any]:
    with trio.fail_after(sc.duration + sc.settle + 60):  # set-up included: never a hang
        return await _scenario(sc, tmp)


async def _scenario(sc: Scenario, tmp: Path) -> dict[str, Any]:
    rng = random.Random(sc.seed)
    async with local_network(
        tmp, witnesses=sc.witnesses, watchers=sc.watchers, relays=max(sc.relays, 0)
    ) as net:
        clocks = _Clocks(net, trio.current_time())
        clocks.watch()
        before = _traffic(net)  # what setting the network up took is not the workload's
        ctl = net.client.controller
        names = [f"id{i}" for i in range(sc.identifiers)]
        cheaters = names[: sc.adversaries.equivocations]
        honest = names[len(cheaters) :]
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for i, name in enumerate(names):  # spread over a second, as `runner._schedule`
                await trio.sleep_until(start + i / len(names))
                witnesses = sorted(rng.sample(net.w, sc.witnesses_per_id))
                effects = ctl.incept(
                    name,
                    [rng.randbytes(32)],
                    [rng.randbytes(32)],
                    witnesses=witnesses,
                    toad=sc.bt,
                    now=trio.current_time(),
                )
                nursery.start_soon(_event, net, clocks, name, effects)
        schedule: list[tuple[float, str, str]] = []
        t, n = 2.0, 0
        while t < sc.duration and honest:
            schedule.append((t, "interact", honest[n % len(honest)]))
            t += 1.0 / sc.event_rate
            n += 1
        for k, name in enumerate(cheaters):
            at = sc.duration / 3 + k * (sc.duration / 3) / max(len(cheaters), 1)
            schedule.append((at, "equivocate", name))
        schedule.sort()
        async with trio.open_nursery() as nursery:
            for at, what, name in schedule:
                await trio.sleep_until(start + at)
                if what == "interact":
                    ident = ctl.identity(name)
                    if ctl.status(ident.last_said) != "done":
                        continue
                    effects = ctl.interact(name, [{"n": n}], now=trio.current_time())
                    nursery.start_soon(_event, net, clocks, name, effects)
                else:
                    _equivocate(net, clocks, name, nursery)
            await trio.sleep_until(start + sc.duration + sc.settle)
            nursery.cancel_scope.cancel()
        sent = {k: v - before[k] for k, v in _traffic(net).items()}
        return _results(sc, net, clocks, sent)


def _traffic(net: LocalNet) -> dict[str, int]:
    runtimes = [*net.runtimes.values(), net.client.runtime]
    return {name: int(sum(r.metrics.value(name) for r in runtimes)) for name in TRAFFIC}


async def _event(net: LocalNet, clocks: _Clocks, name: str, effects: list[Any]) -> None:
    ident = net.client.controller.identity(name)
    said = ident.last_said
    clocks.created[said] = trio.current_time()
    clocks.owner[said] = name
    clocks.held[said] = {}
    try:
        await net.client.witnessed(effects, said)
    except Exception:
        return
    if said in clocks.created:
        clocks.witnessed[said] = trio.current_time()


def _equivocate(net: LocalNet, clocks: _Clocks, name: str, nursery: trio.Nursery) -> None:
    ident = net.client.controller.identity(name)
    _, msg_a = net.signed_ixn(name, [{"v": "a"}])
    b, msg_b = net.signed_ixn(name, [{"v": "b"}])
    clocks.second[ident.prefix] = b.said
    clocks.detected[ident.prefix] = {}
    half = len(ident.witnesses) // 2
    for witness, message in [(w, msg_a) for w in ident.witnesses[:half]] + [
        (w, msg_b) for w in ident.witnesses[half:]
    ]:
        nursery.start_soon(_quietly, net, net.w.index(witness), message)
    for said in [s for s, owner in clocks.owner.items() if owner == name]:
        clocks.created.pop(said, None)  # an equivocator's events are not honest traffic


async def _quietly(net: LocalNet, witness: int, message: bytes) -> None:
    try:
        await net.submit(witness, message)
    except Exception:
        return


def _results(sc: Scenario, net: LocalNet, clocks: _Clocks, sent: dict[str, int]) -> dict[str, Any]:
    watchers = [h.prefix for h in net.watchers]
    members = watchers + [h.prefix for h in net.relays]
    honest_saids = [s for s in clocks.created if s in clocks.witnessed]
    witnessed = [(clocks.witnessed[s] - clocks.created[s]) * 1000 for s in honest_saids]
    to_watchers = [
        (max(clocks.held[s][w] for w in watchers) - clocks.created[s]) * 1000
        for s in honest_saids
        if all(w in clocks.held[s] for w in watchers)
    ]
    held = 0
    for said in honest_saids:
        for member in members:
            held += net.watcher_role(member).validator.record(said) is not None
    ratio = held / (len(honest_saids) * len(members)) if honest_saids and members else 1.0
    detection, fractions = [], []
    for prefix, found in clocks.detected.items():
        t0 = clocks.t0.get(prefix)
        if t0 is not None:
            detection += [(found[w] - t0) * 1000 for w in watchers if w in found]
        fractions.append(sum(w in found for w in watchers) / len(watchers))
    false_alarms = 0
    for w in watchers:
        role = net.watcher_role(w)
        false_alarms += sum(1 for a in role.holdings.accused() if a not in clocks.detected)
    return {
        "scenario": sc.name,
        "seed": sc.seed,
        "nodes": sc.nodes,
        "mode": "real",
        "virtual_s": sc.duration + sc.settle,
        "events": len(clocks.created),
        "deliveries": None,
        "delivery_ratio": round(ratio, 6),
        "witnessed_ms": stats(witnessed, ("p50", "p90", "p99", "max")),
        "to_watchers_ms": stats(to_watchers, ("p50", "p90", "p99", "max")),
        "events_reaching_every_watcher": len(to_watchers),
        "detection_ms": stats(detection, ("p50", "p99", "max")),
        "detected_fraction": round(sum(fractions) / len(fractions), 6) if fractions else None,
        "false_alarms": false_alarms,
        "sent_per_event": per_event(sent, len(witnessed)),
        "messages_per_node": None,
        "bytes_per_node": None,
    }


__all__ = ["run_real"]

"""Capacity in the model (`simulations/capacity.py`): every node's CPU a bounded FIFO queue."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dkms.simulations.capacity import TURNS, Capacity, Cpus
from dkms.simulations.engine import Sim
from dkms.simulations.runner import run
from dkms.simulations.scenario import Scenario, ScenarioError, load

SMALL = {"duration": 6.0, "settle": 3.0}


def results(sc: Scenario, **changes: Any) -> dict[str, Any]:
    return run(sc.with_params(**changes)).results


def test_a_cpu_serves_in_arrival_order_and_each_peer_queue_is_bounded() -> None:
    sim = Sim(1)
    cpus = Cpus(Capacity(gossip_ms=10.0, duplicate_ms=1.0, queue=1, window_kb=1.0), 3, sim)
    assert cpus.copy(0, 1, held=False, size=1024) == pytest.approx(0.010)
    assert cpus.copy(0, 1, held=True, size=1024) == pytest.approx(0.011)  # a duplicate is cheaper
    assert cpus.copy(0, 1, held=False, size=1024) is None  # two from peer 1 wait: dropped
    assert cpus.copy(0, 2, held=False, size=1024) == pytest.approx(0.021)  # another peer's queue
    assert cpus.copy(1, 2, held=False, size=1024) == pytest.approx(0.010)  # another node's CPU
    sim.now = 0.0105  # the first copy from peer 1 has been handled
    assert cpus.copy(0, 1, held=False, size=1024) == pytest.approx(0.031)
    assert cpus.dropped == 1


def test_requests_take_turns_with_the_gossip_waiting_and_get_busy_when_slots_are_full() -> None:
    sim = Sim(1)
    cpus = Cpus(Capacity(gossip_ms=1.0, request_ms=5.0, slots=2, cpus=1), 4, sim)
    assert cpus.request(0) == pytest.approx(TURNS * 0.005)  # nothing else waits: its turns
    # Every node shares the one CPU: the gossip queue waits for the request's CPU time.
    assert cpus.copy(3, 1, held=False, size=100) == pytest.approx(0.006)
    # A request now takes its turns with the one gossip stream waiting at that CPU.
    assert cpus.request(3) == pytest.approx(2 * TURNS * 0.005)
    assert cpus.request(0) == pytest.approx(2 * TURNS * 0.005)
    assert cpus.request(0) is None  # two requests wait at node 0: BUSY
    assert cpus.refused == 1
    assert cpus.summary()["requests_refused"] == 1


def test_bad_capacity_settings_are_refused() -> None:
    with pytest.raises(ScenarioError):
        load("saturation").with_params(**{"capacity.queue": 0})
    with pytest.raises(ScenarioError):
        load("saturation").with_params(**{"capacity.gossip_ms": -1.0})


def test_capacity_off_leaves_results_as_they_were() -> None:
    """All costs zero is no capacity at all: the same bytes, whatever the queue settings."""
    sc = load("honest").with_params(nodes=60, **SMALL)
    plain = results(sc)
    assert "capacity" not in plain
    same = results(sc, **{"capacity.queue": 1, "capacity.cpus": 1})
    assert json.dumps(same) == json.dumps(plain)


def test_below_capacity_the_model_delivers_what_it_does_without() -> None:
    sc = load("saturation").with_params(event_rate=1.0, **SMALL)
    light = results(sc, **{"capacity.cpus": 0})  # a CPU per node: far below saturation
    free = results(sc, **{"capacity.gossip_ms": 0.0, "capacity.duplicate_ms": 0.0,
                          "capacity.request_ms": 0.0})  # fmt: skip
    assert light["capacity"]["gossip_dropped"] == 0
    assert light["capacity"]["requests_refused"] == 0
    assert light["delivery_ratio"] == free["delivery_ratio"] == 1.0
    assert light["events"] == free["events"]
    assert light["events_reaching_every_watcher"] == free["events_reaching_every_watcher"]
    # The CPU costs time even when it keeps up.
    assert light["witnessed_ms"]["p50"] > free["witnessed_ms"]["p50"]


def test_far_above_capacity_the_model_drops_and_delivers_less() -> None:
    sc = load("saturation").with_params(event_rate=20.0, **SMALL)
    heavy = results(
        sc,
        **{
            "capacity.gossip_ms": 6.0,
            "capacity.duplicate_ms": 4.0,
            "capacity.queue": 8,
            "capacity.window_kb": 0.0,
        },
    )
    cap = heavy["capacity"]
    assert cap["gossip_dropped"] > 0
    assert cap["busiest_cpu_load"] > 0.9
    assert heavy["delivery_ratio"] < 1.0


def test_busy_witnesses_refuse_and_controllers_retry() -> None:
    sc = load("saturation").with_params(event_rate=4.0, **SMALL)
    busy = results(sc, **{"capacity.request_ms": 20.0, "capacity.slots": 2})
    assert busy["capacity"]["requests_refused"] > 0
    assert busy["events_reaching_every_watcher"] > 0  # retried until witnessed


def test_one_shared_cpu_is_slower_than_one_each() -> None:
    sc = load("saturation").with_params(event_rate=2.0, **SMALL)
    shared = results(sc)
    own = results(sc, **{"capacity.cpus": 0})
    assert shared["witnessed_ms"]["p50"] > own["witnessed_ms"]["p50"]
    assert shared["capacity"]["busiest_cpu_load"] > own["capacity"]["busiest_cpu_load"]


def test_capacity_runs_are_the_same_per_seed() -> None:
    tight = {"capacity.queue": 2, "capacity.window_kb": 0.0}
    sc = load("saturation").with_params(event_rate=10.0, **tight, **SMALL)
    first = results(sc)
    assert first["capacity"]["gossip_dropped"] > 0  # the queues decided something
    assert json.dumps(results(sc)) == json.dumps(first)
    assert json.dumps(results(sc, seed=2)) != json.dumps(first)

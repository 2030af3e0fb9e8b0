"""The model against the real thing: one small scenario on real nodes (py-libp2p on
127.0.0.1, in real time) and in the simulator with loopback-like links; they must agree on
what happened. Latencies differ by design (the simulator spends no CPU time), and the README
records the gap."""

from __future__ import annotations

from dkms.simulations.real import run_real
from dkms.simulations.runner import run
from dkms.simulations.scenario import load


def test_real_nodes_and_the_model_agree_on_a_small_equivocation() -> None:
    scenario = load("equivocation").with_params(nodes=12, duration=6.0, settle=3.0)
    real, _ = run_real(scenario)
    model = run(scenario.with_params(**{"link.kind": "constant", "link.median_ms": 1.0})).results
    for results in (real, model):
        assert results["delivery_ratio"] == 1.0
        assert results["detected_fraction"] == 1.0
        assert results["false_alarms"] == 0
        assert results["events"] >= 3
        assert results["events_reaching_every_watcher"] == results["events"]
    # Same workload: the same events were made (one skipped turn at most, in real time).
    assert abs(real["events"] - model["events"]) <= 1
    # Real nodes are slower (py-libp2p CPU per message), never faster than the wire allows.
    assert model["witnessed_ms"]["p50"] <= real["witnessed_ms"]["p50"] < 1000
    assert real["detection_ms"]["max"] < 3000

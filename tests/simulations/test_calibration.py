"""The model against the real thing: one small scenario on real nodes (py-libp2p on
127.0.0.1, in real time) and in the simulator with loopback-like links; they must agree on
what happened. Latencies differ by design (the simulator spends no CPU time), and the README
records the gap."""

from __future__ import annotations

import pytest

from dkms.node.roles.outbox import GOSSIP, REQUESTS, SENDS, TRAFFIC
from dkms.simulations.real import run_real
from dkms.simulations.runner import run
from dkms.simulations.scenario import load

pytestmark = pytest.mark.slow  # real processes or real time


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


def test_the_model_sends_what_real_nodes_send_per_event() -> None:
    """What the nodes send of their own accord per event witnessed (`outbox.TRAFFIC`): the
    requests the roles ask for, the requests that carry them once batched, gossip payloads,
    and their bytes. The simulator batches as the runtime does (`roles.outbox`), so each must
    be within 10% of real nodes'; except that batching depends on time, and real requests
    and publishes take longer (more so on a loaded machine), so more queues behind them: real
    nodes may batch the same requests or gossip into fewer, never into more. What was batched
    is still all there: the bytes must agree within 10% either way."""
    scenario = load("honest").with_params(nodes=12, duration=10.0, settle=3.0, event_rate=2.0)
    real, _ = run_real(scenario)
    model = run(scenario.with_params(**{"link.kind": "constant", "link.median_ms": 1.0})).results
    assert real["events"] >= 10 and model["events"] >= 10
    sent, modelled = real["sent_per_event"], model["sent_per_event"]
    assert set(sent) == set(modelled) == set(TRAFFIC)
    for name in TRAFFIC:
        assert modelled[name] > 0
        if name == REQUESTS:
            assert sent[name] <= 1.1 * modelled[name], (sent, modelled)
            assert sent[name] * 2 >= sent[SENDS], (sent, modelled)  # batched, not lost
        elif name == GOSSIP:  # one publish per event and topic at most, fewer when batched
            assert sent[name] <= 1.1 * modelled[name], (sent, modelled)
            assert sent[name] * 2 >= modelled[name], (sent, modelled)
        else:
            assert abs(sent[name] - modelled[name]) <= 0.1 * modelled[name], (name, sent, modelled)

"""The simulator: deterministic, and its shipped scenarios show what they are meant to show.

Every test runs a small version of a shipped scenario (a few hundred nodes, a few dozen
virtual seconds: under a few seconds of wall time each).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dkms.simulations import cli
from dkms.simulations.runner import run
from dkms.simulations.scenario import Scenario, ScenarioError, from_dict, load, shipped


def small(name: str, **changes: object) -> Scenario:
    return load(name).with_params(nodes=250, duration=25.0, settle=4.0, **changes)


def test_same_seed_same_results_different_seed_different() -> None:
    first = run(small("equivocation")).results
    again = run(small("equivocation")).results
    other = run(small("equivocation", seed=99)).results
    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)
    assert json.dumps(first, sort_keys=True) != json.dumps(other, sort_keys=True)


def test_honest_network_delivers_everything_and_raises_no_alarm() -> None:
    r = run(small("honest")).results
    assert r["delivery_ratio"] == 1.0
    assert r["events"] > 0 and r["events_reaching_every_watcher"] == r["events"]
    assert r["false_alarms"] == 0 and r["detection_ms"] is None
    assert 0 < r["witnessed_ms"]["p50"] <= r["to_watchers_ms"]["p50"] < 1000
    assert r["deliveries"] > r["duplicates"] > 0


def test_every_honest_watcher_catches_an_equivocation() -> None:
    r = run(small("equivocation")).results
    assert r["detected_fraction"] == 1.0
    assert r["false_alarms"] == 0
    assert r["detection_ms"]["max"] < 2000


def test_a_colluding_witness_is_named_by_every_watcher() -> None:
    r = run(small("witness-collusion")).results
    assert r["detected_fraction"] == 1.0
    assert r["colluders_named_fraction"] == 1.0
    assert r["false_alarms"] == 0


def test_an_eclipsed_watcher_is_blind_and_the_others_are_not() -> None:
    r = run(small("eclipse-watcher")).results
    assert r["detected_fraction"] == 1.0
    assert r["eclipsed_detected_fraction"] == 0.0


def test_sybils_that_never_forward_do_not_stop_delivery() -> None:
    r = run(small("sybil-30pct")).results
    assert r["delivery_ratio"] >= 0.99
    assert r["events_reaching_every_watcher"] == r["events"]


def test_spam_is_dropped_and_costs_its_senders() -> None:
    outcome = run(small("churn", **{"churn.rate": 0.0}))
    r = outcome.results
    assert r["invalid_dropped"] > 0
    assert r["delivery_ratio"] == 1.0
    assert outcome.record.world.gossip.graylisted  # spammers' neighbours stopped listening


def test_a_partition_loses_what_it_cuts_off() -> None:
    r = run(small("partition-heal", **{"partition.at": 8.0, "partition.heal": 16.0})).results
    assert 0.5 < r["delivery_ratio"] < 1.0
    assert r["events_reaching_every_watcher"] == r["events"]  # watchers sit outside the cut


def test_shipped_scenarios_load() -> None:
    names = shipped()
    for required in (
        "honest",
        "equivocation",
        "witness-collusion",
        "sybil-30pct",
        "eclipse-watcher",
        "partition-heal",
        "churn",
    ):
        assert required in names
    for name in names:
        assert load(name).name == name


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"nodes": 10, "witnesses": 40}, "nodes must cover"),
        ({"bogus": 1}, "unknown setting"),
        ({"link": {"kind": "teleport"}}, "link kind"),
        ({"gossip": {"d": 2, "d_low": 4}}, "d_low"),
        ({"nodes": "many"}, "must be an integer"),
        ({"adversaries": {"sybil_fraction": 1.5}}, "sybil_fraction"),
    ],
)
def test_bad_scenarios_say_what_to_fix(data: dict[str, object], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        from_dict(data)


def test_unknown_scenario_lists_the_shipped_ones() -> None:
    with pytest.raises(ScenarioError, match=r"shipped: .*honest"):
        load("no-such-scenario")


def test_cli_run_writes_results_and_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "equivocation", "--nodes", "200", "--set", "duration=15", "--quiet"]
    assert cli.main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert cli.main([*argv, "--out", str(tmp_path / "b"), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "detected_fraction" in out
    for name in ("results.json", "perf.json", "events.csv", "detections.csv", "delivery.csv"):
        assert (tmp_path / "a" / name).stat().st_size > 0
    for name in ("latency_cdf.png", "detection_cdf.png", "load_per_node.png", "delivery_ratio.png"):
        assert (tmp_path / "a" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    for key in (
        "scenario",
        "seed",
        "nodes",
        "virtual_s",
        "deliveries",
        "delivery_ratio",
        "witnessed_ms",
        "to_watchers_ms",
        "detection_ms",
        "detected_fraction",
        "false_alarms",
        "messages_per_node",
        "bytes_per_node",
    ):
        assert key in results
    assert set(results["witnessed_ms"]) == {"p50", "p90", "p99", "max"}
    assert set(results["detection_ms"]) == {"p50", "p99", "max"}
    same = (tmp_path / "a" / "results.json").read_bytes() == (
        tmp_path / "b" / "results.json"
    ).read_bytes()
    assert same  # the same seed gives the same bytes
    perf = json.loads((tmp_path / "a" / "perf.json").read_text())
    assert {"wall_s", "peak_rss_mb", "us_per_delivery"} <= set(perf)


def test_cli_sweep_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["sweep", "honest", "--nodes", "150", "--param", "gossip.d=4,8"]
    argv += ["--metric", "messages_per_node.mean", "--out", str(tmp_path)]
    assert cli.main([*argv, "--seed", "3", "--workers", "1"]) == 0
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    assert [p["value"] for p in sweep["points"]] == [4, 8]
    assert sweep["points"][0]["mean"] < sweep["points"][1]["mean"]  # a denser mesh: more copies
    assert (tmp_path / "sweep.png").exists()
    assert cli.main(["list"]) == 0
    assert "eclipse-watcher" in capsys.readouterr().out
    assert cli.main(["run", "nope"]) == 1


@pytest.mark.slow
def test_same_bytes_across_processes_whatever_the_hash_seed(tmp_path: Path) -> None:
    """String hashing differs per process; nothing the simulation decides may depend on it."""
    outs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / hash_seed
        command = [sys.executable, "-m", "dkms.simulations.cli", "run", "witness-collusion"]
        command += ["--nodes", "200", "--set", "duration=15", "--quiet", "--no-plots"]
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [*command, "--out", str(out)], env=env, capture_output=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
        outs.append((out / "results.json").read_bytes())
    assert outs[0] == outs[1]


def test_withholding_witnesses_do_not_stop_events_reaching_watchers() -> None:
    """Every event of an identifier with one witness that gossips reaches every watcher; one
    whose witnesses all withhold is gossiped by no one, and (no watcher reconciling in the
    model) reaches none."""
    outcome = run(small("honest", **{"adversaries.withholding_witnesses": 10}))
    r = outcome.results
    world = outcome.record.world
    assert world.withholding
    silenced = set()
    for ctl in world.controllers.values():
        ident = ctl.identity("id")
        if all(world.node_of[w] in world.withholding for w in ident.witnesses):
            silenced.add(ident.prefix)
    reached = set(world.watcher_ids)
    for e in outcome.record.events.values():
        assert set(e.watchers) == (set() if e.prefix in silenced else reached), e
    assert r["events"] > 0
    assert r["events_reaching_every_watcher"] == sum(
        e.prefix not in silenced for e in outcome.record.events.values()
    )

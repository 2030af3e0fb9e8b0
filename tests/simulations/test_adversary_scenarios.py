"""The shipped scenarios of the duplicity and hardening issues show what they are meant to.

rival-refused: a rival of a fully witnessed event, submitted to the event's own witnesses,
is refused by every one of them (no receipt), kept in their duplicitous-event logs, accepted
by no validator anywhere, and caught by every watcher. fork-to-victim: a fork receipted by
`bt` colluding witnesses and kept off the gossip fools a victim that only validates it, and
is caught when the victim checks it with the watchers (`kelcheck`, as `dkms kel check`).
malformed-frames: malformed requests and gossip kill no node, and honest traffic goes on;
a role that does raise is killed and counted. Each runs a small version (250 nodes).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from dkms.node.client import kelcheck
from dkms.node.roles.inputs import Input, Request
from dkms.node.roles.witness import Witness
from dkms.simulations import cli
from dkms.simulations.attacks import RESULT_FIELDS, Case, Victim
from dkms.simulations.real import run_real
from dkms.simulations.runner import run
from dkms.simulations.scenario import Scenario, ScenarioError, from_dict, load, shipped

NEW = ("rival-refused", "fork-to-victim", "malformed-frames")


def small(name: str, **changes: object) -> Scenario:
    return load(name).with_params(**{"nodes": 250, "duration": 25.0, "settle": 4.0, **changes})


def test_the_scenarios_are_shipped_and_others_get_no_new_fields() -> None:
    assert set(NEW) <= set(shipped())
    r = run(small("honest", duration=6.0)).results
    assert not set(RESULT_FIELDS) & set(r)


@pytest.mark.parametrize(
    ("adversaries", "message"),
    [
        ({"equivocations": 5, "rivals": 3, "forks": 3}, "an identifier of their own"),
        ({"malformed_senders": 990}, "malformed senders are relays"),
        ({"malformed_senders": 1, "malformed_rate": 0}, "malformed_rate"),
    ],
)
def test_bad_attack_settings_say_what_to_fix(adversaries: dict[str, object], message: str) -> None:
    data = {"nodes": 1000, "identifiers": 10, "adversaries": adversaries}
    with pytest.raises(ScenarioError, match=message):
        from_dict(data)


def test_a_rival_of_a_witnessed_event_is_refused_and_caught() -> None:
    sc = small("rival-refused")
    r = run(sc).results
    rivals = r["rivals"]
    submitted = sc.adversaries.rivals * sc.witnesses_per_id
    assert rivals["signed"] == sc.adversaries.rivals
    assert rivals["answers"] == {"conflict": submitted}  # every witness, none receipting
    assert rivals["receipts"] == 0
    assert rivals["kept_by_witnesses"] == submitted  # each in its duplicitous-event log
    assert rivals["accepted_by_witnesses"] == rivals["accepted_by_watchers"] == 0
    assert rivals["first_held_by_watchers"] == sc.adversaries.rivals * sc.watchers
    assert r["detected_fraction"] == 1.0  # from the witnesses' gossip of what they refused
    assert rivals["ruled_fraction"] == 1.0  # and the judge's rulings reach every watcher
    assert r["invalid_dropped"] == 0  # evidence and rulings go one per payload, as the runtime's
    assert r["false_alarms"] == 0 and r["nodes_killed"] == 0
    assert r["delivery_ratio"] == 1.0 and r["events_reaching_every_watcher"] == r["events"]


def test_a_fork_fools_a_victim_until_it_checks_with_the_watchers() -> None:
    sc = small("fork-to-victim")
    outcome = run(sc)
    r = outcome.results
    forks = r["forks"]
    assert forks["shown"] == forks["fooled"] == sc.adversaries.forks  # it validates alone
    assert forks["detected"] == sc.adversaries.forks
    assert forks["verdicts"] == {"duplicitous": sc.adversaries.forks * sc.watchers}
    assert 0 < forks["detect_ms"]["max"] < 2000
    assert forks["accepted_by_watchers"] == 0
    assert forks["first_held_by_watchers"] == sc.adversaries.forks * sc.watchers
    assert r["detected_fraction"] == 1.0
    assert r["colluders_named_fraction"] == 1.0  # the fork's receipts name them
    assert forks["ruled_fraction"] == 1.0
    assert r["false_alarms"] == 0
    # The same check of an honest identifier's KEL finds every watcher consistent.
    world = outcome.record.world
    attackers = set(world.attacks.forking) if world.attacks else set()
    node = next(n for n in world.controller_ids[sc.adversaries.forks :] if n not in attackers)
    ctl = world.controller(node)
    ident = ctl.identity("id")
    case = Case(ident.prefix, ident.sn, ident.last_said, ident.last_said)
    Victim(world, world.relay_ids[-1], case).check(ctl.export("id"))
    world.sim.run(world.sim.now + 5.0)
    assert case.verdict is kelcheck.Exit.CONSISTENT
    assert {c.verdict for c in case.checked} == {"consistent"}


def test_malformed_frames_kill_no_node_and_cost_honest_traffic_nothing() -> None:
    r = run(small("malformed-frames")).results
    bad = r["malformed"]
    kinds = {k.split()[1] for k in bad["sent"]}
    assert {"random", "truncated", "flipped", "forged", "oversized", "query", "cbor"} <= kinds
    assert {"malformed", "invalid", "bad_query"} <= set(bad["answers"])
    assert bad["graylisting_nodes"] > 0  # gossip scoring cut the senders off
    assert r["nodes_killed"] == 0 and "killed" not in r
    assert r["delivery_ratio"] == 1.0
    assert r["events"] > 0 and r["events_reaching_every_watcher"] == r["events"]


def test_malformed_frames_same_seed_same_results() -> None:
    first = run(small("malformed-frames", duration=10.0)).results
    again = run(small("malformed-frames", duration=10.0)).results
    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)


def test_a_role_that_raises_is_killed_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The simulator is honest about deaths: witnesses whose step raises on a request from a
    node with no identity (the malformed senders) die, and the run goes on without them."""
    step = Witness.step

    def fragile(self: Witness, event: Input, now: float) -> Any:
        if isinstance(event, Request) and not event.peer:
            raise ValueError("a frame this witness could not take")
        return step(self, event, now)

    monkeypatch.setattr(Witness, "step", fragile)
    outcome = run(small("malformed-frames", duration=10.0))
    r = outcome.results
    world = outcome.record.world
    assert r["nodes_killed"] == len(world.killed) > 0
    assert {k["role"] for k in r["killed"]} == {"witness"}
    assert all("ValueError" in k["error"] for k in r["killed"])
    assert set(world.killed) <= world.links.down


def test_the_cli_summary_shows_what_the_attacks_did(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "rival-refused", "--nodes", "250", "--set", "duration=25", "--quiet"]
    assert cli.main([*argv, "--out", str(tmp_path), "--no-plots"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rivals = [line.split(None, 1) for line in lines if line.strip().startswith("rivals")]
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(rivals) == 1 and json.loads(rivals[0][1]) == results["rivals"]
    assert any(line.split() == ["nodes_killed", "0"] for line in lines)
    assert not any(line.strip().startswith(("forks", "malformed")) for line in lines)


@pytest.mark.parametrize(
    ("name", "named"),
    [
        ("rival-refused", "adversaries.rivals"),
        ("fork-to-victim", "adversaries.forks"),
        ("malformed-frames", "adversaries.malformed_senders"),
        ("sybil-30pct", "adversaries.sybil_fraction"),
        ("eclipse-watcher", "adversaries.eclipsed_watchers"),
        ("partition-heal", "partition"),
        ("churn", "churn"),
    ],
)
def test_real_nodes_refuse_an_attack_they_would_leave_out(name: str, named: str) -> None:
    with pytest.raises(ScenarioError, match=rf"--real runs .* not .*{re.escape(named)}"):
        run_real(load(name))

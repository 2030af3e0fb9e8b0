"""Seeing a running node: `dkms-node status`, `/health`, the peer log and SIGHUP, on real
`dkms-node run` processes on 127.0.0.1 (`testing/cluster.py`). Every wait is on a condition,
bounded; every process is stopped when its test ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dkms.node.runtime.control import SOCKET_FILE
from dkms.node.testing.cluster import BIN, NodeProcess, wait_until

pytestmark = pytest.mark.slow  # real processes

WAIT = 30.0  # seconds for a condition between processes on a loaded machine


def dkms_node(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "dkms-node"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def status(node: NodeProcess) -> dict[str, Any]:
    done = dkms_node("status", "--data-dir", str(node.data_dir), "--json")
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def answering(node: NodeProcess) -> NodeProcess:
    """`node` once its control socket answers (it prints its introduction a little before)."""

    def answers() -> bool:
        done = dkms_node("status", "--data-dir", str(node.data_dir), "--json")
        return done.returncode == 0

    wait_until(f"{node.data_dir.name} answering status", answers, WAIT, every=0.1)
    return node


def health(node: NodeProcess) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{node.metrics_port}/health"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture
def nodes() -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    yield started
    for node in started:
        node.stop()


def test_status_and_health_follow_a_neighbour_coming_and_going(
    tmp_path: Path, nodes: list[NodeProcess]
) -> None:
    first = answering(NodeProcess(tmp_path / "w0", [], []))
    nodes.append(first)
    code, body = health(first)
    assert (code, body["reasons"]) == (503, ["no connected neighbours"])
    alone = status(first)
    assert alone["prefix"] == first.prefix and alone["role"] == "witness"
    assert alone["introductions"] == [first.intro]
    assert alone["peers"] == [] and alone["health"]["status"] == "unhealthy"
    assert alone["kels"] == 0 and alone["store"]["quota"] == 4 << 30
    # The signature counts (benchmarks/network.py's crypto floor): none from peers yet.
    assert first.metric("dkms_gossip_signatures_checked_total") == 0.0
    assert first.metric("dkms_receipts_signed_total") == 0.0
    checked = first.metric("dkms_signatures_checked_total")
    assert checked is not None

    second = NodeProcess(tmp_path / "w1", [], [first.intro])
    nodes.append(second)
    wait_until("/health 200 on the first node", lambda: health(first)[0] == 200, WAIT)
    assert health(first)[1] == {"status": "ok", "peers": 1, "reasons": []}

    def meshed() -> bool:
        mesh = status(second)["mesh"]
        return bool(mesh) and all(size == 1 for size in mesh.values())

    wait_until("the second node's mesh holds the first", meshed, WAIT)

    def heard_signed() -> bool:  # the second node's location record, on gossip
        gossip = first.metric("dkms_gossip_signatures_checked_total") or 0.0
        return gossip >= 1 and (first.metric("dkms_signatures_checked_total") or 0.0) > checked

    wait_until("the first node counts the signatures it checked", heard_signed, WAIT)
    seen = status(second)
    assert [(p["prefix"], p["direction"]) for p in seen["peers"]] == [(first.prefix, "out")]
    assert seen["peers"][0]["address"] == first.intro.split("@", 1)[1]
    assert isinstance(seen["peers"][0]["score"], float)
    assert [(p["prefix"], p["direction"]) for p in status(first)["peers"]] == [
        (second.prefix, "in")
    ]
    human = dkms_node("status", "--data-dir", str(second.data_dir))
    assert human.returncode == 0, human.stderr
    assert f"witness {second.prefix}, up " in human.stdout
    assert "health:   ok" in human.stdout and "peers:    1 (0 in, 1 out)" in human.stdout
    wait_until("the join logged", lambda: f"peer joined: {second.prefix}" in first.log(), WAIT)

    second.stop()
    wait_until("the leave logged", lambda: f"peer left: {second.prefix}" in first.log(), WAIT)
    wait_until("/health 503 again", lambda: health(first)[0] == 503, WAIT)
    assert "Traceback" not in first.log() + second.log()


def test_status_of_a_stopped_or_killed_node_is_one_line(
    tmp_path: Path, nodes: list[NodeProcess]
) -> None:
    node = answering(NodeProcess(tmp_path / "w0", [], []))
    nodes.append(node)
    sock = node.data_dir / SOCKET_FILE
    assert status(node)["pid"] == node.process.pid
    assert os.stat(sock).st_mode & 0o777 == 0o600
    info = dkms_node("info", "--data-dir", str(node.data_dir), "--json")
    assert json.loads(info.stdout)["running"] is True

    node.stop()  # SIGTERM: the socket goes with the node
    assert not sock.exists()
    stopped = dkms_node("status", "--data-dir", str(node.data_dir))
    assert stopped.returncode == 1
    assert stopped.stdout == ""
    assert stopped.stderr == f"dkms-node: no node is running in {node.data_dir}\n"
    info = dkms_node("info", "--data-dir", str(node.data_dir))
    assert info.returncode == 0
    assert f"address:  {node.intro}\n          (last seen when it ran; not running now)\n" in (
        info.stdout
    )

    again = answering(node.restart())
    nodes.append(again)
    again.process.send_signal(signal.SIGKILL)
    again.process.wait(10)
    assert sock.exists(), "a killed node leaves its socket behind"
    killed = dkms_node("status", "--data-dir", str(node.data_dir), "--json")
    assert (killed.returncode, killed.stdout) == (1, "")
    assert killed.stderr == f"dkms-node: no node is running in {node.data_dir}\n"

    third = answering(again.restart())  # the stale socket is replaced
    nodes.append(third)
    assert status(third)["pid"] == third.process.pid


def test_sighup_rereads_the_log_level_and_the_node_runs_on(
    tmp_path: Path, nodes: list[NodeProcess]
) -> None:
    config = tmp_path / "node.toml"
    config.write_text('log_level = "info"\n')
    node = answering(NodeProcess(tmp_path / "w0", ["--config", str(config)], []))
    nodes.append(node)
    assert "DEBUG" not in node.log()
    config.write_text('log_level = "debug"\n')
    node.process.send_signal(signal.SIGHUP)
    line = f"INFO SIGHUP: log level info -> debug (from {config})"
    wait_until("the SIGHUP line", lambda: line in node.log(), WAIT)
    status(node)  # something happens that logs at debug: the control request's dialogue
    wait_until("a DEBUG line", lambda: " DEBUG " in node.log().split(line, 1)[1], WAIT)
    assert node.alive()
    assert status(node)["health"]["status"] == "unhealthy"  # alone, and alive

    plain = answering(NodeProcess(tmp_path / "w1", [], []))
    nodes.append(plain)
    plain.process.send_signal(signal.SIGHUP)
    ignored = "SIGHUP ignored: started without --config"
    wait_until("the ignored line", lambda: ignored in plain.log(), WAIT)
    assert plain.alive() and status(plain)["prefix"] == plain.prefix


def test_sigusr1_writes_what_every_task_waits_on_and_the_node_runs_on(
    tmp_path: Path, nodes: list[NodeProcess]
) -> None:
    node = answering(NodeProcess(tmp_path / "w0", [], []))
    nodes.append(node)
    node.process.send_signal(signal.SIGUSR1)
    said = "SIGUSR1: every task and what it waits on in "
    wait_until("the SIGUSR1 line", lambda: said in node.log(), WAIT)
    path = Path(node.log().split(said, 1)[1].splitlines()[0])
    assert path.parent == node.data_dir and path.name.startswith("tasks-")
    assert path.stat().st_mode & 0o777 == 0o600
    dump = path.read_text()
    # The tree from the root down, each parked task with where it waits.
    assert dump.startswith("- "), dump[:200]
    assert "(running: it writes this)" in dump
    assert "GroupCommitter.run\n          run (dkms/node/runtime/loop.py:" in dump
    assert "trio/" in dump  # parked in trio's own code
    assert node.alive() and status(node)["prefix"] == node.prefix

"""Operable across machines (issue 13), with `dkms-node run` processes as an operator runs them.

Each node listens on 0.0.0.0 and announces its own loopback address, 127.0.0.2 and up: every
address used stays on this machine, but no node can be reached at the address it listens on,
only at the one it announces, as on separate machines.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from dkms.node.testing.cluster import Cluster, NodeProcess, free_port, wait_until

pytestmark = pytest.mark.slow  # real processes


def announced(root: Path, name: str, n: int, args: list[str], bootstrap: list[str]) -> NodeProcess:
    """A node listening on every interface, announcing /ip4/127.0.0.N/tcp/PORT."""
    port = free_port()
    return NodeProcess(
        root / name,
        [*args, "--announce", f"/ip4/127.0.0.{n}/tcp/{port}"],
        bootstrap,
        listen=f"/ip4/0.0.0.0/tcp/{port}",
    )


def peers(node: NodeProcess) -> float:
    return node.metric("dkms_peers") or 0.0


@pytest.mark.timeout(120)
def test_a_witness_started_before_its_bootstrap_peer_joins_it_once_it_is_up(
    tmp_path: Path,
) -> None:
    boot = announced(tmp_path, "boot", 2, ["--role", "witness"], [])
    intro = boot.intro
    assert intro.endswith(boot.args[-1])  # it introduces itself with the announced address
    boot.stop()
    late = announced(tmp_path, "late", 3, ["--role", "witness"], [intro])
    try:
        wait_until(
            "the bootstrap failure logged",
            lambda: "bootstrap peer" in late.log() and "unreachable" in late.log(),
            30,
            every=0.1,
        )
        boot = boot.restart()
        try:
            took = wait_until(
                "the witness joined its bootstrap peer",
                functools.partial(lambda n: peers(n) >= 1, late),
                30,
                every=0.1,
            )
            assert peers(boot) >= 1
        finally:
            boot.stop()
    finally:
        late.stop()
    assert "Traceback" not in late.log()
    # The figure the issue asks for (within 10 s) is reported, not asserted: CI machines are
    # shared. With the back-off capped at 5 s it is about 1-6 s on a quiet machine.
    print(f"\njoined {took:.1f} s after its bootstrap peer came up")


@pytest.mark.timeout(300)
def test_six_nodes_on_every_interface_found_by_prefix_through_one_bootstrap(
    tmp_path: Path,
) -> None:
    cluster = Cluster(tmp_path)
    with cluster:
        # The governance identifier (local only) and its prefix.
        assert cluster.dkms("id", "create", "gov", "--toad", "0").returncode == 0
        gov = json.loads(cluster.dkms("id", "show", "gov", "--json").stdout)["prefix"]
        witnesses: list[NodeProcess] = []
        for n in range(2, 6):  # each bootstrapped from the one before: no full mesh given
            boot = [witnesses[-1].intro] if witnesses else []
            witnesses.append(announced(tmp_path, f"w{n}", n, ["--role", "witness"], boot))
        cluster.nodes += witnesses
        first = witnesses[0].intro
        # Nodes introduce themselves with what they announce, never 0.0.0.0.
        assert [w.intro.split("@")[1].split("/")[2] for w in witnesses] == [
            f"127.0.0.{n}" for n in range(2, 6)
        ]
        watcher_args = ["--role", "watcher", "--governance", gov]
        watchers = []
        for n in (6, 7):  # bootstrapped from one witness only, before any roster exists
            watchers.append(announced(tmp_path, f"v{n}", n, watcher_args, [witnesses[n - 6].intro]))
        cluster.nodes += watchers
        v = [w.prefix for w in watchers]
        by_prefix = ["--bootstrap", first]

        # The roster, handed to the last witness by its prefix (found once its record has
        # reached the first witness); the witnesses keep it and gossip it.
        roles = ["--watcher", *v, "--juror", *v, "--judge", v[0]]
        create_roster = ["governance", "roster", "create", "gov", *roles]
        create_roster += ["--publish-to", witnesses[-1].prefix, *by_prefix]
        wait_until(
            "the roster handed to the last witness, by prefix",
            lambda: cluster.dkms(*create_roster).returncode == 0,
            60,
        )
        for watcher in watchers:
            wait_until(
                f"{watcher.data_dir.name} holds the roster",
                functools.partial(roster_epoch_is, cluster, watcher, 1, by_prefix),
                30,
            )
        # alice's witnesses named by prefix only, given one bootstrap.
        create = ["id", "create", "alice", "--toad", "3", *by_prefix]
        for witness in witnesses:
            create += ["--witness", witness.prefix]
        made = cluster.dkms(*create)
        assert made.returncode == 0, made.stderr.decode()
        book = cluster.home / "witnesses.json"  # no hand-kept addresses: found each time
        assert not book.exists() or json.loads(book.read_text()) == {}, book.read_text()
        done = cluster.dkms("id", "interact", "alice", "--data", '{"n": 1}', *by_prefix)
        assert done.returncode == 0, done.stderr.decode()
        alice = json.loads(cluster.dkms("id", "show", "alice", "--json").stdout)["prefix"]
        for watcher in watchers:
            wait_until(
                f"{watcher.data_dir.name} holds alice at sn 1",
                functools.partial(state_sn_is, cluster, alice, watcher.prefix, 1, by_prefix),
                30,
            )
        # Key state from a witness named by its prefix.
        asked = cluster.dkms("keystate", alice, "--from", witnesses[1].prefix, "--json", *by_prefix)
        assert asked.returncode == 0, asked.stderr.decode()
        state = json.loads(asked.stdout)
        assert state["sn"] == 1 and state["verified"] is True
        assert cluster.dead() == []
    for node in cluster.nodes:
        assert "Traceback" not in node.log(), node.log()[-3000:]


def roster_epoch_is(
    cluster: Cluster, watcher: NodeProcess, epoch: int, by_prefix: list[str]
) -> bool:
    shown = cluster.dkms(
        "governance", "roster", "show", "--from", watcher.prefix, "--json", *by_prefix
    )
    return shown.returncode == 0 and json.loads(shown.stdout)["epoch"] == epoch


def state_sn_is(cluster: Cluster, prefix: str, node: str, sn: int, by_prefix: list[str]) -> bool:
    asked = cluster.dkms("keystate", prefix, "--from", node, "--json", *by_prefix)
    return asked.returncode == 0 and json.loads(asked.stdout).get("sn") == sn

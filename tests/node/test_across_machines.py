"""Operable across machines (issue 13), with `dkms-node run` processes as an operator runs them.

Each node listens on 0.0.0.0 and announces its own loopback address, 127.0.0.2 and up: every
address used stays on this machine, but no node can be reached at the address it listens on,
only at the one it announces, as on separate machines.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from dkms.node.testing.cluster import NodeProcess, free_port, wait_until

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

"""Nodes found by prefix alone: location records gossiped between real nodes, and the `dkms`
commands naming witnesses and nodes by bare prefix with one `--bootstrap`.

Three witnesses run in-process (`daemon.serve`: real libp2p hosts on 127.0.0.1, SQLite stores):
B first, then A and C, each told only of B. Each publishes its own signed location record;
A's reaches C (which was told only of B), and the commands run through `amain` as the command
line runs them. A hostile bootstrap (a real host answering location queries with records that
do not fit) shows what the client checks.
"""

from __future__ import annotations

import functools
import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import cbor2
import pytest
import trio

from dkms.node.cli.main import amain, main
from dkms.node.client.home import Options
from dkms.node.client.keystore import MINIMUM
from dkms.node.config import NodeConfig
from dkms.node.daemon import serve
from dkms.node.p2p import P2PHost, open_host
from dkms.node.roles.codes import Code
from dkms.node.roles.controller import RetryPolicy
from dkms.node.roles.effects import Surface
from dkms.node.roles.witness import Witness
from dkms.node.runtime.loop import Runtime
from dkms.node.testing.keys import node_signer, seed
from dkms.protocol.location import LocationRecord, read_record

pytestmark = pytest.mark.slow  # real time: records go out 2 s after a node's first neighbour

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
PASS = "correct horse battery staple"
OPTIONS = Options(cost=MINIMUM, retry=RetryPolicy(first=0.05, cap=0.5, attempts=4))
WAIT = 60.0  # seconds for records to spread: +2 s, else +10 s after the first neighbour
Capture = pytest.CaptureFixture[str]


@dataclass
class Node:
    host: P2PHost
    runtime: Runtime

    @property
    def prefix(self) -> str:
        return self.host.prefix

    @property
    def intro(self) -> str:
        return self.host.introduction

    @property
    def role(self) -> Witness:
        assert isinstance(self.runtime.role, Witness)
        return self.runtime.role


@asynccontextmanager
async def three(tmp_path: Path) -> AsyncIterator[tuple[Node, Node, Node]]:
    """Witnesses B, then A and C, each bootstrapped from B alone."""
    async with trio.open_nursery() as nursery:

        async def start(name: str, bootstrap: list[str]) -> Node:
            runtimes: list[Runtime] = []
            config = NodeConfig(data_dir=tmp_path / name, listen=LOOPBACK, bootstrap=bootstrap)
            host = await nursery.start(
                functools.partial(serve, config, announce=lambda _: None, on_start=runtimes.append)
            )
            return Node(host, runtimes[0])

        b = await start("b", [])
        a = await start("a", [b.intro])
        c = await start("c", [b.intro])
        yield a, b, c
        nursery.cancel_scope.cancel()


async def until(node: Node, done: Callable[[], bool]) -> None:
    """Return once `done()` holds, checked after each step of `node`'s runtime (bounded)."""
    with trio.fail_after(WAIT):
        while not done():
            await node.runtime.changed.wait()


async def dkms(home: Path, *argv: str) -> int:
    return await amain(["--home", str(home), *argv], OPTIONS)


def one_error_line(capsys: Capture) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_records_spread_and_commands_find_nodes_by_prefix(
    tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DKMS_PASSPHRASE", PASS)
    home = tmp_path / "home"
    async with three(tmp_path) as (a, b, c):
        await until(c, lambda: c.role.locations.get(a.prefix) is not None)
        held = c.role.locations.get(a.prefix)
        assert held is not None and read_record(held.raw) == held
        assert list(held.addresses) == [str(i.addr) for i in a.host.introductions()]
        await until(b, lambda: all(b.role.locations.get(n.prefix) for n in (a, c)))

        # An identifier whose witnesses are named by prefix only, found through B.
        boot = ["--bootstrap", b.intro]
        witnesses = ["--witness", a.prefix, "--witness", b.prefix, "--witness", c.prefix]
        assert await dkms(home, *boot, "id", "create", "alice", *witnesses) == 0
        out = capsys.readouterr().out
        prefix = out.split()[2]
        assert "receipts 3" in out
        assert not (home / "witnesses.json").exists()  # learnt from the network, not a book
        for node in (a, b, c):
            assert node.role.validator.kel(prefix) is not None

        # Its next event: none of its witnesses is in the book; the bootstrap says where.
        data = ["--data", '{"d": "EABC"}']
        assert await dkms(home, "--bootstrap", c.intro, "id", "interact", "alice", *data) == 0
        assert "receipts 3" in capsys.readouterr().out

        # Asking A, named by prefix, where C (which heard A's record through B) says it is;
        # the option may follow the command too.
        argv = ["keystate", prefix, "--from", a.prefix, "--bootstrap", c.intro]
        assert await dkms(home, *argv) == 0
        out = capsys.readouterr().out
        assert f"according to {a.prefix}" in out and "verified: the KEL" in out

        # A stale address in the book: the bootstrap is asked where A is now.
        book = {a.prefix: f"{a.prefix}@/ip4/127.0.0.1/tcp/{dead_port()}"}
        (home / "witnesses.json").write_text(json.dumps(book))
        assert await dkms(home, *boot, "id", "interact", "alice", *data) == 0
        assert "receipts 3" in capsys.readouterr().out
        assert await dkms(home, "id", "interact", "alice", *data) == 1  # no bootstrap: stuck
        assert a.prefix in one_error_line(capsys)


async def test_a_prefix_the_bootstrap_does_not_know_is_one_line(
    tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DKMS_PASSPHRASE", PASS)
    home = tmp_path / "home"
    unknown = node_signer(42).verfer
    async with three(tmp_path) as (a, b, _):
        boot = ["--bootstrap", b.intro]
        assert await dkms(home, *boot, "keystate", "EAAA", "--from", unknown) == 1
        line = one_error_line(capsys)
        assert line == f"dkms: the bootstrap node {b.prefix} knows no address of {unknown}"
        argv = ["id", "create", "bob", "--witness", a.intro, "--witness", unknown]
        assert await dkms(home, *boot, *argv) == 1
        assert one_error_line(capsys).endswith(f"knows no address of {unknown}")
        assert not (home / "keys").exists()  # nothing was made
        monkeypatch.setenv("DKMS_BOOTSTRAP", b.intro)  # the environment names it too
        assert await dkms(home, "kel", "export", "EAAA", "--from", unknown) == 1
        assert one_error_line(capsys).endswith(f"knows no address of {unknown}")


def test_a_bare_prefix_needs_a_bootstrap(capsys: Capture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DKMS_BOOTSTRAP", raising=False)
    node = node_signer(1).verfer
    for argv in (
        ["keystate", "EAAA", "--from", node],
        ["governance", "roster", "show", "--from", node],
        ["evidence", "list", "--from", node],
    ):
        assert main(argv) == 1
        line = one_error_line(capsys)
        assert line == (
            f"dkms: {node} is a bare prefix and no bootstrap node is given: add --bootstrap"
            " PREFIX@MULTIADDR (or set DKMS_BOOTSTRAP) to find it by prefix"
        )
    assert main(["keystate", "EAAA", "--from", "Bnot-a-prefix"]) == 1
    assert "expected PREFIX@MULTIADDR, or a node prefix" in one_error_line(capsys)
    assert main(["--bootstrap", "nonsense", "keystate", "EAAA", "--from", node]) == 1
    assert one_error_line(capsys).startswith("dkms: bad --bootstrap (or DKMS_BOOTSTRAP): ")


@pytest.mark.parametrize("answer", ["another node's", "forged", "garbage", "undialable"])
async def test_what_a_bootstrap_answers_is_checked(answer: str, capsys: Capture) -> None:
    """A bootstrap that answers for A with something else: the client says so, dials nothing."""
    a, other = node_signer(5), node_signer(6)
    good = LocationRecord.sign(a, ["/ip4/127.0.0.1/tcp/9"], 1)
    replies = {
        "another node's": LocationRecord.sign(other, ["/ip4/127.0.0.1/tcp/9"], 1).raw,
        "forged": good.raw.replace(good.signed.signature, bytes(64)),
        "garbage": b"\xa1\x61x\x01",
        "undialable": LocationRecord.sign(a, ["/ip4/127.0.0.1/udp/9", "/unix/x"], 1).raw,
    }
    why = {
        "another node's": f"with the location record of another node ({other.verfer})",
        "forged": "that does not verify: the location record of",
        "garbage": "that does not verify:",
        "undialable": "names no address this client can dial",
    }

    async def handler(peer: str, payload: bytes) -> tuple[Code, bytes, str]:
        assert cbor2.loads(payload) == {"t": "loc", "i": a.verfer}
        return Code.OK, replies[answer], ""

    with trio.fail_after(30):
        async with open_host(seed(7), LOOPBACK) as boot:
            boot.handle(Surface.QUERY.value, handler)
            argv = ["--bootstrap", boot.introduction, "keystate", "EAAA", "--from", a.verfer]
            assert await amain(argv, OPTIONS) == 1
    line = one_error_line(capsys)
    if answer == "undialable":
        assert line == f"dkms: the location record of {a.verfer} {why[answer]} (" + (
            "/ip4/127.0.0.1/udp/9, /unix/x)"
        )
    else:
        assert line.startswith(f"dkms: the bootstrap node {boot.prefix} answered for {a.verfer}")
        assert why[answer] in line, line

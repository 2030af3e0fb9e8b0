"""The JSON API over real HTTP on 127.0.0.1, from real nodes (libp2p hosts, SQLite stores).

4 witnesses and 2 rostered watchers (`test_duplicity_network.network`); each watcher's HTTP
app (`node_app`, what `dkms-node run --http-listen` serves) runs on that watcher's runtime.
An honest identifier is `ok`; one whose keys sign two interactions shown to different
witnesses is `duplicitous` over HTTP, with evidence `dkms evidence verify` accepts; a fork
kept off the gossip, posted to `/check`, becomes evidence. A witness started with
`http_listen` serves the API itself, and a port in use stops it with one line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from dkms.node.cli.main import main
from dkms.node.config import NodeConfig
from dkms.node.daemon import NodeError
from dkms.node.http import HttpLimits, node_app, serve_http
from dkms.node.runtime.loop import Runtime
from dkms.node.testing.localnet import LOOPBACK, start_node

from .test_duplicity_network import Net, incept, incept_and_interact, network, signed_ixn
from .test_http_app import Got, fetch
from .test_kel_check import hidden_fork, served

Capture = pytest.CaptureFixture[str]
UNKNOWN = "E" + "A" * 43  # a well-formed prefix no node holds


@asynccontextmanager
async def http_of(net: Net) -> AsyncIterator[list[int]]:
    """Each watcher's HTTP API on 127.0.0.1; the ports, in the watchers' order."""
    ports = []
    async with trio.open_nursery() as nursery:
        for host in net.watchers:
            runtime = net.runtimes[host.prefix]
            app = node_app(runtime, host.prefix, watcher=True, limits=HttpLimits(), timeout=10.0)
            url: str = await nursery.start(serve_http, app, "127.0.0.1", 0)
            ports.append(int(url.rsplit(":", 1)[1]))
        yield ports
        nursery.cancel_scope.cancel()


def verify_offline(tmp_path: Path, capsys: Capture, got: Got) -> str:
    """`dkms evidence verify` on the JSON answer; what it printed (it must exit 0)."""
    path = tmp_path / "answer.json"
    path.write_bytes(got.body)
    capsys.readouterr()
    assert main(["evidence", "verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert "INVALID" not in out
    return out


async def test_standing_evidence_and_checks_over_http(tmp_path: Path, capsys: Capture) -> None:
    with trio.fail_after(120):
        async with network(tmp_path) as net, http_of(net) as ports:
            alice = await incept_and_interact(net, "alice", 1, "hello")
            got = await fetch(ports[0], f"/keystate/{alice}")
            assert got.status == 200 and got.headers["content-type"] == "application/json"
            state = got.json()
            assert state["standing"] == "ok" and state["duplicitous_from"] is None
            assert (
                state["sn"] == 1 and state["d"] == net.client.controller.identity("alice").last_said
            )
            assert state["evidence"] == [] and state["rulings"] == []
            assert state["watcher"] == net.watchers[0].prefix
            assert state["agreement"]["roster"] == 2
            assert (await fetch(ports[0], f"/keystate/{UNKNOWN}")).json()["standing"] == "unknown"

            # The KEL alice shows, checked: consistent.
            got = await fetch(ports[1], "/check", "POST", served(net, alice))
            assert got.status == 200, got.body
            check = got.json()
            assert check["verdict"] == "consistent", check
            assert (check["i"], check["events"], check["sn"]) == (alice, 2, 1)

            # eve's keys sign two interactions at sn 1, each shown to two witnesses.
            eve = await incept(net, "eve", 30)
            await net.until(lambda: all(net.watcher(i).validator.kel(eve) for i in (0, 1)))
            a, message_a = signed_ixn(net, "eve", [{"d": "pay bob"}])
            b, message_b = signed_ixn(net, "eve", [{"d": "pay eve"}])
            async with trio.open_nursery() as nursery:
                for witness, message in ((0, message_a), (1, message_a), (2, message_b)):
                    nursery.start_soon(net.submit, witness, message)
                nursery.start_soon(net.submit, 3, message_b)

            def caught(i: int) -> bool:
                return net.watcher(i).holdings.standing(eve, True)[0] == "duplicitous"

            await net.until(lambda: caught(0) and caught(1))
            for port in ports:
                got = await fetch(port, f"/keystate/{eve}")
                state = got.json()
                assert state["standing"] == "duplicitous" and state["duplicitous_from"] == 1
                assert state["evidence"] and all(e["verified"] for e in state["evidence"])
                assert {s for e in state["evidence"] for s in e["events"]} >= {a.said, b.said}
                out = verify_offline(tmp_path, capsys, got)
                assert f"the controller of {eve} signed two different events" in out

            got = await fetch(ports[0], f"/evidence?prefix={eve}")
            held = got.json()
            assert got.status == 200 and held["watcher"] == net.watchers[0].prefix
            assert held["evidence"] and all(e["i"] == eve for e in held["evidence"])
            assert "valid evidence" in verify_offline(tmp_path, capsys, got)
            everything = (await fetch(ports[0], "/evidence")).json()
            assert len(everything["evidence"]) >= len(held["evidence"])
            assert (await fetch(ports[0], f"/evidence?prefix={alice}")).json()["evidence"] == []

            # A fork three colluding witnesses receipted off the gossip: /check makes it
            # evidence, and the watcher's key state says so from then on.
            prefix, a, b, path = await hidden_fork(net, tmp_path)
            assert (await fetch(ports[0], f"/keystate/{prefix}")).json()["standing"] == "ok"
            got = await fetch(ports[0], f"/check?prefix={prefix}", "POST", path.read_bytes())
            check = got.json()
            assert got.status == 200 and check["verdict"] == "duplicitous", check
            assert check["at"] == 1 and check["watcher"] == net.watchers[0].prefix
            assert f"the controller of {prefix} signed two different events" in (
                verify_offline(tmp_path, capsys, got)
            )
            state = (await fetch(ports[0], f"/keystate/{prefix}")).json()
            assert state["standing"] == "duplicitous"
            got = await fetch(ports[0], f"/check?prefix={alice}", "POST", path.read_bytes())
            assert got.status == 400 and "no KEL of" in got.error


async def test_a_node_started_with_http_listen_serves_the_api(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dkms.node")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            runtimes: dict[str, Runtime] = {}
            config = NodeConfig(data_dir=tmp_path / "w", listen=LOOPBACK, http_listen="127.0.0.1:0")
            host = await start_node(nursery, config, runtimes)
            (line,) = [r.getMessage() for r in caplog.records if "HTTP API on" in r.getMessage()]
            found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            assert found is not None, line
            port = int(found.group(1))
            got = await fetch(port, "/openapi.json")
            assert got.status == 200 and "/keystate/{prefix}" in got.json()["paths"]
            got = await fetch(port, f"/keystate/{UNKNOWN}")
            assert got.status == 404 and got.error == f"unknown identifier {UNKNOWN}"
            got = await fetch(port, "/evidence")
            assert got.status == 404 and "this node is a witness" in got.error
            assert host.prefix in runtimes
            # The same port again: the second node stops before serving, with one line.
            again = NodeConfig(
                data_dir=tmp_path / "w2", listen=LOOPBACK, http_listen=f"127.0.0.1:{port}"
            )
            with pytest.raises(BaseException) as caught:  # wrapped by libp2p's nurseries
                await start_node(nursery, again, runtimes)
            leaf = caught.value
            while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
                leaf = leaf.exceptions[0]
            assert isinstance(leaf, NodeError), caught.value
            assert str(leaf) == (
                f"cannot listen on --http-listen 127.0.0.1:{port}: Address already in use"
            )
            nursery.cancel_scope.cancel()

"""keripy's OOBI routes over real HTTP on 127.0.0.1, from real nodes (libp2p hosts, SQLite
stores): a witness's own OOBI (its `icp`, `/loc/scheme`, `/end/role/add`, each as keripy's
witness writes them), an identifier's OOBI through its witness (the KEL with its receipts,
then the witness's signed location), refusals, and the URL a node started with `http_listen`
names."""

from __future__ import annotations

import base64
import json
import logging
import re
from pathlib import Path

import pytest
import trio

from dkms.node.config import NodeConfig
from dkms.node.http import HttpLimits, node_app, serve_http
from dkms.node.http.oobis import CONTENT_TYPE, http_url, own_inception
from dkms.node.runtime.loop import Runtime
from dkms.node.testing.localnet import LOOPBACK, start_node
from dkms.protocol.crypto import Signer
from dkms.protocol.events import Ilk
from dkms.protocol.replies import EndRole, LocScheme, Reply, read_reply, verify_reply
from dkms.protocol.stream import Message, parse_stream

from .test_duplicity_network import incept_and_interact, network
from .test_http_app import fetch

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "keripy-http"
WAN_SEED = "nTQBuMAtroKI82YRU6hyGy8UgY5Yilxo1R1OnuECvq4="  # see tests/protocol/test_replies.py
DT = "2025-01-01T00:00:00.000000+00:00"
UNKNOWN = "E" + "A" * 43


def replies_in(body: bytes) -> list[Reply]:
    """The `rpy` messages at the end of an OOBI body, read (body, then its attachments)."""
    out = []
    at = body.find(b'{"v":"KERI10JSON', 0)
    starts = []
    while at >= 0:
        starts.append(at)
        at = body.find(b'{"v":"KERI10JSON', at + 1)
    for start, end in zip(starts, [*starts[1:], len(body)], strict=True):
        size = int(body[start + 16 : start + 22], 16)
        if b'"t":"rpy"' in body[start : start + size]:
            out.append(read_reply(body[start : start + size], body[start + size : end]))
    return out


def test_our_inception_of_a_witness_is_keripys() -> None:
    step = json.loads((VECTORS / "oobi-witness.json").read_text())
    served = step["exchanges"][0]["response"]["body"].encode()
    ours = own_inception(Signer(base64.b64decode(WAN_SEED), transferable=False))
    size = 0xFD
    assert ours[:size] == served[:size]  # the icp body
    # keripy replays it from its database in a -V group with its first-seen couple (-E);
    # the -A signature inside is ours (Ed25519 signatures are deterministic).
    assert served[size:].startswith(b"-VAn" + ours[size:])


def test_the_http_url_of_a_node() -> None:
    assert http_url("127.0.0.2", 5631, []) == "http://127.0.0.2:5631/"
    assert http_url("::1", 5631, []) == "http://[::1]:5631/"
    announced = ["/dns4/w.example.org/tcp/4001", "/ip4/127.0.0.1/tcp/4001"]
    assert http_url("0.0.0.0", 5631, announced) == "http://w.example.org:5631/"
    assert http_url("::", 80, ["/ip6/2001:db8::7/tcp/4001"]) == "http://[2001:db8::7]:80/"
    assert http_url("0.0.0.0", 80, []) == "http://127.0.0.1:80/"


async def test_oobis_of_a_witness_and_of_an_identifier_it_witnesses(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with network(tmp_path) as net, trio.open_nursery() as nursery:
            witness = net.witnesses[0].prefix
            runtime = net.runtimes[witness]
            signer = runtime.role.signer
            assert isinstance(signer, Signer)
            bound: list[str] = []
            app = node_app(
                runtime,
                witness,
                watcher=False,
                limits=HttpLimits(),
                timeout=10.0,
                oobi=(signer, lambda: bound[0], DT),
            )
            url: str = await nursery.start(serve_http, app, "127.0.0.1", 0)
            bound.append(url + "/")
            port = int(url.rsplit(":", 1)[1])

            got = await fetch(port, f"/oobi/{witness}/controller")
            assert got.status == 200 and got.headers["content-type"] == CONTENT_TYPE
            assert got.headers["keri-aid"] == witness
            (icp,) = [f for f in parse_stream(got.body[: got.body.index(b"-AAB") + 92])]
            assert isinstance(icp, Message) and icp.event.prefix == witness
            assert icp.event.ilk is Ilk.ICP and icp.event.ked["b"] == []
            loc, end = replies_in(got.body)
            assert loc.says == LocScheme(witness, "http", url + "/")
            assert end.says == EndRole(witness, "controller", witness)
            assert verify_reply(loc).ok and verify_reply(end).ok
            assert loc.message.dt == DT
            for same in ("/oobi", f"/oobi/{witness}"):
                again = await fetch(port, same)
                assert again.status == 200 and again.body == got.body
            assert (await fetch(port, f"/oobi/{witness}/witness")).status == 404

            alice = await incept_and_interact(net, "alice", 1, "hello")
            role = runtime.role
            await net.until(lambda: bool(role.key_state(alice)["fully_witnessed"]))
            got = await fetch(port, f"/oobi/{alice}/witness/{witness}")
            assert got.status == 200 and got.headers["content-type"] == CONTENT_TYPE
            assert got.headers["keri-aid"] == alice
            frames = parse_stream(got.body)
            events = [f for f in frames if isinstance(f, Message)]
            assert [e.event.ilk for e in events] == [Ilk.ICP, Ilk.IXN]
            kel = net.client.controller.identity("alice")
            assert events[-1].event.said == kel.last_said
            wits = events[0].event.ked["b"]
            for message in events:
                assert len(message.attachments.wigs) >= 3 and message.attachments.sigs
                assert all(w.index < len(wits) for w in message.attachments.wigs)
            (loc,) = replies_in(got.body)
            assert loc.says == LocScheme(witness, "http", url + "/") and verify_reply(loc).ok
            again = await fetch(port, f"/oobi/{alice}")  # receipts may have come in since
            assert again.status == 200 and again.headers["keri-aid"] == alice
            held = [f.event for f in parse_stream(again.body) if isinstance(f, Message)]
            assert held == [e.event for e in events]

            for path, status in (
                (f"/oobi/{UNKNOWN}/witness/{witness}", 404),
                (f"/oobi/{alice}/witness/{net.witnesses[1].prefix}", 404),
                (f"/oobi/{alice}/watcher", 404),
                ("/oobi/nonsense", 400),
            ):
                refused = await fetch(port, path)
                assert refused.status == status, (path, refused.body)
                assert refused.error
            nursery.cancel_scope.cancel()


async def test_a_node_started_with_http_listen_names_its_url(
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
            got = await fetch(port, "/oobi")
            assert got.status == 200 and got.headers["keri-aid"] == host.prefix
            loc, _ = replies_in(got.body)
            assert loc.says == LocScheme(host.prefix, "http", f"http://127.0.0.1:{port}/")
            assert verify_reply(loc).ok
            nursery.cancel_scope.cancel()

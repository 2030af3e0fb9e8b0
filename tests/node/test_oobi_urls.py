"""Witnesses named by their OOBI URL, and `dkms oobi show`, against real nodes on 127.0.0.1.

Witnesses run in-process (`daemon.serve`: libp2p hosts, SQLite stores) with `--http-listen
127.0.0.1:PORT`; each command runs through `amain(argv)` as the command line runs it. A tiny
trio HTTP server stands in for a node that answers wrongly: garbage, another node's OOBI, the
wrong content type, no location record, a record of another node, too much, nothing at all.
"""

from __future__ import annotations

import functools
import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from dkms.node.cli.main import amain
from dkms.node.client import oobis
from dkms.node.client.home import Options
from dkms.node.client.keystore import MINIMUM
from dkms.node.config import NodeConfig
from dkms.node.http.oobis import CONTENT_TYPE as OOBI_TYPE
from dkms.node.p2p import P2PHost
from dkms.node.roles.controller import RetryPolicy
from dkms.node.runtime.loop import Runtime
from dkms.node.testing.cluster import free_port
from dkms.node.testing.keys import node_signer
from dkms.node.testing.localnet import LOOPBACK, start_node
from dkms.protocol.events import Ilk
from dkms.protocol.location import LocationRecord, read_record
from dkms.protocol.stream import Message, parse_stream

from .test_http_app import fetch

PASS = "correct horse battery staple"
OPTIONS = Options(cost=MINIMUM, retry=RetryPolicy(first=0.05, cap=0.1, attempts=2))
Capture = pytest.CaptureFixture[str]
Answer = tuple[int, str, bytes]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DKMS_PASSPHRASE", PASS)
    return tmp_path / "home"


async def dkms(home: Path, *argv: str) -> int:
    return await amain(["--home", str(home), *argv], OPTIONS)


def one_error_line(capsys: Capture) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dkms: ") and "Traceback" not in err
    return lines[0]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@asynccontextmanager
async def http_witnesses(
    tmp_path: Path, count: int
) -> AsyncIterator[tuple[list[P2PHost], list[int], dict[str, Runtime]]]:
    """`count` witnesses, each serving HTTP on its own port of 127.0.0.1."""
    runtimes: dict[str, Runtime] = {}
    async with trio.open_nursery() as nursery:
        hosts, ports = [], []
        for i in range(count):
            ports.append(free_port())
            config = NodeConfig(
                data_dir=tmp_path / f"w{i}", listen=LOOPBACK, http_listen=f"127.0.0.1:{ports[i]}"
            )
            hosts.append(await start_node(nursery, config, runtimes))
        yield hosts, ports, runtimes
        nursery.cancel_scope.cancel()


def oobi_url(port: int, prefix: str, tail: str = "/controller") -> str:
    return f"http://127.0.0.1:{port}/oobi/{prefix}{tail}"


@asynccontextmanager
async def tiny_server(answer: Callable[[str], Answer | None]) -> AsyncIterator[int]:
    """HTTP/1.1 on a free port of 127.0.0.1: `answer(path)` is (status, content type, body),
    or None to read the request and never answer."""

    async def handle(stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            request += chunk
        got = answer(request.split(b" ", 2)[1].decode())
        if got is None:
            await trio.sleep_forever()
            return
        status, content_type, body = got
        head = (
            f"HTTP/1.1 {status} Whatever\r\ncontent-type: {content_type}\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        await stream.send_all(head.encode() + body)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
        )
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- the way it is meant


async def test_witnesses_named_by_oobi_url_then_oobi_show(
    tmp_path: Path, home: Path, capsys: Capture
) -> None:
    with trio.fail_after(60):
        async with http_witnesses(tmp_path, 4) as (hosts, ports, runtimes):
            w = [h.prefix for h in hosts]
            # The route the client asks second: each node's own signed location record.
            got = await fetch(ports[0], "/dkms/location")
            assert got.status == 200 and got.headers["content-type"] == "application/cbor"
            record = read_record(got.body)
            assert record.prefix == w[0]
            assert str(hosts[0].introduction).split("@")[1] in record.addresses

            # Each URL shape names the node: /oobi/W/controller, /oobi/W, /oobi.
            urls = [
                oobi_url(ports[0], w[0]),
                oobi_url(ports[1], w[1], ""),
                f"http://127.0.0.1:{ports[2]}/oobi",
            ]
            flags = [arg for url in urls for arg in ("--witness", url)]
            assert await dkms(home, "id", "create", "alice", *flags) == 0
            out = capsys.readouterr().out
            assert "created alice" in out and "witnesses 3, bt 3, receipts 3" in out
            aid = out.split()[2]
            for prefix in w[:3]:
                state = runtimes[prefix].role.key_state(aid)
                assert state["fully_witnessed"] and state["b"] == w[:3]

            # The address book holds each as any introduction; the home their HTTP URLs.
            shown = json.loads(await _out(capsys, home, "id", "show", "alice", "--json"))
            assert shown["introductions"] == {h.prefix: str(h.introduction) for h in hosts[:3]}
            kept = json.loads((home / "witness-urls.json").read_text())
            assert kept == {w[i]: f"http://127.0.0.1:{ports[i]}/" for i in range(3)}

            # `oobi show` gives keripy's witness OOBIs, and each answers alice's KEL.
            assert await dkms(home, "oobi", "show", "alice") == 0
            printed = capsys.readouterr().out.split()
            assert printed == [
                f"http://127.0.0.1:{ports[i]}/oobi/{aid}/witness/{w[i]}" for i in range(3)
            ]
            for i, url in enumerate(printed):
                got = await fetch(ports[i], url.split(f":{ports[i]}", 1)[1])
                assert got.status == 200 and got.headers["keri-aid"] == aid
                assert got.headers["content-type"] == OOBI_TYPE
                events = [f for f in parse_stream(got.body) if isinstance(f, Message)]
                assert [e.event.ilk for e in events] == [Ilk.ICP]
                assert events[0].event.prefix == aid and len(events[0].attachments.wigs) == 3
            by_prefix = json.loads(await _out(capsys, home, "oobi", "show", aid, "--json"))
            assert by_prefix["name"] == "alice" and by_prefix["prefix"] == aid
            assert [r["url"] for r in by_prefix["oobis"]] == printed

            # A command naming a node with --from takes its OOBI URL too.
            state = json.loads(
                await _out(capsys, home, "keystate", aid, "--from", urls[1], "--json")
            )
            assert state["fully_witnessed"] and state["sn"] == 0

            # A witness added by PREFIX@MULTIADDR has told us no HTTP address: said, not fatal.
            add = ["--add-witness", str(hosts[3].introduction), "--toad", "4"]
            assert await dkms(home, "id", "rotate", "alice", *add) == 0
            capsys.readouterr()
            assert await dkms(home, "oobi", "show", "alice") == 0
            captured = capsys.readouterr()
            assert len(captured.out.split()) == 3
            assert captured.err.strip() == (
                f"dkms: witness {w[3]}: HTTP address unknown (name the witness by its OOBI URL)"
            )
            listed = json.loads(await _out(capsys, home, "oobi", "show", "alice", "--json"))
            assert listed["oobis"][3] == {
                "witness": w[3],
                "url": None,
                "error": "HTTP address unknown (name the witness by its OOBI URL)",
            }

            # A home that knows none of the HTTP addresses (an older one) gives no URL: status 1.
            other = tmp_path / "other"
            assert (
                await dkms(other, "id", "create", "bob", "--witness", str(hosts[3].introduction))
                == 0
            )
            capsys.readouterr()
            assert await dkms(other, "oobi", "show", "bob") == 1
            assert "no OOBI URL for bob" in one_error_line(capsys)
            assert await dkms(other, "id", "create", "solo") == 0
            capsys.readouterr()
            assert await dkms(other, "oobi", "show", "solo") == 1
            assert "solo has no witnesses" in one_error_line(capsys)
            assert await dkms(other, "oobi", "show", "nobody") == 1
            assert "no identifier named 'nobody'" in one_error_line(capsys)


async def _out(capsys: Capture, home: Path, *argv: str) -> str:
    capsys.readouterr()
    assert await dkms(home, *argv) == 0, capsys.readouterr().err
    return capsys.readouterr().out


# ---------------------------------------------------------------- what goes wrong


async def test_bad_oobi_urls_are_one_line_each(
    tmp_path: Path, home: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(oobis, "OOBI_TIMEOUT", 1.0)
    with trio.fail_after(60):
        async with http_witnesses(tmp_path, 1) as (hosts, ports, _):
            w = hosts[0].prefix
            other = node_signer(7)
            own = (await fetch(ports[0], f"/oobi/{w}/controller")).body
            record = (await fetch(ports[0], "/dkms/location")).body
            foreign = LocationRecord.sign(other, ["/ip4/127.0.0.1/tcp/1"], 1).raw
            # Its signature's last byte changed; a bit flipped, so never back to the same bytes
            # (writing 0x00 there left the record intact whenever that byte was 0x00 already).
            flipped_tail = record[:-1] + bytes([record[-1] ^ 1])
            served: dict[str, Answer | None] = {}

            def answer(path: str) -> Answer | None:
                return served.get(path.split("?", maxsplit=1)[0], (404, "application/json", b"{}"))

            async with tiny_server(answer) as fake:
                cases: list[tuple[str, str, dict[str, Answer | None]]] = [
                    (oobi_url(closed_port(), w), "cannot connect", {}),
                    (oobi_url(ports[0], other.verfer), "answered 404: ", {}),
                    (oobi_url(ports[0], w, "/witness"), "not a node's own OOBI", {}),
                    (f"http://127.0.0.1:{ports[0]}/nothing", "no /oobi in its path", {}),
                    ("http://127.0.0.1:notaport/oobi", "bad OOBI URL", {}),
                    (
                        oobi_url(fake, w),
                        "answered with no CESR stream",
                        {f"/oobi/{w}/controller": (200, OOBI_TYPE, b"\x00garbage\xff")},
                    ),
                    (
                        oobi_url(fake, other.verfer),
                        f"answered for {w}, not for {other.verfer} as its URL says",
                        {f"/oobi/{other.verfer}/controller": (200, OOBI_TYPE, own)},
                    ),
                    (
                        oobi_url(fake, w),
                        "answered text/html, not application/json+cesr",
                        {f"/oobi/{w}/controller": (200, "text/html", own)},
                    ),
                    (
                        oobi_url(fake, w),
                        "answered 500",
                        {f"/oobi/{w}/controller": (500, "text/plain", b"oops")},
                    ),
                    (
                        oobi_url(fake, w),
                        f"answered with over {oobis.MAX_ANSWER} bytes",
                        {f"/oobi/{w}/controller": (200, OOBI_TYPE, own * 100)},
                    ),
                    (
                        oobi_url(fake, w),
                        "/dkms/location answered 404",
                        {f"/oobi/{w}/controller": (200, OOBI_TYPE, own)},
                    ),
                    (
                        oobi_url(fake, w),
                        f"answered for {w} with the location record of another node",
                        {
                            f"/oobi/{w}/controller": (200, OOBI_TYPE, own),
                            "/dkms/location": (200, "application/cbor", foreign),
                        },
                    ),
                    (
                        oobi_url(fake, w),
                        "with a location record that does not verify",
                        {
                            f"/oobi/{w}/controller": (200, OOBI_TYPE, own),
                            "/dkms/location": (200, "application/cbor", flipped_tail),
                        },
                    ),
                    (
                        oobi_url(fake, w),
                        "no answer within 1 s",
                        {f"/oobi/{w}/controller": None},
                    ),
                ]
                for url, said, answers in cases:
                    served.clear()
                    served.update(answers)
                    for argv in (
                        ["id", "create", "x", "--witness", url],
                        ["keystate", w, "--from", url],
                    ):
                        assert await dkms(home, *argv) == 1, (url, argv)
                        line = one_error_line(capsys)
                        assert said in line, (url, line)
                    assert not (home / "witness-urls.json").exists()

                # The same fake passing on what the node signed is as good as the node: its
                # signatures count, not who hands them over; the URL kept is the one it signed.
                served.clear()
                served.update(
                    {
                        f"/oobi/{w}/controller": (200, OOBI_TYPE, own),
                        "/dkms/location": (200, "application/cbor", record),
                    }
                )
                assert await dkms(home, "id", "create", "y", "--witness", oobi_url(fake, w)) == 0
                assert "witnesses 1, bt 1, receipts 1" in capsys.readouterr().out
                kept = json.loads((home / "witness-urls.json").read_text())
                assert kept == {w: f"http://127.0.0.1:{ports[0]}/"}

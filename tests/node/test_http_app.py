"""The HTTP adapter's own logic over real HTTP on 127.0.0.1: routing, limits and errors.

The node behind the app is a stand-in (`Stub`) where a test needs to steer it (a rate limit
with its own clock, a request that blocks); the JSON API's answers from real nodes are in
`test_http_api.py`. Requests go through hypercorn's trio worker (`serve_http`), from the
standard library's `http.client` in a thread, or raw sockets where a client must misbehave.
Every response over 400 is checked to be one JSON line `{"error": ...}`.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import cbor2
import trio

from dkms.node.http import (
    HttpApp,
    HttpLimits,
    HttpRequest,
    HttpResponse,
    Route,
    node_app,
    pseudo_peer,
    serve_http,
)
from dkms.node.http.openapi import DOCUMENT
from dkms.node.roles.codes import Code
from dkms.node.roles.effects import Surface
from dkms.node.runtime.ratelimit import PeerBuckets, RateLimit
from dkms.node.testing.keys import seed
from dkms.protocol.crypto import Signer

PREFIX = "B" + "A" * 43
KNOWN = "E" + "K" * 43


@dataclass
class Stub:
    """A node that answers key state of KNOWN, refuses other prefixes, and records callers."""

    buckets: PeerBuckets | None = None
    peers: list[str] = field(default_factory=list)

    def admit(self, peer: str) -> bool:
        return self.buckets is None or self.buckets.allow(peer, trio.current_time())

    async def answer(self, surface: Surface, peer: str, payload: bytes) -> tuple[Code, bytes, str]:
        self.peers.append(peer)
        ask = cbor2.loads(payload)
        if ask.get("t") == "state" and ask.get("i") == KNOWN:
            return Code.OK, cbor2.dumps({"i": KNOWN, "sn": 0}), ""
        return Code.UNKNOWN, b"", f"unknown identifier {ask.get('i')}"


@dataclass(frozen=True)
class Got:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str:
        """The one line of a JSON error (and nothing else in the body)."""
        assert self.headers["content-type"] == "application/json"
        found = self.json()
        assert list(found) == ["error"] and "\n" not in found["error"], found
        assert "Traceback" not in found["error"]
        text: str = found["error"]
        return text


def _fetch(port: int, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Got:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        got = {k.lower(): v for k, v in response.getheaders()}
        return Got(response.status, got, response.read())
    finally:
        connection.close()


async def fetch(
    port: int,
    path: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Got:
    """One request with http.client, in a thread (it blocks)."""
    return await trio.to_thread.run_sync(_fetch, port, method, path, body, headers or {})


@asynccontextmanager
async def serving(app: HttpApp) -> AsyncIterator[int]:
    """`app` served on 127.0.0.1 (a free port, which is yielded)."""
    async with trio.open_nursery() as nursery:
        url: str = await nursery.start(serve_http, app, "127.0.0.1", 0)
        yield int(url.rsplit(":", 1)[1])
        nursery.cancel_scope.cancel()


def api(node: Stub | None = None, **limits: Any) -> HttpApp:
    return node_app(node or Stub(), PREFIX, watcher=True, limits=HttpLimits(**limits), timeout=5.0)


async def raw(port: int, data: bytes, *, wait: float = 10.0) -> bytes:
    """Send `data` on a new connection and read until the server closes it (within `wait`)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        received = bytearray()
        with trio.fail_after(wait):
            while chunk := await stream.receive_some(65536):
                received += chunk
    return bytes(received)


# ---------------------------------------------------------------- routes


def test_the_openapi_document_describes_every_route_and_no_other() -> None:
    oobi = (Signer(seed(31), transferable=False), lambda: "http://127.0.0.1:1/", "dt")
    served = set()
    for watcher in (True, False):
        app = node_app(Stub(), PREFIX, watcher=watcher, limits=HttpLimits(), timeout=5.0, oobi=oobi)
        served |= {(r.path, r.method.lower()) for r in app.router.routes}
    described = {(path, method) for path, item in DOCUMENT["paths"].items() for method in item}
    assert served == described
    assert DOCUMENT["openapi"].startswith("3.")
    json.dumps(DOCUMENT)  # plain data


async def test_routes_and_their_errors() -> None:
    with trio.fail_after(30):
        node = Stub()
        async with serving(api(node)) as port:
            got = await fetch(port, f"/keystate/{KNOWN}")
            assert got.status == 200 and got.json() == {"i": KNOWN, "sn": 0}
            got = await fetch(port, "/openapi.json")
            assert got.status == 200 and got.json() == DOCUMENT
            got = await fetch(port, "/keystate/" + "E" * 44)
            assert got.status == 404 and got.error == f"unknown identifier {'E' * 44}"
            got = await fetch(port, "/keystate/nonsense")
            assert got.status == 400 and "'nonsense': not an identifier prefix" in got.error
            got = await fetch(port, "/evidence?prefix=bad")
            assert got.status == 400 and "not an identifier prefix" in got.error
            got = await fetch(port, "/nowhere")
            assert got.status == 404 and got.error.startswith("no such path: '/nowhere'")
            got = await fetch(port, "/keystate/")
            assert got.status == 404
            got = await fetch(port, f"/keystate/{KNOWN}", method="POST", body=b"x")
            assert got.status == 405 and got.headers["allow"] == "GET"
            got = await fetch(port, "/check", body=b"")
            assert got.status == 405 and got.headers["allow"] == "POST"
            got = await fetch(port, "/check", method="POST", body=b"")
            assert got.status == 400 and got.error.startswith("no KEL")
            got = await fetch(port, "/check", method="POST", body=b"\xff garbage")
            assert got.status == 400 and got.error.startswith("the KEL does not validate")
        # Callers are named for their address, never as a node prefix.
        assert set(node.peers) == {"http:127.0.0.1"}


async def test_a_witness_says_evidence_and_checks_are_for_watchers() -> None:
    with trio.fail_after(30):
        app = node_app(Stub(), PREFIX, watcher=False, limits=HttpLimits(), timeout=5.0)
        async with serving(app) as port:
            for method, path in (("GET", "/evidence"), ("POST", "/check")):
                got = await fetch(port, path, method=method, body=b"x")
                assert got.status == 404 and "only watchers serve this" in got.error


async def test_a_failing_handler_is_one_line_500() -> None:
    async def broken(request: HttpRequest) -> HttpResponse:
        raise KeyError("secret detail")

    async def slow(request: HttpRequest) -> HttpResponse:
        await trio.sleep_forever()
        raise AssertionError

    routes = [Route("GET", "/broken", broken), Route("GET", "/slow", slow)]
    app = HttpApp(Stub(), routes, HttpLimits(handler_timeout=0.2))
    with trio.fail_after(30):
        async with serving(app) as port:
            got = await fetch(port, "/broken")
            assert got.status == 500 and got.error == "internal error (KeyError)"
            got = await fetch(port, "/slow")
            assert got.status == 504 and got.error == "not answered within 0.2 s"


def test_pseudo_peers_are_stable_per_address_and_never_a_prefix() -> None:
    first = pseudo_peer({"client": ("127.0.0.7", 50000)})
    assert first == pseudo_peer({"client": ["127.0.0.7", 50001]}) == "http:127.0.0.7"
    assert pseudo_peer({"client": ("::1", 1)}) != first
    assert pseudo_peer({}) == "http:unknown"


# ---------------------------------------------------------------- limits


async def test_bodies_over_the_limit_are_refused() -> None:
    with trio.fail_after(30):
        async with serving(api(max_body=1000)) as port:
            got = await fetch(port, "/check", method="POST", body=b"x" * 1001)
            assert got.status == 413 and "over the limit of 1000" in got.error
            # Declared small (chunked: no length), sent large: cut when read past the limit.
            chunked = (
                b"POST /check HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                + (b"200\r\n" + b"y" * 512 + b"\r\n") * 3
                + b"0\r\n\r\n"
            )
            answer = await raw(port, chunked)
            assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
            assert b'{"error": "body over the limit of 1000 bytes"}' in answer


async def test_a_client_that_dribbles_its_body_is_cut_off() -> None:
    with trio.fail_after(30):
        async with serving(api(read_timeout=0.5)) as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                head = b"POST /check HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc"
                await stream.send_all(head)
                received = bytearray()
                while chunk := await stream.receive_some(65536):
                    received += chunk
            assert received.startswith(b"HTTP/1.1 408"), bytes(received[:100])
            assert b"request body not received within 0.5 s" in received


async def test_headers_over_the_limit_are_refused() -> None:
    with trio.fail_after(30):
        async with serving(api(header_bytes=4096)) as port:
            answer = await raw(port, b"GET /openapi.json HTTP/1.1\r\nX-Big: " + b"a" * 8192)
            assert answer.split(b" ", 2)[1].startswith(b"4"), answer[:100]
            got = await fetch(port, "/openapi.json")  # and the server goes on
            assert got.status == 200


async def test_an_idle_connection_is_closed_after_the_keep_alive() -> None:
    with trio.fail_after(30):
        async with serving(api(keep_alive=0.3)) as port:
            started = trio.current_time()
            assert await raw(port, b"", wait=5.0) == b""  # closed, nothing sent
            assert trio.current_time() - started < 3.0
            # A request's headers sent too slowly: the same timer closes the connection.
            assert await raw(port, b"GET /openapi.json HTTP/1.1\r\n", wait=5.0) == b""


async def test_requests_in_progress_are_bounded() -> None:
    release = trio.Event()
    entered = trio.Event()

    async def held(request: HttpRequest) -> HttpResponse:
        entered.set()
        await release.wait()
        return HttpResponse(204)

    app = HttpApp(Stub(), [Route("GET", "/held", held)], HttpLimits(max_requests=1))
    with trio.fail_after(30):
        async with serving(app) as port, trio.open_nursery() as nursery:
            first: list[Got] = []

            async def hold() -> None:
                first.append(await fetch(port, "/held"))

            nursery.start_soon(hold)
            await entered.wait()
            got = await fetch(port, "/held")
            assert got.status == 503 and got.error == "too many requests in progress"
            assert got.headers["retry-after"] == "1"
            release.set()
        assert first[0].status == 204


async def test_each_client_has_a_rate_limit() -> None:
    node = Stub(PeerBuckets(RateLimit(rate=0.001, burst=3)))
    with trio.fail_after(30):
        async with serving(api(node)) as port:
            statuses = [(await fetch(port, f"/keystate/{KNOWN}")).status for _ in range(4)]
            assert statuses == [200, 200, 200, 429]
            got = await fetch(port, "/openapi.json")  # every route counts
            assert got.status == 429 and got.error == "rate limited: slow down and retry"
            assert got.headers["retry-after"] == "1"


async def test_garbage_on_the_socket_is_answered_or_dropped_and_serving_goes_on() -> None:
    with trio.fail_after(30):
        async with serving(api(keep_alive=1.0)) as port:
            for data in (b"\x00\xff" * 100 + b"\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"\r\n\r\n"):
                answer = await raw(port, data)
                assert answer == b"" or answer.split(b" ", 2)[1].startswith(b"4"), answer[:100]
            assert (await fetch(port, "/openapi.json")).status == 200

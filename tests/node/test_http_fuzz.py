"""Fuzzing the HTTP API of real `dkms-node` processes: nothing a client sends escapes as a 500.

A witness and a watcher run as `dkms-node run --http-listen 127.0.0.1:PORT` for the whole
module. Each Hypothesis example is one request on a fresh connection, written byte by byte
(so that what `http.client` would refuse to send is sent too): a method, a path (garbage, or
a route of the API followed by garbage), hostile headers and a body (random bytes, or a real
KEL cut or with one byte changed). Every answer must be a status below 500 or none at all
(hypercorn may drop a request that is not HTTP); every error the app answers is one JSON line
`{"error": ...}`. Afterwards both processes still run and serve, and their logs hold no
traceback and no 500.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dkms.node.testing.keys import node_signer

pytestmark = pytest.mark.slow  # real processes

STARTUP = 30.0  # seconds for a node process to print its introduction
SAMPLE = (Path(__file__).resolve().parents[2] / "node" / "samples" / "sample.cesr").read_bytes()
ROUTES = (
    "/keystate/", "/evidence?prefix=", "/check?prefix=", "/check", "/openapi.json", "/",
    "/ksn?pre=", "/log?pre=", "/query?typ=kel&pre=", "/query?typ=", "/receipts?pre=",
    "/receipts", "/oobi/", "/oobi", "/dkms/location",
)  # fmt: skip
PREFIX = "E" + "A" * 43


@dataclass
class HttpNode:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _start(name: str, data_dir: Path, args: tuple[str, ...]) -> HttpNode:
    log = data_dir.with_name(name + ".log")
    port = _free_port()
    command = [sys.executable, "-m", "dkms.node.cli.node", "run", "--data-dir", str(data_dir)]
    command += ["--listen", "/ip4/127.0.0.1/tcp/0", "--http-listen", f"127.0.0.1:{port}", *args]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=sink, stdin=subprocess.DEVNULL
        )
    assert process.stdout is not None
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()))  # type: ignore[union-attr]
    reader.start()
    reader.join(STARTUP)
    if not lines or len(lines[0].split()) != 2:  # the HTTP socket listens before this line
        process.kill()
        raise AssertionError(f"{name} did not start: {log.read_text(errors='replace')[-2000:]}")
    return HttpNode(name, process, port, log)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[HttpNode]]:
    root = tmp_path_factory.mktemp("http-fuzzed")
    governance = node_signer(50).verfer  # no roster comes: the watcher serves all the same
    started: list[HttpNode] = []
    try:
        started.append(_start("witness", root / "witness", ("--role", "witness")))
        watcher = ("--role", "watcher", "--governance", governance)
        started.append(_start("watcher", root / "watcher", watcher))
        yield started
    finally:
        for node in started:
            node.process.kill()
            node.process.wait()
            if node.process.stdout is not None:
                node.process.stdout.close()


def exchange(port: int, request: bytes) -> bytes:
    """Send `request` on a new connection; all the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with contextlib.suppress(OSError):  # the server may close on what it read first
            sock.sendall(request)
        received = bytearray()
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return bytes(received)


def check_answer(answer: bytes, coded: bool = False) -> int | None:
    """The status of an answer (None: no answer), after checking its shape. `coded`: the
    request named a transfer coding, which the server may answer 501 (RFC 9112 6.1: a coding
    it does not implement; h11, under hypercorn, implements chunked only) — an answer about
    the request, not a failure of the server; every other 5xx is one."""
    if not answer:
        return None
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    assert status < 500 or (coded and status == 501), answer[:300]
    if status >= 400 and headers.get("content-type") == "application/json":
        error = json.loads(body)
        assert list(error) == ["error"] and "\n" not in error["error"], error
    return status


_TOKEN = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*", min_size=1)
_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=200)
_HEADER_VALUE = _TEXT.map(lambda t: t.encode("latin-1"))


def _mutated(data: bytes, at: int, byte: int) -> bytes:
    at %= len(data)
    return data[:at] + bytes([byte]) + data[at + 1 :]


_BODIES = st.one_of(
    st.binary(max_size=2048),
    st.just(SAMPLE),
    st.integers(0, len(SAMPLE)).map(lambda n: SAMPLE[:n]),
    st.builds(_mutated, st.just(SAMPLE), st.integers(0, 10**6), st.integers(0, 255)),
)
_PATHS = st.one_of(
    _TEXT.map(lambda t: "/" + t),
    st.tuples(st.sampled_from(ROUTES), _TEXT).map("".join),
    st.sampled_from(
        [
            f"/keystate/{PREFIX}",
            f"/evidence?prefix={PREFIX}",
            "/check",
            f"/ksn?pre={PREFIX}",
            f"/log?pre={PREFIX}&s=1&fn=0",
            f"/query?typ=kel&pre={PREFIX}&sn=0",
            f"/receipts?pre={PREFIX}&sn=0",
            f"/oobi/{PREFIX}/witness",
            "/dkms/location",
        ]
    ),
)
_METHODS = st.one_of(st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS"]), _TOKEN)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example(  # found by the fuzz: an empty coding next to Content-Length, answered 501
    which=0, method="GET", path="/", headers=[("TRANSFER-ENCODING", b"")], body=b"x"
)
@given(
    which=st.integers(0, 1),
    method=_METHODS,
    path=_PATHS,
    headers=st.lists(st.tuples(_TOKEN, _HEADER_VALUE), max_size=6),
    body=_BODIES,
)
def test_any_request_gets_an_answer_below_500_or_none(
    nodes: list[HttpNode],
    which: int,
    method: str,
    path: str,
    headers: list[tuple[str, bytes]],
    body: bytes,
) -> None:
    lines = [f"{method} {path} HTTP/1.1".encode("latin-1"), b"Host: 127.0.0.1"]
    lines += [name.encode() + b": " + value for name, value in headers]
    lines += [f"Content-Length: {len(body)}".encode(), b"Connection: close"]
    request = b"\r\n".join(lines) + b"\r\n\r\n" + body
    coded = any(name.lower() == "transfer-encoding" for name, _ in headers)
    check_answer(exchange(nodes[which].port, request), coded)


def test_after_the_fuzz_both_nodes_serve_and_logged_no_traceback(nodes: list[HttpNode]) -> None:
    for node in nodes:
        assert node.process.poll() is None, f"{node.name} ended"
        request = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        assert check_answer(exchange(node.port, request)) == 200
        request = f"GET /keystate/{PREFIX} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        status = check_answer(exchange(node.port, request.encode()))
        assert status == (404 if node.name == "witness" else 200)
        log = node.log.read_text(errors="replace")
        assert "Traceback" not in log, log[-3000:]
        failed = [line for line in log.splitlines() if " HTTP " in line and " failed: " in line]
        assert not failed, failed  # the app's catch-all (a 500) never ran

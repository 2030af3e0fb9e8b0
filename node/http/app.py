"""The ASGI application of a node's HTTP surface: limits, routing and errors around handlers.

Theory of operation. Every HTTP request goes through the same steps, each of which may end
it with a JSON error (`{"error": "one line"}`), so no handler sees a request that is over a
limit, and nothing a client sends reaches the client as a traceback:

    client -> pseudo-peer   `http:HOST`, stable per client address (never a node prefix:
                            `:` is not in CESR's alphabet); the rate limit and any blame
                            the role hands out land on it
    rate limit              the runtime's per-peer buckets (`Node.admit`), as for libp2p: 429
    concurrency             at most `max_requests` in progress at once: 503
    body                    over `max_body` (declared or read): 413; not all there within
                            `read_timeout`: 408 (a client that dribbles is cut off)
    route                   `routing.Router`: 404, 405
    handler                 within `handler_timeout`: 504; `HttpError` -> its status;
                            anything else -> 500 with one line (the traceback at debug)
    stream                  a response with `stream` (server-sent events, `mailbox.py`) is
                            sent as made, after its request slot is freed (it bounds itself),
                            and cancelled when the client disconnects

Header size, idle keep-alive and slow headers are the server's to bound (`server.py`). The
app holds no protocol logic: handlers (`api.py`) turn a request into a role request on one
of its surfaces (`Node.answer`, the path libp2p requests take) and its reply into JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import parse_qsl

import trio

from dkms.node.roles.codes import Code
from dkms.node.roles.effects import Surface

from .routing import HttpError, HttpRequest, HttpResponse, Route, Router, error_response

log = logging.getLogger("dkms.node.http")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
PEER_PREFIX: Final = "http:"


class Node(Protocol):
    """What the HTTP surface needs of a running node (`runtime.loop.Runtime`)."""

    stored: trio.Event  # set (and replaced) after each step that stored something

    def admit(self, peer: str) -> bool: ...

    async def answer(
        self, surface: Surface, peer: str, payload: bytes
    ) -> tuple[Code, bytes, str]: ...


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_body: int = 1 << 20  # bytes of a request body (the node's max_message)
    read_timeout: float = 5.0  # seconds to receive a body (the node's request_timeout)
    handler_timeout: float = 30.0  # seconds a handler may take (a KEL check asks in pieces)
    max_requests: int = 64  # requests in progress at once
    header_bytes: int = 16 * 1024  # request line and headers (the server bounds them)
    keep_alive: float = 5.0  # seconds an idle connection is kept (the server closes it)


class _Disconnected(Exception):
    """The client went away before its request was read."""


def pseudo_peer(scope: Scope) -> str:
    """The peer name of the client that sent `scope`: `http:` and its address."""
    client = scope.get("client")
    host = client[0] if isinstance(client, list | tuple) and client else "unknown"
    return f"{PEER_PREFIX}{host}"


class HttpApp:
    """An ASGI 3 application serving `routes` for `node` within `limits`."""

    def __init__(self, node: Node, routes: Sequence[Route], limits: HttpLimits) -> None:
        self.node = node
        self.router = Router(routes)
        self.limits = limits
        self._slots = trio.Semaphore(limits.max_requests)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        # websockets are not served: hypercorn closes a connection whose app returns

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        peer = pseudo_peer(scope)
        if not self.node.admit(peer):
            response = error_response(
                429, "rate limited: slow down and retry", [("retry-after", "1")]
            )
        else:
            try:
                self._slots.acquire_nowait()
            except trio.WouldBlock:
                response = error_response(
                    503, "too many requests in progress", [("retry-after", "1")]
                )
            else:
                try:
                    response = await self._serve(scope, receive, peer)
                except _Disconnected:
                    return
                finally:
                    self._slots.release()
        if response.stream is not None:  # long-lived: holds no request slot (it bounds itself)
            await _stream(send, receive, response)
        else:
            await _send(send, response)

    async def _serve(self, scope: Scope, receive: Receive, peer: str) -> HttpResponse:
        method, path = str(scope.get("method", "")), str(scope.get("path", ""))
        try:
            headers = _headers(scope)
            body = await self._body(receive, headers)
            query = dict(parse_qsl(_text(scope.get("query_string", b"")), keep_blank_values=True))
            route, params = self.router.find(method, path)
            request = HttpRequest(method, path, query, headers, body, peer, params)
            with trio.move_on_after(self.limits.handler_timeout):
                return await route.handler(request)
            raise HttpError(504, f"not answered within {self.limits.handler_timeout:g} s")
        except HttpError as err:
            return err.response()
        except _Disconnected:
            raise
        except Exception as exc:  # the catch-all: a bug must not show the client a traceback
            log.warning("HTTP %s %r failed: %s", method, path[:100], type(exc).__name__)
            log.debug("HTTP %s %r failed", method, path[:100], exc_info=True)
            return error_response(500, f"internal error ({type(exc).__name__})")

    async def _body(self, receive: Receive, headers: dict[str, str]) -> bytes:
        limit = self.limits.max_body
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HttpError(
                413,
                f"body of {declared} bytes is over the limit of {limit}",
                [("connection", "close")],
            )
        chunks: list[bytes] = []
        size = 0
        with trio.move_on_after(self.limits.read_timeout):
            while True:
                message = await receive()
                if message.get("type") == "http.disconnect":
                    raise _Disconnected
                chunk = bytes(message.get("body", b""))
                size += len(chunk)
                if size > limit:
                    raise HttpError(
                        413, f"body over the limit of {limit} bytes", [("connection", "close")]
                    )
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
        raise HttpError(
            408,
            f"request body not received within {self.limits.read_timeout:g} s",
            [("connection", "close")],
        )


def _headers(scope: Scope) -> dict[str, str]:
    """Header names lower-cased (ASGI already does), values as latin-1 text, repeats joined."""
    found: dict[str, str] = {}
    for pair in scope.get("headers", []):
        name, value = _text(pair[0]).lower(), _text(pair[1])  # values keep their case: CESR
        found[name] = f"{found[name]}, {value}" if name in found else value
    return found


def _text(raw: object) -> str:
    return raw.decode("latin-1") if isinstance(raw, bytes | bytearray) else str(raw)


async def _send(send: Send, response: HttpResponse) -> None:
    headers = [
        (b"content-type", response.content_type.encode("latin-1")),
        *((k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers),
    ]
    if response.status != 204:  # RFC 9110: a 204 has no body and says no length
        headers.insert(1, (b"content-length", str(len(response.body)).encode()))
    try:
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})
    except OSError:  # the client is gone; nothing to tell it
        log.debug("HTTP client gone before its %d answer", response.status)


async def _stream(send: Send, receive: Receive, response: HttpResponse) -> None:
    """A streamed response: headers before the first chunk, chunks as made, then the end;
    the stream is cancelled as soon as the client disconnects."""
    assert response.stream is not None
    started = False

    async def chunk(data: bytes) -> None:
        nonlocal started
        if not started:
            started = True
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": [
                        (b"content-type", response.content_type.encode("latin-1")),
                        *((k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers),
                    ],
                }
            )
        await send({"type": "http.response.body", "body": data, "more_body": True})

    async def until_gone(scope: trio.CancelScope) -> None:
        while (await receive()).get("type") != "http.disconnect":
            pass
        scope.cancel()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(until_gone, nursery.cancel_scope)
            await response.stream(chunk)
            if not started:
                await chunk(b"")
            await send({"type": "http.response.body", "body": b""})
            nursery.cancel_scope.cancel()
    except OSError:  # the client is gone; nothing to tell it
        log.debug("HTTP client gone during a %d stream", response.status)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message.get("type") == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message.get("type") == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return

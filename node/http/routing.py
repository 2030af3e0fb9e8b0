"""Requests, responses and routes of the HTTP adapter: plain values, no server and no I/O.

A `Route` is a method, a path template (`/keystate/{prefix}`: a `{name}` segment matches any
one non-empty segment) and an async handler from `HttpRequest` to `HttpResponse`. `Router`
finds the route of a request: no template matches, 404; a template matches but not for that
method, 405 with `Allow`. Routes are given as a list, so other surfaces (keripy's witness
endpoints: `POST /`, `/receipts`, `/oobi/...`) join the JSON API by adding theirs.
A handler refuses with `HttpError(status, one line)`; the app turns it into JSON.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from dkms.node.client.evidencejson import dumps

MAX_ERROR: Final = 300  # characters of an error line (a reason may quote what it was sent)


class HttpError(Exception):
    """A request refused: its status and the one line `{"error": ...}` tells the client."""

    def __init__(self, status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, tuple(headers)

    def response(self) -> HttpResponse:
        return error_response(self.status, self.message, self.headers)


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One request, read whole (its body within the limits) before it is routed."""

    method: str
    path: str
    query: Mapping[str, str]  # the first value of each parameter
    headers: Mapping[str, str]  # lower-case names; a repeated header's values joined by ", "
    body: bytes
    peer: str  # the client's pseudo-peer (`app.pseudo_peer`), never a node prefix
    params: Mapping[str, str] = field(default_factory=dict)  # from the path template


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    # A body sent as it is made (server-sent events) instead of `body`: called once with the
    # function that sends a chunk, it returns when the body ends; it is cancelled when the
    # client goes. The app calls it whatever happens, so it can release what it holds.
    stream: Callable[[Callable[[bytes], Awaitable[None]]], Awaitable[None]] | None = None


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str  # a template: `/keystate/{prefix}`
    handler: Handler

    def match(self, segments: Sequence[str]) -> dict[str, str] | None:
        """The template's parameters if `segments` (of a path) fit it, else None."""
        mine = _segments(self.path)
        if len(mine) != len(segments):
            return None
        params: dict[str, str] = {}
        for want, got in zip(mine, segments, strict=True):
            if want.startswith("{") and want.endswith("}"):
                if not got:
                    return None
                params[want[1:-1]] = got
            elif want != got:
                return None
        return params


class Router:
    """Finds a request's route; `HttpError` 404 or 405 when there is none."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)
        seen = {(r.method, r.path) for r in self.routes}
        if len(seen) != len(self.routes):
            raise ValueError("two routes share a method and path")

    def find(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        segments = _segments(path)
        allowed: list[str] = []
        for route in self.routes:
            params = route.match(segments)
            if params is None:
                continue
            if route.method == method:
                return route, params
            allowed.append(route.method)
        if allowed:
            methods = ", ".join(sorted(set(allowed)))
            raise HttpError(
                405, f"{method} is not served on this path (use {methods})", [("allow", methods)]
            )
        raise HttpError(404, f"no such path: {_shown(path)} (the API is listed at /openapi.json)")


def json_response(value: Any, status: int = 200) -> HttpResponse:
    """`value` as JSON (bytes in it as base64, as `dkms ... --json` prints them)."""
    return HttpResponse(status, dumps(value).encode())


def error_response(
    status: int, message: str, headers: Sequence[tuple[str, str]] = ()
) -> HttpResponse:
    line = " ".join(message.split())  # one line, whatever the reason held
    if len(line) > MAX_ERROR:
        line = line[: MAX_ERROR - 3] + "..."
    return HttpResponse(status, json.dumps({"error": line}).encode(), headers=tuple(headers))


def _segments(path: str) -> list[str]:
    return path.split("/")[1:] if path.startswith("/") else [path]


def _shown(text: str) -> str:
    return repr(text) if len(text) <= 80 else repr(text[:77]) + "..."

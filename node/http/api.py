"""The JSON API for applications: key state and standing, evidence, KEL checks, over HTTP.

    GET  /keystate/{prefix}   {"t": "state"} asked of the role: a watcher's key state with
                              standing, evidence, rulings and agreement (as `dkms keystate
                              --json` prints it); a witness's key state and receipts
    GET  /evidence[?prefix=]  {"t": "evidence"} (watchers): as `dkms evidence list --json`
    POST /check[?prefix=]     the body, a CESR stream of the KEL an application was shown,
                              checked as `dkms kel check` does (`client/kelcheck.py`), with
                              this watcher as the one watcher asked: one object as `dkms kel
                              check --json` prints a line
    GET  /openapi.json        the description of these routes (`openapi.py`)

Each handler turns the request into the query the libp2p surface would carry and hands it to
the role through `Node.answer`, as the caller's pseudo-peer; a refusal keeps its reason, its
code picking the HTTP status (`asking.STATUS`). Evidence is checked here before it is summed up, so
the JSON says what it proves (`client/evidencejson.py`), and carries its CBOR for `dkms
evidence verify`.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import trio

from dkms.node.client.evidencejson import held_json, standing_json
from dkms.node.client.home import CommandError
from dkms.node.client.kelcheck import BUDGET, check_kel, prepare
from dkms.node.roles.effects import Surface
from dkms.node.runtime.transport import Answer, TransportError

from .app import Node
from .asking import ask_map, prefix_param
from .openapi import DOCUMENT
from .routing import HttpError, HttpRequest, HttpResponse, Route, json_response


class JsonApi:
    """The routes above, for the node `prefix` (a watcher or a witness)."""

    def __init__(self, node: Node, prefix: str, *, watcher: bool, timeout: float) -> None:
        self.node, self.prefix, self.watcher, self.timeout = node, prefix, watcher, timeout

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/keystate/{prefix}", self.keystate),
            Route("GET", "/evidence", self.evidence),
            Route("POST", "/check", self.check),
            Route("GET", "/openapi.json", self.openapi),
        ]

    async def keystate(self, request: HttpRequest) -> HttpResponse:
        prefix = prefix_param(request.params["prefix"])
        answer = await self._ask(request.peer, {"t": "state", "i": prefix})
        return json_response(standing_json(answer) if "standing" in answer else answer)

    async def evidence(self, request: HttpRequest) -> HttpResponse:
        self._watchers_only("evidence")
        ask: dict[str, Any] = {"t": "evidence"}
        if "prefix" in request.query:
            ask["i"] = prefix_param(request.query["prefix"])
        return json_response(held_json(self.prefix, await self._ask(request.peer, ask)))

    async def check(self, request: HttpRequest) -> HttpResponse:
        self._watchers_only("KEL checks")
        prefix = prefix_param(request.query["prefix"]) if "prefix" in request.query else None
        if not request.body:
            raise HttpError(400, "no KEL: the body is the CESR stream of the KEL shown")
        try:  # validating signatures takes a while: off the event loop
            shown = await trio.to_thread.run_sync(
                functools.partial(prepare, request.body, prefix, budget=BUDGET)
            )
        except CommandError as err:
            raise HttpError(400, f"the KEL does not validate: {err}") from None
        (result,) = await check_kel(
            _Loopback(self.node, request.peer), [self.prefix], shown, timeout=self.timeout
        )
        return json_response({"i": shown.prefix, "events": shown.events} | result.to_json())

    async def openapi(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, json.dumps(DOCUMENT).encode())

    async def _ask(self, peer: str, ask: dict[str, Any]) -> dict[str, Any]:
        return await ask_map(self.node, peer, ask, self.timeout)

    def _watchers_only(self, what: str) -> None:
        if not self.watcher:
            raise HttpError(404, f"{what}: only watchers serve this; this node is a witness")


class _Loopback:
    """`kelcheck.Requester` whose one node is this node's own role, reached as `peer`."""

    def __init__(self, node: Node, peer: str) -> None:
        self.node, self.peer = node, peer

    async def request(self, to: str, surface: str, payload: bytes, timeout: float) -> Answer:
        with trio.move_on_after(timeout):
            return Answer(*await self.node.answer(Surface(surface), self.peer, payload))
        raise TransportError(f"{to} did not answer within {timeout:g} s")

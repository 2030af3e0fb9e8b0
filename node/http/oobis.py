"""keripy's OOBI routes: how kli finds a witness, and an identifier through its witness.

    GET /oobi, /oobi/{W}, /oobi/{W}/controller      this node (W, its prefix): its own
                                  inception event (a non-transferable `icp` of one key, no next
                                  keys, no witnesses: keripy's witness KEL, byte for byte),
                                  then its signed `/loc/scheme` and `/end/role/add` replies
    GET /oobi/{aid}, /oobi/{aid}/witness/{W}        the KEL of `aid` as this node holds it
                                  (each event with its `-A` signatures, `-B` receipts indexed
                                  into its witness list, `-G` source seal), then this node's
                                  signed `/loc/scheme`; 404 when unknown or its latest event
                                  is not fully witnessed here; 404 for a role other than
                                  witness, or another witness's eid

Answers are `application/json+cesr` (exactly: kli compares the string) with `KERI-AID: aid`.
The KEL and key state come from the role through the query surface (`Node.answer`, as the
JSON API asks), a page at a time, up to `asking.MAX_KEL` bytes. The replies are signed once, on the
first ask, with the node's key at the `dt` the node started (a reader keeps the newest reply
per endpoint, so a restarted node's, later, replaces the old), naming `url()`, the address
clients reach this node's HTTP surface at.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from dkms.protocol.attachments import Attachments
from dkms.protocol.crypto import Signer
from dkms.protocol.events import Kind, incept
from dkms.protocol.replies import end_role, loc_scheme
from dkms.protocol.stream import messagize

from .app import Node
from .asking import ask_map, kel_stream, prefix_param
from .routing import HttpError, HttpRequest, HttpResponse, Route

CONTENT_TYPE: Final = "application/json+cesr"


def own_inception(signer: Signer) -> bytes:
    """A non-transferable node's KEL as keripy's witness has it: one `icp`, signed."""
    event = incept([signer.verfer], basic=True, kind=Kind.JSON)
    return messagize(event, Attachments(sigs=(signer.sign_indexed(event.raw, 0),)))


class Oobis:
    """The routes above for the node whose key is `signer`."""

    def __init__(
        self, node: Node, signer: Signer, url: Callable[[], str], dt: str, timeout: float
    ) -> None:
        self.node, self.signer, self.url, self.dt, self.timeout = node, signer, url, dt, timeout
        self.prefix = signer.verfer
        self._own: bytes | None = None
        self._loc: bytes | None = None

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/oobi", self.oobi),
            Route("GET", "/oobi/{aid}", self.oobi),
            Route("GET", "/oobi/{aid}/{role}", self.oobi),
            Route("GET", "/oobi/{aid}/{role}/{eid}", self.oobi),
        ]

    def loc(self) -> bytes:
        """This node's signed `/loc/scheme` reply."""
        if self._loc is None:
            self._loc = loc_scheme(self.signer, self.url(), self.dt).serialize()
        return self._loc

    def own(self) -> bytes:
        """This node's KEL and its signed location and controller role."""
        if self._own is None:
            role = end_role(self.signer, self.dt).serialize()
            self._own = own_inception(self.signer) + self.loc() + role
        return self._own

    async def oobi(self, request: HttpRequest) -> HttpResponse:
        aid = request.params.get("aid", self.prefix)
        role = request.params.get("role")
        eid = request.params.get("eid")
        if aid == self.prefix:
            if role not in (None, "controller") or eid not in (None, self.prefix):
                raise HttpError(404, f"{self.prefix} is its own controller and nothing else")
            return _answer(aid, self.own())
        aid = prefix_param(aid)
        if role not in (None, "witness") or eid not in (None, self.prefix):
            raise HttpError(404, f"this node is {self.prefix}, a witness: ask for role witness")
        state = await ask_map(self.node, request.peer, {"t": "state", "i": aid}, self.timeout)
        if self.prefix not in state.get("b", ()):
            raise HttpError(404, f"{aid} is not witnessed by {self.prefix}")
        if state.get("fully_witnessed") is not True:
            raise HttpError(404, f"{aid} is not fully witnessed yet")
        return _answer(
            aid, await kel_stream(self.node, request.peer, aid, self.timeout) + self.loc()
        )


def _answer(aid: str, body: bytes) -> HttpResponse:
    return HttpResponse(200, body, CONTENT_TYPE, (("keri-aid", aid),))


def http_url(listen_host: str, port: int, announced: list[str]) -> str:
    """The URL clients reach this node's HTTP surface at: its listen address, or, listening
    on every interface (0.0.0.0, ::), the host of the first address it announces over libp2p
    (`--announce`, else the machine's addresses, routable first) with the HTTP port."""
    host = listen_host
    if listen_host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
        for addr in announced:
            parts = addr.split("/")
            if len(parts) > 2 and parts[1] in ("ip4", "ip6", "dns4", "dns6", "dns"):
                host = parts[2]
                break
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

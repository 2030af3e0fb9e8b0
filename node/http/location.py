"""`GET /dkms/location`: this node's own signed location record, for a client that found it
by HTTP (its OOBI) and now needs where it listens for libp2p.

    GET /dkms/location      the record this node last signed (`runtime/ownrecord.py`: its
                            prefix, the multiaddrs it announces, its time, signed by its key),
                            `application/cbor`, byte for byte as it gossips it; 503 in the
                            moment before the first one is signed

The record comes from the role's location table through the query surface (`{"t": "loc",
"i": PREFIX}`, `Node.answer`), as a libp2p peer asks for it, so the route holds no state and
answers the newest record. A client checks it as it checks a bootstrap node's answer
(`client/locating.record_addresses`): the HTTP hop is not trusted with anything.
"""

from __future__ import annotations

from typing import Final

import cbor2

from dkms.node.roles.codes import Code
from dkms.node.roles.effects import Surface
from dkms.node.roles.locations import QUERY

from .app import Node
from .asking import answer_of
from .routing import HttpError, HttpRequest, HttpResponse, Route

PATH: Final = "/dkms/location"
CONTENT_TYPE: Final = "application/cbor"


class OwnLocation:
    """The route above for the node `prefix`."""

    def __init__(self, node: Node, prefix: str, *, timeout: float) -> None:
        self.node, self.prefix, self.timeout = node, prefix, timeout

    def routes(self) -> list[Route]:
        return [Route("GET", PATH, self.location)]

    async def location(self, request: HttpRequest) -> HttpResponse:
        ask = cbor2.dumps({"t": QUERY, "i": self.prefix})
        code, record, reason = await answer_of(
            self.node, Surface.QUERY, request.peer, ask, self.timeout
        )
        if code is Code.UNKNOWN:
            raise HttpError(503, "this node has not signed its location record yet: retry")
        if not code.ok:
            raise HttpError(503, reason or code.text)
        return HttpResponse(200, record, CONTENT_TYPE)

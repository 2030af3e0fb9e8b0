"""How HTTP handlers ask the role: one query, a KEL a page at a time, and a request's prefix.

Every handler reaches the role the way a libp2p request does, through `Node.answer` as the
client's pseudo-peer, and each question is bounded by the surface's `timeout` (504 past it).
A refusal keeps its reason and its code picks the status (`STATUS`, 400 for codes not
listed); `Refused` carries the code for handlers that treat one as an answer (an unknown
identifier, for the mailbox). An answer that is not the CBOR map the role always sends is the
node's fault: 500, with one line.
"""

from __future__ import annotations

from typing import Any, Final

import cbor2
import trio

from dkms.node.configvalues import BadValue, identifier_prefix
from dkms.node.roles.codes import Code
from dkms.node.roles.effects import Surface
from dkms.node.roles.pages import PAGE_EVENTS, kel_ask
from dkms.protocol.stream import Message, parse_stream

from .app import Node
from .routing import HttpError

# The HTTP status of a role's refusal (anything not listed: 400).
STATUS: Final[dict[Code, int]] = {
    Code.UNKNOWN: 404,
    Code.NOT_SERVED: 404,
    Code.NO_ROSTER: 404,
    Code.CONFLICT: 409,
    Code.TOO_LARGE: 413,
    Code.RATE_LIMITED: 429,
    Code.FAILED: 500,
    Code.BUSY: 503,
    Code.STORAGE: 503,
    Code.QUOTA: 503,
    Code.UNREACHABLE: 504,
}
MAX_KEL: Final = 16 * 1024 * 1024  # bytes of KEL one answer carries


class Refused(HttpError):
    """The role refused a query with `code`."""

    def __init__(self, code: Code, reason: str) -> None:
        super().__init__(STATUS.get(code, 400), reason or code.text)
        self.code = code


async def answer_of(
    node: Node, surface: Surface, peer: str, payload: bytes, timeout: float
) -> tuple[Code, bytes, str]:
    """The role's answer to one request, within `timeout` seconds (else 504)."""
    with trio.move_on_after(timeout):
        return await node.answer(surface, peer, payload)
    raise HttpError(504, f"the node did not answer within {timeout:g} s")


async def ask_map(node: Node, peer: str, ask: dict[str, Any], timeout: float) -> dict[str, Any]:
    """The role's answer to the query `ask`, as a map; `Refused` when it refuses."""
    code, payload, reason = await answer_of(node, Surface.QUERY, peer, cbor2.dumps(ask), timeout)
    if not code.ok:
        raise Refused(code, reason)
    try:
        answer = cbor2.loads(payload)
    except Exception:  # cbor2 raises many types
        answer = None
    if not isinstance(answer, dict):
        raise HttpError(500, f"the node's {ask['t']} answer does not read")
    return answer


async def kel_stream(
    node: Node, peer: str, aid: str, timeout: float, start: int = 0, limit: int = MAX_KEL
) -> bytes:
    """The KEL of `aid` from `start` as the node holds it (CESR, each event with its
    attachments), asked a page at a time; 413 past `limit` bytes."""
    parts: list[bytes] = []
    size = 0
    while True:
        ask = kel_ask(aid, start, PAGE_EVENTS)
        code, page, reason = await answer_of(node, Surface.QUERY, peer, ask, timeout)
        if not code.ok:
            raise Refused(code, reason)
        parts.append(page)
        size += len(page)
        if size > limit:
            raise HttpError(413, f"the KEL of {aid} is over {limit} bytes: ask from a later sn")
        if code is not Code.PARTIAL or not page:
            return b"".join(parts)
        start += events_in(page)


def events_in(page: bytes) -> int:
    """How many events a KEL page holds."""
    return sum(1 for frame in parse_stream(page) if isinstance(frame, Message))


def prefix_param(text: str) -> str:
    """An identifier prefix a request names, checked; 400 saying what is wrong."""
    try:
        return identifier_prefix(text)
    except BadValue as err:
        raise HttpError(400, f"{shown(text)}: {err}") from None


def shown(value: object) -> str:
    """A value a client sent, quoted and cut to fit one line of an error."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."

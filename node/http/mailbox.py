"""keripy's mailbox on our witness: its receipts of one identifier as server-sent events.

Theory of operation. kli learns that a witness receipted its event by polling the witness's
mailbox: it posts a `qry` (`r: "mbx"`, signed by the identifier's current keys in a `-H`
group) to `POST /`, and reads the answer as server-sent events (docs/keripy-http.md, "The
mailbox"). A query goes through these steps, each of which may end it with a JSON error:

    read        the body and `CESR-ATTACHMENT` as a query (`protocol/queries.py`): 400
    signed      a `-H` (or `-F`) group by the requester: else 401
    slots       at most `per_client` open streams per client and `total` in all: 429, 503
    key state   of the requester, asked of the role ({"t": "state"}). kli posts its query as
                it posts the inception, and right after rotating it polls with its new keys,
                sometimes before the rotation has come: an unknown identifier, or a signature
                the held keys do not verify, is looked at again after each durable step
                (`Runtime.stored`) for up to `settle` seconds; then 404, or 403
    stream      200 `text/event-stream`: `retry: 5000`, then one block per receipt from the
                index asked for `/receipt` ({"t": "mbx"} of the role, `roles/mailbox.py`; the
                index is the event's sn), then each new receipt once it is stored; it ends
                after `lifetime` seconds (kli reconnects from the last id + 1) or when the
                client goes. `/replay` and `/reply` stay empty: our witness relays no
                other messages.

What it reads of the role goes through `Node.answer` on `Surface.QUERY`, as any request does;
it writes nothing.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio

from dkms.node.roles.codes import Code
from dkms.protocol import cesr
from dkms.protocol.errors import ProtocolError
from dkms.protocol.keystate import Authority
from dkms.protocol.queries import Query, read_query, verify_query
from dkms.protocol.thresholds import parse_threshold

from .app import Node
from .asking import Refused, ask_map
from .routing import HttpError, HttpRequest, HttpResponse

log = logging.getLogger("dkms.node.http")

RECEIPT_TOPIC: Final = "/receipt"
RETRY_MS: Final = 5000  # what keripy's witness tells clients to wait before reconnecting
LIFETIME: Final = 60.0  # seconds a stream stays open (kli drops it after 30 anyway)
SETTLE: Final = 10.0  # seconds to wait for a key state that verifies the query
PER_CLIENT: Final = 16  # open streams per client address (kli: one per identifier and witness)
TOTAL: Final = 128  # open streams in all


class Mailboxes:
    """The mailbox streams of the witness `prefix`, within their bounds."""

    def __init__(
        self,
        node: Node,
        prefix: str,
        *,
        timeout: float,
        per_client: int = PER_CLIENT,
        total: int = TOTAL,
        lifetime: float = LIFETIME,
        settle: float = SETTLE,
    ) -> None:
        self.node, self.prefix, self.timeout = node, prefix, timeout
        self.per_client, self.total = per_client, total
        self.lifetime, self.settle = lifetime, settle
        self.open: Counter[str] = Counter()  # streams open (or being opened) per client

    async def answer(self, request: HttpRequest, attachments: str) -> HttpResponse:
        """The answer to a mailbox `qry` posted to `POST /`."""
        try:
            query = read_query(request.body, attachments)
        except ProtocolError as err:
            raise HttpError(400, f"query does not read: {err}") from None
        box = query.mailbox
        assert box is not None  # the caller routes only `r: "mbx"` here
        if box.src is not None and box.src != self.prefix:
            raise HttpError(400, f"query is for witness {box.src}, this is {self.prefix}")
        signed = query.endorsements
        signers = {g.prefix for g in signed.last_groups} | {g.prefix for g in signed.groups}
        if box.requester not in signers:
            raise HttpError(401, f"query is not signed by its requester {box.requester}")
        peer = request.peer
        if self.open[peer] >= self.per_client:
            raise HttpError(429, f"{self.per_client} mailbox streams open from this client")
        if sum(self.open.values()) >= self.total:
            raise HttpError(
                503, "too many mailbox streams open; retry later", [("retry-after", "5")]
            )
        self.open[peer] += 1
        try:
            await self._verified(query, peer)
        except BaseException:
            self._close(peer)
            raise
        start = dict(box.topics).get(RECEIPT_TOPIC)

        async def stream(send: Callable[[bytes], Awaitable[None]]) -> None:
            try:
                await send(f"retry: {RETRY_MS}\n\n".encode())
                if start is not None:
                    with trio.move_on_after(self.lifetime):
                        await self._receipts(box.pre, start, peer, send)
            except HttpError as err:  # the headers are sent: all that is left is to end it
                log.info("mailbox stream of %s ended: %s", box.pre, err.message)
            finally:
                self._close(peer)

        headers = (("cache-control", "no-cache"), ("connection", "close"))
        return HttpResponse(200, content_type="text/event-stream", headers=headers, stream=stream)

    def _close(self, peer: str) -> None:
        self.open[peer] -= 1
        if self.open[peer] <= 0:
            del self.open[peer]

    async def _verified(self, query: Query, peer: str) -> None:
        """Return once the requester's key state verifies the query; `HttpError` after
        `settle` seconds if it never does."""
        box = query.mailbox
        assert box is not None
        why, known = "", False
        with trio.move_on_after(self.settle):
            while True:
                stored = self.node.stored  # before asking: no step is missed
                state = await self._ask(peer, {"t": "state", "i": box.requester})
                authority = None if state is None else _authority(state)
                if state is not None and authority is None:
                    raise HttpError(500, "the node's key state answer does not read")
                verdict = verify_query(query, authority)
                if verdict.ok:
                    return
                why, known = verdict.reason, state is not None
                await stored.wait()
        if not known:
            raise HttpError(404, f"unknown identifier {box.requester}")
        raise HttpError(403, f"mailbox query refused: {why}")

    async def _receipts(
        self, pre: str, start: int, peer: str, send: Callable[[bytes], Awaitable[None]]
    ) -> None:
        """Send this witness's receipts of `pre` from index `start`, then each new one."""
        at = start
        while True:
            stored = self.node.stored
            answer = await self._ask(peer, {"t": "mbx", "i": pre, "s": at})
            more = False
            if answer is not None:
                for sn, message in answer["r"]:
                    head = f"id: {sn}\nevent: {RECEIPT_TOPIC}\nretry: {RETRY_MS}\ndata: "
                    await send(head.encode() + message + b"\n\n")
                at, more = answer["next"], answer["more"]
            if not more:
                await stored.wait()

    async def _ask(self, peer: str, ask: dict[str, Any]) -> dict[str, Any] | None:
        """The role's answer as a map; None for an unknown identifier."""
        try:
            return await ask_map(self.node, peer, ask, self.timeout)
        except Refused as refused:
            if refused.code is Code.UNKNOWN:
                return None
            message = f"the node refused its {ask['t']} query: {refused.message}"
            raise HttpError(503, message) from None


def _authority(state: dict[str, Any]) -> Authority | None:
    """The current signing authority in a role's key-state answer (`KeyState.to_json`)."""
    try:
        keys = tuple(state["k"])
        return Authority(
            sn=state["ee"]["s"],
            said=state["ee"]["d"],
            keys=keys,
            raw_keys=tuple(cesr.decode_key(k) for k in keys),
            kt=parse_threshold(state["kt"], "kt"),
            next_digests=tuple(state["n"]),
            nt=parse_threshold(state["nt"], "nt"),
            witnesses=tuple(state["b"]),
            toad=state["bt"],
        )
    except (KeyError, TypeError, ProtocolError):
        return None

"""keripy's witness surface on our witnesses: what `kli` posts and gets (docs/keripy-http.md).

    POST /            one KERI message: the JSON body, its attachments as qb64 text in the
                      `CESR-ATTACHMENT` header, `CESR-DESTINATION` this witness's prefix.
                      Events (icp rot ixn dip drt) go to the role as `/dkms/1/submit` ones
                      do: 204 when accepted, held already or escrowed. `rct` (other
                      witnesses' receipts, `-B` indexed or `-C` couples) go to the witness
                      agreement (`Surface.RECEIPTS`): 200 with an empty body. `rpy` are read
                      and stored nowhere: 204. A mailbox `qry` (`r: "mbx"`) is answered as
                      server-sent events (`mailbox.py`); any other `qry`, 204.
    POST /receipts    an event, receipted in the answer: 200 `application/json+cesr`, the
                      `rct` + `-CAB` couple of this witness; 202 escrowed; 400 not ours
    GET  /receipts    `?pre=AID&sn=N` or `&said=SAID`: the `rct` with every receipt held,
                      `-B` indexed into the event's witness list (`roles/mailbox.py`)

Checks before anything reaches the role, in keripy's order and with its statuses: content
type `application/cesr+json` (or `application/cesr`, which keripy refuses) else 406; a body
that is not a JSON object, 400; no `CESR-ATTACHMENT`, 412; then a `CESR-DESTINATION` naming
another witness, 400. keripy answers 204 to any event whatever becomes of it (it only queues
it); ours says what the role said: a refusal is a 4xx with its reason. kli only counts the
answers, so it sees no difference.
"""

from __future__ import annotations

import json
from typing import Any, Final

import cbor2

from dkms.node.roles.codes import Code
from dkms.node.roles.effects import Surface
from dkms.protocol.errors import ProtocolError
from dkms.protocol.replies import read_reply

from .app import Node
from .asking import STATUS, answer_of, prefix_param, shown
from .mailbox import Mailboxes
from .routing import HttpError, HttpRequest, HttpResponse, Route

CESR_TYPES: Final = frozenset({"application/cesr+json", "application/cesr"})
CESR_ANSWER: Final = "application/json+cesr"  # what keripy's /receipts answers with
EVENTS: Final = frozenset({"icp", "rot", "ixn", "dip", "drt"})
TAKEN: Final = frozenset({Code.OK, Code.ALREADY, Code.ESCROWED})  # 204 on `POST /`


class KeriWitness:
    """The routes above, for the witness `prefix`."""

    def __init__(
        self, node: Node, prefix: str, *, timeout: float, mailboxes: Mailboxes | None = None
    ) -> None:
        self.node, self.prefix, self.timeout = node, prefix, timeout
        self.mailboxes = mailboxes or Mailboxes(node, prefix, timeout=timeout)

    def routes(self) -> list[Route]:
        return [
            Route("POST", "/", self.post),
            Route("POST", "/receipts", self.post_receipts),
            Route("GET", "/receipts", self.get_receipts),
        ]

    async def post(self, request: HttpRequest) -> HttpResponse:
        ked, attachments = self._message(request)
        ilk = ked.get("t")
        payload = request.body + attachments.encode("ascii")
        if ilk in EVENTS:
            code, _, reason = await self._ask(Surface.SUBMIT, request.peer, payload)
            if code not in TAKEN:
                raise HttpError(STATUS.get(code, 400), reason or code.text)
            return HttpResponse(204)
        if ilk == "rct":
            code, _, reason = await self._ask(Surface.RECEIPTS, request.peer, payload)
            if not code.ok:
                raise HttpError(STATUS.get(code, 400), reason or code.text)
            return HttpResponse(200)
        if ilk == "rpy":
            try:
                read_reply(request.body, attachments)
            except ProtocolError as err:
                raise HttpError(400, f"reply does not read: {err}") from None
            return HttpResponse(204)
        if ilk == "qry":
            if ked.get("r") == "mbx":
                return await self.mailboxes.answer(request, attachments)
            return HttpResponse(204)
        raise HttpError(400, f"message type {shown(ilk)} is not served by this witness")

    async def post_receipts(self, request: HttpRequest) -> HttpResponse:
        ked, attachments = self._message(request)
        ilk = ked.get("t")
        if ilk not in EVENTS:
            raise HttpError(400, f"invalid event type {shown(ilk)} for receipting")
        payload = request.body + attachments.encode("ascii")
        code, receipts, reason = await self._ask(Surface.SUBMIT, request.peer, payload)
        if code.ok and receipts:
            return HttpResponse(200, receipts, CESR_ANSWER)
        if code is Code.ESCROWED:
            return HttpResponse(202)
        if code.ok:  # accepted, yet no receipt of ours: not a designated witness
            code, reason = Code.NOT_WITNESS, f"{self.prefix} does not receipt this event"
        raise HttpError(400 if code is Code.NOT_WITNESS else STATUS.get(code, 400), reason)

    async def get_receipts(self, request: HttpRequest) -> HttpResponse:
        query = request.query
        if "pre" not in query:
            raise HttpError(400, "query parameter 'pre' is required")
        ask: dict[str, Any] = {"t": "rct", "i": prefix_param(query["pre"])}
        if "said" in query:
            ask["d"] = query["said"]
        elif "sn" in query:
            sn = query["sn"]
            if not (sn.isascii() and sn.isdigit() and len(sn) <= 20):
                raise HttpError(400, f"sn {shown(sn)} is not a whole number")
            ask["s"] = int(sn)
        else:
            raise HttpError(400, "either 'sn' or 'said' query parameter is required")
        code, rct, reason = await self._ask(Surface.QUERY, request.peer, cbor2.dumps(ask))
        if not code.ok:
            raise HttpError(400 if code is Code.NOT_WITNESS else STATUS.get(code, 400), reason)
        return HttpResponse(200, rct, CESR_ANSWER)

    def _message(self, request: HttpRequest) -> tuple[dict[str, Any], str]:
        """The message's decoded body and its attachment text, checked as keripy does."""
        headers = request.headers
        kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind not in CESR_TYPES:
            raise HttpError(406, f"content type {shown(kind)} is not application/cesr+json")
        try:
            ked = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            ked = None
        if not isinstance(ked, dict):
            raise HttpError(400, "malformed JSON: the body is one KERI message as a JSON object")
        attachments = headers.get("cesr-attachment")
        if attachments is None:
            raise HttpError(412, "no CESR-ATTACHMENT header: the message's attachments go there")
        attachments = attachments.strip()
        if not attachments.isascii():
            raise HttpError(400, "CESR-ATTACHMENT is not qb64 text")
        destination = headers.get("cesr-destination")
        if destination is not None and destination.strip() != self.prefix:
            raise HttpError(
                400, f"CESR-DESTINATION {shown(destination)} is not this witness, {self.prefix}"
            )
        return ked, attachments

    async def _ask(self, surface: Surface, peer: str, payload: bytes) -> tuple[Code, bytes, str]:
        return await answer_of(self.node, surface, peer, payload, self.timeout)

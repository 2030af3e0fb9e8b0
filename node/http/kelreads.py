"""keripy's read routes of a witness: key state notices and KELs, as keripy 1.3.6 serves them.

    GET /ksn?pre=AID                 this node's signed `/ksn/{eid}` reply (`rpy`, `-V` group
                                     with its `-CAB` couple) carrying keripy's key state record
                                     of AID: `application/cesr`; 404 unknown or not fully
                                     witnessed here
    GET /log?pre=AID[&s=HEX][&fn=HEX] the KEL of AID with its attachments from first-seen
                                     ordinal `fn` (hex, default 0): `application/cesr`; 404
                                     unknown, or `s` (hex) past what is held or not yet fully
                                     witnessed; `a` (anchor lookups) is refused with 400
    GET /query?typ=kel&pre=AID[&sn=N] the KEL from sn N (decimal): `application/json+cesr`;
                                     400 without typ or pre, for an sn not held, and for
                                     `typ=tel` (no TELs here)

The KEL bytes are what the OOBI route sends (`asking.kel_stream`: each event with its `-A`
signatures, `-B` receipts, `-G` source seal); keripy wraps each event's attachments in a `-V`
group with its first-seen couple (`-E`), which its parser takes either way. Two fields of the
record differ in meaning from keripy's, because our witness keeps no clock in its role and
never supersedes an event it accepted: `f` (first-seen ordinal) is the event's sn, and `dt`
(when the latest event was first seen) is the time of the answer, as the reply's own `dt` is.
The record's prior `p` and the latest establishment event's `br`/`ba` come from the events
themselves (one page of one event each), so the role's key-state answer stays as it is.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Any, Final

from dkms.node.roles.effects import Surface
from dkms.node.roles.pages import kel_ask
from dkms.protocol.crypto import Signer
from dkms.protocol.replies import key_state_notice
from dkms.protocol.stream import Message, parse_stream

from .app import Node
from .asking import Refused, answer_of, ask_map, kel_stream, prefix_param, shown
from .routing import HttpError, HttpRequest, HttpResponse, Route

CESR: Final = "application/cesr"
JSON_CESR: Final = "application/json+cesr"
MAX_SN: Final = (1 << 64) - 1
DIGITS: Final = {16: re.compile(r"[0-9a-fA-F]{1,17}"), 10: re.compile(r"[0-9]{1,20}")}


def now_iso() -> str:
    """keripy's timestamps: ISO 8601 with microseconds and the UTC offset."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")


class KelReads:
    """The routes above, signed by `signer` (this node), over the role behind `node`."""

    def __init__(
        self, node: Node, signer: Signer, *, timeout: float, now: Callable[[], str] = now_iso
    ) -> None:
        self.node, self.signer, self.timeout, self.now = node, signer, timeout, now

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/ksn", self.ksn),
            Route("GET", "/log", self.log),
            Route("GET", "/query", self.query),
        ]

    async def ksn(self, request: HttpRequest) -> HttpResponse:
        aid = self._pre(request)
        state = await self._state(request.peer, aid)
        if state.get("fully_witnessed") is not True:
            raise HttpError(404, f"{aid} is not fully witnessed here yet")
        last = await self._event(request.peer, aid, state["sn"])
        est = last if state["ee"]["s"] == state["sn"] else None
        if est is None:
            est = await self._event(request.peer, aid, state["ee"]["s"])
        dt = self.now()
        record = _record(state, last, est, dt)
        return HttpResponse(200, key_state_notice(self.signer, record, dt).serialize(), CESR)

    async def log(self, request: HttpRequest) -> HttpResponse:
        aid = self._pre(request)
        if "a" in request.query:
            raise HttpError(400, "anchor lookups (a) are not served here: ask by s or fn")
        state = await self._state(request.peer, aid)
        sn = _number(request.query.get("s"), 16, "s")
        if sn is not None and (sn > state["sn"] or state.get("fully_witnessed") is not True):
            raise HttpError(404, f"{aid} has no fully witnessed event at sn {sn} here")
        start = _number(request.query.get("fn"), 16, "fn") or 0
        kel = await kel_stream(self.node, request.peer, aid, self.timeout, start)
        if not kel:
            raise HttpError(404, f"{aid} has no events from {start} here")
        return HttpResponse(200, kel, CESR)

    async def query(self, request: HttpRequest) -> HttpResponse:
        typ = request.query.get("typ")
        if not typ:
            raise HttpError(400, "'typ' query param is required")
        if typ == "tel":
            raise HttpError(400, "TELs (typ=tel) are not served here: only KELs (typ=kel)")
        if typ != "kel":
            raise HttpError(400, f"unknown query type {shown(typ)}: typ=kel is served")
        aid = self._pre(request)
        state = await self._state(request.peer, aid)
        sn = _number(request.query.get("sn"), 10, "sn")
        if sn is not None and sn > state["sn"]:
            raise HttpError(400, f"{aid} has no event at sn {sn} here")
        kel = await kel_stream(self.node, request.peer, aid, self.timeout, sn or 0)
        return HttpResponse(200, kel, JSON_CESR)

    def _pre(self, request: HttpRequest) -> str:
        pre = request.query.get("pre")
        if not pre:
            raise HttpError(400, "'pre' query param is required")
        return prefix_param(pre)

    async def _state(self, peer: str, aid: str) -> dict[str, Any]:
        """The node's key state of `aid`; 404 when it holds none (a watcher answers with the
        standing of an identifier it holds no KEL of, and no sn)."""
        state = await ask_map(self.node, peer, {"t": "state", "i": aid}, self.timeout)
        if not isinstance(state.get("sn"), int):
            raise HttpError(404, f"{aid} is not known here")
        return state

    async def _event(self, peer: str, aid: str, sn: int) -> Message:
        """The event at `sn` of `aid`, as the node holds it."""
        code, page, reason = await answer_of(
            self.node, Surface.QUERY, peer, kel_ask(aid, sn, 1), self.timeout
        )
        if not code.ok:
            raise Refused(code, reason)
        for frame in parse_stream(page):
            if isinstance(frame, Message):
                return frame
        raise HttpError(500, f"the node holds no event at sn {sn} of {aid}")


def _record(state: dict[str, Any], last: Message, est: Message, dt: str) -> dict[str, Any]:
    """keripy's key state record (`KeyStateRecord`, in `replies.KSN_FIELDS` order)."""
    ked, est_ked = last.event.ked, est.event.ked
    return {
        "vn": [1, 0],
        "i": last.event.prefix,
        "s": f"{state['sn']:x}",
        "p": ked.get("p", ""),
        "d": state["d"],
        "f": f"{state['sn']:x}",
        "dt": dt,
        "et": state["et"],
        "kt": state["kt"],
        "k": state["k"],
        "nt": state["nt"],
        "n": state["n"],
        "bt": f"{state['bt']:x}",
        "b": state["b"],
        "c": state["c"],
        "ee": {
            "s": f"{state['ee']['s']:x}",
            "d": state["ee"]["d"],
            "br": est_ked.get("br", []),
            "ba": est_ked.get("ba", []),
        },
        "di": state["di"] or "",
    }


def _number(text: str | None, base: int, what: str) -> int | None:
    if text is None:
        return None
    value = int(text, base) if DIGITS[base].fullmatch(text) else -1
    if not 0 <= value <= MAX_SN:
        kind = "hex" if base == 16 else "decimal"
        raise HttpError(400, f"{what} {shown(text)} is not a {kind} sequence number")
    return value

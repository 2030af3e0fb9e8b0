"""KEL pages: a KEL of any length, answered a bounded piece at a time.

Theory of operation. `{"t": "kel", "i": prefix, "s": sn, "n": limit}` asks for the KEL of
`prefix` from `sn` on. The answer is one page: a CESR stream of the events from `sn` on, each
with its signatures, witness receipts and source seal (as `Validator.replay` writes them), as
many as fit in the answerer's byte budget (`PAGE_BYTES` unless configured) and at most `n`. A
page holds at least one event whenever the KEL has one at `sn` or later, however big it is,
so asking again from the sn after a page's last event always moves on. The answer's code says
whether the page ends the KEL:

    OK        nothing follows (as held when answered); an empty page: nothing at sn or later
    PARTIAL   more follows: ask again from the sn after the page's last event

An ask without `n` comes from a node or client that knows no pages, whose reader would fail
on a code it does not know: it gets one page with OK, the beginning of a long KEL, which is
still a valid KEL and never an answer over its size limit (before pages, it got a refusal).

Building a page reads the records it sends and no others: O(page), whatever the KEL's length.
Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import cbor2

from dkms.protocol.cesr import IndexedSig
from dkms.protocol.kel import Kel, Record
from dkms.protocol.stream import Attachments, messagize

from .codes import Code
from .effects import Reply

PAGE_BYTES: Final = 256 * 1024  # default byte budget of one page: a quarter of the 1 MiB cap
PAGE_EVENTS: Final = 500  # events a follower asks for at once (the work of one step)


@dataclass(frozen=True, slots=True)
class Page:
    """Events `start` .. `start + count - 1` of a KEL as one CESR stream; `more`: others follow."""

    data: bytes
    start: int
    count: int
    more: bool

    @property
    def next(self) -> int:
        """Where the next page starts."""
        return self.start + self.count


def page_message(record: Record) -> bytes:
    """An accepted event as a KEL page carries it: its body, the controller's signatures, the
    receipts as signatures indexed into its witness list, and its source seal."""
    witnesses = record.authority.witnesses
    wigs = tuple(IndexedSig(witnesses.index(w), None, sig) for w, sig in record.receipts.items())
    return messagize(record.event, Attachments(sigs=record.sigs, wigs=wigs, sources=record.sources))


def kel_page(kel: Kel, start: int, budget: int, limit: int | None = None) -> Page:
    """The page of `kel` from `start`: events while under `budget` bytes (the first one in any
    case) and at most `limit` of them."""
    chain = kel.chain
    end = len(chain) if limit is None else min(len(chain), start + limit)
    parts: list[bytes] = []
    size = 0
    at = start
    while at < end:
        message = page_message(chain[at])
        if parts and size + len(message) > budget:
            break
        parts.append(message)
        size += len(message)
        at += 1
    return Page(b"".join(parts), start, len(parts), at < len(chain))


def kel_ask(prefix: str, start: int, limit: int = PAGE_EVENTS) -> bytes:
    """The query for one page of `prefix`'s KEL from `start`."""
    return cbor2.dumps({"t": "kel", "i": prefix, "s": start, "n": limit})


def kel_reply(kel: Kel | None, prefix: str, ask: dict[Any, Any], budget: int) -> Reply:
    """The answer to a KEL query (`ask` is its CBOR map) for `kel`, the KEL held of `prefix`."""
    start = ask.get("s", 0)
    if not _count(start):
        return Reply.refuse(Code.BAD_QUERY, "s must be a sequence number")
    paged = "n" in ask
    limit: int | None = ask["n"] if paged else None
    if paged and not (_count(limit) and limit):
        return Reply.refuse(Code.BAD_QUERY, "n must be a positive number of events")
    if kel is None:
        return Reply.refuse(Code.UNKNOWN, f"unknown identifier {prefix}")
    page = kel_page(kel, start, budget, limit)
    return Reply(Code.PARTIAL if paged and page.more else Code.OK, page.data)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0

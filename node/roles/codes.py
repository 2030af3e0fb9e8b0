"""Answer codes: the status byte of every `/dkms/1/...` response, and what roles decide by.

A requester decides what to do next from the code alone (retry, give up, count a receipt);
the reason text that may follow is for people. Codes below 16 belong to the request/response
layer (a peer's transport can answer them without asking its role); the others are the
roles' own verdicts. `ok` codes carry a payload the requester can use.
"""

from __future__ import annotations

from enum import IntEnum


class Code(IntEnum):
    OK = 0
    REFUSED = 1  # a refusal with no more specific code (its reason says why)
    FAILED = 2  # the handler raised; the peer keeps running
    TOO_LARGE = 3  # the request's length is over the responder's limit
    BUSY = 4  # the responder has too many requests in progress
    ALREADY = 5  # ok: what was submitted had been accepted before (the receipt follows)
    UNREACHABLE = 6  # never on the wire: the request could not be delivered or timed out
    RATE_LIMITED = 7  # too many requests from this peer: slow down and retry
    STORAGE = 8  # the responder could not make the request's effects durable; it stops
    NOT_SERVED = 9  # the responder does not serve that surface

    MALFORMED = 16  # the payload does not read (not CESR, not CBOR, a bad frame)
    INVALID = 17  # an event that reads but does not verify (signatures, chain, rules)
    CONFLICT = 18  # another version of this event holds: resubmitting cannot help
    ESCROWED = 19  # kept, waiting for something (earlier events, signatures, receipts)
    SUPERSEDED = 20  # a recovery rotation replaced it
    NOT_WITNESS = 21  # the responder is not a designated witness of that event
    UNKNOWN = 22  # no such identifier here
    NO_RECEIPT = 23  # receipts offered, none verified
    BAD_QUERY = 24  # a query that reads but asks for something malformed
    NO_ROSTER = 25  # the responder holds no governance roster yet
    PARTIAL = 26  # ok: one page of a longer answer; ask again for the rest (roles/pages.py)
    QUOTA = 27  # the responder's store is at its quota: it takes no new identifiers

    @property
    def ok(self) -> bool:
        return self in _OK

    def __bool__(self) -> bool:
        # OK is 0: `if code:` would read a success as a failure. Ask `code.ok` instead.
        raise TypeError("a Code has no truth value; use code.ok")

    @property
    def text(self) -> str:
        """A default reason, for a refusal that came without one."""
        return self.name.lower().replace("_", " ")


_OK = frozenset({Code.OK, Code.ALREADY, Code.PARTIAL})

"""A witness's receipts of one KEL, as keripy's HTTP witness routes hand them out.

Theory of operation. keripy's `kli` collects receipts from a witness's mailbox (server-sent
events, `node/http/mailbox.py`) or by `GET /receipts`; both read what the witness already
holds, so both are queries on `Surface.QUERY`, answered from the validator, writing nothing:

    {"t": "mbx", "i": prefix, "s": sn, "n": limit}
        this witness's own receipt of each event of `prefix` from `sn` on that it receipted,
        as the CBOR map {"r": [[sn, message], ...], "next": sn, "more": bool}; `message` is
        the `rct` + `-CAB` couple keripy's witness puts in its mailbox. The mailbox index of
        a receipt is its event's sn (its position in the KEL, restored from the store on
        restart), so a reader resuming from the last index + 1 misses nothing and repeats
        nothing. At most `budget` bytes of messages (at least one) and `limit` of them.
    {"t": "rct", "i": prefix, "s": sn} or {"t": "rct", "i": prefix, "d": said}
        the `rct` of that event with every witness receipt held, as `-B` signatures indexed
        into the event's witness list (the CESR bytes keripy's `GET /receipts` answers);
        `NOT_WITNESS` when this witness is not in that list, `UNKNOWN` when the event is not
        held.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Any, Final

import cbor2

from dkms.protocol.cesr import IndexedSig
from dkms.protocol.events import Kind, receipt
from dkms.protocol.kel import Record
from dkms.protocol.stream import Attachments, messagize
from dkms.protocol.validator import Validator

from .codes import Code
from .effects import Reply

MAILBOX_QUERY: Final = "mbx"
RECEIPTS_QUERY: Final = "rct"
QUERIES: Final = frozenset({MAILBOX_QUERY, RECEIPTS_QUERY})
MAILBOX_LIMIT: Final = 500  # receipts in one mailbox answer at most


def answer(validator: Validator, witness: str, ask: dict[Any, Any], budget: int) -> Reply:
    """The answer to a `mbx` or `rct` query (`ask`, its CBOR map) of the witness `witness`."""
    prefix = ask.get("i")
    if not isinstance(prefix, str):
        return Reply.refuse(Code.BAD_QUERY, "query needs an identifier prefix i")
    kel = validator.kel(prefix)
    if ask.get("t") == MAILBOX_QUERY:
        start, limit = ask.get("s", 0), ask.get("n", MAILBOX_LIMIT)
        if not (_count(start) and _count(limit) and limit):
            return Reply.refuse(Code.BAD_QUERY, "s must be a sequence number, n a positive count")
        if kel is None:
            return Reply.refuse(Code.UNKNOWN, f"unknown identifier {prefix}")
        found: list[list[Any]] = []
        size, at = 0, start
        while at < len(kel.chain) and len(found) < limit:
            record = kel.chain[at]
            if witness in record.receipts:
                message = own_receipt(record, witness)
                if found and size + len(message) > budget:
                    break
                found.append([record.event.sn, message])
                size += len(message)
            at += 1
        more = at < len(kel.chain)
        return Reply.accept(cbor2.dumps({"r": found, "next": at, "more": more}))
    record = _event(validator, prefix, ask)
    if isinstance(record, Reply):
        return record
    witnesses = record.authority.witnesses
    if witness not in witnesses:
        return Reply.refuse(
            Code.NOT_WITNESS, f"not a designated witness of {prefix} at sn {record.event.sn:x}"
        )
    event = record.event
    wigs = sorted(
        (IndexedSig(witnesses.index(w), None, sig) for w, sig in record.receipts.items()),
        key=lambda sig: sig.index,
    )
    rct = receipt(event.prefix, event.sn, event.said, kind=event.kind)
    return Reply.accept(messagize(rct, Attachments(wigs=tuple(wigs))))


def own_receipt(record: Record, witness: str) -> bytes:
    """`witness`'s receipt of `record`'s event: `rct` + `-CAB` + prefix + signature. The `rct`
    is JSON whatever the event's kind (a server-sent event carries text; the signature is over
    the event, so the receipt's body may be either)."""
    event = record.event
    rct = receipt(event.prefix, event.sn, event.said, kind=Kind.JSON)
    return messagize(rct, Attachments(couples=((witness, record.receipts[witness]),)))


def _event(validator: Validator, prefix: str, ask: dict[Any, Any]) -> Record | Reply:
    said, sn = ask.get("d"), ask.get("s")
    if isinstance(said, str):
        record = validator.record(said)
        if record is not None and record.event.prefix != prefix:
            record = None
    elif isinstance(sn, int) and _count(sn):
        kel = validator.kel(prefix)
        record = kel.at(sn) if kel is not None else None
    else:
        return Reply.refuse(Code.BAD_QUERY, "rct needs the event's sn s or its SAID d")
    if record is None:
        return Reply.refuse(Code.UNKNOWN, f"no such event of {prefix} here")
    return record


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0

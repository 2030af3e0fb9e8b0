"""Which identifiers name a witness: the query a recovering witness asks its co-witnesses.

A witness rebuilt after losing its store (`dkms-node recover`, `node/recovery.py`) must find
every identifier it may have receipted for: those whose KEL names it in any establishment
event's witness list (a witness cut by a later rotation still receipted what came before).
Its co-witnesses (and watchers) hold those KELs. The query, on `Surface.QUERY`:

    {"t": "witnessed", "w": WITNESS_PREFIX, "a": AFTER}     "a" optional, default ""

is answered with the CBOR map `{"i": [prefix, ...], "more": bool}`: the prefixes after
`AFTER` in sorted order, at most `LIST_PAGE` of them; while `more` is true the asker asks
again with "a" set to the last prefix it got. `answer(validator, ask)` is the whole handler.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Any, Final

import cbor2

from dkms.protocol.validator import Validator

from .codes import Code
from .effects import Reply

QUERY: Final = "witnessed"  # the query's "t"
LIST_PAGE: Final = 500  # prefixes per answer (about 23 kB of CBOR)


def witnessed_by(
    validator: Validator, witness: str, *, after: str = "", limit: int = LIST_PAGE
) -> tuple[list[str], bool]:
    """Prefixes (sorted, each greater than `after`) whose KEL names `witness` in any of its
    witness lists, at most `limit` of them; and whether more follow."""
    found: list[str] = []
    for prefix in sorted(p for p in validator.prefixes if p > after):
        kel = validator.kel(prefix)
        if kel is None or not any(witness in a.witnesses for a in kel.authorities):
            continue
        if len(found) == limit:
            return found, True
        found.append(prefix)
    return found, False


def answer(validator: Validator, ask: dict[Any, Any], limit: int = LIST_PAGE) -> Reply:
    """The reply to a `witnessed` query (`ask` is its CBOR map, "t" already read)."""
    witness, after = ask.get("w"), ask.get("a", "")
    if not isinstance(witness, str) or not witness:
        return Reply.refuse(Code.BAD_QUERY, "a witnessed query needs the witness prefix w")
    if not isinstance(after, str):
        return Reply.refuse(Code.BAD_QUERY, "a must be the last prefix received")
    prefixes, more = witnessed_by(validator, witness, after=after, limit=limit)
    return Reply.accept(cbor2.dumps({"i": prefixes, "more": more}))

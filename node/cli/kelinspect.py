"""`dkms kel inspect`: each message of a CESR file laid out for a human, without judging it.

Nothing here validates: a message is shown as framed, so fields of events that a validator
would reject still appear (escaped by `safe`, since they may be anything).
"""

from __future__ import annotations

import sys
from typing import Any

from dkms.node.cli.cesrfile import read_frames
from dkms.node.cli.textout import safe, threshold
from dkms.protocol import cesr
from dkms.protocol.cesr import Codes, IndexedSig
from dkms.protocol.errors import ParseError
from dkms.protocol.events import ESTABLISHMENT, INCEPTION, Ilk
from dkms.protocol.stream import Attachments, BadFrame, Message

_PAD = 22  # width of the label column


def inspect(path: str) -> int:
    """Print every message of `path`; 0 when the whole file was read, 1 otherwise."""
    count = 0
    try:
        for count, frame in enumerate(read_frames(path), start=1):
            if isinstance(frame, BadFrame):
                print(
                    f"#{count} at byte {frame.offset}, {frame.length} bytes: "
                    f"body rejected: {safe(frame.error.reason)}\n"
                )
            else:
                print("\n".join(describe(frame, count)) + "\n")
    except ParseError as err:
        print(f"dkms: {safe(path)}: unframeable bytes: {safe(str(err))}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"dkms: {safe(path)}: cannot read: {safe(err.strerror or err)}", file=sys.stderr)
        return 1
    print(f"{safe(path)}: {count} message(s)")
    return 0


def describe(message: Message, number: int) -> list[str]:
    """The lines describing one message: its body fields, then its attachments."""
    event, ked = message.event, message.event.ked
    lines = [
        f"#{number} {event.ilk.value} sn {event.sn} at byte {message.offset}, "
        f"{message.length} bytes, {event.kind.value}"
    ]
    lines += _field("prefix", event.prefix)
    lines += _field("receipted SAID" if event.ilk is Ilk.RCT else "SAID", event.said)
    if "p" in ked:
        lines += _field("prior", ked["p"])
    if event.ilk in ESTABLISHMENT:
        lines += _list("keys", ked["k"], numbered=True)
        lines += _field("signing threshold kt", threshold(ked["kt"]))
        lines += _list("next key digests", ked["n"], numbered=True)
        lines += _field("next threshold nt", threshold(ked["nt"]))
        lines += _field("witness threshold bt", ked["bt"])
        if event.ilk in INCEPTION:
            lines += _list("witnesses", ked["b"], numbered=True)
            lines += _field("traits", " ".join(safe(c) for c in _items(ked["c"])) or "-")
        else:
            lines += _list("witnesses cut (br)", ked["br"])
            lines += _list("witnesses added (ba)", ked["ba"])
    if "di" in ked:
        lines += _field("delegator", ked["di"])
    if "a" in ked:
        lines += _list("anchors", ked["a"])
    return lines + _attachments(message.attachments)


def _attachments(atc: Attachments) -> list[str]:
    lines: list[str] = []
    if atc.sigs:
        lines += _list("signatures (-A)", [_siger(s) for s in atc.sigs])
    if atc.wigs:
        lines += _list("witness sigs (-B)", [_siger(s) for s in atc.wigs])
    if atc.couples:
        lines += _list(
            "receipt couples (-C)",
            [
                f"witness {pre} sig {cesr.encode(Codes.ED25519_SIG, sig)}"
                for pre, sig in atc.couples
            ],
        )
    if atc.quadruples:
        lines += _list(
            "receipt quadruples (-D)",
            [f"{pre} sn {sn} est {said} {_siger(sig)}" for pre, sn, said, sig in atc.quadruples],
        )
    if atc.sources:
        lines += _list(
            "seal sources (-G)",
            [f"delegator event sn {sn} SAID {said}" for sn, said in atc.sources],
        )
    if atc.first_seen:
        lines += _list("first seen (-E)", [f"#{fn} at {dts}" for fn, dts in atc.first_seen])
    if not lines:
        lines += _field("attachments", "none")
    return lines


def _siger(sig: IndexedSig) -> str:
    ondex = "-" if sig.ondex is None else str(sig.ondex)
    return f"index {sig.index} ondex {ondex} {sig.qb64()}"


def _items(value: Any) -> list[Any]:
    # Fields of a rejected body may not even be lists; show what is there.
    return value if isinstance(value, list) else [value]


def _field(label: str, value: Any) -> list[str]:
    return [f"  {label:<{_PAD}} {safe(value)}"]


def _list(label: str, values: Any, numbered: bool = False) -> list[str]:
    items = _items(values)
    if not items:
        return _field(label, "-")
    # Numbered where signatures and witness receipts refer to items by position.
    first, *rest = (f"[{i}] {safe(v)}" if numbered else safe(v) for i, v in enumerate(items))
    return [f"  {label:<{_PAD}} {first}", *(f"  {'':<{_PAD}} {v}" for v in rest)]

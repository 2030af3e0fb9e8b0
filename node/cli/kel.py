"""`dkms kel verify` and `dkms demo`: key state and message fates, as JSON lines or tables."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from itertools import repeat
from operator import attrgetter
from typing import Any, Final

from dkms.node.cli.kelverify import FileReport, collector_paused, verify_file
from dkms.node.cli.textout import safe, short, table, threshold
from dkms.protocol.events import Event
from dkms.protocol.stream import BadFrame

SAMPLE = "samples/sample.cesr"


def verify(paths: Sequence[str], as_json: bool) -> int:
    """Verify each file; 0 when all were read, 1 when any was unreadable or unframeable."""
    status = 0
    for path in paths:
        with collector_paused():
            report = verify_file(path)
            if report.error is not None:
                status = 1
                print(f"dkms: {safe(path)}: {safe(report.error)}", file=sys.stderr)
            if as_json:
                print(json.dumps(report.to_json()))
            else:
                print("\n".join(render(report)))
    return status


def demo() -> int:
    """A local witness network: an identifier made and rotated through it (see demo.py)."""
    from dkms.node.cli import demo as network_demo  # noqa: PLC0415 - libp2p loads only for the demo

    return network_demo.main()


def render(report: FileReport) -> list[str]:
    """The human table for one file: identifiers, then messages, duplicity and any error."""
    idents = report.identifiers(fel=False)
    lines = [
        f"== {safe(report.path)}: {len(idents)} identifier(s), {len(report.frames)} message(s)"
    ]
    if idents:
        lines += [
            "",
            *table(
                ("IDENTIFIER", "SN", "LATEST", "KT", "KEYS", "NT", "NEXT", "BT", "WITNESSES"),
                [_state_row(prefix, state) for prefix, state in idents.items()],
            ),
        ]
        for prefix, state in idents.items():
            extras = [f"traits {' '.join(state['c'])}"] if state["c"] else []
            if state["di"]:
                extras.append(f"delegated by {state['di']}")
            if extras:
                lines.append(f"  {short(prefix)}: {'; '.join(safe(e) for e in extras)}")
    if report.frames:
        lines += [
            "",
            *_message_table(report),
        ]
    for evidence in report.duplicity():
        said = " vs ".join(f"{e['t']} {e['d']}" for e in evidence["events"])
        lines.append(f"  DUPLICITY {evidence['i']} at sn {evidence['s']}: {said}")
    if report.error is not None:
        lines.append(f"  ERROR {safe(report.error)}")
    return [*lines, ""]


_OFFSET: Final = attrgetter("offset")
_EVENT: Final = attrgetter("event")
_ILK: Final = attrgetter("ilk")
_SN: Final = attrgetter("sn")
_SAID: Final = attrgetter("said")
_MESSAGE_HEADERS: Final = ("OFFSET", "ILK", "SN", "SAID", "STATUS", "REASON")


def _message_table(report: FileReport) -> list[str]:
    """The message table, a row per message: offset, ilk, sn, SAID, status, reason.

    The same lines as `textout.table(_MESSAGE_HEADERS, rows)`, built a column at a time with
    C-level maps (a long KEL's table costs a few microseconds per message otherwise): each
    column is left-justified to its widest cell, the cells joined by two spaces after the
    two-space indent, and the line stripped on the right. The status and reason are
    rendered once per verdict (most messages of a long KEL share one).
    """
    statuses: dict[int, str] = {}  # id(verdict) -> its status, rendered
    reasons: dict[int, str] = {}  # id(verdict) -> its reason, rendered
    for verdict in report.verdicts:
        if id(verdict) not in statuses:
            statuses[id(verdict)] = verdict.status.value
            reasons[id(verdict)] = safe(verdict.reason)
    ids = list(map(id, report.verdicts))
    frames = report.frames
    offsets = list(map(str, map(_OFFSET, frames)))
    if not any(isinstance(frame, BadFrame) for frame in frames):
        events: list[Event] = list(map(_EVENT, frames))  # all Messages
        kinds = list(map(str, map(_ILK, events)))  # an Ilk is a str: its value
        sns = list(map(str, map(_SN, events)))
        saids = list(map(_SAID, events))
        joined = "".join(saids)  # printable ASCII throughout: short() is a cut, done inline
        if joined.isascii() and joined.isprintable():
            saids = [said[:12] + ".." if len(said) > 14 else said for said in saids]
        else:
            saids = list(map(short, saids))
    else:
        kinds, sns, saids = [], [], []
        for frame in frames:
            if isinstance(frame, BadFrame):
                kinds.append("?")
                sns.append("?")
                saids.append("-")
                continue
            event = frame.event
            kinds.append(str(event.ilk))
            sns.append(str(event.sn))
            saids.append(short(event.said))
    columns: list[Sequence[str]] = [
        [header, *column]
        for header, column in zip(
            _MESSAGE_HEADERS,
            (
                offsets,
                kinds,
                sns,
                saids,
                list(map(statuses.__getitem__, ids)),
                list(map(reasons.__getitem__, ids)),
            ),
            strict=True,
        )
    ]
    padded = [map(str.ljust, column, repeat(max(map(len, column)))) for column in columns[:-1]]
    return list(map(str.rstrip, map("  ".join, zip(repeat(""), *padded, columns[-1]))))


def _state_row(prefix: str, state: dict[str, Any]) -> tuple[str, ...]:
    return (
        safe(prefix),
        str(state["sn"]),
        short(state["d"]),
        threshold(state["kt"]),
        ",".join(short(k, 8) for k in state["k"]),
        threshold(state["nt"]),
        ",".join(short(n, 8) for n in state["n"]) or "-",
        str(state["bt"]),
        ",".join(short(b, 8) for b in state["b"]) or "-",
    )

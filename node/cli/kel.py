"""`dkms kel verify` and `dkms demo`: key state and message fates, as JSON lines or tables."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from dkms.node.cli.kelverify import FileReport, collector_paused, verify_file
from dkms.node.cli.textout import safe, short, table, threshold
from dkms.protocol.events import Ilk
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
            *table(("OFFSET", "ILK", "SN", "SAID", "STATUS", "REASON"), _message_rows(report)),
        ]
    for evidence in report.duplicity():
        said = " vs ".join(f"{e['t']} {e['d']}" for e in evidence["events"])
        lines.append(f"  DUPLICITY {evidence['i']} at sn {evidence['s']}: {said}")
    if report.error is not None:
        lines.append(f"  ERROR {safe(report.error)}")
    return [*lines, ""]


def _message_rows(report: FileReport) -> list[tuple[str, ...]]:
    """A row per message: offset, ilk, sn, SAID, status, reason. The status and reason are
    rendered once per verdict (most messages of a long KEL share one)."""
    rendered: dict[int, tuple[str, str]] = {}  # id(verdict) -> its status and reason
    ilks = {ilk: ilk.value for ilk in Ilk}
    rows: list[tuple[str, ...]] = []
    for frame, verdict in zip(report.frames, report.verdicts, strict=True):
        words = rendered.get(id(verdict))
        if words is None:
            words = rendered[id(verdict)] = (verdict.status.value, safe(verdict.reason))
        if isinstance(frame, BadFrame):
            rows.append((str(frame.offset), "?", "?", "-", *words))
            continue
        event = frame.event
        said = event.said
        if len(said) > 14 or not (said.isascii() and said.isprintable()):
            said = short(said)  # as short() renders it; the common case inlined
        rows.append((str(frame.offset), ilks[event.ilk], str(event.sn), said, *words))
    return rows


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

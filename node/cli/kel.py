"""`dkms kel verify` and `dkms demo`: key state and message fates, as JSON lines or tables."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from dkms.node.cli.kelverify import FileReport, verify_file
from dkms.node.cli.textout import safe, short, table, threshold

SAMPLE = "samples/sample.cesr"


def verify(paths: Sequence[str], as_json: bool) -> int:
    """Verify each file; 0 when all were read, 1 when any was unreadable or unframeable."""
    status = 0
    for path in paths:
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
    idents = report.identifiers()
    lines = [f"== {safe(report.path)}: {len(idents)} identifier(s), {len(report.fates)} message(s)"]
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
    if report.fates:
        lines += [
            "",
            *table(
                ("OFFSET", "ILK", "SN", "SAID", "STATUS", "REASON"),
                [
                    (
                        str(f.offset),
                        f.ilk or "?",
                        "?" if f.sn is None else str(f.sn),
                        short(f.said),
                        f.status.value,
                        safe(f.reason),
                    )
                    for f in report.fates
                ],
            ),
        ]
    for evidence in report.duplicity():
        said = " vs ".join(f"{e['t']} {e['d']}" for e in evidence["events"])
        lines.append(f"  DUPLICITY {evidence['i']} at sn {evidence['s']}: {said}")
    if report.error is not None:
        lines.append(f"  ERROR {safe(report.error)}")
    return [*lines, ""]


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

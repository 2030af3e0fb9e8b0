"""Where a node's memory goes, for developers: `DKMS_MEMORY_REPORT=FILE` (or a directory)
makes the daemon trace its allocations (`tracemalloc`, which slows it and takes memory of its
own) and write, every `EVERY` seconds, the `TOP` source lines holding the most memory to FILE
(replaced each time). Off unless the variable is set; for finding what to bound, never for
production.
"""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path
from typing import Final

import trio

VARIABLE: Final = "DKMS_MEMORY_REPORT"
EVERY: Final = 15.0
TOP: Final = 40


def wanted() -> Path | None:
    """The report's file, if asked for: the variable's value, or in a directory it names,
    `memory-PID.txt` (so that several nodes started with it write their own)."""
    value = os.environ.get(VARIABLE, "")
    if not value:
        return None
    path = Path(value)
    return path / f"memory-{os.getpid()}.txt" if path.is_dir() else path


async def report_memory(path: Path) -> None:
    """Run until cancelled: trace allocations and rewrite `path` every `EVERY` seconds."""
    tracemalloc.start(1)
    try:
        while True:
            await trio.sleep(EVERY)
            snapshot = tracemalloc.take_snapshot()
            stats = snapshot.statistics("lineno")
            total = sum(s.size for s in stats)
            lines = [f"traced {total / 1e6:.1f} MB in {len(stats)} source lines"]
            lines += [f"{s.size / 1e6:9.2f} MB {s.count:9d} {s.traceback[0]}" for s in stats[:TOP]]
            Path(f"{path}.tmp").write_text("\n".join(lines) + "\n")
            os.replace(f"{path}.tmp", path)
    finally:
        tracemalloc.stop()

"""Progress over a set of runs on stderr: one bar redrawn in place on a terminal, a line per
finished run otherwise (a log file, CI). A failed run always gets a line of its own, naming
the run (its value and seed) and why, so it is not lost when the bar is redrawn.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

_WIDTH = 30


class Progress:
    def __init__(self, total: int, *, stream: TextIO | None = None, tty: bool | None = None):
        self.total = total
        self.finished = 0
        self.failed = 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.started = time.monotonic()
        if self.tty and total:
            self._draw()

    def done(self, label: str, why: str = "") -> None:
        """One more run finished: `label` names it (`gossip.d=4 seed 5`); `why` it failed."""
        self.finished += 1
        self.failed += bool(why)
        if not self.tty:
            status = f" FAILED: {why}" if why else ""
            self._write(f"[{self.finished}/{self.total}] {label}{status}\n")
            return
        if why:
            self._write(f"\r\x1b[K{label} FAILED: {why}\n")
        self._draw()

    def close(self) -> None:
        if self.tty and self.total:
            self._write("\n")

    def _draw(self) -> None:
        share = self.finished / self.total if self.total else 1.0
        elapsed = time.monotonic() - self.started
        eta = ""
        if 0 < self.finished < self.total:
            eta = f", about {_clock(elapsed / self.finished * (self.total - self.finished))} left"
        failed = f", {self.failed} failed" if self.failed else ""
        bar = "#" * int(share * _WIDTH)
        self._write(
            f"\r\x1b[K[{bar:<{_WIDTH}}] {self.finished}/{self.total} runs{failed}"
            f"  {_clock(elapsed)}{eta}"
        )

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02}:{s % 60:02}" if s >= 3600 else f"{s // 60}:{s % 60:02}"

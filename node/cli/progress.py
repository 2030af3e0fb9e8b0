"""Progress of long work on standard error: what is done of how much, at most once a second."""

from __future__ import annotations

import sys
import time
from typing import Final, TextIO

EVERY: Final = 1.0  # seconds between lines


class Progress:
    """Says `what`: `done` of `total` (when known), once `EVERY` seconds have gone by
    since the start or the last line, and once more at the end if anything was said."""

    def __init__(self, what: str, total: int | None = None, out: TextIO | None = None) -> None:
        self.what = what
        self.total = total
        self.out = out
        self._last = time.monotonic()
        self._said = False
        self._done = 0

    def update(self, done: int) -> None:
        self._done = done
        now = time.monotonic()
        if now - self._last >= EVERY:
            self._last = now
            self._say()

    def finish(self) -> None:
        if self._said:
            self._say()

    def _say(self) -> None:
        self._said = True
        of = f" of {self.total:,}" if self.total is not None else ""
        print(f"dkms: {self.what}: {self._done:,}{of}", file=self.out or sys.stderr, flush=True)

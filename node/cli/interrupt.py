"""Ctrl-C in any `dkms` or `dkms-node` command: one line on stderr, exit status 130.

Under trio, SIGINT raises `KeyboardInterrupt` wherever the main task is, and a nursery wraps it
in a `BaseExceptionGroup` beside whatever its other tasks raised while being cancelled (a
closed stream, a second `KeyboardInterrupt` from a second Ctrl-C during cleanup). A user who
pressed Ctrl-C asked for the command to stop, so any `KeyboardInterrupt`, at any depth of
those groups, ends the command as `PROGRAM: interrupted`. A command that knows what it leaves
behind says so itself and raises `Said`, so that the line is not said twice.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Final

INTERRUPTED: Final = 130  # 128 + SIGINT, what shells report for a command Ctrl-C ended
_said: list[bool] = []  # whether this process said its line already


class Said(KeyboardInterrupt):
    """Ctrl-C, whose line the command said already (what it left done or undone)."""


def interruption(exc: BaseException) -> KeyboardInterrupt | None:
    """The `KeyboardInterrupt` that is `exc` or that its exception groups hold, if any."""
    if isinstance(exc, KeyboardInterrupt):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = interruption(inner)
            if found is not None:
                return found
    return None


def said(program: str, exc: BaseException) -> bool:
    """If `exc` is an interruption: say `PROGRAM: interrupted` (once per process, and not
    when the command said its own line) and return True; False for any other exception."""
    found = interruption(exc)
    if found is None:
        return False
    if not isinstance(found, Said) and not _said:
        print(f"{program}: interrupted", file=sys.stderr)
    _said.append(True)
    return True


def interruptible(program: str, command: Callable[[], int]) -> int:
    """`command()`, or `INTERRUPTED` after one line if Ctrl-C interrupted it."""
    try:
        return command()
    except BaseException as exc:
        if said(program, exc):
            return INTERRUPTED
        raise

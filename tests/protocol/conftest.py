"""A wall-clock limit on every protocol test (pytest-timeout is not installed).

Hypothesis deadlines bound each example, but only once it returns; a real hang never does.
SIGALRM interrupts it. The exception derives from BaseException so that no `except Exception`
inside the library (the CBOR decoder wrapper has one) can swallow it and let the hang go on.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from types import FrameType

import pytest

TIME_LIMIT = 30.0  # seconds per test; the whole protocol suite takes well under that


class TestTimedOut(BaseException):
    """A test ran past TIME_LIMIT."""

    __test__ = False  # not a test class, despite the name


@pytest.fixture(autouse=True)
def _time_limit() -> Iterator[None]:
    main = threading.current_thread() is threading.main_thread()
    if not hasattr(signal, "setitimer") or not main:
        yield
        return

    def expired(signum: int, frame: FrameType | None) -> None:
        raise TestTimedOut(f"test ran longer than {TIME_LIMIT} s (hang?)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

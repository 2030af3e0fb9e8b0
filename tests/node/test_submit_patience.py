"""`dkms kel submit` asks a busy or silent witness again instead of giving up on the KEL."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from dkms.node.cli.net import ATTEMPTS, request_patiently
from dkms.node.roles.codes import Code
from dkms.node.roles.effects import Surface
from dkms.node.runtime.transport import TransportError


class Flaky:
    """Answers from a script: a Code, or an exception to raise; records each request."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.asked: list[float] = []

    async def request(self, to: str, surface: str, payload: bytes, timeout: float) -> Any:
        self.asked.append(trio.current_time())
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step, b"answer", "" if step.ok else step.text


@pytest.mark.trio
async def test_a_busy_then_silent_witness_is_asked_again_with_growing_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = Flaky([Code.BUSY, TransportError("reset"), Code.RATE_LIMITED, Code.OK])
    with trio.fail_after(120):
        code, payload, _ = await request_patiently(
            transport,  # type: ignore[arg-type]
            "Bwitness",
            Surface.SUBMIT,
            b"piece",
            5.0,
        )
    assert code is Code.OK and payload == b"answer"
    waits = [b - a for a, b in zip(transport.asked, transport.asked[1:], strict=False)]
    assert waits == pytest.approx([1.0, 2.0, 4.0])


@pytest.mark.trio
async def test_a_refusal_is_not_asked_again_and_patience_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    refused = Flaky([Code.INVALID])
    code, _, _ = await request_patiently(
        refused,  # type: ignore[arg-type]
        "B",
        Surface.SUBMIT,
        b"",
        5.0,
    )
    assert code is Code.INVALID and len(refused.asked) == 1
    silent = Flaky([TransportError("gone")] * ATTEMPTS)
    with trio.fail_after(200):
        code, _, reason = await request_patiently(
            silent,  # type: ignore[arg-type]
            "B",
            Surface.SUBMIT,
            b"",
            5.0,
        )
    assert code is Code.UNREACHABLE and "gone" in reason and len(silent.asked) == ATTEMPTS

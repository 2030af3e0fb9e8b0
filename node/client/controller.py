"""Driving a `Controller` over a transport: make an event, wait until it is fully witnessed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    # libp2p pulls in trio-typing, whose trio-stubs shadow trio's own types for mypy.
    from trio_typing import TaskStatus

from dkms.node.roles.controller import Controller, PushStatus
from dkms.node.roles.effects import Effect
from dkms.node.runtime.loop import Runtime
from dkms.node.runtime.transport import Transport


class WitnessingFailed(Exception):
    """Not enough witnesses receipted the event; the message says which failed."""


class ControllerClient:
    """A controller and the runtime that carries its events to witnesses."""

    def __init__(self, controller: Controller, transport: Transport) -> None:
        self.controller = controller
        self.runtime = Runtime(controller, transport)
        self.runtime.after_step = self._wake
        self._waiting: dict[str, trio.Event] = {}

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.runtime.run(task_status=task_status)

    async def witnessed(self, effects: list[Effect], said: str) -> None:
        """Perform a command's effects and return once `said` is fully witnessed."""
        await self.runtime.perform(effects)
        if self.controller.status(said) is PushStatus.WAITING:
            event = self._waiting.setdefault(said, trio.Event())
            await event.wait()
        if self.controller.status(said) is not PushStatus.DONE:
            raise WitnessingFailed(f"event {said} could not gather its witness receipts")

    def _wake(self) -> None:
        """After each step: release the waiters whose event is settled (done or failed)."""
        status = self.controller.status
        for said in [s for s in self._waiting if status(s) is not PushStatus.WAITING]:
            self._waiting.pop(said).set()

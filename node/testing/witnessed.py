"""A controller and its witnesses on the in-memory driver: the usual cast of role tests."""

from __future__ import annotations

from collections.abc import Iterable

from dkms.node.roles.controller import Controller, RetryPolicy
from dkms.node.roles.effects import Effect, Surface
from dkms.node.roles.inputs import Request
from dkms.node.roles.witness import Witness
from dkms.protocol.ids import NodePrefix

from .driver import Driver
from .keys import node_signer

CONTROLLER = "controller"


class Witnessed(Driver):
    """`count` witnesses (named by their prefixes, keys `node_signer(0..count-1)`) and a
    controller named `CONTROLLER`, whose command effects `run` carries out by default."""

    @classmethod
    def of(cls, count: int, retry: RetryPolicy | None = None) -> Witnessed:
        net = cls()
        net.add(CONTROLLER, Controller(retry=retry))
        for i in range(count):
            witness = Witness(node_signer(i))
            net.add(witness.prefix, witness)
        return net

    @property
    def controller(self) -> Controller:
        role = self.roles[CONTROLLER]
        assert isinstance(role, Controller)
        return role

    @property
    def witnesses(self) -> dict[str, Witness]:
        return {name: r for name, r in self.roles.items() if isinstance(r, Witness)}

    @property
    def prefixes(self) -> list[str]:
        return list(self.witnesses)

    def witness(self, prefix: str) -> Witness:
        return self.witnesses[prefix]

    def run(self, effects: Iterable[Effect], origin: str = CONTROLLER) -> None:
        super().run(effects, origin)

    def submit(self, prefix: str, message: bytes) -> list[Effect]:
        """Hand `message` to witness `prefix` as the controller would, outside the driver."""
        request = Request(Surface.SUBMIT, NodePrefix(CONTROLLER), message)
        return self.witness(prefix).step(request, self.now)

    def restart(self, prefix: str) -> Witness:
        """A fresh witness with the same key, rebuilt from what it persisted."""
        fresh = Witness(self.witness(prefix).signer)
        fresh.restore(self.stored(prefix), self.now)
        self.add(prefix, fresh)
        return fresh

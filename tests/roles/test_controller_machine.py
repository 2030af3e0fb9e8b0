"""The controller role as a hypothesis state machine (h2's `test_state_machines.py` style).

A controller and five witnesses on the in-memory driver with `hold=True`: the controller
incepts with four of them (bt = 3), interacts, and rotates (sometimes swapping a witness for
the spare), while hypothesis delivers, loses and doubles messages, fires retry timers, and
takes witnesses down and up. Whatever happens, the controller must:

- move each event's status only from waiting to done or to failed, and never away from done;
- hold in its own KEL only events it signed and sent, never past the sn its identity is at;
- call an event done only when at least bt distinct witnesses of it have receipts that verify
  over its bytes (checked here with the plain verifier, not the controller's memo);
- with the witnesses, let the network go quiet once nothing new is made (`kit.quiesce`).
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import (
    initialize,
    invariant,
    precondition,
    rule,
)

from dkms.node.roles.controller import Controller, PushStatus, RetryPolicy
from dkms.node.roles.effects import Effect, Send
from dkms.node.roles.witness import Witness
from dkms.node.testing.driver import Driver
from dkms.node.testing.keys import node_signer, seed

from .kit import (
    MACHINE_SETTINGS,
    NetworkMachine,
    messages,
    pick,
    receipt_verifies,
)

CONTROLLER = "controller"
NAME = "carol"
BT = 3
SIGNERS = [node_signer(i) for i in range(5)]
WITNESSES = [s.verfer for s in SIGNERS]
INDEX = st.integers(min_value=0, max_value=63)
MOVES = {
    (PushStatus.WAITING, PushStatus.WAITING),
    (PushStatus.WAITING, PushStatus.DONE),
    (PushStatus.WAITING, PushStatus.FAILED),
    (PushStatus.DONE, PushStatus.DONE),
    (PushStatus.FAILED, PushStatus.FAILED),
}


class ControllerMachine(NetworkMachine):
    def __init__(self) -> None:
        super().__init__()
        self.net = Driver(hold=True)
        self.controller = Controller(retry=RetryPolicy(first=0.5, cap=4.0, attempts=4))
        self.net.add(CONTROLLER, self.controller)
        for signer in SIGNERS:
            self.net.add(signer.verfer, Witness(signer))
        self.made: dict[str, int] = {}  # SAID -> sn of every event the controller sent out
        self.statuses: dict[str, PushStatus] = {}
        self.seeds = 10

    def seed(self) -> bytes:
        self.seeds += 1
        return seed(self.seeds)

    def push(self, effects: list[Effect]) -> None:
        """Note the event a command signed (the last message of its pushes), then send it."""
        [*_, event] = [m.event for e in effects if isinstance(e, Send) for m in messages(e.payload)]
        self.made[event.said] = event.sn
        self.statuses[event.said] = self.controller.status(event.said)
        assert self.statuses[event.said] is PushStatus.WAITING
        self.net.run(effects, CONTROLLER)

    # ---------------------------------------------------------------- commands

    @initialize()
    def incept(self) -> None:
        now = self.net.now
        witnesses = WITNESSES[:4]
        self.push(
            self.controller.incept(
                NAME, [self.seed()], [self.seed()], witnesses=witnesses, toad=BT, now=now
            )
        )

    @rule()
    def interact(self) -> None:
        self.push(self.controller.interact(NAME, [{"n": len(self.made)}], now=self.net.now))

    @rule(swap=st.booleans(), cut=INDEX)
    def rotate(self, swap: bool, cut: int) -> None:
        current = self.controller.identity(NAME).witnesses
        cuts = [current[pick(current, cut)]] if swap else []
        adds = [w for w in WITNESSES if w not in current] if swap else []
        now = self.net.now
        self.push(
            self.controller.rotate(NAME, [self.seed()], cuts=cuts, adds=adds, toad=BT, now=now)
        )

    # ---------------------------------------------------------------- the network





    @rule(seconds=st.sampled_from([0.5, 1.0, 4.0, 30.0]))
    def advance(self, seconds: float) -> None:
        self.net.advance(seconds)

    @rule(witness=st.sampled_from(WITNESSES))
    def down(self, witness: str) -> None:
        self.net.down.add(witness)

    @precondition(lambda self: self.net.down)
    @rule(witness=INDEX)
    def up(self, witness: int) -> None:
        down = sorted(self.net.down)
        self.net.down.discard(down[pick(down, witness)])

    # ---------------------------------------------------------------- invariants

    @invariant()
    def status_moves_only_forward(self) -> None:
        for said, before in self.statuses.items():
            after = self.controller.status(said)
            assert (before, after) in MOVES, f"sn {self.made[said]}: {before} -> {after}"
            self.statuses[said] = after

    @invariant()
    def own_kel_holds_only_what_it_signed(self) -> None:
        if not self.made:
            return
        ident = self.controller.identity(NAME)
        kel = self.controller.validator.kel(ident.prefix)
        if kel is None:
            return
        assert kel.sn <= ident.sn, f"own KEL at sn {kel.sn}, its identity at sn {ident.sn}"
        for record in kel.chain:
            said, sn = record.event.said, record.event.sn
            assert self.made.get(said) == sn, f"own KEL holds sn {sn} {said[:12]}, never sent"

    @invariant()
    def done_means_bt_verified_receipts(self) -> None:
        for said in self.made:
            if self.controller.status(said) is not PushStatus.DONE:
                continue
            record = self.controller.validator.record(said)
            assert record is not None, f"{said[:12]} done without a record"
            valid = {
                w
                for w, signature in record.receipts.items()
                if w in record.authority.witnesses
                and receipt_verifies(w, signature, record.event.raw)
            }
            assert len(valid) >= BT, f"{said[:12]} done with {len(valid)} valid receipts"


TestControllerMachine = ControllerMachine.TestCase
TestControllerMachine.settings = MACHINE_SETTINGS


def test_an_event_with_all_its_receipts_is_not_failed_while_an_earlier_one_waits() -> None:
    """Found by the machine: W1 and W2 get sn 1 before the inception and escrow it, so sn 1
    waits for retries; sn 2.. gather every receipt meanwhile but cannot enter the controller's
    own KEL before sn 1, so `status` calls them failed, then done once the retries land."""
    state = ControllerMachine()
    state.incept()
    for _ in range(5):
        state.interact()
    state.deliver(indices=[29, 53])  # sn 1 reaches W1 and W2 before the inception
    state.settle()
    state.status_moves_only_forward()
    state.interact()
    state.advance(seconds=0.5)  # the retries of sn 1
    state.settle()
    state.status_moves_only_forward()


def test_a_witness_added_by_rotation_does_not_flood_its_co_witnesses() -> None:
    """Found by the machine: W4, added while sn 1 has only two receipts (W0 and W1 down),
    cannot place the rotation; each answer to its gap query fills nothing, and it asks all
    four co-witnesses again (two answer): the queries double each round and never stop."""
    state = ControllerMachine()
    state.incept()
    state.down(witness=WITNESSES[0])
    state.settle()
    state.interact()
    state.down(witness=WITNESSES[1])
    state.rotate(cut=0, swap=True)
    state.settle()

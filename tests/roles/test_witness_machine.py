"""The witness role as a hypothesis state machine (h2's `test_state_machines.py` style).

One controller and four witnesses (bt = 3) on the in-memory driver with `hold=True`, so
hypothesis decides what arrives, what is lost or doubled, when timers fire and when a witness
restarts from what it persisted. Meanwhile the controller's keys sign rival interactions at
sequence numbers already used and submit them to single witnesses: the attack a witness exists
to resist. Whatever the order, a witness must:

- never receipt two different versions of one event: every signature a witness lets out (in
  a reply, in gossip, or in its store) is checked against the event it names, and at most one
  SAID per (prefix, sn) may ever carry one, across restarts;
- keep its KEL a chain (sn 0, 1, ... each linked to the one before), and never change or
  forget an accepted event, not even by restarting from its store;
- make an event durable before any receipt of it leaves: a `PersistEvent` precedes, in the
  same step or an earlier one, every reply or publish carrying its own receipt;
- let the network go quiet once no one makes anything new (`kit.quiesce`).
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import (
    initialize,
    invariant,
    precondition,
    rule,
)

from dkms.node.roles.controller import Controller
from dkms.node.roles.effects import (
    Effect,
    PersistEvent,
    PersistReceipts,
    Publish,
    Reply,
    Send,
    Surface,
)
from dkms.node.roles.witness import Witness
from dkms.node.testing.driver import Driver
from dkms.node.testing.keys import node_signer, seed
from dkms.protocol.crypto import Signer
from dkms.protocol.events import Ilk, interact
from dkms.protocol.ids import NodePrefix

from .kit import (
    MACHINE_SETTINGS,
    NetworkMachine,
    Rival,
    Watched,
    couples_of,
    messages,
    pick,
    receipt_verifies,
    signed,
)

CONTROLLER = "controller"
NAME = "alice"
BT = 3
SIGNERS = [node_signer(i) for i in range(4)]
WITNESSES = [s.verfer for s in SIGNERS]
INDEX = st.integers(min_value=0, max_value=63)


class WitnessMachine(NetworkMachine):
    def __init__(self) -> None:
        super().__init__()
        self.raws: dict[str, bytes] = {}  # SAID -> event bytes, of every event submitted
        self.persisted: dict[str, set[str]] = {w: set() for w in WITNESSES}
        self.receipted: dict[tuple[str, str, int], str] = {}  # (witness, prefix, sn) -> SAID
        self.kels: dict[tuple[str, int], str] = {}  # (witness, sn) -> SAID ever accepted
        self.honest: list[str] = []  # the controller's SAIDs by sn
        self.keys: list[list[Signer]] = []  # by sn: the keys in force after that event
        self.interactions: list[int] = []  # the sns of the controller's interactions
        self.seeds = 10
        self.rivals = 0
        self.net = Watched(hold=True)
        self.net.observers.append(self.observe)
        self.controller = Controller()
        self.net.add(CONTROLLER, self.controller)
        for signer in SIGNERS:
            self.net.add(signer.verfer, Witness(signer))

    # ---------------------------------------------------------------- observation

    def observe(self, net: Driver, who: str, effects: list[Effect]) -> None:
        """Called with every batch of effects, in order, before the driver performs it."""
        for effect in effects:
            if isinstance(effect, Send) and effect.surface is Surface.SUBMIT:
                for message in messages(effect.payload):
                    if message.event.ilk is not Ilk.RCT:
                        self.raws[message.event.said] = message.event.raw
            if who not in self.persisted:
                continue
            if isinstance(effect, PersistEvent):
                self.persisted[who].add(effect.said)
            elif isinstance(effect, PersistReceipts):
                for witness, signature in effect.couples:
                    if witness == who:
                        self.signs(who, effect.prefix, effect.sn, effect.said, signature)
            elif isinstance(effect, Reply | Publish):
                for prefix, sn, said, witness, signature in couples_of(effect.payload):
                    if witness == who:
                        assert said in self.persisted[who], (
                            f"{who[:8]} let out a receipt of {said[:12]} before persisting it"
                        )
                        self.signs(who, prefix, sn, said, signature)

    def signs(self, who: str, prefix: str, sn: int, said: str, signature: bytes) -> None:
        assert said in self.raws, f"{who[:8]} receipted {said[:12]}, never submitted"
        assert receipt_verifies(who, signature, self.raws[said]), "a receipt that does not verify"
        first = self.receipted.setdefault((who, prefix, sn), said)
        assert first == said, f"{who[:8]} receipted two versions of sn {sn}: {first}, {said}"

    # ---------------------------------------------------------------- the controller

    def seed(self) -> bytes:
        self.seeds += 1
        return seed(self.seeds)

    def made(self, interaction: bool = False) -> None:
        ident = self.controller.identity(NAME)
        self.honest.append(ident.last_said)
        self.keys.append(list(ident.signers))
        if interaction:
            self.interactions.append(ident.sn)
        assert len(self.honest) == ident.sn + 1

    @initialize()
    def incept(self) -> None:
        effects = self.controller.incept(
            NAME, [self.seed()], [self.seed()], witnesses=WITNESSES, toad=BT, now=self.net.now
        )
        self.made()
        self.net.run(effects, CONTROLLER)

    @rule()
    def interact(self) -> None:
        effects = self.controller.interact(NAME, [{"n": len(self.honest)}], now=self.net.now)
        self.made(interaction=True)
        self.net.run(effects, CONTROLLER)

    @rule()
    def rotate(self) -> None:
        effects = self.controller.rotate(NAME, [self.seed()], toad=BT, now=self.net.now)
        self.made()
        self.net.run(effects, CONTROLLER)

    @precondition(lambda self: self.interactions)
    @rule(sn=INDEX, witness=st.sampled_from(WITNESSES))
    def equivocate(self, sn: int, witness: str) -> None:
        """The keys in force sign another interaction at an sn where the controller made one
        (not a rotation, which would supersede it: recovery), for one witness."""
        at = self.interactions[pick(self.interactions, sn)]
        self.rivals += 1
        prefix = self.controller.identity(NAME).prefix
        rival = interact(prefix, prior=self.honest[at - 1], sn=at, anchors=[self.rivals])
        message = signed(rival, self.keys[at - 1])
        send = Send(NodePrefix(witness), Surface.SUBMIT, message, Rival(self.rivals))
        self.net.run([send], CONTROLLER)

    # ---------------------------------------------------------------- the network






    @rule(seconds=st.sampled_from([0.5, 2.0, 10.0, 61.0]))
    def advance(self, seconds: float) -> None:
        self.net.advance(seconds)

    @rule(witness=st.sampled_from(range(len(SIGNERS))))
    def restart(self, witness: int) -> None:
        fresh = Witness(SIGNERS[witness])
        fresh.restore(self.net.stored(fresh.prefix), self.net.now)
        self.net.add(fresh.prefix, fresh, start=True)

    # ---------------------------------------------------------------- invariants

    @invariant()
    def kels_are_chains_that_never_change(self) -> None:
        if not self.honest:
            return
        prefix = self.controller.identity(NAME).prefix
        for name in WITNESSES:
            role = self.net.roles[name]
            assert isinstance(role, Witness)
            kel = role.validator.kel(prefix)
            chain = [r.event for r in kel.chain] if kel is not None else []
            for sn, event in enumerate(chain):
                assert event.sn == sn, f"{name[:8]}: sn {event.sn} at position {sn}"
                assert sn == 0 or event.prior == chain[sn - 1].said, f"{name[:8]}: broken link"
                first = self.kels.setdefault((name, sn), event.said)
                assert first == event.said, f"{name[:8]} changed sn {sn}: {first} -> {event.said}"
            known = sum(1 for w, _ in self.kels if w == name)
            assert len(chain) >= known, f"{name[:8]} forgot events: holds {len(chain)} of {known}"


TestWitnessMachine = WitnessMachine.TestCase
TestWitnessMachine.settings = MACHINE_SETTINGS


def test_a_witness_holding_a_rival_version_does_not_flood_its_co_witnesses() -> None:
    """Found by the machine: W3 missed honest sn 1 and took the rival; each answer to its gap
    query (honest sn 2.., which do not chain onto its sn 1) makes it ask all three co-witnesses
    again, so the queries triple each round and never stop."""
    state = WitnessMachine()
    state.incept()
    for _ in range(5):
        state.interact()
    state.deliver(indices=[0, 3])
    state.equivocate(sn=0, witness=WITNESSES[3])
    state.drop(index=55)  # honest sn 1 on its way to W3
    state.settle()

"""Shared pieces of the role state-machine tests: keys, signed KEL messages, a governance
roster, and a driver that lets a test see every batch of effects before it is carried out.

The stateful tests (`test_*_machine.py`) drive the pure roles through the shared in-memory
driver with `hold=True`, so hypothesis chooses which delivery happens next; this module keeps
what they have in common, and nothing here knows what the invariants are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from dkms.node.roles.controller import Controller
from dkms.node.roles.effects import Effect, Tag
from dkms.node.roles.governance import roster_bundle
from dkms.node.testing.driver import Delivery, Driver
from dkms.node.testing.keys import seed
from dkms.protocol import crypto
from dkms.protocol.cesr import decode_key
from dkms.protocol.crypto import Signer
from dkms.protocol.envelope import Signed
from dkms.protocol.errors import ProtocolError
from dkms.protocol.events import Event, Ilk, receipt
from dkms.protocol.evidence import Accusation, parse_evidence, verify_evidence
from dkms.protocol.roster import Roster
from dkms.protocol.ruling import RULING_TYPE, Ruling
from dkms.protocol.stream import Attachments, Message, messagize, parse_stream

# Small on purpose: each machine file must run in a few seconds on a slow machine.
MACHINE_SETTINGS = settings(max_examples=60, stateful_step_count=30, deadline=None)

Observer = Callable[[Driver, str, list[Effect]], None]


@dataclass(frozen=True, slots=True)
class Rival(Tag):
    """Tags a submission the test makes itself (a rival version); its answer is ignored."""

    n: int


@dataclass
class Watched(Driver):
    """The driver, with observers that see each role's effects before they are carried out
    (and so before that step's persist batch reaches `disk`)."""

    observers: list[Observer] = field(default_factory=list)

    def _perform(self, who: str, effects: list[Effect], handling: Delivery | None) -> None:
        for observe in self.observers:
            observe(self, who, effects)
        super()._perform(who, effects, handling)


QUIET_BASE, QUIET_PER_ITEM = 600, 40  # honest traffic measured: under 230 from a few, 22 each


def quiesce(net: Driver) -> None:
    """Deliver everything in flight, first in first out, and insist the network goes quiet:
    with no new commands and no timers firing, traffic must die out, not feed itself. The
    bound grows with what was in flight at the start, with ample room (measured over
    thousands of examples): a storm grows without bound and soon passes it."""
    limit = max(QUIET_BASE, QUIET_PER_ITEM * len(net.pending))
    for _ in range(limit):
        if not net.pending:
            return
        net.deliver(0)
    kinds = sorted({type(d.event).__name__ for d in net.pending})
    raise AssertionError(f"still busy after {limit} deliveries ({kinds}): a message storm")


def pick(items: Sequence[object], index: int) -> int:
    """A valid index into non-empty `items` from any drawn integer."""
    return index % len(items)


def signed(event: Event, signers: Sequence[Signer]) -> bytes:
    sigs = tuple(s.sign_indexed(event.raw, i) for i, s in enumerate(signers))
    return messagize(event, Attachments(sigs=sigs))


def receipts(event: Event, witnesses: Sequence[Signer]) -> bytes:
    """One `rct` message with a couple from each of `witnesses`."""
    rct = receipt(event.prefix, event.sn, event.said, kind=event.kind)
    couples = tuple((w.verfer, w.sign_raw(event.raw)) for w in witnesses)
    return messagize(rct, Attachments(couples=couples))


def messages(payload: bytes) -> Iterator[Message]:
    try:
        frames = parse_stream(payload)
    except ProtocolError:
        return
    for frame in frames:
        if isinstance(frame, Message):
            yield frame


def couples_of(payload: bytes) -> Iterator[tuple[str, int, str, str, bytes]]:
    """(prefix, sn, said, witness, signature) for every receipt couple in a CESR stream."""
    for message in messages(payload):
        event = message.event
        if event.ilk is Ilk.RCT:
            for witness, signature in message.attachments.couples:
                yield event.prefix, event.sn, event.said, witness, signature


def receipt_verifies(witness: str, signature: bytes, raw: bytes) -> bool:
    """Checked here, not by any role's (memoised) verifier."""
    try:
        return crypto.verify(decode_key(witness), signature, raw)
    except ProtocolError:
        return False


def proven(envelope: Signed) -> Accusation:
    """What a signed evidence or ruling envelope proves, checked with the plain verifier
    (raising `ProtocolError` when it does not verify)."""
    envelope.verify(crypto.verify)
    if envelope.kind == RULING_TYPE:
        return Ruling.from_cbor(envelope.body).verify(crypto.verify)
    return verify_evidence(parse_evidence(envelope.body), crypto.verify)


GOVERNANCE_SEEDS = (90, 91)


def governance(**roles: tuple[str, ...]) -> tuple[str, bytes]:
    """A governance identifier and its signed roster bundle (epoch 1) naming `roles`."""
    gov = Controller()
    gov.incept("gov", [seed(GOVERNANCE_SEEDS[0])], [seed(GOVERNANCE_SEEDS[1])], now=0.0)
    prefix = gov.identity("gov").prefix
    return prefix, roster_bundle(gov, "gov", Roster(prefix, 1, **roles))


class NetworkMachine(RuleBasedStateMachine):
    """What every role machine does to its network (`self.net`, held): deliver what is in
    flight in any order, settle, lose a delivery, double one."""

    net: Driver

    @precondition(lambda self: self.net.pending)
    @rule(indices=st.lists(st.integers(min_value=0, max_value=63), min_size=1, max_size=48))
    def deliver(self, indices: list[int]) -> None:
        for index in indices:
            if self.net.pending:
                self.net.deliver(pick(self.net.pending, index))

    @precondition(lambda self: self.net.pending)
    @rule()
    def settle(self) -> None:
        quiesce(self.net)

    @precondition(lambda self: self.net.pending)
    @rule(index=st.integers(min_value=0, max_value=63))
    def drop(self, index: int) -> None:
        self.net.drop(pick(self.net.pending, index))

    @precondition(lambda self: self.net.pending)
    @rule(index=st.integers(min_value=0, max_value=63))
    def duplicate(self, index: int) -> None:
        self.net.duplicate(pick(self.net.pending, index))

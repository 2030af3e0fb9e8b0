"""Juror and judge duties: what a watcher does with duplicity, as its roster asks.

Theory of operation. Duplicity reaches a node two ways: found by its own detectors (`found`:
the watcher's validator and juror detectors) or heard on `/dkms/1/duplicity` (`heard`). Either
way the evidence is verified before anything else; then:

    keep        evidence and rulings are held once per conflict (`holdings.Holdings`) and
                persisted; the standing of the accused follows
    publish     a juror publishes evidence it made, in its turn among the jurors
                (`PUBLISH_STAGGER` apart, in an order drawn from the conflict), and skips its
                turn once another juror's evidence (or a ruling) has reached it
    rule        a judge rules once on each conflict it holds evidence of, and publishes it
    admit       gossip validation on the duplicity topic: only envelopes signed by a juror (for
                evidence) or a judge (for rulings) on the roster, that verify, are forwarded
    roster      governance bundles offered (handed to us or heard): a newer roster is stored
                and gossiped on, and what it asks of us is done at once (`perform`)

Pure: no I/O, no clock.
"""

from __future__ import annotations

from typing import Final

import blake3

from dkms.protocol.crypto import Signer
from dkms.protocol.duplicity import DuplicityEvidence
from dkms.protocol.envelope import Signed
from dkms.protocol.errors import ProtocolError
from dkms.protocol.evidence import Accusation, parse_evidence, verify_evidence
from dkms.protocol.ids import NodePrefix
from dkms.protocol.roster import Duty
from dkms.protocol.ruling import RULING_TYPE, Ruling
from dkms.protocol.signing import Verifier
from dkms.protocol.witness_duplicity import WitnessDuplicity

from .effects import (
    Effect,
    PersistEvidence,
    PersistMeta,
    PersistRuling,
    Publish,
    Report,
    SetTimer,
)
from .governance import Governance
from .holdings import Conflict, Held, Holdings, conflict_of
from .inputs import PublishTurn
from .topics import DUPLICITY_TOPIC, GOVERNANCE_TOPIC

PUBLISH_STAGGER: Final = 0.25  # seconds between jurors' turns to publish one conflict
GOVERNANCE_KEY: Final = "governance"  # meta key of the stored governance bundle


class Duties:
    """The evidence and rulings a node holds, the roster it follows, and what they ask of it."""

    def __init__(self, signer: Signer, governance: str, verify: Verifier) -> None:
        self.signer = signer
        self.prefix = NodePrefix(signer.verfer)
        self._verify = verify
        self.governance = Governance(governance, verify)
        self.holdings = Holdings()
        self._echoed: set[Conflict] = set()  # conflicts another juror's evidence told us of

    def admits(self, payload: bytes) -> bool:
        """Gossip validation on the duplicity topic."""
        try:
            self.vouched(Signed.from_cbor(payload))
        except ProtocolError:
            return False
        return True

    def restore_held(self, envelope: bytes) -> None:
        """Reinstate stored evidence or a stored ruling (verified again)."""
        try:
            signed = Signed.from_cbor(envelope)
            signed.verify(self._verify)
            if signed.kind == RULING_TYPE:
                ruling = Ruling.from_cbor(signed.body)
                self.holdings.add_ruling(Held(ruling.verify(self._verify), signed, ruling.evidence))
            else:
                accusation = verify_evidence(parse_evidence(signed.body), self._verify)
                self.holdings.add_evidence(Held(accusation, signed, signed.body))
        except ProtocolError:
            return  # damaged: what the network still holds can be asked for again

    def turn(self, conflict: Conflict, now: float, effects: list[Effect]) -> None:
        """Our turn to publish `conflict` came (`PublishTurn`)."""
        held = self.holdings.evidence.get(conflict)
        if held is not None:
            self.publish(held.accusation, now, effects, turn=True)

    def found(
        self, evidence: DuplicityEvidence | WitnessDuplicity, now: float, effects: list[Effect]
    ) -> None:
        """Duplicity this node detected: sign it, keep it, publish it if we are a juror."""
        body = evidence.to_cbor()
        try:
            accusation = verify_evidence(evidence, self._verify)
        except ProtocolError as err:
            effects.append(Report("warning", f"detected duplicity does not verify: {err}"))
            return
        if self.holdings.knows(accusation):
            return
        signed = Signed.make(self.signer, body)
        self.keep_evidence(Held(accusation, signed, body), effects)
        self.publish(accusation, now, effects)

    def publish(
        self, accusation: Accusation, now: float, effects: list[Effect], *, turn: bool = False
    ) -> None:
        """Publish our evidence of a conflict, in our turn among the jurors.

        Every watcher sees an equivocation at about the same moment; if every juror published
        its own envelope, each conflict would cross the network once per juror. So jurors take
        turns, `PUBLISH_STAGGER` apart, in an order drawn from the conflict (a different juror
        goes first for each), and a juror skips its turn once another's evidence (or a ruling,
        which carries it) has reached it."""
        key = conflict_of(accusation)
        held = self.holdings.evidence.get(key)
        if held is None or key in self.holdings.published or key in self._echoed:
            return
        roster = self.governance.roster
        if roster is None or self.prefix not in roster.jurors:
            return
        rank = _rank(key, roster.jurors, self.prefix)
        if rank and not turn:
            effects.append(SetTimer(PublishTurn(key), now + rank * PUBLISH_STAGGER))
            return
        self.holdings.published.add(key)
        effects.append(Publish(DUPLICITY_TOPIC, held.envelope.to_cbor()))

    def keep_evidence(self, held: Held, effects: list[Effect]) -> None:
        if not self.holdings.add_evidence(held):
            return
        a = held.accusation
        effects.append(PersistEvidence(a.accused, a.sn, held.envelope.to_cbor()))
        who = "identifier" if a.kind == "controller" else "witness"
        effects.append(
            Report(
                "warning",
                f"duplicity: {who} {a.accused} at sn {a.sn} of {a.prefix} "
                f"(evidence signed by {held.envelope.signer})",
            )
        )
        self.rule(held, effects)

    def rule(self, held: Held, effects: list[Effect]) -> None:
        """Judge duty: rule on verified evidence once."""
        judge = self.governance.allows(self.prefix, Duty.JUDGE)
        if not judge or self.holdings.ruled(held.accusation):
            return
        ruling = Ruling(held.accusation, held.evidence)
        signed = Signed.make(self.signer, ruling.to_cbor())
        self.keep_ruling(Held(held.accusation, signed, held.evidence), effects)
        effects.append(Publish(DUPLICITY_TOPIC, signed.to_cbor()))

    def keep_ruling(self, held: Held, effects: list[Effect]) -> None:
        if not self.holdings.add_ruling(held):
            return
        a = held.accusation
        effects.append(PersistRuling(a.accused, held.envelope.to_cbor()))
        effects.append(
            Report(
                "warning",
                f"ruling by {held.envelope.signer}: {a.kind} {a.accused} duplicitous "
                f"from sn {a.sn}",
            )
        )

    def vouched(self, signed: Signed) -> Held:
        """Verify an envelope heard on the duplicity topic and that its signer may vouch."""
        signed.verify(self._verify)
        if signed.kind == RULING_TYPE:
            if not self.governance.allows(signed.signer, Duty.JUDGE):
                raise _NotRostered(f"{signed.signer} is not a judge on the roster")
            ruling = Ruling.from_cbor(signed.body)
            return Held(ruling.verify(self._verify), signed, ruling.evidence)
        if not self.governance.allows(signed.signer, Duty.JUROR):
            raise _NotRostered(f"{signed.signer} is not a juror on the roster")
        accusation = verify_evidence(parse_evidence(signed.body), self._verify)
        return Held(accusation, signed, signed.body)

    def heard(self, data: bytes, effects: list[Effect]) -> None:
        try:
            signed = Signed.from_cbor(data)
            held = self.vouched(signed)
        except ProtocolError as err:
            effects.append(Report("debug", f"ignored duplicity gossip: {err}"))
            return
        self._echoed.add(conflict_of(held.accusation))
        if signed.kind == RULING_TYPE:
            self.keep_ruling(held, effects)
            if not self.holdings.knows(held.accusation):  # the ruling carries the evidence
                self.keep_evidence(held, effects)
        else:
            self.keep_evidence(held, effects)

    # ---------------------------------------------------------------- governance

    def offered(
        self, data: bytes, now: float, effects: list[Effect], *, forward: bool
    ) -> tuple[bool, str]:
        try:
            changed, why = self.governance.offer(data, now)
        except ProtocolError as err:
            if forward:
                raise
            effects.append(Report("debug", f"ignored governance gossip: {err}"))
            return False, str(err)
        if not changed:
            return False, why
        effects.append(PersistMeta(GOVERNANCE_KEY, data))
        effects.append(Report("info", why))
        if forward:
            effects.append(Publish(GOVERNANCE_TOPIC, data))
        roles = self.governance.roster.roles_of(self.prefix) if self.governance.roster else ()
        if Duty.WATCHER not in roles:
            effects.append(
                Report("warning", f"this node ({self.prefix}) is not a rostered watcher")
            )
        self.perform(now, effects)  # what the new roster asks of us
        return True, why

    def perform(self, now: float, effects: list[Effect], *, turn: bool = False) -> None:
        """Juror and judge duties on everything held: publish our own evidence (at once with
        `turn`, else in our turn among the jurors) and rule on what is unruled."""
        for held in list(self.holdings.evidence.values()):
            if held.envelope.signer == self.prefix:
                self.publish(held.accusation, now, effects, turn=turn)
            self.rule(held, effects)


class _NotRostered(ProtocolError):
    """An envelope's signer is not on the roster for what it signed."""


def _rank(conflict: Conflict, jurors: tuple[str, ...], me: str) -> int:
    """Our place among the jurors in publishing `conflict` (0: first)."""
    kind, accused, prefix, sn, saids = conflict
    base = "|".join([kind, accused, prefix, str(sn), *sorted(saids)])
    order = sorted(jurors, key=lambda j: blake3.blake3(f"{base}|{j}".encode()).digest())
    return order.index(me)

"""The watcher role, with the juror and judge duties its governance roster gives it.

Theory of operation. A watcher listens to the KEL gossip shards (all, or those of the
identifiers it is told to watch), to `/dkms/1/duplicity` and to `/dkms/1/governance`.

    KEL gossip      every message goes through its own validator (receipts needed: the
                    watcher witnesses nothing), so it holds each KEL with its receipts; a gap
                    makes it ask the KEL's witnesses (or its peers, for an identifier it holds
                    nothing of: one that began before it listened); every version seen and
                    every witness receipt goes to the juror's detectors (`juror.Receipts`,
                    `juror.Lag`):
                    `rct` couples (-C, our witnesses' form) and indexed witness signatures
                    (-B, keripy's: on a receipt or on the event itself) alike
    duplicity found by the validator (a second validly signed version at one sn) or by the
                    receipt detector (a witness receipting two versions): the evidence is
                    verified, signed into an envelope, stored, and, if the roster names this
                    node a juror, published; if it names it a judge, it rules on it too
    duplicity topic evidence from rostered jurors and rulings from rostered judges are
                    verified and kept (and judged, when we are a judge); `admits` is the gossip
                    validator, so nothing else is forwarded
    governance      bundles (governance KEL + signed roster) handed to us or heard; a newer
                    roster is stored and gossiped on. A watcher that starts without one asks
                    its peers (`peers`: its bootstrap nodes) for theirs, and again every
                    `ROSTER_RETRY` seconds until it has one: gossip carries no history, so a
                    node that joins after a roster was published would otherwise wait for the
                    next one
    query           key state with standing ("ok" | "duplicitous" | "unknown"), a KEL, the
                    evidence and rulings held, the roster

Everything that must survive a crash (events, receipts, evidence, rulings, the roster) leaves
as `Persist*` effects; `restore_*` rebuild the role from them. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import blake3
import cbor2

from dkms.protocol import crypto
from dkms.protocol.cesr import IndexedSig
from dkms.protocol.crypto import Signer
from dkms.protocol.duplicity import DuplicityEvidence
from dkms.protocol.envelope import Signed
from dkms.protocol.errors import LocalProtocolError, ProtocolError
from dkms.protocol.escrow import EscrowLimits, Waiting
from dkms.protocol.events import Event, Ilk
from dkms.protocol.evidence import Accusation, parse_evidence, verify_evidence
from dkms.protocol.ids import NodePrefix, Prefix
from dkms.protocol.outcomes import Outcome, Status
from dkms.protocol.roster import Duty
from dkms.protocol.ruling import RULING_TYPE, Ruling
from dkms.protocol.signing import Verifier
from dkms.protocol.stream import Attachments, Message, messagize, parse_stream
from dkms.protocol.validator import Validator
from dkms.protocol.witness_duplicity import WitnessDuplicity

from .codes import Code
from .effects import (
    Blame,
    Effect,
    PersistEvent,
    PersistEvidence,
    PersistMeta,
    PersistReceipts,
    PersistRuling,
    Publish,
    Reply,
    Report,
    Send,
    SetTimer,
    Subscribe,
    Surface,
)
from .governance import Governance
from .holdings import Conflict, Held, Holdings, conflict_of
from .inputs import (
    Answered,
    Expiry,
    GapQuery,
    Heard,
    Input,
    LagCheck,
    PublishTurn,
    Request,
    RosterQuery,
    RosterRetry,
    TimerFired,
)
from .juror import Lag, Receipts
from .topics import (
    DUPLICITY_TOPIC,
    GOVERNANCE_TOPIC,
    Parse,
    ParseCache,
    kel_topic,
    kel_topics,
    well_formed,
)

EXPIRE_EVERY: Final = 60.0
PUBLISH_STAGGER: Final = 0.25  # seconds between jurors' turns to publish one conflict
GOVERNANCE_KEY: Final = "governance"  # meta key of the stored governance bundle
ROSTER_RETRY: Final = 15.0  # seconds between asks for a roster while we have none
PEER_ASKS: Final = 4  # peers asked for a roster, or for a KEL we hold nothing of
MAX_GAP_ASKS: Final = 64  # identifiers with a gap query in flight at once


class Watcher:
    """One watcher node: its key, its copies of the KELs, and what it holds against whom."""

    def __init__(
        self,
        signer: Signer,
        governance: str,
        *,
        verify: Verifier | None = None,
        limits: EscrowLimits | None = None,
        watch: frozenset[str] = frozenset(),
        anomaly_after: float = 30.0,
        parse: Parse | None = None,
        peers: Sequence[str] = (),
    ) -> None:
        """`verify` and `parse` may be caches shared across nodes (as in the simulator);
        `peers` are nodes (prefixes) to ask for the roster if we start without one."""
        if signer.transferable:
            raise LocalProtocolError("a watcher key must be non-transferable (a B prefix)")
        self._parse = parse or ParseCache()
        self._memo = crypto.MemoVerifier()
        self._verify = verify or self._memo
        self.signer = signer
        self.prefix = NodePrefix(signer.verfer)
        self.watch = watch  # empty: every identifier
        self.peers = tuple(NodePrefix(p) for p in peers if p != signer.verfer)
        self.validator = Validator(verify=self._verify, limits=limits)
        self.governance = Governance(governance, self._verify)
        self.holdings = Holdings()
        self.receipts = Receipts(self._verify, ignore=self.prefix)
        self.lag = Lag(anomaly_after)
        self._asking: set[str] = set()  # prefixes with a gap query in flight
        self._echoed: set[Conflict] = set()  # conflicts another juror's evidence told us of

    surfaces: Final = frozenset({Surface.QUERY, Surface.GOVERNANCE})

    # ---------------------------------------------------------------- life cycle

    def start(self, now: float) -> list[Effect]:
        topics = sorted({kel_topic(p) for p in self.watch}) if self.watch else kel_topics()
        effects: list[Effect] = [Subscribe(t) for t in topics]
        effects += [Subscribe(DUPLICITY_TOPIC), Subscribe(GOVERNANCE_TOPIC)]
        effects += [SetTimer(Expiry(), now + EXPIRE_EVERY), self._lag_timer(now)]
        if self.governance.roster is None:
            effects.append(
                Report(
                    "warning",
                    f"no roster of governance {self.governance.prefix} yet: watching, but "
                    "publishing no evidence until one arrives",
                )
            )
            effects += self._ask_for_roster(now)
        # After a restart: a crash may have come between storing and publishing; gossip ids
        # are content hashes and holdings are per conflict, so publishing again is harmless.
        self._duties(now, effects, turn=True)
        return effects

    def restore_governance(self, bundle: bytes, now: float) -> None:
        self.governance.restore(bundle, now)

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

    def restore(self, stored: bytes, now: float) -> None:
        """Replay stored events and receipts (`Store.replay_chunks`) into a fresh watcher."""
        lag, self.lag = self.lag, Lag(self.lag.after)  # old events are not lagging now
        try:
            for frame in parse_stream(stored):
                if isinstance(frame, Message):
                    self._observe(frame, now, [])
        finally:
            self.lag = lag

    # ---------------------------------------------------------------- inputs

    def admits(self, topic: str, payload: bytes) -> bool:
        """Gossip validation: what may be delivered to us and forwarded to our peers."""
        if topic == DUPLICITY_TOPIC:
            try:
                self._vouched(Signed.from_cbor(payload))
            except ProtocolError:
                return False
            return True
        if topic == GOVERNANCE_TOPIC:
            try:
                self.governance.check(payload)
            except ProtocolError:
                return False
            return True
        return well_formed(payload, self._parse)

    def step(self, event: Input, now: float) -> list[Effect]:
        effects: list[Effect] = []
        match event:
            case Request(surface=Surface.QUERY):
                return [self._query(event.payload)]
            case Request(surface=Surface.GOVERNANCE):
                return self._govern(event.payload, now)
            case Request():
                return [Reply.refuse(Code.NOT_SERVED, f"a watcher does not serve {event.surface}")]
            case Heard(topic=topic, peer=peer, payload=data):
                if topic == DUPLICITY_TOPIC:
                    self._heard_duplicity(data, effects)
                elif topic == GOVERNANCE_TOPIC:
                    self._offered(data, now, effects, forward=False)
                else:
                    self._kel_gossip(data, now, effects, peer)
            case Answered(tag=GapQuery(prefix=prefix)):
                self._asking.discard(prefix)
                if event.ok:
                    self._kel_gossip(event.payload, now, effects)
                else:
                    effects.append(Report("debug", f"{event.tag}: no answer ({event.reason})"))
            case Answered(tag=RosterQuery()):
                if event.ok:
                    self._offered(event.payload, now, effects, forward=False)
                else:
                    effects.append(Report("debug", f"{event.tag}: no answer ({event.reason})"))
            case TimerFired(key=PublishTurn(conflict=conflict)):
                held = self.holdings.evidence.get(conflict)
                if held is not None:
                    self._publish_evidence(held.accusation, now, effects, turn=True)
            case TimerFired(key=RosterRetry()):
                if self.governance.roster is None:
                    effects += self._ask_for_roster(now)
            case TimerFired(key=Expiry()):
                effects.append(SetTimer(Expiry(), now + EXPIRE_EVERY))
                for outcome in self.validator.expire(now):
                    effects.append(Report("info", f"dropped {outcome.said}: {outcome.reason}"))
            case TimerFired(key=LagCheck()):
                effects.append(self._lag_timer(now))
                for anomaly in self.lag.due(now, self._receipted):
                    effects.append(
                        Report("warning", f"anomaly in {anomaly['i']}: {anomaly['anomaly']}")
                    )
        return effects

    def _kel_gossip(
        self, data: bytes, now: float, effects: list[Effect], peer: NodePrefix | None = None
    ) -> None:
        """KEL messages heard or asked for: observe those of identifiers we watch."""
        try:
            frames = self._parse(data)
        except ProtocolError as err:
            effects.append(Report("debug", f"ignored unreadable gossip: {err}"))
            if peer:
                effects.append(Blame(peer, "unreadable gossip"))
            return
        for frame in frames:
            if isinstance(frame, Message) and self._wanted(frame.event.prefix):
                self._observe(frame, now, effects)

    def _govern(self, data: bytes, now: float) -> list[Effect]:
        """A governance bundle handed to us (`dkms governance roster create --publish-to`)."""
        effects: list[Effect] = []
        try:
            _, why = self._offered(data, now, effects, forward=True)
        except ProtocolError as err:
            return [Reply.refuse(Code.INVALID, f"roster refused: {err}")]
        return [*effects, Reply.accept(reason=why)]

    def _query(self, data: bytes) -> Reply:
        """`{"t": "state" | "kel" | "evidence" | "roster", "i": prefix, "s": sn}`."""
        try:
            ask = cbor2.loads(data)
        except Exception:
            return Reply.refuse(Code.MALFORMED, "query is not CBOR")
        if not isinstance(ask, dict):
            return Reply.refuse(Code.BAD_QUERY, "query must be a CBOR map")
        kind, prefix = ask.get("t"), ask.get("i")
        if kind == "roster":
            if self.governance.bundle is None:
                return Reply.refuse(Code.NO_ROSTER, "this node holds no roster yet")
            return Reply.accept(self.governance.bundle)
        if kind == "evidence":
            if prefix is not None and not isinstance(prefix, str):
                return Reply.refuse(Code.BAD_QUERY, "i must be an identifier prefix")
            return Reply.accept(cbor2.dumps(self.held(prefix)))
        if not isinstance(prefix, str):
            return Reply.refuse(Code.BAD_QUERY, "query needs an identifier prefix i")
        if kind == "state":
            return Reply.accept(cbor2.dumps(self.key_state(prefix)))
        if kind == "kel":
            start = ask.get("s", 0)
            if not isinstance(start, int) or start < 0:
                return Reply.refuse(Code.BAD_QUERY, "s must be a sequence number")
            if self.validator.kel(prefix) is None:
                return Reply.refuse(Code.UNKNOWN, f"unknown identifier {prefix}")
            return Reply.accept(self.validator.replay(prefix, start))
        return Reply.refuse(Code.BAD_QUERY, "query type t must be state, kel, evidence or roster")

    # ---------------------------------------------------------------- views

    def key_state(self, prefix: str) -> dict[str, Any]:
        """Key state (when known) with standing, the evidence and rulings behind it, and the
        anomalies seen."""
        kel = self.validator.kel(prefix)
        standing, since = self.holdings.standing(prefix, kel is not None)
        state: dict[str, Any] = {"i": prefix}
        if kel is not None:
            state = kel.state().to_json()
            state["receipts"] = {r.event.said: sorted(r.receipts) for r in kel.chain}
            state["fully_witnessed"] = len(kel.last.receipts) >= kel.last.authority.toad
            accused = self.holdings.accused()
            state["duplicitous_witnesses"] = sorted(
                w for w in kel.authority.witnesses if w in accused
            )
        evidence, rulings = self.holdings.about(prefix)
        state["standing"] = standing
        state["duplicitous_from"] = since
        state["evidence"] = [h.envelope.to_cbor() for h in evidence]
        state["rulings"] = [h.envelope.to_cbor() for h in rulings]
        state["anomalies"] = [a for a in self.lag.anomalies if a["i"] == prefix]
        state["watcher"] = self.prefix
        return state

    def held(self, prefix: str | None = None) -> dict[str, Any]:
        evidence, rulings = self.holdings.about(prefix)
        return {
            "watcher": self.prefix,
            "evidence": [h.envelope.to_cbor() for h in evidence],
            "rulings": [h.envelope.to_cbor() for h in rulings],
        }

    # ---------------------------------------------------------------- KELs

    def _wanted(self, prefix: str) -> bool:
        return not self.watch or prefix in self.watch

    def _observe(self, message: Message, now: float, effects: list[Effect]) -> None:
        event = message.event
        if event.ilk is Ilk.RCT:
            couples = message.attachments.couples
            if any(w == self.prefix for w, _ in couples):  # our own receipts do not count
                couples = tuple((w, s) for w, s in couples if w != self.prefix)
                message = message._replace(
                    attachments=message.attachments._replace(couples=couples)
                )
            for witness, signature in couples:
                for found in self.receipts.receipt(
                    event.prefix, event.sn, event.said, witness, signature
                ):
                    self._found(found, now, effects)
        before = self._receipt_count(event.said) if event.ilk is Ilk.RCT else -1
        for outcome in self.validator.process(message, now):
            self._outcome(outcome, event.said, message, now, effects)
        if message.attachments.wigs:
            self._indexed_receipts(event, message.attachments.wigs, now, effects)
        if before >= 0 and self._receipt_count(event.said) > before:
            record = self.validator.record(event.said)
            if record is not None:
                e = record.event
                effects.append(
                    PersistReceipts(e.prefix, e.sn, e.said, tuple(record.receipts.items()))
                )

    def _outcome(
        self, outcome: Outcome, said: str, message: Message, now: float, effects: list[Effect]
    ) -> None:
        status = outcome.status
        if outcome.ilk == Ilk.RCT:
            return
        if outcome.said == said and status is not Status.REJECTED:
            for found in self.receipts.body(message.event):
                self._found(found, now, effects)
            if status is not Status.DUPLICITOUS:
                self.lag.seen(outcome.prefix, outcome.sn, said, now)
        if status is Status.ACCEPTED:
            record = self.validator.record(outcome.said)
            if record is not None:
                e = record.event
                stored = messagize(e, Attachments(sigs=record.sigs, sources=record.sources))
                effects.append(PersistEvent(e.prefix, e.sn, e.said, stored))
                if record.receipts:
                    effects.append(
                        PersistReceipts(e.prefix, e.sn, e.said, tuple(record.receipts.items()))
                    )
        elif status is Status.DUPLICITOUS and outcome.evidence is not None:
            self._found(outcome.evidence, now, effects)
        elif status is Status.ESCROWED and outcome.waiting is Waiting.OUT_OF_ORDER:
            self._ask_for_gap(outcome.prefix, effects)

    def _indexed_receipts(
        self, event: Event, wigs: tuple[IndexedSig, ...], now: float, effects: list[Effect]
    ) -> None:
        """Witness signatures indexed into the witness list of the version `event` names
        (`Validator.witnesses_of`). Not resolved here, and left to `rct` couples: a rival
        rotation's list, and -B receipts that arrive before the version they sign."""
        version = self.receipts.bodies.get(event.said)  # receipt() checks prefix and sn
        witnesses = self.validator.witnesses_of(version) if version is not None else None
        if witnesses is None:
            return
        for wig in wigs:
            if wig.index < len(witnesses):
                for found in self.receipts.receipt(
                    event.prefix, event.sn, event.said, witnesses[wig.index], wig.raw
                ):
                    self._found(found, now, effects)

    def _receipt_count(self, said: str) -> int:
        record = self.validator.record(said)
        return len(record.receipts) if record else 0

    def _receipted(self, said: str) -> tuple[tuple[str, ...], set[str]] | None:
        record = self.validator.record(said)
        if record is None:
            return None
        witnesses = tuple(w for w in record.authority.witnesses if w != self.prefix)
        return witnesses, set(record.receipts)

    def _ask_for_gap(self, prefix: str, effects: list[Effect]) -> None:
        """Ask for the events missing before an escrowed one: from the KEL's witnesses, or,
        for an identifier we hold nothing of (it began before we listened), from our peers.
        One ask per identifier in flight, and at most `MAX_GAP_ASKS` at once, so gossip
        about made-up identifiers cannot turn us into a query amplifier."""
        if prefix in self._asking or len(self._asking) >= MAX_GAP_ASKS:
            return
        kel = self.validator.kel(prefix)
        if kel is not None:
            targets = [w for w in kel.authority.witnesses if w != self.prefix]
            start = kel.sn + 1
        else:
            targets, start = list(self.peers[:PEER_ASKS]), 0
        if not targets:
            return
        self._asking.add(prefix)
        ask = cbor2.dumps({"t": "kel", "i": prefix, "s": start})
        tag = GapQuery(Prefix(prefix))
        for target in targets:
            effects.append(Send(NodePrefix(target), Surface.QUERY, ask, tag))

    def _ask_for_roster(self, now: float) -> list[Effect]:
        if not self.peers:
            return []
        ask = cbor2.dumps({"t": "roster"})
        effects: list[Effect] = [
            Send(peer, Surface.QUERY, ask, RosterQuery(peer)) for peer in self.peers[:PEER_ASKS]
        ]
        effects.append(SetTimer(RosterRetry(), now + ROSTER_RETRY))
        return effects

    def _lag_timer(self, now: float) -> SetTimer:
        return SetTimer(LagCheck(), now + max(self.lag.after / 4, 0.25))

    # ---------------------------------------------------------------- duplicity

    def _found(
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
        self._keep_evidence(Held(accusation, signed, body), effects)
        self._publish_evidence(accusation, now, effects)

    def _publish_evidence(
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

    def _keep_evidence(self, held: Held, effects: list[Effect]) -> None:
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
        self._rule(held, effects)

    def _rule(self, held: Held, effects: list[Effect]) -> None:
        """Judge duty: rule on verified evidence once."""
        judge = self.governance.allows(self.prefix, Duty.JUDGE)
        if not judge or self.holdings.ruled(held.accusation):
            return
        ruling = Ruling(held.accusation, held.evidence)
        signed = Signed.make(self.signer, ruling.to_cbor())
        self._keep_ruling(Held(held.accusation, signed, held.evidence), effects)
        effects.append(Publish(DUPLICITY_TOPIC, signed.to_cbor()))

    def _keep_ruling(self, held: Held, effects: list[Effect]) -> None:
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

    def _vouched(self, signed: Signed) -> Held:
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

    def _heard_duplicity(self, data: bytes, effects: list[Effect]) -> None:
        try:
            signed = Signed.from_cbor(data)
            held = self._vouched(signed)
        except ProtocolError as err:
            effects.append(Report("debug", f"ignored duplicity gossip: {err}"))
            return
        self._echoed.add(conflict_of(held.accusation))
        if signed.kind == RULING_TYPE:
            self._keep_ruling(held, effects)
            if not self.holdings.knows(held.accusation):  # the ruling carries the evidence
                self._keep_evidence(held, effects)
        else:
            self._keep_evidence(held, effects)

    # ---------------------------------------------------------------- governance

    def _offered(
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
        self._duties(now, effects)  # what the new roster asks of us
        return True, why

    def _duties(self, now: float, effects: list[Effect], *, turn: bool = False) -> None:
        """Juror and judge duties on everything held: publish our own evidence (at once with
        `turn`, else in our turn among the jurors) and rule on what is unruled."""
        for held in list(self.holdings.evidence.values()):
            if held.envelope.signer == self.prefix:
                self._publish_evidence(held.accusation, now, effects, turn=turn)
            self._rule(held, effects)


class _NotRostered(ProtocolError):
    """An envelope's signer is not on the roster for what it signed."""


def _rank(conflict: Conflict, jurors: tuple[str, ...], me: str) -> int:
    """Our place among the jurors in publishing `conflict` (0: first)."""
    kind, accused, prefix, sn, saids = conflict
    base = "|".join([kind, accused, prefix, str(sn), *sorted(saids)])
    order = sorted(jurors, key=lambda j: blake3.blake3(f"{base}|{j}".encode()).digest())
    return order.index(me)

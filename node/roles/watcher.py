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
                    (-B, keripy's: on a receipt or on the event itself) alike. The receipt
                    detector counts only witnesses the KEL held names (`_names`); the lag
                    detector only events of KELs held that have witnesses, and its anomalies
                    are logged a few a minute (`juror.Throttle`), the rest counted (all are
                    in the key state)
    duplicity       found by the validator (a second validly signed version at one sn) or by
                    the receipt detector (a witness receipting two versions), or heard on the
                    duplicity topic: `duties.Duties` verifies, keeps, publishes and rules on
                    it as the roster asks, and is the duplicity topic's gossip validator
    governance      bundles (governance KEL + signed roster) handed to us or heard go to the
                    duties. A watcher that starts without a roster asks its peers (`peers`:
                    its bootstrap nodes) for theirs, and again every `ROSTER_RETRY` seconds
                    until it has one: gossip carries no history, so a node that joins after a
                    roster was published would otherwise wait for the next one
    query           key state with standing ("ok" | "duplicitous" | "unknown") and how many
                    of the roster's watchers hold it (`views.py`: their tips, exchanged), a
                    page of a KEL (`pages.py`), the evidence and rulings held, the roster
    check           a KEL an application was shown, compared with ours (`checking.py`);
                    what it holds that we lack is heard as gossip from the one who asks
    locations       nodes' signed location records, heard and answered for (`locations.py`)
    reconciliation  every `reconcile_every` seconds (0: never) the KELs held are compared
                    with a few peers' (bootstrap nodes, the roster's watchers) by per-shard
                    summaries, and what they hold more of is fetched through the gap path
                    (`reconcile.py`): a KEL gossip never brought is held within a period.
                    Its summary and listing queries are answered too

What it shares with a witness (persisting accepted events, asking for gaps, expiry, KEL
queries) is `follower.Follower`; what it keeps of them, and within which quotas, is
`storage.Storage` (witnessed identifiers for good, unwitnessed ones evicted oldest first, no
new identifiers once the store is at its quota). Everything that must survive a crash
(events, receipts, evidence, rulings, the roster) leaves as `Persist*` effects; `restore_*`
rebuild the role from them. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import cbor2

from dkms.protocol import crypto
from dkms.protocol.cesr import IndexedSig
from dkms.protocol.crypto import Signer
from dkms.protocol.errors import LocalProtocolError, ProtocolError
from dkms.protocol.escrow import EscrowLimits, Waiting
from dkms.protocol.events import Event, Ilk
from dkms.protocol.ids import NodePrefix
from dkms.protocol.kel import Record
from dkms.protocol.outcomes import Outcome, Status
from dkms.protocol.signing import Verifier
from dkms.protocol.stream import Message, parse_stream
from dkms.protocol.validator import Validator

from . import checking, listing, reconcile, summaries, views
from .codes import Code
from .duties import Duties
from .effects import Effect, Reply, Report, Send, SetTimer, Subscribe, Surface
from .follower import EXPIRE_EVERY, Follower
from .governance import Governance
from .holdings import Holdings
from .inputs import (
    Answered,
    CatchUp,
    Expiry,
    GapQuery,
    Heard,
    Input,
    LagCheck,
    PublishTurn,
    ReconcileDigest,
    ReconcilePump,
    ReconcileRound,
    ReconcileShard,
    Request,
    RosterQuery,
    RosterRetry,
    TimerFired,
    ViewAsk,
    ViewRound,
)
from .juror import Lag, Receipts, Throttle
from .locations import QUERY as LOCATION_QUERY
from .locations import Locations, roster_nodes
from .pages import PAGE_BYTES
from .storage import LOOSE_QUOTA, STORE_QUOTA, Storage
from .topics import (
    DUPLICITY_TOPIC,
    GOVERNANCE_TOPIC,
    LOCATIONS_TOPIC,
    Parse,
    ParseCache,
    kel_topic,
    kel_topics,
    well_formed,
)

# escrowed events a watcher follows up when they stall: lost gossip, or lost receipts
_CATCH_UP: Final = (Waiting.OUT_OF_ORDER, Waiting.PARTIALLY_WITNESSED)
ROSTER_RETRY: Final = 15.0  # seconds between asks for a roster while we have none
PEER_ASKS: Final = 4  # peers asked for a roster


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
        page_bytes: int = PAGE_BYTES,
        store_quota: int = STORE_QUOTA,
        unwitnessed_quota: int = LOOSE_QUOTA,
        reconcile_every: float = 0.0,
    ) -> None:
        """`verify` and `parse` may be caches shared across nodes (as in the simulator);
        `peers` are nodes (prefixes) to ask for the roster if we start without one;
        `page_bytes` is the budget of the KEL pages this watcher answers with;
        `store_quota` and `unwitnessed_quota` are the storage policy's (`storage.py`);
        `reconcile_every`: seconds between reconciliation rounds (`reconcile.py`; 0, the
        default here, none: a node's config sets 30)."""
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
        self.follower = Follower(
            self.validator, self.prefix, self.peers, parse=self._parse, page_bytes=page_bytes
        )
        self.duties = Duties(signer, governance, self._verify)
        self.receipts = Receipts(self._verify, ignore=self.prefix, names=self._names)
        self.lag = Lag(anomaly_after)
        self._anomaly_lines = Throttle("anomalies")
        self.storage = Storage(
            self.validator,
            quota=store_quota,
            loose_quota=unwitnessed_quota,
            forgotten=self._forgotten,
        )
        self.views = views.Views(self.prefix, self._tip, self._rostered)
        self.locations = Locations(
            self.prefix,
            self.validator,
            verify=self._verify,
            pinned=lambda: (*self.peers, *roster_nodes(self.governance.roster)),
        )
        self.digests = summaries.Digests(self.validator, tracked=True)
        self.reconciler = reconcile.Reconciler(
            self.prefix,
            self.digests,
            self._tip,
            lambda: (*self.peers, *self._rostered()),
            self.follower.fetch,
            every=reconcile_every,
            wanted=self._wanted,
            busy=self.follower.asking,
        )
        self._restoring = False

    surfaces: Final = frozenset({Surface.QUERY, Surface.GOVERNANCE})

    @property
    def governance(self) -> Governance:
        return self.duties.governance

    @property
    def holdings(self) -> Holdings:
        return self.duties.holdings

    @property
    def signatures_checked(self) -> int:
        """Signatures this watcher verified (not answered from memory) since it started, as
        its own memo counts them (0 when it was handed a verifier, as in the simulator)."""
        return self._memo.checked

    # ---------------------------------------------------------------- life cycle

    def start(self, now: float) -> list[Effect]:
        topics = sorted({kel_topic(p) for p in self.watch}) if self.watch else kel_topics()
        effects: list[Effect] = [Subscribe(t) for t in topics]
        effects += [Subscribe(DUPLICITY_TOPIC), Subscribe(GOVERNANCE_TOPIC)]
        effects += self.locations.start()
        effects += [SetTimer(Expiry(), now + EXPIRE_EVERY), self._lag_timer(now)]
        effects += self.storage.start(now)
        effects += self.reconciler.start(now)
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
        self.duties.perform(now, effects, turn=True)
        return effects

    def restore_governance(self, bundle: bytes, now: float) -> None:
        self.governance.restore(bundle, now)

    def restore_held(self, envelope: bytes) -> None:
        """Reinstate stored evidence or a stored ruling (verified again)."""
        self.duties.restore_held(envelope)

    def restore(self, stored: bytes, now: float) -> None:
        """Replay stored events and receipts (`Store.replay_chunks`) into a fresh watcher."""
        lag, self.lag = self.lag, Lag(self.lag.after)  # old events are not lagging now
        self._restoring = True  # stored already: nothing to count, keep or evict
        try:
            for frame in parse_stream(stored):
                if isinstance(frame, Message):
                    self._observe(frame, now, [])
        finally:
            self.lag = lag
            self._restoring = False

    def restore_storage(self, stored: int, loose: Sequence[tuple[str, int]]) -> None:
        """After `restore`: the store's bytes and its unwitnessed identifiers (`Store.usage`)."""
        self.storage.restore(stored, loose)

    # ---------------------------------------------------------------- inputs

    def admits(self, topic: str, payload: bytes) -> bool:
        """Gossip validation: what may be delivered to us and forwarded to our peers."""
        if topic == DUPLICITY_TOPIC:
            return self.duties.admits(payload)
        if topic == GOVERNANCE_TOPIC:
            try:
                self.governance.check(payload)
            except ProtocolError:
                return False
            return True
        if topic == LOCATIONS_TOPIC:
            return self.locations.admits(payload)
        return well_formed(payload, self._parse)

    def step(self, event: Input, now: float) -> list[Effect]:
        effects: list[Effect] = []
        match event:
            case Request(surface=Surface.QUERY):
                reply = self._query(event.payload, now, effects, event.peer)
                return [*effects, reply]
            case Request(surface=Surface.GOVERNANCE):
                return self._govern(event.payload, now)
            case Request():
                return [Reply.refuse(Code.NOT_SERVED, f"a watcher does not serve {event.surface}")]
            case Heard(topic=topic, peer=peer, payload=data):
                if topic == DUPLICITY_TOPIC:
                    self.duties.heard(data, effects)
                elif topic == GOVERNANCE_TOPIC:
                    self.duties.offered(data, now, effects, forward=False)
                elif topic == LOCATIONS_TOPIC:
                    effects += self.locations.heard(data, now)
                else:
                    self._kel_gossip(data, now, effects, peer)
            case Answered(tag=GapQuery() as tag):

                def apply(data: bytes, out: list[Effect]) -> None:
                    self._kel_gossip(data, now, out)

                self.reconciler.fetched(len(event.payload))
                effects += self.follower.gap_answered(tag, event, now, apply)
                effects += self.reconciler.fetch_ended(tag.prefix, now)
            case Answered(tag=ReconcileDigest() | ReconcileShard() as tag):
                effects += self.reconciler.answered(tag, event, now)
            case Answered(tag=ViewAsk() as tag):
                effects += self.views.answered(tag, event, now)
            case Answered(tag=RosterQuery()):
                if event.code.ok:
                    self.duties.offered(event.payload, now, effects, forward=False)
                else:
                    effects.append(Report("debug", f"{event.tag}: no answer ({event.reason})"))
            case TimerFired(key=PublishTurn(conflict=conflict)):
                self.duties.turn(conflict, now, effects)
            case TimerFired(key=ReconcileRound()):
                effects += self.reconciler.round(now)
            case TimerFired(key=ReconcilePump()):
                effects += self.reconciler.pump(now)
            case TimerFired(key=ViewRound()):
                effects += self.views.round(now)
            case TimerFired(key=RosterRetry()):
                if self.governance.roster is None:
                    effects += self._ask_for_roster(now)
            case TimerFired(key=Expiry()):
                effects += self.follower.expire(now)
            case TimerFired(key=CatchUp()):
                effects += self.follower.catch_up(now)
            case TimerFired(key=LagCheck()):
                effects.append(self._lag_timer(now))
                found = self.lag.due(now, self._receipted)
                lines = (f"anomaly in {a['i']}: {a['anomaly']}" for a in found)
                for line in self._anomaly_lines.lines(lines, now):
                    effects.append(Report("warning", line))
        return effects

    def _kel_gossip(
        self, data: bytes, now: float, effects: list[Effect], peer: NodePrefix | None = None
    ) -> None:
        """KEL messages heard or asked for: observe those of identifiers we watch."""
        for message in self.follower.messages(data, effects, peer):
            if self._wanted(message.event.prefix):
                self._observe(message, now, effects, peer or "")

    def _govern(self, data: bytes, now: float) -> list[Effect]:
        """A governance bundle handed to us (`dkms governance roster create --publish-to`)."""
        effects: list[Effect] = []
        try:
            _, why = self.duties.offered(data, now, effects, forward=True)
        except ProtocolError as err:
            return [Reply.refuse(Code.INVALID, f"roster refused: {err}")]
        return [*effects, Reply.accept(reason=why)]

    def _query(self, data: bytes, now: float, effects: list[Effect], peer: str) -> Reply:
        """`{"t": "state" | "kel" | "evidence" | "roster", "i": prefix, "s": sn}`,
        `{"t": "witnessed", "w": witness}` (`listing.py`: what a recovering witness asks),
        `{"t": "check", ...}` (`checking.py`: its effects go to `effects`), or
        `{"t": "digest" | "shard", ...}` (`summaries.py`: what a reconciling watcher asks)."""
        ask = Follower.read_query(data)
        if isinstance(ask, Reply):
            return ask
        kind, prefix = ask.get("t"), ask.get("i")
        if kind == listing.QUERY:
            return listing.answer(self.validator, ask)
        if kind == checking.QUERY:
            return self._check(ask, now, effects, peer)
        if kind == views.QUERY:
            return self.views.answer(ask, peer)
        if kind == LOCATION_QUERY:
            return self.locations.reply(ask)
        if kind in summaries.QUERIES:
            return self.digests.answer(ask, now)
        if kind == "roster":
            wanted = ask.get("g", self.governance.prefix)
            if wanted != self.governance.prefix:
                follows = f"this watcher follows governance {self.governance.prefix}"
                return Reply.refuse(Code.NO_ROSTER, f"{follows}, not {str(wanted)[:80]}")
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
            return self.follower.kel_reply(prefix, ask)
        return Reply.refuse(
            Code.BAD_QUERY,
            "query type t must be state, kel, evidence, roster, witnessed, check, tips, loc,"
            " digest or shard",
        )

    def _check(self, ask: dict[Any, Any], now: float, effects: list[Effect], peer: str) -> Reply:
        """A piece of a KEL an application was shown, compared with ours; what it holds that
        we lack is heard as gossip from `peer` (charged to it in the escrows)."""

        def feed(message: Message) -> list[Outcome]:
            return self._observe(message, now, effects, peer)

        return checking.answer(ask, self.prefix, self.validator, self.holdings, feed, self._wanted)

    # ---------------------------------------------------------------- views

    def key_state(self, prefix: str) -> dict[str, Any]:
        """Key state (when known) with standing, the evidence and rulings behind it, the
        anomalies seen, and (when known) how many of the roster's watchers hold it."""
        kel = self.validator.kel(prefix)
        standing, since = self.holdings.standing(prefix, kel is not None)
        state: dict[str, Any] = self.follower.key_state(prefix) or {"i": prefix}
        if kel is not None:
            accused = self.holdings.accused()
            state["duplicitous_witnesses"] = sorted(
                w for w in kel.authority.witnesses if w in accused
            )
            state["agreement"] = self.views.agreement(prefix)
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

    def _observe(
        self, message: Message, now: float, effects: list[Effect], source: str = ""
    ) -> list[Outcome]:
        """Validate one KEL message; `source` (the peer it came from) is charged for what it
        leaves in the escrows. Returns the validator's outcomes."""
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
                    self.duties.found(found, now, effects)
        before = self._receipt_count(event.said) if event.ilk is Ilk.RCT else -1
        held = before >= 0 and self.validator.record(event.said) is not None
        outcomes = self.validator.process(message, now, source)
        for outcome in outcomes:
            self._outcome(outcome, event.said, message, now, effects)
        if message.attachments.wigs:
            self._indexed_receipts(event, message.attachments.wigs, now, effects)
        if before >= 0 and self._receipt_count(event.said) > before:
            record = self.validator.record(event.said)
            if record is not None:
                effects.append(Follower.persist_receipts(record))
                if held and not self._restoring:  # else counted as the event was stored
                    self.storage.receipts(event.prefix, len(record.receipts) - before)
        return outcomes

    def _outcome(
        self, outcome: Outcome, said: str, message: Message, now: float, effects: list[Effect]
    ) -> None:
        status = outcome.status
        if outcome.ilk == Ilk.RCT:
            return
        record = None
        if status is Status.ACCEPTED:
            self.digests.changed(outcome.prefix)
            record = self.validator.record(outcome.said)
            if record is None or not self._keep(record, now, effects):
                return  # forgotten: a new identifier over the store quota, or evicted since
            if not self._restoring:
                effects += self.views.changed(outcome.prefix, now)
        if outcome.said == said and status is not Status.REJECTED:
            for found in self.receipts.body(message.event):
                self.duties.found(found, now, effects)
            if status is not Status.DUPLICITOUS and self._may_lag(outcome, record):
                self.lag.seen(outcome.prefix, outcome.sn, said, now)
        if status is Status.DUPLICITOUS and outcome.evidence is not None:
            self.duties.found(outcome.evidence, now, effects)
        elif (
            status is Status.ESCROWED
            and outcome.waiting is Waiting.OUT_OF_ORDER
            and not self.follower.gap_escrowed(outcome.prefix, outcome.sn)
        ):
            effects += self.follower.ask_for_gap(outcome.prefix, now)
        if status is Status.ESCROWED and not self._restoring and outcome.waiting in _CATCH_UP:
            effects += self.follower.note_waiting(outcome.prefix, outcome.sn, now)

    def _may_lag(self, outcome: Outcome, record: Record | None) -> bool:
        """Whether an event is one to check for lagging witnesses: one of a KEL we hold (an
        event of an identifier we hold nothing of is junk or a gap, not a lag) with
        witnesses to receipt it (an event with none cannot lag, and may be evicted before it
        is due)."""
        if record is not None:
            return record.authority.toad > 0
        kel = self.validator.kel(outcome.prefix)
        if kel is None:
            return False
        return kel.authority.toad > 0 or outcome.waiting is Waiting.PARTIALLY_WITNESSED

    def _names(self, prefix: str, witness: str) -> bool | None:
        """Whether the KEL of `prefix` names `witness` in any of its witness lists (None: we
        hold no KEL of `prefix`), for the receipt detector."""
        kel = self.validator.kel(prefix)
        if kel is None:
            return None
        return any(witness in a.witnesses for a in kel.authorities)

    def _keep(self, record: Record, now: float, effects: list[Effect]) -> bool:
        """Store an accepted event as the storage policy says; False: it was not kept."""
        if self._restoring:
            return True
        return self.storage.keep(record, self.follower.persist(record), now, effects)

    def _forgotten(self, prefix: str, now: float) -> None:
        """A KEL the storage policy is about to forget: its versions kept for the receipt
        detector go with it, and its events make no lag anomaly."""
        kel = self.validator.kel(prefix)
        if kel is not None:
            self.receipts.forget(r.event.said for r in kel.first_seen)
        self.lag.forget(prefix, now)
        self.digests.changed(prefix)  # summed again once forgotten

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
                    self.duties.found(found, now, effects)

    def _tip(self, prefix: str) -> tuple[str, int, str] | None:
        kel = self.validator.kel(prefix)
        return None if kel is None else (kel.prefix, kel.sn, kel.last_said)

    def _rostered(self) -> tuple[str, ...]:
        roster = self.governance.roster
        return () if roster is None else roster.watchers

    def _receipt_count(self, said: str) -> int:
        record = self.validator.record(said)
        return len(record.receipts) if record else 0

    def _receipted(self, said: str) -> tuple[tuple[str, ...], set[str]] | None:
        record = self.validator.record(said)
        if record is None:
            return None
        witnesses = tuple(w for w in record.authority.witnesses if w != self.prefix)
        return witnesses, set(record.receipts)

    def _ask_for_roster(self, now: float) -> list[Effect]:
        if not self.peers:
            return []
        ask = cbor2.dumps({"t": "roster", "g": self.governance.prefix})
        effects: list[Effect] = [
            Send(peer, Surface.QUERY, ask, RosterQuery(peer)) for peer in self.peers[:PEER_ASKS]
        ]
        effects.append(SetTimer(RosterRetry(), now + ROSTER_RETRY))
        return effects

    def _lag_timer(self, now: float) -> SetTimer:
        return SetTimer(LagCheck(), now + max(self.lag.after / 4, 0.25))

"""The witness role: check events, keep the first version, store it, receipt it, spread it.

Theory of operation. A witness holds a `Validator` in witness mode: for identifiers that name
this witness, its own first-seen judgement stands in for the `bt` receipts. Inputs:

    Request(SUBMIT)       controller -> witness: events; each accepted event that names us is
                          persisted, receipted (the receipt is in the reply), and published on
                          its gossip shard; anything else is refused with a `Code` and why
    Request(RECEIPTS)     receipts of the co-witnesses (witness agreement): verified, persisted;
                          once `bt` hold, the event is republished with them all
    Request(QUERY)        a page of a KEL from some sn, or a key state with receipts
    Heard(kel shard)      gossip: events of identifiers we witness are applied; a gap in a KEL
                          makes us ask the co-witnesses for the missing events, page by page
    Answered(GapQuery)    a page of such an answer: applied like gossip
    Answered(RivalQuery)  a co-witness's version of an event we hold another version of,
                          asked for because it receipted it (`rivals.py`): applied like gossip
    TimerFired(Expiry)    escrow expiry
    TimerFired(Tail)      the last events of KELs gone quiet, gossiped again (`tails.py`)
    TimerFired(RivalRepeat)
                          rivals refused, published once more (`rivals.py`)
    Heard(governance), Request(GOVERNANCE)
                          roster bundles of any governance, kept (newest, bounded) for the
                          watchers that ask a witness for theirs (`rosters.py`)
    Heard(locations), Request(QUERY loc)
                          nodes' signed location records, newest per node (`locations.py`)

A witness publishes the events it witnesses, whichever way they came, and no others: those
are its co-witnesses' news, already on the gossip, and republishing them is how a witness
added by a rotation would flood the gossip with the whole KEL it is handed (and, having
published on the KEL's shard, hear every late gossip of the KEL while still filling it in).

What it shares with a watcher (persisting accepted events, asking for gaps, expiry, KEL and
key-state queries) is `follower.Follower`, and the storage policy, `storage.Storage`: events
of identifiers with no witnesses (which a witness stores when handed them, and never
receipts) are kept loose and evicted oldest first, and once the store is at its quota a new
identifier is refused with `Code.QUOTA` before anything of it is signed, while the identifiers
held are still witnessed.

Because the validator keeps the first validly signed version at each sequence number and
reports any other as duplicitous, a witness never receipts two versions of one event; the
runtime makes that hold across crashes by storing each `PersistEvent` before the `Reply` that
follows it, and by replaying the stored messages into a fresh witness at start-up (`restore`).
A rival it refuses that way (validly signed, of an identifier it witnesses) goes to its
duplicitous-event log, `rivals.Rivals`: kept (bounded), published on the KEL's shard for the
watchers to find (and once more later), and served on `{"t": "rivals", "i": prefix}`;
receipts of its co-witnesses over a version it does not hold make it ask them for it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Final

import cbor2

from dkms.protocol import crypto
from dkms.protocol.crypto import Signer
from dkms.protocol.errors import LocalProtocolError, ProtocolError
from dkms.protocol.escrow import COUPLE_BYTES, EscrowLimits, Waiting
from dkms.protocol.events import INCEPTION, Ilk, receipt
from dkms.protocol.ids import NodePrefix
from dkms.protocol.kel import Record
from dkms.protocol.outcomes import Outcome, Status
from dkms.protocol.signing import Verifier
from dkms.protocol.stream import Attachments, BadFrame, Message, messagize, parse_stream
from dkms.protocol.validator import Validator, held_bytes

from . import listing, mailbox, summaries
from .codes import Code
from .effects import (
    Blame,
    Effect,
    Publish,
    Reply,
    Report,
    SetTimer,
    Subscribe,
    Surface,
)
from .floors import Floors
from .follower import EXPIRE_EVERY, Follower
from .inputs import (
    Answered,
    CatchUp,
    Expiry,
    GapQuery,
    Heard,
    Input,
    Request,
    RivalQuery,
    RivalRepeat,
    Tail,
    TimerFired,
)
from .locations import QUERY as LOCATION_QUERY
from .locations import Locations
from .pages import PAGE_BYTES
from .rivals import QUERY as RIVALS_QUERY
from .rivals import Rivals
from .rosters import Rosters
from .storage import LOOSE_QUOTA, RECEIPT_BYTES, STORE_QUOTA, Storage, stored_bytes
from .tails import Tails
from .topics import (
    GOVERNANCE_TOPIC,
    LOCATIONS_TOPIC,
    Parse,
    ParseCache,
    kel_topic,
    peer_parse,
    well_formed,
)

PUBLISHED_KEPT: Final = 8  # own KEL gossip payloads `admits` knows (publishing is soon after)


class Witness:
    """One witness: its key, its view of the KELs it witnesses, and its receipts."""

    def __init__(
        self,
        signer: Signer,
        *,
        verify: Verifier | None = None,
        limits: EscrowLimits | None = None,
        parse: Parse | None = None,
        page_bytes: int = PAGE_BYTES,
        store_quota: int = STORE_QUOTA,
        unwitnessed_quota: int = LOOSE_QUOTA,
        tails: bool = True,
    ) -> None:
        """`verify` and `parse` may be shared caches (a simulator shares them across nodes:
        the same bytes parse and verify the same way everywhere); `page_bytes` is the budget
        of the KEL pages this witness answers with; `store_quota` and `unwitnessed_quota`
        are the storage policy's (`storage.py`); `tails` off stops the republishing of
        quiet KELs' last events (`tails.py`; the simulator leaves it off)."""
        self._parse = parse or ParseCache()
        # Memoised, and told of our own receipts: they come back in the witness agreement.
        self._memo = crypto.MemoVerifier()
        verify = verify or self._memo
        if signer.transferable:
            raise LocalProtocolError("a witness key must be non-transferable (a B prefix)")
        self.signer = signer
        self.prefix = NodePrefix(signer.verfer)
        self.validator = Validator(verify=verify, limits=limits, witness=self.prefix)
        self.floors = Floors()  # set by a recovery: where no new receipt is signed
        self.follower = Follower(
            self.validator, self.prefix, parse=self._parse, page_bytes=page_bytes
        )
        self.storage = Storage(self.validator, quota=store_quota, loose_quota=unwitnessed_quota)
        self._over_quota: set[str] = set()  # new identifiers refused in this step
        # The receipt message last published with an event (`_accepted`): the record, how
        # many receipts it held, the bytes. A submission's reply carries the same bytes when
        # ours is its only receipt (`_receipt_message`), built once instead of twice.
        self._last_rct: tuple[Record, int, bytes] | None = None
        # The last KEL gossip payloads made here (`_gossip`), which `admits` passes without
        # parsing them again: the gossip layer runs our validator on what we publish too.
        self._published: OrderedDict[bytes, None] = OrderedDict()
        self.signed = 0  # receipts signed since start
        self.tails = Tails(self.validator, enabled=tails)
        self.rivals = Rivals(self.validator, self.prefix, page_bytes=page_bytes)
        self.rosters = Rosters(verify)
        self.locations = Locations(self.prefix, self.validator, verify=verify)
        self.digests = summaries.Digests(self.validator)  # answers watchers' reconciliation

    surfaces: Final = frozenset(
        {Surface.SUBMIT, Surface.RECEIPTS, Surface.QUERY, Surface.GOVERNANCE}
    )

    # ---------------------------------------------------------------- inputs

    def start(self, now: float) -> list[Effect]:
        return [
            SetTimer(Expiry(), now + EXPIRE_EVERY),
            Subscribe(GOVERNANCE_TOPIC),  # rosters, kept for the watchers that ask (rosters.py)
            *self.storage.start(now),
            *self.locations.start(),
        ]

    def step(self, event: Input, now: float) -> list[Effect]:
        self._over_quota.clear()
        match event:
            case Request(surface=Surface.SUBMIT):
                return self._submit(event, now)
            case Request(surface=Surface.RECEIPTS):
                return self._receipts(event, now)
            case Request(surface=Surface.QUERY):
                return self._query(event.payload, now)
            case Request(surface=Surface.GOVERNANCE):
                return self._govern(event.payload, now)
            case Request():
                return [Reply.refuse(Code.NOT_SERVED, f"a witness does not serve {event.surface}")]
            case Heard(topic=topic, payload=data) if topic == GOVERNANCE_TOPIC:
                effects: list[Effect] = []
                try:
                    self.rosters.offer(data, now, effects)
                except ProtocolError as err:
                    effects.append(Report("debug", f"ignored governance gossip: {err}"))
                return effects
            case Heard(topic=topic, payload=data) if topic == LOCATIONS_TOPIC:
                return self.locations.heard(data, now)
            case Heard():
                return self._heard(event.payload, now, event.peer)
            case Answered(tag=GapQuery() as tag):

                def apply(data: bytes, effects: list[Effect]) -> None:
                    effects += self._heard(data, now)

                return self.follower.gap_answered(tag, event, now, apply)
            case Answered(tag=RivalQuery() as tag):
                return self.rivals.answered(
                    tag, event, lambda data, out: out.extend(self._heard(data, now))
                )
            case TimerFired(key=Expiry()):
                return self.follower.expire(now)
            case TimerFired(key=CatchUp()):
                return self.follower.catch_up(now)
            case TimerFired(key=Tail()):
                return self.tails.due(now)
            case TimerFired(key=RivalRepeat()):
                return self.rivals.due(now)
        return []

    def restore(self, stored: bytes, now: float) -> None:
        """Replay persisted messages (events, then receipts) into a fresh witness."""
        for frame in parse_stream(stored):
            if isinstance(frame, Message):
                self.validator.process(frame, now)

    def restore_storage(self, stored: int, loose: Sequence[tuple[str, int]]) -> None:
        """After `restore`: the store's bytes and its unwitnessed identifiers (`Store.usage`)."""
        self.storage.restore(stored, loose)

    def admits(self, topic: str, payload: bytes) -> bool:
        """Gossip validation: a roster bundle verifies on its own (`rosters.py`); KEL gossip
        frames into valid messages."""
        if topic == GOVERNANCE_TOPIC:
            return self.rosters.admits(payload)
        if topic == LOCATIONS_TOPIC:
            return self.locations.admits(payload)
        if payload in self._published:
            return True  # made here, of events and receipts the validator holds
        return well_formed(payload, self._parse)

    def restore_roster(self, key: str, bundle: bytes, now: float) -> None:
        """A roster bundle the store kept (`rosters.KEY_PREFIX` keys)."""
        self.rosters.restore(key, bundle, now)

    def _govern(self, data: bytes, now: float) -> list[Effect]:
        """A roster handed to us (`dkms governance roster create --publish-to WITNESS`): kept
        and published when it is new, like one heard."""
        effects: list[Effect] = []
        try:
            changed, why = self.rosters.offer(data, now, effects)
        except ProtocolError as err:
            return [Reply.refuse(Code.INVALID, f"roster refused: {err}")]
        if changed:
            effects.append(Publish(GOVERNANCE_TOPIC, data))
        return [*effects, Reply.accept(reason=why)]

    def _submit(self, request: Request, now: float) -> list[Effect]:
        """Events from a controller; the reply carries our receipts or says why not.

        Every message is applied first and each event judged by where it ended, so receipts
        that follow their events in one stream (as keripy writes KELs) count. The reply is
        `ALREADY` when every event submitted had been accepted before.
        """
        frames, refused = _read(request, "submission")
        if refused:
            return refused
        effects: list[Effect] = []
        fates: dict[str, Outcome] = {}
        events: list[Message] = []
        refusal: tuple[Code, str] | None = None
        fresh = False  # some event was accepted by this submission
        for frame in frames:
            if isinstance(frame, BadFrame):
                refusal = refusal or (Code.INVALID, f"invalid event: {frame.error}")
                continue
            if frame.event.prefix in self._over_quota:
                continue  # refused already: the rest of that KEL is not looked at
            for outcome in self._apply(frame, now, effects, request.peer):
                if outcome.ilk != Ilk.RCT:
                    fates[outcome.said] = outcome
                    fresh = fresh or outcome.status is Status.ACCEPTED
            if frame.event.ilk is not Ilk.RCT:
                events.append(frame)
        receipts: list[bytes] = []
        for message in events:
            event = message.event
            record = self.validator.record(event.said)
            if record is not None and record.event.prefix == event.prefix:
                if self.prefix in record.authority.witnesses:
                    if self.prefix in record.receipts or self.floors.allows(event.prefix, event.sn):
                        receipts.append(self._receipt_message(record, effects))
                    elif refusal is None:
                        refusal = (Code.CONFLICT, self.floors.refusal(event.prefix, event.sn))
                elif refusal is None and message is events[-1]:
                    refusal = (
                        Code.NOT_WITNESS,
                        f"not a designated witness of {event.prefix} at sn {event.sn:x}",
                    )
            elif refusal is None and event.prefix in self._over_quota:
                refusal = (
                    Code.QUOTA,
                    f"store quota of {self.storage.quota} bytes reached: this witness takes no"
                    f" new identifiers ({event.prefix} refused)",
                )
            elif refusal is None:
                fate = fates.get(event.said)
                if fate is not None and fate.status is Status.ACCEPTED:
                    # Accepted, then evicted at once: an identifier with no witnesses, over
                    # the unwitnessed quota. Not ours to receipt either way.
                    if message is events[-1]:
                        refusal = (
                            Code.NOT_WITNESS,
                            f"not a designated witness of {event.prefix} (it has none)",
                        )
                else:
                    refusal = _refusal(fate) if fate else (Code.INVALID, f"{event.said} not judged")
        if refusal is not None:
            effects.append(Reply(refusal[0], b"".join(receipts), refusal[1]))
        else:
            code = Code.ALREADY if events and not fresh else Code.OK
            effects.append(Reply(code, b"".join(receipts)))
        return effects

    def _receipts(self, request: Request, now: float) -> list[Effect]:
        """Co-witnesses' receipts, passed on by the controller (witness agreement)."""
        frames, refused = _read(request, "receipts")
        if refused:
            return refused
        effects: list[Effect] = []
        stored = 0
        for frame in frames:
            if isinstance(frame, Message) and frame.event.ilk is Ilk.RCT:
                if self._unheld(frame) is None:  # held already: verified when they came
                    stored += 1
                    continue
                outcomes = self._apply(frame, now, effects, request.peer)
                stored += any(o.status is Status.ACCEPTED and o.ilk == Ilk.RCT for o in outcomes)
        if not stored:
            return [*effects, Reply.refuse(Code.NO_RECEIPT, "no receipt verified")]
        return [*effects, Reply.accept()]

    def _heard(self, data: bytes, now: float, peer: NodePrefix | None = None) -> list[Effect]:
        """A gossip payload (or a query's answer): apply what concerns identifiers this
        witness knows or witnesses. Gossip that does not read blames its `peer`."""
        effects: list[Effect] = []
        for message in self.follower.messages(data, effects, peer):
            if self._concerns(message):
                self._apply(message, now, effects, peer or "", heard=peer is not None)
        return effects

    def _query(self, data: bytes, now: float) -> list[Effect]:
        """Answer `{"t": "kel", "i": prefix, "s": sn, "n": limit}` (`pages.py`) or
        `{"t": "state", "i": prefix}` or `{"t": "witnessed", "w": witness}` (`listing.py`)
        or `{"t": "rivals", "i": prefix}` (`rivals.py`) or `{"t": "mbx" | "rct", ...}`, its
        receipts as keripy's HTTP routes serve them (`mailbox.py`), or `{"t": "digest" |
        "shard", ...}`, what a watcher reconciling with us asks (`summaries.py`)."""
        ask = Follower.read_query(data)
        if isinstance(ask, Reply):
            return [ask]
        if ask.get("t") == listing.QUERY:
            return [listing.answer(self.validator, ask)]
        if ask.get("t") == RIVALS_QUERY:
            return [self.rivals.reply(ask)]
        if ask.get("t") == "roster":
            return [self.rosters.answer(ask)]
        if ask.get("t") == LOCATION_QUERY:
            return [self.locations.reply(ask)]
        if ask.get("t") in summaries.QUERIES:
            return [self.digests.answer(ask, now)]
        if ask.get("t") in mailbox.QUERIES:  # keripy's mailbox and GET /receipts (node/http/)
            return [mailbox.answer(self.validator, self.prefix, ask, self.follower.page_bytes)]
        prefix = ask.get("i")
        if not isinstance(prefix, str):
            return [Reply.refuse(Code.BAD_QUERY, "query needs an identifier prefix i")]
        if ask.get("t") == "kel":
            return [self.follower.kel_reply(prefix, ask)]
        if ask.get("t") == "state":
            state = self.follower.key_state(prefix)
            if state is None:
                return [Reply.refuse(Code.UNKNOWN, f"unknown identifier {prefix}")]
            return [Reply.accept(cbor2.dumps(state))]
        return [
            Reply.refuse(
                Code.BAD_QUERY,
                "query type t must be 'kel', 'state', 'witnessed', 'rivals', 'roster' or 'loc'",
            )
        ]

    # ---------------------------------------------------------------- views

    def key_state(self, prefix: str) -> dict[str, Any]:
        """Key state plus the latest event's receipts and whether it is fully witnessed."""
        state = self.follower.key_state(prefix)
        if state is None:
            raise LocalProtocolError(f"unknown identifier {prefix}")
        return state

    # ---------------------------------------------------------------- internals

    @property
    def signatures_checked(self) -> int:
        """Signatures this witness verified (not answered from memory) since it started, as
        its own memo counts them (0 when it was handed a verifier, as in the simulator)."""
        return self._memo.checked

    def _sign(self, raw: bytes) -> bytes:
        self.signed += 1
        signature = self.signer.sign_raw(raw)
        self._memo.remember(self.signer.public, signature, raw)
        return signature

    def _gossip(self, prefix: str, payload: bytes) -> Publish:
        """Publish `payload` on the KEL shard of `prefix`, and remember it for `admits`."""
        published = self._published
        published[payload] = None
        if len(published) > PUBLISHED_KEPT:
            published.popitem(last=False)
        return Publish(kel_topic(prefix), payload)

    def _concerns(self, message: Message) -> bool:
        event = message.event
        if self.validator.kel(event.prefix) is not None:
            return True
        return event.ilk in (Ilk.ICP, Ilk.DIP) and self.prefix in event.ked["b"]

    def _apply(
        self,
        message: Message,
        now: float,
        effects: list[Effect],
        source: str = "",
        *,
        heard: bool = False,
    ) -> list[Outcome]:
        """Validate one message and turn what changed into persist/publish/report effects;
        `source` (the peer it came from) is charged for what it leaves in the escrows;
        `heard`: it came by gossip (a rival in it is not published again)."""
        unheld = self._unheld(message)
        if unheld is None:
            return []
        message = unheld
        before = self._receipt_counts(message)
        held = {said for said in before if self.validator.record(said) is not None}
        outcomes = self.validator.process(message, now, source)
        for outcome in outcomes:
            if outcome.ilk == Ilk.RCT:
                continue
            if outcome.status is Status.ACCEPTED:
                self._accepted(outcome, now, effects)
            elif outcome.status is Status.ESCROWED and outcome.waiting is Waiting.OUT_OF_ORDER:
                effects += self.follower.ask_for_gap(outcome.prefix, now)
                effects += self.follower.note_waiting(outcome.prefix, outcome.sn, now)
            elif outcome.status is Status.DUPLICITOUS:
                self._rival(outcome, now, heard, effects)
            elif outcome.status is Status.SUPERSEDED:
                effects.append(Report("info", f"{outcome.said} {outcome.reason}"))
        self._new_receipts(message, before, held, now, effects)
        if message.event.ilk is Ilk.RCT and message.attachments.couples:
            effects += self.rivals.receipted(message)
        return outcomes

    def _rival(self, outcome: Outcome, now: float, heard: bool, effects: list[Effect]) -> None:
        """A validly signed version conflicting with the KEL: into the duplicitous-event log
        (and out on the gossip) when the KEL designates us, else only reported."""
        prefix, sn = outcome.prefix, outcome.sn
        kel = self.validator.kel(prefix)
        held = kel.at(sn) if kel is not None else None
        ours = kel is not None and (
            self.prefix in kel.authority.witnesses
            or (held is not None and self.prefix in held.authority.witnesses)
        )
        if ours and self.rivals.found(outcome, now, heard=heard, effects=effects):
            return
        level = "debug" if self.rivals.held(prefix, sn, outcome.said) else "warning"
        effects.append(
            Report(level, f"duplicitous {outcome.ilk} {outcome.said} of {prefix}: {outcome.reason}")
        )

    def _accepted(self, outcome: Outcome, now: float, effects: list[Effect]) -> None:
        record = self.validator.record(outcome.said)
        if record is None:
            return  # forgotten: refused for the quota, or evicted, earlier in this step
        event = record.event
        ours = self.prefix in record.authority.witnesses
        signs = ours and self.floors.allows(event.prefix, event.sn)  # no floor below it
        sign = signs and self.prefix not in record.receipts
        message = Follower.stored_message(record)
        weight = held_bytes(record)  # in memory: what the quota counts beside stored bytes
        if event.ilk in INCEPTION:  # a new identifier: refused, if at all, before we sign
            size = len(message) + RECEIPT_BYTES * (len(record.receipts) + sign)
            if not self.storage.admit(record, size, now, effects, weight):
                self._over_quota.add(event.prefix)
                return
        if sign:
            record.receipts[self.prefix] = self._sign(event.raw)
            weight += COUPLE_BYTES  # held_bytes counts each receipt held
        persist = self.follower.persist(record, message)
        size = 0
        for effect in persist:
            size += stored_bytes(effect)
        self.storage.store(record, persist, size, now, effects, weight)
        if ours:
            rct = _rct(record)
            self._last_rct = (record, len(record.receipts), rct)
            effects.append(self._gossip(event.prefix, message + rct))
            effects += self.tails.changed(event.prefix, now)
        effects.append(Report("debug", f"accepted {event.ilk} {event.said} sn {event.sn:x}"))

    def _unheld(self, message: Message) -> Message | None:
        """A receipt message without the receipts we hold already (same witness, same
        signature: verified when they first came), or None when nothing is left. Gossip and
        the receipt exchange bring each receipt several times, and checking every copy
        again was most of what a witness did for a KEL submitted in bulk."""
        atc = message.attachments
        if message.event.ilk is not Ilk.RCT or not atc.couples:
            return message
        record = self.validator.record(message.event.said)
        if record is None:
            return message
        held = record.receipts
        couples = tuple(c for c in atc.couples if held.get(c[0]) != c[1])
        if len(couples) == len(atc.couples):
            return message
        if not couples and not atc.wigs:
            return None
        return message._replace(attachments=atc._replace(couples=couples))

    def _receipt_counts(self, message: Message) -> dict[str, int]:
        if message.event.ilk is not Ilk.RCT:
            return {}
        record = self.validator.record(message.event.said)
        return {message.event.said: len(record.receipts) if record else 0}

    def _new_receipts(
        self,
        message: Message,
        before: dict[str, int],
        held: set[str],
        now: float,
        effects: list[Effect],
    ) -> None:
        for said, count in before.items():
            record = self.validator.record(said)
            if record is None or len(record.receipts) == count:
                continue
            event = record.event
            effects.append(Follower.persist_receipts(record))
            if said in held:  # else the event came with them: counted as it was stored
                self.storage.receipts(event.prefix, len(record.receipts) - count)
            toad = record.authority.toad
            if count < toad <= len(record.receipts):
                effects.append(self._gossip(event.prefix, _rct(record)))
                effects += self.tails.changed(event.prefix, now)
                effects.append(Report("debug", f"{said} fully witnessed ({toad} receipts)"))

    def _receipt_message(self, record: Record, effects: list[Effect]) -> bytes:
        event = record.event
        if self.prefix not in record.receipts:  # accepted before we were asked: sign now
            record.receipts[self.prefix] = self._sign(event.raw)
            effects.append(Follower.persist_receipts(record))
            self.storage.receipts(event.prefix, 1)
        last = self._last_rct
        if last is not None and last[0] is record and last[1] == len(record.receipts) == 1:
            return last[2]  # ours is its only receipt: `_rct(record)` is this message
        rct = receipt(event.prefix, event.sn, event.said, kind=event.kind)
        return messagize(rct, Attachments(couples=((self.prefix, record.receipts[self.prefix]),)))


def _read(request: Request, what: str) -> tuple[list[Message | BadFrame], list[Effect]]:
    """The frames of a request, or the refusal (and the blame) when it does not read."""
    try:
        return peer_parse(request.payload), []
    except ProtocolError as err:
        refusal = Reply.refuse(Code.MALFORMED, f"unreadable {what}: {err}")
        return [], [Blame(request.peer, f"unreadable {what}"), refusal]


def _rct(record: Record) -> bytes:
    """A receipt message carrying every receipt `record` holds (empty when it has none).

    Couples go in prefix order: witnesses holding the same receipts publish the same bytes,
    which gossip (message id = digest of the payload) carries as one message."""
    if not record.receipts:
        return b""
    event = record.event
    rct = receipt(event.prefix, event.sn, event.said, kind=event.kind)
    return messagize(rct, Attachments(couples=tuple(sorted(record.receipts.items()))))


def _refusal(outcome: Outcome) -> tuple[Code, str]:
    if outcome.status is Status.DUPLICITOUS:
        return Code.CONFLICT, f"conflicting version refused: {outcome.reason}"
    if outcome.status is Status.ESCROWED:
        return Code.ESCROWED, f"escrowed ({outcome.waiting}): {outcome.reason}"
    if outcome.status is Status.SUPERSEDED:
        return Code.SUPERSEDED, f"superseded: {outcome.reason}"
    return Code.INVALID, f"rejected: {outcome.reason}"

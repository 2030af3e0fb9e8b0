"""The controller role: own identifiers, sign their events, and get each one witnessed.

Theory of operation. For every event it makes (inception, rotation, interaction) the
controller signs it, feeds it to its own `Validator` (which keeps it escrowed until `bt`
witness receipts verify), and pushes it to each of the event's witnesses at once:

    push      -> Send(submit) to every witness             (all in flight together)
    answer ok -> the receipts in the reply go to the validator; a witness that answered is done
    answer no -> retry that witness after a back-off (doubling, capped), or give up and report
    accepted  -> the event is fully witnessed: Send(receipts) with every receipt to every
                 witness that answered (witness agreement), and report it; a witness that
                 answers later gets them all too

A witness added by a rotation first receives the KEL it needs to check that rotation: the
whole KEL when it fits in one page (`pages.py`, `prelude_bytes`), else its first page, from
which the witness learns whom to ask for the rest (`follower.py` fills the gap page by page
before it can receipt the rotation). Keys come in as seeds (the runtime makes and guards
them), so this module has no randomness.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from dkms.protocol import cesr, crypto
from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.errors import LocalProtocolError, ProtocolError
from dkms.protocol.events import Event, Kind, incept, interact, receipt, rotate
from dkms.protocol.ids import NodePrefix, Said
from dkms.protocol.signing import Verifier
from dkms.protocol.stream import Attachments, Message, messagize, parse_stream
from dkms.protocol.thresholds import ThresholdValue
from dkms.protocol.validator import Validator

from .codes import Code
from .effects import Effect, Report, Send, SetTimer, Surface
from .inputs import Agreement, Answered, Input, Retry, Submission, TimerFired
from .pages import PAGE_BYTES, kel_page


class PushStatus(StrEnum):
    """Where an event this controller made stands."""

    DONE = "done"  # fully witnessed
    WAITING = "waiting"  # witnesses still being asked
    FAILED = "failed"  # every witness answered or was given up on, and bt receipts are missing
    # (for it, or for an earlier event it must follow)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Back-off for a witness that failed: `first` seconds, doubling up to `cap`."""

    first: float = 0.5
    cap: float = 30.0
    attempts: int = 8

    def delay(self, attempt: int) -> float:
        return float(min(self.cap, self.first * 2 ** (attempt - 1)))


@dataclass(slots=True)
class Identity:
    """An identifier this controller owns: its keys (as signers) and where its KEL stands."""

    name: str
    prefix: str
    kind: Kind
    signers: list[Signer]
    next_signers: list[Signer]
    witnesses: tuple[str, ...]
    sn: int
    last_said: str


@dataclass(slots=True)
class _Push:
    """One event on its way to its witnesses."""

    event: Event
    message: bytes
    witnesses: tuple[NodePrefix, ...]
    preludes: dict[str, bytes]  # witness -> KEL it must see first (added witnesses)
    waiting: dict[NodePrefix, int] = field(default_factory=dict)  # witness -> attempts so far
    complete: bool = False  # fully witnessed; laggards are still retried until they answer


class Controller:
    """Identifiers owned here, and the pushes of their events to witnesses."""

    surfaces: Final = frozenset[Surface]()  # a controller answers no one: it only asks

    def __init__(
        self,
        *,
        verify: Verifier | None = None,
        retry: RetryPolicy | None = None,
        prelude_bytes: int = PAGE_BYTES,
    ):
        # Memoised: a receipt is checked on arrival and again inside the validator.
        verify = verify or crypto.MemoVerifier()
        self.validator = Validator(verify=verify)
        self._verify = verify
        self.retry = retry or RetryPolicy()
        self.prelude_bytes = prelude_bytes  # of the KEL handed to a witness a rotation adds
        self._ids: dict[str, Identity] = {}
        self._pushes: dict[str, _Push] = {}
        self._last_reply: tuple[bytes, dict[str, list[Message]]] = (b"", {})

    # ---------------------------------------------------------------- views

    def identity(self, name: str) -> Identity:
        try:
            return self._ids[name]
        except KeyError:
            raise LocalProtocolError(f"no identifier named {name!r}") from None

    @property
    def names(self) -> list[str]:
        return sorted(self._ids)

    def done(self, said: str) -> bool:
        """True once the event is fully witnessed (in the controller's own KEL)."""
        return self.validator.record(said) is not None

    def status(self, said: str) -> PushStatus:
        """DONE once in the controller's own KEL; WAITING while a witness of it, or of an
        earlier event it must follow, is still being asked (an event with every receipt
        cannot enter the KEL before its predecessor); otherwise FAILED."""
        if self.done(said):
            return PushStatus.DONE
        push = self._pushes.get(said)
        while push is not None:
            if push.waiting:
                return PushStatus.WAITING
            prior = push.event.prior
            if prior is None or self.done(prior):
                break  # it could have entered the KEL: its receipts fall short
            push = self._pushes.get(prior)
        return PushStatus.FAILED

    def pending(self) -> list[str]:
        """SAIDs of events still waiting for witness receipts."""
        return [s for s, p in self._pushes.items() if not p.complete]

    def export(self, name: str) -> bytes:
        """The identifier's fully witnessed KEL as CESR (signatures and witness receipts)."""
        return self.validator.replay(self.identity(name).prefix)

    def secrets(self, name: str) -> dict[str, list[bytes]]:
        """The seeds to keep (encrypted) for `name`: current and next signing keys."""
        ident = self.identity(name)
        return {
            "current": [s.seed for s in ident.signers],
            "next": [s.seed for s in ident.next_signers],
        }

    def restore(
        self, name: str, secrets: dict[str, list[bytes]], kel: bytes, now: float
    ) -> Identity:
        """Take back an identifier from its kept seeds and its fully witnessed KEL."""
        for frame in parse_stream(kel):
            if isinstance(frame, Message):
                self.validator.process(frame, now)
        signers = [Signer(s) for s in secrets["current"]]
        prefixes = {r for r in self.validator.prefixes if self.validator.state(r) is not None}
        for prefix in prefixes:
            state = self.validator.state(prefix)
            if state is not None and list(state.keys) == [s.verfer for s in signers]:
                ident = Identity(
                    name,
                    prefix,
                    _kind_of(self.validator, prefix),
                    signers,
                    [Signer(s) for s in secrets["next"]],
                    state.witnesses,
                    state.sn,
                    state.said,
                )
                self._ids[name] = ident
                return ident
        raise LocalProtocolError(f"the KEL kept for {name!r} does not match its keys")

    # ---------------------------------------------------------------- commands

    def incept(
        self,
        name: str,
        seeds: Sequence[bytes],
        next_seeds: Sequence[bytes],
        *,
        now: float,
        witnesses: Sequence[str] = (),
        toad: int | None = None,
        kt: int | ThresholdValue | None = None,
        nt: int | ThresholdValue | None = None,
        traits: Sequence[str] = (),
        kind: Kind = Kind.CBOR,
    ) -> list[Effect]:
        if name in self._ids:
            raise LocalProtocolError(f"an identifier named {name!r} exists already")
        signers = [Signer(s) for s in seeds]
        nexts = [Signer(s) for s in next_seeds]
        event = incept(
            [s.verfer for s in signers],
            next_digests=[next_key_digest(s.verfer) for s in nexts],
            kt=kt,
            nt=nt,
            witnesses=witnesses,
            toad=toad if toad is not None else (len(witnesses) if witnesses else 0),
            traits=traits,
            kind=kind,
        )
        self._ids[name] = Identity(
            name, event.prefix, kind, signers, nexts, tuple(witnesses), 0, event.said
        )
        return self._push(self._ids[name], event, {}, now)

    def rotate(
        self,
        name: str,
        next_seeds: Sequence[bytes],
        *,
        now: float,
        adds: Sequence[str] = (),
        cuts: Sequence[str] = (),
        toad: int | None = None,
        kt: int | ThresholdValue | None = None,
        nt: int | ThresholdValue | None = None,
        anchors: Sequence[Any] = (),
    ) -> list[Effect]:
        ident = self.identity(name)
        if not ident.next_signers:
            raise LocalProtocolError(f"{name} is non-transferable: it has no next keys")
        signers, nexts = ident.next_signers, [Signer(s) for s in next_seeds]
        after = tuple(w for w in ident.witnesses if w not in cuts) + tuple(adds)
        event = rotate(
            ident.prefix,
            [s.verfer for s in signers],
            prior=ident.last_said,
            sn=ident.sn + 1,
            next_digests=[next_key_digest(s.verfer) for s in nexts],
            kt=kt,
            nt=nt,
            toad=toad if toad is not None else len(after),
            witnesses=ident.witnesses,
            cuts=cuts,
            adds=adds,
            anchors=anchors,
            kind=ident.kind,
        )
        ident.signers, ident.next_signers, ident.witnesses = signers, nexts, after
        kel = self.validator.kel(ident.prefix)
        prelude = kel_page(kel, 0, self.prelude_bytes).data if kel is not None else b""
        return self._push(ident, event, {w: prelude for w in adds}, now)

    def interact(self, name: str, anchors: Sequence[Any], *, now: float) -> list[Effect]:
        ident = self.identity(name)
        event = interact(
            ident.prefix, prior=ident.last_said, sn=ident.sn + 1, anchors=anchors, kind=ident.kind
        )
        return self._push(ident, event, {}, now)

    # ---------------------------------------------------------------- inputs

    def start(self, now: float) -> list[Effect]:
        return []

    def admits(self, topic: str, payload: bytes) -> bool:
        return False  # subscribes to nothing

    def step(self, event: Input, now: float) -> list[Effect]:
        match event:
            case Answered(tag=Submission() as tag):
                return self._answered(tag, event, now)
            case Answered(tag=Agreement(said=said, witness=witness)):
                if event.code.ok:
                    return []
                why = f"witness {witness} refused receipts of {said}: {event.reason}"
                return [Report("warning", why)]
            case TimerFired(key=Retry(said=said, witness=witness)):
                push = self._pushes.get(said)
                if push is None or witness not in push.waiting:
                    return []
                return [self._send(push, witness)]
        return []

    def _answered(self, tag: Submission, answer: Answered, now: float) -> list[Effect]:
        """A witness answered (or failed to answer) an event this controller pushed."""
        said, witness = tag.said, tag.witness
        push = self._pushes.get(said)
        if push is None or witness not in push.waiting:
            return []
        # A reply may answer several events at once (the runtime batches submissions): what
        # counts is whether it carries this witness's receipt of this event.
        if not self._take_receipts(push, witness, answer.payload, now):
            if answer.code.ok:
                return self._failed(push, witness, Code.NO_RECEIPT, "no valid receipt", now)
            return self._failed(push, witness, answer.code, answer.reason, now)
        del push.waiting[witness]
        # A laggard gets every receipt. The others hold `bt` already and learn its receipt
        # from the gossip it publishes on accepting the event: a second round to all of them
        # would only cost requests.
        effects = self._agreements(push, [witness]) if push.complete else self._settle(now)
        self._forget(push)
        return effects

    # ---------------------------------------------------------------- internals

    def _push(
        self, ident: Identity, event: Event, preludes: dict[str, bytes], now: float
    ) -> list[Effect]:
        sigs = tuple(s.sign_indexed(event.raw, i) for i, s in enumerate(ident.signers))
        if isinstance(self._verify, crypto.MemoVerifier):  # our own: not checked again below
            for signer, sig in zip(ident.signers, sigs, strict=True):
                self._verify.remember(signer.public, sig.raw, event.raw)
        message = messagize(event, Attachments(sigs=sigs))
        ident.sn, ident.last_said = event.sn, event.said
        own = self.validator.process(parse_stream(message)[0], now)  # type: ignore[arg-type]
        witnesses = tuple(NodePrefix(w) for w in ident.witnesses)
        push = _Push(event, message, witnesses, preludes, {w: 0 for w in witnesses})
        effects: list[Effect] = [
            Report("debug", f"{event.ilk} {event.said} of {ident.name}: {own[0].status}")
        ]
        if not witnesses:
            return [
                *effects,
                Report("info", f"{ident.name}: {event.ilk} sn {event.sn:x} done (no witnesses)"),
            ]
        self._pushes[event.said] = push
        effects.extend(self._send(push, w) for w in witnesses)
        return effects

    def _send(self, push: _Push, witness: NodePrefix) -> Send:
        payload = push.preludes.get(witness, b"") + push.message
        return Send(witness, Surface.SUBMIT, payload, Submission(Said(push.event.said), witness))

    def _failed(
        self, push: _Push, witness: NodePrefix, code: Code, reason: str, now: float
    ) -> list[Effect]:
        said = Said(push.event.said)
        if code is Code.CONFLICT:
            del push.waiting[witness]  # it holds another version: retrying cannot help
            self._forget(push)
            return [Report("error", f"witness {witness} refused {said}: {reason}")]
        attempt = push.waiting[witness] = push.waiting[witness] + 1
        if attempt >= self.retry.attempts:
            del push.waiting[witness]
            self._forget(push)
            return [
                Report(
                    "error",
                    f"gave up on witness {witness} for {said} after {attempt} attempts: {reason}",
                )
            ]
        delay = self.retry.delay(attempt)
        return [
            Report(
                "warning",
                f"witness {witness} failed for {said} ({reason}); retry {attempt} in {delay:g} s",
            ),
            SetTimer(Retry(said, witness), now + delay),
        ]

    def _take_receipts(self, push: _Push, witness: str, payload: bytes, now: float) -> bool:
        """Feed the receipts in a reply to the validator; True if `witness` receipted."""
        receipted = False
        key = cesr.decode_key(witness)
        for frame in self._receipts_in(payload).get(push.event.said, ()):
            for prefix, sig in frame.attachments.couples:
                if prefix == witness and self._verify(key, sig, push.event.raw):
                    receipted = True
            self.validator.process(frame, now)
        return receipted

    def _receipts_in(self, payload: bytes) -> dict[str, list[Message]]:
        """Receipt messages of a reply by receipted SAID. One reply answers every event of a
        batched request, so the last reply read is kept rather than parsed once per event."""
        if payload is self._last_reply[0]:
            return self._last_reply[1]
        found: dict[str, list[Message]] = {}
        try:
            frames = parse_stream(payload)
        except ProtocolError:
            frames = []
        for frame in frames:
            if isinstance(frame, Message):
                found.setdefault(frame.event.said, []).append(frame)
        self._last_reply = (payload, found)
        return found

    def _settle(self, now: float) -> list[Effect]:
        """Report pushes whose event is now fully witnessed, and share their receipts."""
        effects: list[Effect] = []
        for push in [p for p in self._pushes.values() if not p.complete]:
            record = self.validator.record(push.event.said)
            if record is None:
                continue
            push.complete = True
            event = record.event
            effects.extend(
                self._agreements(push, [w for w in push.witnesses if w not in push.waiting])
            )
            effects.append(
                Report(
                    "info",
                    f"{event.ilk} sn {event.sn:x} of {event.prefix} fully "
                    f"witnessed: {len(record.receipts)}/{len(push.witnesses)} "
                    "receipts",
                )
            )
            self._forget(push)
        return effects

    def _agreements(self, push: _Push, witnesses: Sequence[NodePrefix]) -> list[Effect]:
        """Every receipt of the event, for each of `witnesses` that lacks some of them."""
        record = self.validator.record(push.event.said)
        have = set(record.receipts) if record else set()
        return [self._agreement(push, w) for w in witnesses if have - {w}]

    def _agreement(self, push: _Push, witness: NodePrefix) -> Send:
        """Every receipt of the event, for `witness` to keep (witness agreement)."""
        record = self.validator.record(push.event.said)
        event = push.event
        couples = tuple(record.receipts.items()) if record else ()
        rct = receipt(event.prefix, event.sn, event.said, kind=event.kind)
        payload = messagize(rct, Attachments(couples=couples))
        return Send(witness, Surface.RECEIPTS, payload, Agreement(Said(event.said), witness))

    def _forget(self, push: _Push) -> None:
        if push.complete and not push.waiting:
            self._pushes.pop(push.event.said, None)


def _kind_of(validator: Validator, prefix: str) -> Kind:
    kel = validator.kel(prefix)
    return kel.last.event.kind if kel is not None else Kind.CBOR

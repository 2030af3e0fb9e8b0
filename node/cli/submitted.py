"""What witnesses made of a submitted KEL, event by event (`dkms kel submit`).

Theory of operation. `kel submit` sends a KEL file to each witness in pieces cut between
messages (`client.paging.chunks`), one after the other, and stops at the first piece a witness
refuses. A witness answers a piece with one code, the receipts it signed, and at most one
reason (`roles/witness.py`, `_submit`): the reason is about the first event of the piece it did
not take, and names no event. Each event's fate with each witness is therefore worked out
here from the piece it was in and that piece's answer:

    receipted    the witness's receipt for it came back, and verifies
    accepted     taken without a receipt: in a piece answered OK, ALREADY or NOT_WITNESS, or
                 before the refused event of its piece; the witness is not designated at its sn
    refused      the event a refusal is about, with the witness's reason; or every event of a
                 piece refused as a whole (unreadable, too large, the witness failing)
    unjudged     after the refused event in its piece, or in a piece refused for a message
                 that does not read: read by the witness, but no receipt and no word of it
    unanswered   its piece got no answer (busy, rate limited, unreachable) after every try
    unsent       in a piece after one refused or unanswered: never sent

Which event a refusal is about: the witness takes events in order, receipts each one it
accepts that designates it, passes over each one it accepts that does not, and refuses the
first one it did not accept. An event designates the witness or not by the KEL's own witness
lists (`b`, then `br`/`ba` at each rotation), so when the first unreceipted event designates
it, that event is the refused one. When an event that does not designate it comes first, a
validator in the witness's place (a fresh one, reading the file up to the end of the piece)
tells an event passed over from one refused. Nothing here does I/O.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from dkms.node.client.paging import chunks
from dkms.node.roles.codes import Code
from dkms.protocol.errors import ProtocolError
from dkms.protocol.events import INCEPTION, ROTATION, Ilk
from dkms.protocol.stream import BadFrame, Frame, Message
from dkms.protocol.validator import Validator

# Codes a witness refuses one event with (the first it did not take); any other refusal is
# of the piece as a whole. `net.TRANSIENT`, asked again until the tries ran out, are no answer.
EVENT_REFUSALS: Final = frozenset(
    {Code.INVALID, Code.CONFLICT, Code.ESCROWED, Code.SUPERSEDED, Code.QUOTA}
)
UNANSWERED: Final = frozenset({Code.BUSY, Code.RATE_LIMITED, Code.UNREACHABLE})
NOT_OURS: Final = "not a designated witness at this sn"


class Result(StrEnum):
    RECEIPTED = "receipted"
    ACCEPTED = "accepted"
    REFUSED = "refused"
    UNJUDGED = "unjudged"
    UNANSWERED = "unanswered"
    UNSENT = "unsent"


_SHOWN: Final = {
    Result.RECEIPTED: "receipted",
    Result.ACCEPTED: "accepted, no receipt",
    Result.REFUSED: "refused",
    Result.UNJUDGED: "no receipt",
    Result.UNANSWERED: "no answer",
    Result.UNSENT: "not sent",
}


@dataclass(frozen=True, slots=True)
class Verdict:
    """One event's fate with one witness, and why."""

    result: Result
    reason: str = ""

    def text(self) -> str:
        """As the table shows it: `refused: <the witness's reason>`."""
        shown = _SHOWN[self.result]
        if self.result is Result.ACCEPTED:
            return f"{shown} ({self.reason})"
        return f"{shown}: {self.reason}" if self.reason else shown


RECEIPTED: Final = Verdict(Result.RECEIPTED)
PASSED_OVER: Final = Verdict(Result.ACCEPTED, NOT_OURS)


@dataclass(frozen=True, slots=True)
class Piece:
    """One request's worth of the file: its bytes and the key events in it."""

    data: bytes
    first: int  # index (in `Plan.events`) of its first key event
    count: int  # key events in it
    end: int  # offset in the file where it ends
    unreadable: str | None  # why a message in it does not read, if one does not


@dataclass(frozen=True, slots=True)
class Answer:
    """A witness's answer to one piece."""

    piece: int
    code: Code
    reason: str


@dataclass(slots=True)
class Submitted:
    """What one witness made of a submitted KEL."""

    witness: str
    ok: bool = True  # nothing refused or unanswered, and the KEL ends designating the witness
    reason: str = ""  # why not ok: the first refusal's
    receipts: dict[str, bytes] = field(default_factory=dict)  # event SAID -> its signature
    shared: str | None = None  # outcome of the receipt exchange, if there was one
    answers: list[Answer] = field(default_factory=list)

    def answered(self, piece: int, code: Code, reason: str, *, last: bool) -> None:
        """Note the answer to `piece` (`last`: the file's last piece with key events,
        `Plan.last`). NOT_WITNESS, which a witness answers when a piece's last event does
        not designate it, fails the submission only for that piece: the KEL ends with
        events that designate other witnesses (as when the whole file is one piece)."""
        self.answers.append(Answer(piece, code, reason))
        if self.ok and not code.ok and (last or code is not Code.NOT_WITNESS):
            self.ok, self.reason = False, reason or code.text

    def to_json(self, plan: Plan) -> dict[str, Any]:
        return {
            "witness": self.witness,
            "ok": self.ok,
            "reason": self.reason,
            "events": [
                {
                    "s": m.event.sn,
                    "t": m.event.ilk.value,
                    "d": m.event.said,
                    "receipted": verdict.result is Result.RECEIPTED,
                    "result": verdict.result.value,
                    "reason": verdict.reason,
                }
                for m, verdict in zip(plan.events, plan.verdicts(self), strict=True)
            ],
            "shared": self.shared,
        }


class Plan:
    """A KEL file cut for submission: its key events, its pieces, and how to read answers."""

    def __init__(self, data: bytes, frames: Sequence[Frame], budget: int) -> None:
        self.frames = frames
        self.events = [f for f in frames if isinstance(f, Message) and f.event.ilk is not Ilk.RCT]
        self.pieces: list[Piece] = []
        first = start = 0
        bad = [f for f in frames if isinstance(f, BadFrame)]
        for piece, count in chunks(data, frames, budget):
            end = start + len(piece)
            unreadable = next((b.error.reason for b in bad if start <= b.offset < end), None)
            self.pieces.append(Piece(piece, first, count, end, unreadable))
            first, start = first + count, end
        # The last piece with key events in it (a file may end with receipts alone).
        self.last = max((n for n, p in enumerate(self.pieces) if p.count), default=0)
        self._designated: list[frozenset[str]] | None = None

    def verdicts(self, result: Submitted) -> list[Verdict]:
        """The fate of each key event with the witness of `result`, in file order."""
        out: list[Verdict | None] = [None] * len(self.events)
        unsent = "an earlier piece was not taken"
        for answer in result.answers:
            piece, code, reason = self.pieces[answer.piece], answer.code, answer.reason
            span = range(piece.first, piece.first + piece.count)
            unreceipted = [i for i in span if self.events[i].event.said not in result.receipts]
            for i in span:
                out[i] = RECEIPTED
            if code.ok or code is Code.NOT_WITNESS:
                for i in unreceipted:
                    out[i] = PASSED_OVER
                continue
            reason = reason or code.text
            if code in UNANSWERED:
                for i in unreceipted:
                    out[i] = Verdict(Result.UNANSWERED, reason)
                unsent = "the witness did not answer an earlier piece"
            elif piece.unreadable is not None:
                why = f"the witness refused its piece for a message that does not read: {reason}"
                for i in unreceipted:
                    out[i] = Verdict(Result.UNJUDGED, why)
                unsent = "the witness refused an earlier piece"
            elif code not in EVENT_REFUSALS or not unreceipted:
                for i in unreceipted:
                    out[i] = Verdict(Result.REFUSED, reason)
                unsent = "the witness refused an earlier piece"
            else:
                refused = self._refused(result.witness, piece, unreceipted)
                sn = self.events[refused].event.sn
                for i in unreceipted:
                    if i < refused:
                        out[i] = PASSED_OVER
                    elif i == refused:
                        out[i] = Verdict(Result.REFUSED, reason)
                    else:
                        out[i] = Verdict(Result.UNJUDGED, f"it follows the refused sn {sn}")
                unsent = f"the witness refused sn {sn}"
        return [v if v is not None else Verdict(Result.UNSENT, unsent) for v in out]

    def summary(self, result: Submitted) -> str:
        """One line for a long KEL: how many were not receipted, from where, and why."""
        verdicts = self.verdicts(result)
        missing = [i for i, v in enumerate(verdicts) if v.result is not Result.RECEIPTED]
        if not missing:
            return "every event receipted"
        first = missing[0]
        line = (
            f"{len(missing):,} not receipted, from sn {self.events[first].event.sn}: "
            f"{verdicts[first].text()}"
        )
        counts = collections.Counter(verdicts[i].result for i in missing)
        if len(counts) > 1:
            line += " (" + ", ".join(f"{n:,} {r.value}" for r, n in counts.items()) + ")"
        return line

    # ---------------------------------------------------------------- internals

    def _refused(self, witness: str, piece: Piece, unreceipted: list[int]) -> int:
        """Which of the unreceipted events of a refused piece the refusal is about."""
        designated = self.designated()
        if witness in designated[unreceipted[0]]:
            return unreceipted[0]
        fresh = Validator(witness=witness)
        for frame in self.frames:
            if frame.offset >= piece.end:
                break
            if isinstance(frame, Message):
                try:
                    fresh.process(frame, 0.0)
                except ProtocolError:  # it should give verdicts; never a traceback here
                    continue
        for i in unreceipted:
            if witness in designated[i] or fresh.record(self.events[i].event.said) is None:
                return i
        # A fresh witness takes them all: what this one refused depends on what it held.
        return unreceipted[0]

    def designated(self) -> list[frozenset[str]]:
        """The witnesses each key event designates, by the lists of the file's events."""
        if self._designated is None:
            lists: dict[str, frozenset[str]] = {}
            out = []
            for message in self.events:
                event = message.event
                current = lists.get(event.prefix, frozenset())
                if event.ilk in INCEPTION:
                    current = frozenset(event.ked["b"])
                elif event.ilk in ROTATION:
                    current = (current - set(event.ked["br"])) | set(event.ked["ba"])
                lists[event.prefix] = current
                out.append(current)
            self._designated = out
        return self._designated

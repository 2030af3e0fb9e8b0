"""Verifying a KEL file: every message through one validator, and the final fate of each.

`Validator.process` reports on the message it was given and also on other events that moved
because of it (an escrowed event released, an interaction superseded by a recovery), in no
promised order. A message's fate is therefore tracked by what it is about, not by when it was
read: an event by its SAID, a receipt by the SAID of the event it receipts (kept apart from the
event itself). Copies of one event are one thing to the validator, and their fates follow it:

- copies still undecided (escrowed, or a rival version reported duplicitous) share one
  verdict, which each later outcome about the event updates: escrowed -> accepted when the
  missing signature arrives, and every copy that brought a part of it is accepted;
- a copy read once the event is in the KEL is `known`, a repeat of the accepted message: it
  leaves the accepted copy's fate alone (a file holding a KEL twice, or one event ten
  thousand times, has each event accepted once and every repeat known);
- a recovery that supersedes the event supersedes its accepted and known copies alike;
- receipts for one event come in separate messages with separate signatures, so a later
  receipt's verdict only settles siblings still waiting (escrowed), never overturns one that
  was already decided (a bad receipt does not un-store a good one); a receipt message that
  adds no receipt to an accepted event (each held already) is `known`, a repeat.

Copies that share a fate share one `_Verdict` cell, so an outcome costs the same however many
copies came before it: checking every earlier copy of the event made a file of N repeats take
time quadratic in N (the command on 40,000 copies of one event took 112 s; now about 1 s of
CPU, start-up included: `benchmarks/kelverify_repeats.py`).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from dkms.node.cli.cesrfile import read_frames
from dkms.protocol.attachments import EMPTY
from dkms.protocol.cesr import new_tuple
from dkms.protocol.duplicity import DuplicityEvidence
from dkms.protocol.errors import ParseError, ProtocolError
from dkms.protocol.events import Ilk
from dkms.protocol.outcomes import Outcome, Status
from dkms.protocol.stream import BadFrame, Frame, Message
from dkms.protocol.validator import Validator

Key = tuple[bool, str]  # (is a receipt, SAID of the event it is about)


@dataclass(slots=True)
class FileReport:
    """What one file held: the validator after reading it, every message's fate, any error."""

    path: str
    validator: Validator = field(default_factory=Validator)
    frames: list[Frame] = field(default_factory=list)  # every message read, in order, its
    # attachments dropped once judged (the report says where each was and what event it held)
    verdicts: list[_Verdict] = field(default_factory=list)  # what became of each frame
    evidence: list[DuplicityEvidence] = field(default_factory=list)  # from the outcomes
    error: str | None = None  # unreadable file or unframeable bytes; reading stopped there

    def identifiers(self, fel: bool = True) -> dict[str, dict[str, Any]]:
        """Key state of every identifier with an accepted inception, plus (`fel`) its
        first-seen log."""
        out: dict[str, dict[str, Any]] = {}
        for prefix in self.validator.prefixes:
            kel = self.validator.kel(prefix)
            state = self.validator.state(prefix)
            if kel is None or state is None:
                continue
            entry = state.to_json()
            if fel:
                entry["fel"] = [[n, record.event.said] for n, record in enumerate(kel.first_seen)]
            out[prefix] = entry
        return out

    def duplicity(self) -> list[dict[str, Any]]:
        return [evidence.summary() for evidence in self.evidence]

    def messages(self) -> list[dict[str, Any]]:
        """Every message, in the file's order, with what finally became of it: its event's
        SAID, ilk and sn (None for a frame whose body could not be decoded), status, reason,
        offset and length, and what it waits for when escrowed."""
        out = []
        for frame, verdict in zip(self.frames, self.verdicts, strict=True):
            if isinstance(frame, BadFrame):
                said = ilk = sn = None
            else:
                event = frame.event
                said, ilk, sn = event.said, event.ilk.value, event.sn
            item = {
                "d": said,
                "t": ilk,
                "s": sn,
                "status": verdict.status.value,
                "reason": verdict.reason,
                "offset": frame.offset,
                "length": frame.length,
            }
            if verdict.waiting is not None:
                item["waiting"] = verdict.waiting
            out.append(item)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "identifiers": self.identifiers(),
            "messages": self.messages(),
            "duplicity": self.duplicity(),
            "error": self.error,
        }


@dataclass(slots=True)
class _Verdict:
    """A fate shared by the copies of a message judged together (a cell, updated in place)."""

    status: Status
    reason: str
    waiting: str | None = None

    def set(self, outcome: Outcome, reason: str | None = None) -> None:
        self.status = outcome.status
        self.reason = outcome.reason if reason is None else reason
        self.waiting = outcome.waiting.value if outcome.waiting is not None else None


@dataclass(slots=True)
class _Track:
    """The copies of one event (or of the receipts of one event), grouped by where they stand."""

    open: _Verdict | None = None  # undecided copies: escrowed, duplicitous, or no verdict yet
    open_at: int = 0  # offset of the first of them
    held: list[_Verdict] = field(default_factory=list)  # copies accepted (in the KEL)
    known: _Verdict | None = None  # the repeats read after the event was accepted
    accepted_at: int | None = None  # offset of the first accepted copy


_ACCEPTED: Final = Status.ACCEPTED  # module constants: enum lookups are slow per message
_RCT: Final = Ilk.RCT


class _Book:
    """Fates by key, so an outcome about an event reaches every message carrying it.

    Most messages of a KEL are events accepted on their own, about which nothing is ever
    said again: each such message shares a read-only verdict with the others accepted for
    the same reason, and its SAID is noted (`_lone`) instead of a `_Track` made. Its track
    is made, and its verdict becomes a cell of its own, when a later outcome is about it
    (a repeat, a recovery), exactly as it would have been made when it was accepted.
    """

    def __init__(self, report: FileReport) -> None:
        self.frames = report.frames
        self.verdicts = report.verdicts
        self.evidence = report.evidence
        self._evidence_seen: set[DuplicityEvidence] = set()  # a repeated rival: reported once
        self._tracks: dict[Key, _Track] = {}
        self._lone: dict[str, int] = {}  # SAID -> index of its accepted copy, no track yet
        self._shared: dict[str, _Verdict] = {}  # read-only `accepted` verdicts, by reason

    def add(self, frame: Frame, verdict: _Verdict) -> int:
        if type(frame) is Message:  # kept without its attachments, which the report never
            # shows (a sixth of what each message held, on a 40,000-event KEL)
            frame = new_tuple(Message, (frame.event, EMPTY, frame.offset, frame.length))
        self.frames.append(frame)
        self.verdicts.append(verdict)
        return len(self.verdicts) - 1

    def accepted_alone(self, message: Message, outcomes: list[Outcome]) -> bool:
        """File `message` if its only outcome is its event's acceptance, new to the book."""
        if len(outcomes) != 1:
            return False
        outcome = outcomes[0]
        event = message.event
        said = event.said
        if (
            outcome.status is not _ACCEPTED
            or outcome.said != said
            or event.ilk is _RCT
            or outcome.ilk == _RCT
            or outcome.waiting is not None
            or outcome.evidence is not None
            or said in self._lone
            or (False, said) in self._tracks
        ):
            return False
        verdict = self._shared.get(outcome.reason)
        if verdict is None:
            verdict = self._shared[outcome.reason] = _Verdict(_ACCEPTED, outcome.reason)
        self._lone[said] = self.add(message, verdict)
        return True

    def settle(self, current: int, outcomes: list[Outcome]) -> None:
        """File each outcome under its key; `current` is the message just processed."""
        event = self.frames[current].event  # type: ignore[union-attr]  # a Message
        mine: Key = (event.ilk is _RCT, event.said)
        joined = False  # current is filed with its key's copies at its first outcome
        for outcome in outcomes:
            evidence = outcome.evidence
            if evidence is not None and evidence not in self._evidence_seen:
                self._evidence_seen.add(evidence)
                self.evidence.append(evidence)
            key = (outcome.ilk == _RCT, outcome.said)
            track = self._tracks.get(key)
            if track is None:
                track = self._tracks[key] = self._track(key)
            copy = current if key == mine and not joined else None
            joined = joined or copy is not None
            if key[0]:
                self._receipt_outcome(track, outcome, copy)
            else:
                self._event_outcome(track, outcome, copy)

    def _track(self, key: Key) -> _Track:
        """A new track for `key`: empty, or that of an event accepted alone until now."""
        index = None if key[0] else self._lone.pop(key[1], None)
        if index is None:
            return _Track()
        shared = self.verdicts[index]
        verdict = self.verdicts[index] = _Verdict(shared.status, shared.reason, shared.waiting)
        offset = self.frames[index].offset
        return _Track(open=None, open_at=offset, held=[verdict], accepted_at=offset)

    def _join(self, track: _Track, copy: int) -> _Verdict:
        """File `copy` with the undecided copies of its key; their shared verdict."""
        if track.open is None:
            track.open, track.open_at = self.verdicts[copy], self.frames[copy].offset
        else:
            self.verdicts[copy] = track.open
        return track.open

    def _event_outcome(self, track: _Track, outcome: Outcome, copy: int | None) -> None:
        status = outcome.status
        if status is Status.KNOWN and copy is not None and track.open is None:
            # A repeat of an accepted event: every repeat shares one verdict, the accepted
            # copy keeps its own.
            if track.known is None:
                where = "" if track.accepted_at is None else f" at offset {track.accepted_at}"
                track.known = _Verdict(Status.KNOWN, "")
                track.known.set(outcome, f"{outcome.reason}: a repeat of the message{where}")
            self.verdicts[copy] = track.known
            return
        if status is Status.SUPERSEDED:
            for held in track.held:
                held.set(outcome)
            if track.known is not None:
                track.known.set(outcome)
            track.held, track.known = [], None
        verdict = self._join(track, copy) if copy is not None else track.open
        if verdict is None:
            return  # about copies already decided: an accepted event is not un-accepted
        verdict.set(outcome)
        if status is Status.ACCEPTED or status is Status.KNOWN:
            track.held.append(verdict)
            if track.accepted_at is None:
                track.accepted_at = track.open_at
            track.open = None
        elif status is Status.REJECTED or status is Status.SUPERSEDED:
            track.open = None

    def _receipt_outcome(self, track: _Track, outcome: Outcome, copy: int | None) -> None:
        if copy is not None and outcome.status is Status.ESCROWED:
            self._join(track, copy).set(outcome)
            return
        if copy is not None:
            self.verdicts[copy].set(outcome)
        if track.open is not None:
            track.open.set(outcome)  # settles the siblings still waiting
            if outcome.status is not Status.ESCROWED:
                track.open = None


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cycle collector off for the block (as it was after).

    Reading a file keeps nearly everything it allocates until the report is printed (frames,
    verdicts, the validator's KELs), and makes almost no cycles (about one collectable object
    per message, from errors: the corpus of test vectors, shuffled, repeated and corrupted,
    left 1,382 for 2,433 messages). With the collector on, its passes over that growing heap
    cost about 7% of `dkms kel verify` on a 40,000-event KEL (py-spy). The few cycles made
    are collected by its next pass after the block.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def verify_file(path: str) -> FileReport:
    """Read `path` (`-` for stdin) through a fresh validator; never raises for bad input."""
    report = FileReport(path)
    book = _Book(report)
    try:
        for frame in read_frames(path):
            _process(report.validator, book, frame)
    except ParseError as err:
        report.error = f"unframeable bytes: {err}"
    except OSError as err:
        report.error = f"cannot read: {err.strerror or err}"
    return report


def _process(validator: Validator, book: _Book, frame: Frame) -> None:
    if isinstance(frame, BadFrame):
        book.add(frame, _Verdict(Status.REJECTED, frame.error.reason))
        return
    event = frame.event
    record = validator.record(event.said) if event.ilk is _RCT else None
    held = len(record.receipts) if record is not None else 0
    try:
        outcomes = validator.process(frame, now=0.0)
    except ProtocolError as err:  # the validator should return verdicts, but bad input must
        # never become a traceback here
        book.add(frame, _Verdict(Status.REJECTED, f"validator error: {err}"))
        return
    if book.accepted_alone(frame, outcomes):
        return
    # Until the validator says otherwise: it always reports on the message it is given.
    copy = book.add(frame, _Verdict(Status.REJECTED, "the validator gave no verdict"))
    book.settle(copy, outcomes)
    if (
        record is not None
        and book.verdicts[copy].status is Status.ACCEPTED
        and len(record.receipts) == held
    ):
        # The validator stores a receipt it holds already as accepted; it added nothing.
        book.verdicts[copy] = _Verdict(
            Status.KNOWN, "every receipt in it was held already: a repeat"
        )

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

from dataclasses import dataclass, field
from typing import Any

from dkms.node.cli.cesrfile import read_frames
from dkms.protocol.duplicity import DuplicityEvidence
from dkms.protocol.errors import ParseError, ProtocolError
from dkms.protocol.events import Ilk
from dkms.protocol.outcomes import Outcome, Status
from dkms.protocol.stream import BadFrame, Frame, Message
from dkms.protocol.validator import Validator

Key = tuple[bool, str]  # (is a receipt, SAID of the event it is about)


@dataclass(slots=True)
class Fate:
    """One message of the file and what finally became of it."""

    offset: int
    length: int
    said: str | None  # None when the body could not be decoded (a BadFrame)
    ilk: str | None
    sn: int | None
    status: Status
    reason: str
    waiting: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "d": self.said,
            "t": self.ilk,
            "s": self.sn,
            "status": self.status.value,
            "reason": self.reason,
            "offset": self.offset,
            "length": self.length,
        }
        if self.waiting is not None:
            out["waiting"] = self.waiting
        return out


@dataclass(slots=True)
class FileReport:
    """What one file held: the validator after reading it, every message's fate, any error."""

    path: str
    validator: Validator = field(default_factory=Validator)
    fates: list[Fate] = field(default_factory=list)
    evidence: list[DuplicityEvidence] = field(default_factory=list)  # from the outcomes
    error: str | None = None  # unreadable file or unframeable bytes; reading stopped there

    def identifiers(self) -> dict[str, dict[str, Any]]:
        """Key state of every identifier with an accepted inception, plus its first-seen log."""
        out: dict[str, dict[str, Any]] = {}
        for prefix in self.validator.prefixes:
            kel = self.validator.kel(prefix)
            state = self.validator.state(prefix)
            if kel is None or state is None:
                continue
            entry = state.to_json()
            entry["fel"] = [[n, record.event.said] for n, record in enumerate(kel.first_seen)]
            out[prefix] = entry
        return out

    def duplicity(self) -> list[dict[str, Any]]:
        return [evidence.summary() for evidence in self.evidence]

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "identifiers": self.identifiers(),
            "messages": [fate.to_json() for fate in self.fates],
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
class _Copy:
    """One message read, pointing at the verdict it shares with its siblings."""

    offset: int
    length: int
    said: str | None
    ilk: str | None
    sn: int | None
    verdict: _Verdict

    def fate(self) -> Fate:
        v = self.verdict
        return Fate(
            self.offset, self.length, self.said, self.ilk, self.sn, v.status, v.reason, v.waiting
        )


@dataclass(slots=True)
class _Track:
    """The copies of one event (or of the receipts of one event), grouped by where they stand."""

    open: _Verdict | None = None  # undecided copies: escrowed, duplicitous, or no verdict yet
    open_at: int = 0  # offset of the first of them
    held: list[_Verdict] = field(default_factory=list)  # copies accepted (in the KEL)
    known: _Verdict | None = None  # the repeats read after the event was accepted
    accepted_at: int | None = None  # offset of the first accepted copy


class _Book:
    """Fates by key, so an outcome about an event reaches every message carrying it."""

    def __init__(self) -> None:
        self.copies: list[_Copy] = []
        self.evidence: list[DuplicityEvidence] = []
        self._evidence_seen: set[DuplicityEvidence] = set()  # a repeated rival: reported once
        self._tracks: dict[Key, _Track] = {}

    def add(self, message: Message) -> _Copy:
        event = message.event
        # Until the validator says otherwise: it always reports on the message it is given.
        verdict = _Verdict(Status.REJECTED, "the validator gave no verdict")
        copy = _Copy(message.offset, message.length, event.said, event.ilk.value, event.sn, verdict)
        self.copies.append(copy)
        return copy

    def add_bad(self, frame: BadFrame) -> None:
        verdict = _Verdict(Status.REJECTED, frame.error.reason)
        self.copies.append(_Copy(frame.offset, frame.length, None, None, None, verdict))

    def fates(self) -> list[Fate]:
        return [copy.fate() for copy in self.copies]

    def settle(self, current: _Copy, outcomes: list[Outcome]) -> None:
        """File each outcome under its key; `current` is the message just processed."""
        mine: Key = (current.ilk == Ilk.RCT.value, current.said or "")
        joined = False  # current is filed with its key's copies at its first outcome
        for outcome in outcomes:
            evidence = outcome.evidence
            if evidence is not None and evidence not in self._evidence_seen:
                self._evidence_seen.add(evidence)
                self.evidence.append(evidence)
            key = (outcome.ilk == Ilk.RCT.value, outcome.said)
            track = self._tracks.get(key)
            if track is None:
                track = self._tracks[key] = _Track()
            copy = current if key == mine and not joined else None
            joined = joined or copy is not None
            if key[0]:
                _receipt_outcome(track, outcome, copy)
            else:
                _event_outcome(track, outcome, copy)


def _join(track: _Track, copy: _Copy) -> _Verdict:
    """File `copy` with the undecided copies of its key; their shared verdict."""
    if track.open is None:
        track.open, track.open_at = copy.verdict, copy.offset
    else:
        copy.verdict = track.open
    return track.open


def _event_outcome(track: _Track, outcome: Outcome, copy: _Copy | None) -> None:
    status = outcome.status
    if status is Status.KNOWN and copy is not None and track.open is None:
        # A repeat of an accepted event: every repeat shares one verdict, the accepted
        # copy keeps its own.
        if track.known is None:
            where = "" if track.accepted_at is None else f" at offset {track.accepted_at}"
            track.known = _Verdict(Status.KNOWN, "")
            track.known.set(outcome, f"{outcome.reason}: a repeat of the message{where}")
        copy.verdict = track.known
        return
    if status is Status.SUPERSEDED:
        for held in track.held:
            held.set(outcome)
        if track.known is not None:
            track.known.set(outcome)
        track.held, track.known = [], None
    verdict = _join(track, copy) if copy is not None else track.open
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


def _receipt_outcome(track: _Track, outcome: Outcome, copy: _Copy | None) -> None:
    if copy is not None and outcome.status is Status.ESCROWED:
        _join(track, copy).set(outcome)
        return
    if copy is not None:
        copy.verdict.set(outcome)
    if track.open is not None:
        track.open.set(outcome)  # settles the siblings still waiting
        if outcome.status is not Status.ESCROWED:
            track.open = None


def verify_file(path: str) -> FileReport:
    """Read `path` (`-` for stdin) through a fresh validator; never raises for bad input."""
    report = FileReport(path)
    book = _Book()
    try:
        for frame in read_frames(path):
            _process(report.validator, book, frame)
    except ParseError as err:
        report.error = f"unframeable bytes: {err}"
    except OSError as err:
        report.error = f"cannot read: {err.strerror or err}"
    report.fates, report.evidence = book.fates(), book.evidence
    return report


def _process(validator: Validator, book: _Book, frame: Frame) -> None:
    if isinstance(frame, BadFrame):
        book.add_bad(frame)
        return
    copy = book.add(frame)
    event = frame.event
    record = validator.record(event.said) if event.ilk is Ilk.RCT else None
    held = len(record.receipts) if record is not None else 0
    try:
        outcomes = validator.process(frame, now=0.0)
    except ProtocolError as err:  # the validator should return verdicts, but bad input must
        copy.verdict.reason = f"validator error: {err}"  # never become a traceback here
        return
    book.settle(copy, outcomes)
    if (
        record is not None
        and copy.verdict.status is Status.ACCEPTED
        and len(record.receipts) == held
    ):
        # The validator stores a receipt it holds already as accepted; it added nothing.
        copy.verdict = _Verdict(Status.KNOWN, "every receipt in it was held already: a repeat")

"""Verifying a KEL file: every message through one validator, and the final fate of each.

`Validator.process` reports on the message it was given and also on other events that moved
because of it (an escrowed event released, an interaction superseded by a recovery), in no
promised order. A message's fate is therefore tracked by what it is about, not by when it was
read: an event by its SAID, a receipt by the SAID of the event it receipts (kept apart from the
event itself). Every outcome is filed under its key and updates the messages with that key:

- an event is one thing however many copies arrive, so its latest outcome is every copy's fate
  (escrowed -> accepted when the missing signature arrives, accepted -> superseded);
- receipts for one event come in separate messages with separate signatures, so a later
  receipt's verdict only settles siblings still waiting (escrowed), never overturns one that
  was already decided (a bad receipt does not un-store a good one).
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


class _Book:
    """Fates by key, so an outcome about an event reaches every message carrying it."""

    def __init__(self) -> None:
        self.fates: list[Fate] = []
        self.evidence: list[DuplicityEvidence] = []
        self._by_key: dict[Key, list[Fate]] = {}

    def add(self, message: Message) -> Fate:
        event = message.event
        # Until the validator says otherwise: it always reports on the message it is given.
        fate = Fate(
            message.offset,
            message.length,
            event.said,
            event.ilk.value,
            event.sn,
            Status.REJECTED,
            "the validator gave no verdict",
        )
        self.fates.append(fate)
        self._by_key.setdefault((event.ilk is Ilk.RCT, event.said), []).append(fate)
        return fate

    def add_bad(self, frame: BadFrame) -> None:
        self.fates.append(
            Fate(frame.offset, frame.length, None, None, None, Status.REJECTED, frame.error.reason)
        )

    def settle(self, current: Fate, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            if outcome.evidence is not None:
                self.evidence.append(outcome.evidence)
            receipt = outcome.ilk == Ilk.RCT.value
            for fate in self._by_key.get((receipt, outcome.said), ()):
                if fate is current or not receipt or fate.status is Status.ESCROWED:
                    _apply(fate, outcome)


def _apply(fate: Fate, outcome: Outcome) -> None:
    fate.status = outcome.status
    fate.reason = outcome.reason
    fate.waiting = outcome.waiting.value if outcome.waiting is not None else None


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
    report.fates, report.evidence = book.fates, book.evidence
    return report


def _process(validator: Validator, book: _Book, frame: Frame) -> None:
    if isinstance(frame, BadFrame):
        book.add_bad(frame)
        return
    fate = book.add(frame)
    try:
        outcomes = validator.process(frame, now=0.0)
    except ProtocolError as err:  # the validator should return verdicts, but bad input must
        fate.reason = f"validator error: {err}"  # never become a traceback here
        return
    book.settle(fate, outcomes)

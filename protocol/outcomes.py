"""What the validator says about each message: a status, a reason, and what it still awaits."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, NamedTuple

from .escrow import Waiting

if TYPE_CHECKING:
    from .duplicity import DuplicityEvidence


class Status(StrEnum):
    ACCEPTED = "accepted"  # now in the KEL (or, for a receipt, stored against its event)
    KNOWN = "known"  # in the KEL already: this copy added nothing but maybe receipts
    ESCROWED = "escrowed"  # waiting; `waiting` says for what
    REJECTED = "rejected"  # invalid, or dropped from an escrow; `reason` says why
    DUPLICITOUS = "duplicitous"  # validly signed but conflicts with the KEL; see `evidence`
    SUPERSEDED = "superseded"  # was accepted, then replaced by a recovery rotation


class Outcome(NamedTuple):
    """The fate of one event (or receipt) at one moment."""

    status: Status
    prefix: str
    sn: int
    said: str
    ilk: str
    reason: str = ""
    waiting: Waiting | None = None
    evidence: DuplicityEvidence | None = None

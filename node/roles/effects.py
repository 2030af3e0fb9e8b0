"""What a role asks the world to do. The runtime performs these in order; see DESIGN.md.

A `Persist*` effect must be durable before any later effect of the same step runs: a witness
never hands out a receipt for an event that a crash could make it forget.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Surface(StrEnum):
    """Request/response protocols between nodes (versioned; see DESIGN.md)."""

    SUBMIT = "/dkms/1/submit"
    RECEIPTS = "/dkms/1/receipts"
    QUERY = "/dkms/1/query"


@dataclass(frozen=True, slots=True)
class PersistEvent:
    """Store an accepted event message (body and controller signatures) for good."""

    prefix: str
    sn: int
    said: str
    message: bytes


@dataclass(frozen=True, slots=True)
class PersistReceipts:
    """Store witness receipts (prefix -> signature) of the event `said`."""

    prefix: str
    sn: int
    said: str
    couples: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer the request `request`; `ok` False carries a refusal `reason` for the peer."""

    request: int
    ok: bool
    payload: bytes = b""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Publish:
    """Gossip `payload` (a CESR stream) on `topic`."""

    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Send:
    """Send a request to the node `to` (a witness prefix); its answer comes back tagged `tag`."""

    to: str
    surface: Surface
    payload: bytes
    tag: str


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Call the role's `timer(key, now)` at time `at` (replacing any timer with that key)."""

    key: str
    at: float


@dataclass(frozen=True, slots=True)
class Report:
    """Something an operator or user should hear about (`level`: debug, info, warning)."""

    level: str
    message: str


Effect = PersistEvent | PersistReceipts | Reply | Publish | Send | SetTimer | Report

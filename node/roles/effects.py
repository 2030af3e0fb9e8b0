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
    GOVERNANCE = "/dkms/1/governance"  # a governance KEL and signed roster, handed to a node


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
class PersistEvidence:
    """Store a signed envelope holding duplicity evidence against `accused` at `sn`."""

    accused: str
    sn: int
    envelope: bytes


@dataclass(frozen=True, slots=True)
class PersistRuling:
    """Store a judge's signed ruling against `accused`."""

    accused: str
    envelope: bytes


@dataclass(frozen=True, slots=True)
class PersistMeta:
    """Store `value` under `key`, replacing what was there (e.g. the governance roster)."""

    key: str
    value: bytes


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
class Subscribe:
    """Listen to `topic`; what is heard goes to the role's `hear(topic, payload, now)`.

    If the role has `admits(topic, payload) -> bool`, gossip validation asks it (and only
    what it admits is forwarded to other peers); otherwise the transport's default check runs.
    """

    topic: str


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


Persist = PersistEvent | PersistReceipts | PersistEvidence | PersistRuling | PersistMeta
Effect = Persist | Reply | Publish | Subscribe | Send | SetTimer | Report
PERSIST = (PersistEvent, PersistReceipts, PersistEvidence, PersistRuling, PersistMeta)

"""What a role asks the world to do. The runtime performs these in order; see DESIGN.md.

A `Persist*` effect must be durable before any later effect of the same step runs: a witness
never hands out a receipt for an event that a crash could make it forget.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from dkms.protocol.ids import NodePrefix

from .codes import Code


class Surface(StrEnum):
    """Request/response protocols between nodes (versioned; see DESIGN.md)."""

    SUBMIT = "/dkms/1/submit"
    RECEIPTS = "/dkms/1/receipts"
    QUERY = "/dkms/1/query"
    GOVERNANCE = "/dkms/1/governance"  # a governance KEL and signed roster, handed to a node


@dataclass(frozen=True, slots=True)
class Tag:
    """Names a request a role sent, so its answer can find its way back (`inputs.Answered`)."""


@dataclass(frozen=True, slots=True)
class TimerKey:
    """Names a timer; a later `SetTimer` with an equal key replaces the earlier one."""


@dataclass(frozen=True, slots=True)
class PersistEvent:
    """Store an accepted event message (body and controller signatures) for good.

    `loose`: an event of an unwitnessed identifier (`roles/storage.py`), kept outside the
    store's hash chain so that it can be dropped again (`DropLoose`) or join the chain later
    (`ChainLoose`). No witness receipts such an event, so no start-up proof needs it."""

    prefix: str
    sn: int
    said: str
    message: bytes
    loose: bool = False


@dataclass(frozen=True, slots=True)
class ChainLoose:
    """The loose events of `prefix` join the hash chain, in the order they were stored,
    before anything after this effect: the identifier became witnessed (or something
    witnessed depends on it), so its events are kept for good."""

    prefix: str


@dataclass(frozen=True, slots=True)
class DropLoose:
    """Delete the loose events of `prefix` (and any receipts of them): evicted."""

    prefix: str


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
    """Store `value` under `key`, replacing what was there (e.g. the governance roster);
    an empty `value` deletes the key."""

    key: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer the request being handled: an ok `code` with its payload, or a refusal with a
    `reason` for the peer (the code is what the peer acts on; the reason is for people)."""

    code: Code
    payload: bytes = b""
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.code.ok

    @staticmethod
    def accept(payload: bytes = b"", reason: str = "") -> Reply:
        return Reply(Code.OK, payload, reason)

    @staticmethod
    def refuse(code: Code, reason: str) -> Reply:
        return Reply(code, b"", reason)


@dataclass(frozen=True, slots=True)
class Publish:
    """Gossip `payload` (a CESR stream) on `topic`."""

    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Listen to `topic`; what is heard comes back as `inputs.Heard`.

    Gossip validation asks the role's `admits(topic, payload)`, and only what it admits is
    delivered and forwarded to other peers."""

    topic: str


@dataclass(frozen=True, slots=True)
class Send:
    """Send a request to the node `to`; its answer comes back as `inputs.Answered(tag, ...)`."""

    to: NodePrefix
    surface: Surface
    payload: bytes
    tag: Tag


@dataclass(frozen=True, slots=True)
class SetTimer:
    """`inputs.TimerFired(key)` at time `at` (replacing any timer with an equal key)."""

    key: TimerKey
    at: float


@dataclass(frozen=True, slots=True)
class Blame:
    """`peer` sent something it should not have (garbage, a forgery): score it down."""

    peer: NodePrefix
    reason: str


@dataclass(frozen=True, slots=True)
class Report:
    """Something an operator or user should hear about (`level`: debug, info, warning)."""

    level: str
    message: str


Persist = (
    PersistEvent
    | PersistReceipts
    | PersistEvidence
    | PersistRuling
    | PersistMeta
    | ChainLoose
    | DropLoose
)
Effect = Persist | Reply | Publish | Subscribe | Send | SetTimer | Report | Blame
PERSIST = (
    PersistEvent,
    PersistReceipts,
    PersistEvidence,
    PersistRuling,
    PersistMeta,
    ChainLoose,
    DropLoose,
)

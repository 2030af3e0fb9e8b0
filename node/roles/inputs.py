"""What the world tells a role: the input half of the role interface (effects are the other).

A driver (the runtime, the simulator, the test driver) turns what happens into one of four
inputs and hands it to `Role.step`:

    Request(surface, peer, payload)        a peer asks on one of the role's surfaces; the
                                           step's `Reply` effect is the answer
    Heard(topic, peer, payload)            gossip on a topic the role publishes or subscribes to
    Answered(tag, code, payload, reason)   the answer to a `Send` the role made with `tag`
                                           (or why none came: `Code.UNREACHABLE`)
    TimerFired(key)                        the `SetTimer` with that key came due

Tags and timer keys are small frozen values, compared and hashed by the driver and read only
by the role that made them; each role matches on the ones it makes.
"""

from __future__ import annotations

from dataclasses import dataclass

from dkms.protocol.ids import NodePrefix, Prefix, Said

from .codes import Code
from .effects import Surface, Tag, TimerKey

# ------------------------------------------------------------------------- tags


@dataclass(frozen=True, slots=True)
class Submission(Tag):
    """A controller's event `said` pushed to `witness`."""

    said: Said
    witness: NodePrefix


@dataclass(frozen=True, slots=True)
class Agreement(Tag):
    """Every receipt of `said`, handed to `witness` (witness agreement)."""

    said: Said
    witness: NodePrefix


@dataclass(frozen=True, slots=True)
class GapQuery(Tag):
    """Events of `prefix` asked of `peer` because a later one arrived first."""

    prefix: Prefix
    peer: NodePrefix


@dataclass(frozen=True, slots=True)
class RosterQuery(Tag):
    """A governance roster asked of `peer`."""

    peer: NodePrefix


@dataclass(frozen=True, slots=True)
class RivalQuery(Tag):
    """A witness asks co-witness `peer` for its version `said` of sn `sn` of `prefix`: the
    peer receipted it, and the witness holds another (`rivals.py`)."""

    prefix: Prefix
    sn: int
    said: Said
    peer: NodePrefix


@dataclass(frozen=True, slots=True)
class ViewAsk(Tag):
    """A watcher tells watcher `peer` of the roster its tips, and asks for its own
    (`views.py`)."""

    peer: NodePrefix


@dataclass(frozen=True, slots=True)
class ReconcileDigest(Tag):
    """A watcher asks `peer` for its per-shard summary of the KELs it holds
    (`reconcile.py`)."""

    peer: NodePrefix


@dataclass(frozen=True, slots=True)
class ReconcileShard(Tag):
    """A watcher asks `peer` for the tips it holds in `shard`, after prefix `after`
    (`reconcile.py`)."""

    peer: NodePrefix
    shard: int
    after: str


# ------------------------------------------------------------------------- timer keys


@dataclass(frozen=True, slots=True)
class Expiry(TimerKey):
    """Sweep the escrows for what waited too long."""


@dataclass(frozen=True, slots=True)
class Tail(TimerKey):
    """A witness republishes the tails of KELs gone quiet (`tails.py`)."""


@dataclass(frozen=True, slots=True)
class RivalRepeat(TimerKey):
    """A witness publishes the rivals it refused once more (`rivals.py`)."""


@dataclass(frozen=True, slots=True)
class CatchUp(TimerKey):
    """Ask again for the gaps of KELs that stalled behind an escrowed event."""


@dataclass(frozen=True, slots=True)
class LagCheck(TimerKey):
    """Look for witnesses that have not receipted an event in time (anomalies)."""


@dataclass(frozen=True, slots=True)
class RosterRetry(TimerKey):
    """Ask for a roster again while none is held."""


@dataclass(frozen=True, slots=True)
class ViewRound(TimerKey):
    """A watcher tells the other watchers of the roster the tips that moved (`views.py`)."""


@dataclass(frozen=True, slots=True)
class ReconcileRound(TimerKey):
    """A watcher compares what it holds with some of its peers (`reconcile.py`)."""


@dataclass(frozen=True, slots=True)
class ReconcilePump(TimerKey):
    """A watcher starts the KEL fetches a reconciliation found, as ask slots free up."""


@dataclass(frozen=True, slots=True)
class PublishTurn(TimerKey):
    """This juror's turn to publish its evidence of one conflict."""

    conflict: tuple[str, str, str, int, frozenset[str]]


@dataclass(frozen=True, slots=True)
class Retry(TimerKey):
    """Push event `said` to `witness` again."""

    said: Said
    witness: NodePrefix


# ------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class Request:
    surface: Surface
    peer: NodePrefix  # who asks ("" when the driver cannot tell)
    payload: bytes


@dataclass(frozen=True, slots=True)
class Heard:
    topic: str
    peer: NodePrefix  # who published it ("" when the driver cannot tell)
    payload: bytes


@dataclass(frozen=True, slots=True)
class Answered:
    tag: Tag
    code: Code
    payload: bytes = b""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class TimerFired:
    key: TimerKey


Input = Request | Heard | Answered | TimerFired

"""Test kit for the protocol tests: seeded signers, signed messages and a scripted controller.

Everything goes through bytes: `message()` serializes what it builds and frames it back with
`parse_stream`, so a test never hands the validator an object the wire could not carry.
"""

from __future__ import annotations

import contextlib
import hashlib
import traceback
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import hypothesis

from dkms.protocol import events
from dkms.protocol.cesr import IndexedSig
from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.errors import ProtocolError
from dkms.protocol.events import Event, Kind
from dkms.protocol.outcomes import Outcome, Status
from dkms.protocol.stream import (
    Attachments,
    Frame,
    Message,
    StreamReader,
    messagize,
    parse_stream,
)
from dkms.protocol.validator import Validator

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "keri-v1"
VECTOR_FILES = sorted(VECTORS.glob("*/*.cesr"))


def vector_id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def seed(label: object) -> bytes:
    """A deterministic 32-byte seed named by `label` (tests make no randomness of their own)."""
    return hashlib.sha256(repr(label).encode()).digest()


def signer(label: object, transferable: bool = True) -> Signer:
    return Signer(seed(label), transferable=transferable)


def witness(label: object) -> Signer:
    """A witness: a non-transferable (`B...`) key pair."""
    return signer(("witness", label), transferable=False)


def sign(
    event: Event,
    signers: Sequence[Signer],
    which: Iterable[int] | None = None,
    both: bool = True,
) -> tuple[IndexedSig, ...]:
    """Indexed signatures of `event` by `signers[i]` for each i in `which` (default: all).

    `both` marks each key as also exposing the prior next digest at the same position (`A`).
    """
    indices = range(len(signers)) if which is None else which
    return tuple(signers[i].sign_indexed(event.raw, i, i if both else None) for i in indices)


def message(
    event: Event,
    sigs: Sequence[IndexedSig] = (),
    *,
    wigs: Sequence[IndexedSig] = (),
    couples: Sequence[tuple[str, bytes]] = (),
    sources: Sequence[tuple[int, str]] = (),
) -> Message:
    """Serialize `event` with its attachments and frame it back from the bytes."""
    atc = Attachments(
        sigs=tuple(sigs), wigs=tuple(wigs), couples=tuple(couples), sources=tuple(sources)
    )
    return one(messagize(event, atc))


def one(data: bytes) -> Message:
    frames = parse_stream(data)
    assert len(frames) == 1, frames
    frame = frames[0]
    assert isinstance(frame, Message), frame
    return frame


def receipt(event: Event, *witnesses: Signer) -> Message:
    """An `rct` for `event` carrying one `-C` couple per witness."""
    body = events.receipt(event.prefix, event.sn, event.said, kind=event.kind)
    return message(body, couples=[(w.verfer, w.sign_raw(event.raw)) for w in witnesses])


def feed(validator: Validator, messages: Iterable[Message], now: float = 0.0) -> list[Outcome]:
    out: list[Outcome] = []
    for msg in messages:
        out.extend(validator.process(msg, now))
    return out


def fates(outcomes: Iterable[Outcome]) -> dict[str, Status]:
    """SAID -> the last status reported for it."""
    return {o.said: o.status for o in outcomes}


def frames_until_error(data: bytes) -> tuple[list[Frame], ProtocolError | None]:
    """Frame `data` like `parse_stream`, but keep the frames read before an error."""
    reader = StreamReader()
    frames: list[Frame] = []
    try:
        frames.extend(reader.feed(data))
        frames.extend(reader.close())
    except ProtocolError as err:
        return frames, err
    return frames, None


def state_json(validator: Validator, prefix: str) -> dict[str, Any] | None:
    state = validator.state(prefix)
    return state.to_json() if state is not None else None


class Controller:
    """One identifier's controller: key generations from seeds; builds and signs its events.

    Generation g holds `count` signers; the keys of generation g+1 are committed to as next
    keys while generation g signs. `events` is the controller's own view of its KEL.
    """

    def __init__(self, name: object, count: int = 1, kind: Kind = Kind.CBOR) -> None:
        self.name = name
        self.count = count
        self.kind = kind
        self.generation = 0
        self.events: list[Event] = []

    def keyset(self, generation: int, count: int | None = None) -> list[Signer]:
        n = self.count if count is None else count
        return [signer((self.name, generation, i)) for i in range(n)]

    @property
    def current(self) -> list[Signer]:
        return self.keyset(self.generation)

    @property
    def next(self) -> list[Signer]:
        return self.keyset(self.generation + 1)

    @property
    def prefix(self) -> str:
        return self.events[0].prefix

    @property
    def last(self) -> Event:
        return self.events[-1]

    def digests(self, signers: Sequence[Signer]) -> list[str]:
        return [next_key_digest(s.verfer) for s in signers]

    def incept(self, **kwargs: Any) -> Event:
        kwargs.setdefault("next_digests", self.digests(self.next))
        kwargs.setdefault("kind", self.kind)
        event = events.incept([s.verfer for s in self.current], **kwargs)
        self.events = [event]
        return event

    def interact(self, anchors: Sequence[Any] = (), **kwargs: Any) -> Event:
        kwargs.setdefault("kind", self.kind)
        kwargs.setdefault("sn", self.last.sn + 1)
        kwargs.setdefault("prior", self.last.said)
        event = events.interact(self.prefix, anchors=anchors, **kwargs)
        self._append(event)
        return event

    def rotate(self, **kwargs: Any) -> Event:
        """Rotate to the next generation (which then signs) committing to the one after."""
        self.generation += 1
        kwargs.setdefault("kind", self.kind)
        kwargs.setdefault("sn", self.last.sn + 1)
        kwargs.setdefault("prior", self.last.said)
        kwargs.setdefault("next_digests", self.digests(self.next))
        event = events.rotate(self.prefix, [s.verfer for s in self.current], **kwargs)
        self._append(event)
        return event

    def _append(self, event: Event) -> None:
        del self.events[event.sn :]
        self.events.append(event)

    def signed(self, event: Event, which: Iterable[int] | None = None, **atc: Any) -> Message:
        """`event` signed by the generation in force for it (its own for establishment)."""
        return message(event, sign(event, self.signers_for(event), which), **atc)

    def signers_for(self, event: Event) -> list[Signer]:
        # Generation 0 signs the inception; each rotation up to `event` moves one on.
        return self.keyset(sum(1 for e in self.events[1 : event.sn + 1] if e.establishment))


# ------------------------------------------------------------------------ known bugs
#
# Bugs found in `protocol/` that are documented by a strict xfail test each (named in the
# value). Property and fuzz tests that stumble on one of them note it and carry on, so the
# suite stays green while the xfail tests keep the bug visible. When a bug is fixed its xfail
# test starts failing (XPASS, strict): remove the marker and the entry here together.
# Key: (exception type name, file under protocol/ of the innermost library frame). Functions
# are not part of the key: protocol/ is being tuned for speed and they move around.

KNOWN_BUGS: dict[tuple[str, str], str] = {}

_PROTOCOL_DIR = Path(__file__).resolve().parents[2] / "protocol"


def known_bug(exc: BaseException) -> str | None:
    """The xfail test documenting `exc` if it is one of KNOWN_BUGS, else None."""
    inner = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve().parent == _PROTOCOL_DIR:
            inner = frame
    if inner is None:
        return None
    return KNOWN_BUGS.get((type(exc).__name__, Path(inner.filename).name))


@contextlib.contextmanager
def library_errors_only() -> Iterator[None]:
    """Let ProtocolError through silently; a known bug becomes a hypothesis event; the rest
    (an unexpected exception escaping the library) fails the test."""
    try:
        yield
    except ProtocolError:
        pass
    except Exception as exc:
        name = known_bug(exc)
        if name is None:
            raise
        note_known_bug(name)


def note_known_bug(name: str) -> None:
    # Outside a hypothesis test there is nothing to note it in.
    with contextlib.suppress(Exception):
        hypothesis.event(f"known bug, see {name}")

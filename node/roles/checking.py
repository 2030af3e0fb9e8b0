"""Checking a KEL an application was shown against the copy a watcher holds (`dkms kel check`).

Theory of operation. A controller can show one victim a fork that colluding witnesses (as many
as the threshold) receipted and kept off the gossip: no watcher ever hears it, so nothing
compares it with anything. The victim can: it hands each watcher the KEL it was shown, a
piece at a time, on the query surface:

    {"t": "check", "i": prefix, "s": sn, "k": CESR}

`k` holds the key events of `prefix` from sn `s` on, in order and chained, each with its
controller signatures and witness receipts attached (as KEL pages carry them); at most
`MAX_EVENTS` of them, and the request is bounded by the transport's message limit. The
watcher compares the piece with its own KEL, event by event:

    same SAID        the watcher holds this very event (its signatures were checked when it
                     was accepted; the piece's copies of them are not checked again)
    another version  at an sn the watcher holds: the piece's event is judged by the watcher's
                     own validator, as if heard on the gossip (`feed`). Validly signed, it is
                     duplicity: the validator's evidence goes to the juror duties like any
                     other (kept, published in the juror's turn, ruled on), and the piece's
                     receipts go to the receipt detector (colluding witnesses that receipted
                     both versions are caught too). A rotation replacing an interaction is a
                     recovery, never duplicity; one the watcher lacked is taken. An
                     interaction the watcher's recovery rotation superseded is `behind`
    beyond its KEL   the rest of the piece is fed in order, as if heard on the gossip: what
                     the validator accepts the watcher now holds; the first event it rejects
                     or can only escrow (short of signatures or receipts) ends the check

and answers one of the `Verdict`s with the reason, where the two part (`at`), how many events
of the piece it held already (`matched`) and took (`taken`), its own latest sn and SAID, its
standing of the identifier, and the evidence: the new conflict's first, then what it holds
about the identifier, within `PAGE_BYTES`. A watcher that holds evidence that the identifier
is duplicitous answers `duplicitous` whatever the piece holds: the identifier is not to be
trusted. Invalid content is never kept (the validator keeps only what verifies; what waits in
its escrows is bounded and expires, as for gossip). The watcher keeps nothing of a check
between pieces: a client checks a long KEL by sending its pieces in order from sn 0, goes on
while the answer is `behind` (every event held: the watcher may hold more) or `ahead`, and
reads the last piece's verdict.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import cbor2

from dkms.protocol.errors import ProtocolError
from dkms.protocol.events import ROTATION, Ilk
from dkms.protocol.kel import Kel
from dkms.protocol.outcomes import Outcome, Status
from dkms.protocol.stream import Message
from dkms.protocol.validator import Validator

from .codes import Code
from .effects import Reply
from .holdings import Holdings, Standing
from .pages import PAGE_BYTES, PAGE_EVENTS
from .topics import peer_parse

QUERY: Final = "check"  # the query's "t"
MAX_EVENTS: Final = PAGE_EVENTS  # key events in one piece

Feed = Callable[[Message], list[Outcome]]  # the watcher hearing one message as gossip


class Verdict(StrEnum):
    CONSISTENT = "consistent"  # every event is the watcher's, and it holds no more
    BEHIND = "behind"  # every event is the watcher's, and it holds more (or superseded them)
    AHEAD = "ahead"  # the piece goes on validly past the watcher's copy
    DUPLICITOUS = "duplicitous"  # a validly signed other version: evidence
    INVALID = "invalid"  # does not read as a KEL, or what is new to the watcher does not verify


@dataclass(frozen=True, slots=True)
class Piece:
    """Key events of `prefix` from sn `start` on, in order, as a check sends them."""

    prefix: str
    start: int
    events: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class Finding:
    """What the comparison of one piece found."""

    verdict: Verdict
    reason: str
    matched: int = 0  # events of the piece the watcher held already
    taken: int = 0  # events of the piece the watcher lacked and holds now
    at: int | None = None  # the sn where the piece and the watcher's KEL part
    evidence: tuple[bytes, ...] = ()  # evidence CBOR of a conflict found now


def ask(prefix: str, start: int, data: bytes) -> bytes:
    """The query checking `data` (key events of `prefix` from sn `start`)."""
    return cbor2.dumps({"t": QUERY, "i": prefix, "s": start, "k": data})


def answer(
    ask: dict[Any, Any],
    me: str,
    validator: Validator,
    holdings: Holdings,
    feed: Feed,
    follows: Callable[[str], bool],
) -> Reply:
    """The whole handler of a check query (`ask`, its CBOR map): read the piece, compare it
    with the KEL `validator` holds, hearing what is new through `feed` if the watcher
    `follows` the identifier, and answer."""
    prefix, start, data = ask.get("i"), ask.get("s", 0), ask.get("k")
    if not isinstance(prefix, str) or not prefix:
        return Reply.refuse(Code.BAD_QUERY, "a check needs the identifier prefix i")
    if not isinstance(start, int) or isinstance(start, bool) or start < 0:
        return Reply.refuse(Code.BAD_QUERY, "s must be the sn of the first event")
    if not isinstance(data, bytes):
        return Reply.refuse(Code.BAD_QUERY, "a check needs the key events k (CESR bytes)")
    piece = read(prefix, start, data)
    if isinstance(piece, Finding):
        return reply(me, Piece(prefix, start, ()), piece, validator, holdings)
    found = check(piece, validator, feed if follows(prefix) else None)
    return reply(me, piece, found, validator, holdings)


def read(prefix: str, start: int, data: bytes) -> Piece | Finding:
    """The piece `data` holds (key events of `prefix` from sn `start`), or an `INVALID`
    finding saying why its events do not read as a piece of that KEL."""
    try:
        frames = peer_parse(data)
    except ProtocolError as err:
        return _invalid(f"the events do not read as CESR: {err}")
    events: list[Message] = []
    for frame in frames:
        if not isinstance(frame, Message):
            return _invalid(f"a message at offset {frame.offset} does not read: {frame.error}")
        event = frame.event
        if event.ilk is Ilk.RCT:
            return _invalid("receipts must come attached to their events, as KEL pages carry them")
        if event.prefix != prefix:
            return _invalid(f"it holds an event of {event.prefix}, not of {prefix}")
        expected = start + len(events)
        if event.sn != expected:
            return _invalid(
                f"its events must run from sn {start} on: sn {event.sn} is not {expected}"
            )
        if events and event.prior != events[-1].event.said:
            return _invalid(f"its event at sn {event.sn} does not chain to the one before it")
        events.append(frame)
        if len(events) > MAX_EVENTS:
            return _invalid(f"over {MAX_EVENTS} events: send the KEL in pieces")
    if not events:
        return _invalid("it holds no key events")
    return Piece(prefix, start, tuple(events))


def check(piece: Piece, validator: Validator, feed: Feed | None) -> Finding:
    """Compare `piece` with the KEL `validator` holds; what is new to it is heard through
    `feed` (None: the watcher does not follow this identifier, and takes nothing of it)."""
    held = validator.kel(piece.prefix)
    if held is None:
        if piece.start > 0:
            return Finding(Verdict.AHEAD, "this watcher holds nothing of it: check from sn 0", at=0)
        return _extend(piece, 0, validator, feed)
    for n, message in enumerate(piece.events):
        record = held.at(message.event.sn)
        if record is None:
            break
        if record.event.said != message.event.said:
            return _fork(piece, n, held, validator, feed)
    else:
        last = piece.events[-1].event.sn
        matched = len(piece.events)
        if last == held.sn:
            return Finding(Verdict.CONSISTENT, "this watcher holds the same events", matched)
        return Finding(
            Verdict.BEHIND,
            f"this watcher holds {held.sn - last} event(s) more, up to sn {held.sn}",
            matched,
            at=last + 1,
        )
    first = piece.events[n].event
    if n == 0 and first.sn > held.sn + 1:
        return Finding(
            Verdict.AHEAD,
            f"this watcher holds up to sn {held.sn}: check from there",
            at=held.sn + 1,
        )
    if n == 0 and first.prior != held.last_said:
        return _invalid(
            f"its event at sn {first.sn} does not go on from this watcher's at sn {held.sn}: "
            "check from sn 0 to find where they part",
            at=first.sn,
        )
    return _extend(piece, n, validator, feed)


def _fork(piece: Piece, n: int, held: Kel, validator: Validator, feed: Feed | None) -> Finding:
    """The piece's event `n` is another version of one the watcher holds."""
    message = piece.events[n]
    event = message.event
    at = event.sn
    mine = held.chain[at].event
    if validator.record(event.said) is not None or (event.ilk is Ilk.IXN and mine.ilk in ROTATION):
        why = f"the rotation {mine.said} this watcher holds at sn {at} supersedes it (a recovery)"
        return Finding(Verdict.BEHIND, why, n, at=at)
    if feed is None:
        return _invalid("this watcher does not follow it: it judges nothing new of it", n, at=at)
    outcome = _own(feed(message), event.said)
    if outcome is not None and outcome.status is Status.DUPLICITOUS and outcome.evidence:
        why = (
            f"its {event.ilk} {event.said} at sn {at} is validly signed, and this watcher "
            f"holds {mine.ilk} {mine.said} there"
        )
        evidence = (outcome.evidence.to_cbor(),)
        return Finding(Verdict.DUPLICITOUS, why, n, at=at, evidence=evidence)
    if _holds(validator, piece.prefix, event.sn, event.said):  # a recovery rotation
        found = _extend(piece, n + 1, validator, feed, matched=n, taken=1)
        why = f"its recovery rotation at sn {at} superseded what this watcher held"
        why += f"; {found.reason}" if found.reason else ""
        return Finding(found.verdict, why, found.matched, found.taken, at, found.evidence)
    if mine.ilk is Ilk.IXN and event.ilk in ROTATION and at <= held.authority.sn:
        why = (
            f"its rotation at sn {at} conflicts with the interaction held there, and this "
            f"watcher's KEL rotated since (sn {held.authority.sn}): not a recovery it can take"
        )
        return _invalid(why, n, at=at)
    return _invalid(_why_not(event.ilk, at, outcome), n, at=at)


def _extend(
    piece: Piece,
    n: int,
    validator: Validator,
    feed: Feed | None,
    *,
    matched: int | None = None,
    taken: int = 0,
) -> Finding:
    """Feed the piece's events from `n` on: the watcher's KEL goes on with them."""
    matched = n if matched is None else matched
    events = piece.events[n:]
    if not events:
        return Finding(Verdict.AHEAD, "", matched, taken)
    start = events[0].event.sn
    if feed is None:
        why = "this watcher does not follow it: it takes none of its events"
        return Finding(Verdict.AHEAD, why, matched, taken, at=start)
    before = taken
    for message in events:
        event = message.event
        outcome = _own(feed(message), event.said)
        if _holds(validator, piece.prefix, event.sn, event.said):
            taken += 1
            continue
        if outcome is not None and outcome.status is Status.ACCEPTED:
            why = f"valid from sn {start}, but this watcher did not keep it (its store is full)"
            return Finding(Verdict.AHEAD, why, matched, taken, at=start)
        return _invalid(_why_not(event.ilk, event.sn, outcome), matched, taken, at=event.sn)
    why = f"this watcher lacked the {taken - before} event(s) from sn {start}, and holds them now"
    return Finding(Verdict.AHEAD, why, matched, taken, at=start)


def reply(
    me: str,
    piece: Piece,
    found: Finding,
    validator: Validator,
    holdings: Holdings,
    budget: int = PAGE_BYTES,
) -> Reply:
    """The answer to a check (a CBOR map), with the evidence that fits in `budget` bytes
    (at least one piece of it)."""
    prefix = piece.prefix
    held = validator.kel(prefix)
    standing, since = holdings.standing(prefix, held is not None)
    verdict, reason = found.verdict, found.reason
    if standing is Standing.DUPLICITOUS and verdict is not Verdict.DUPLICITOUS:
        reason = f"this watcher holds evidence that it is duplicitous from sn {since} ({reason})"
        verdict = Verdict.DUPLICITOUS
    evidence: list[bytes] = []
    size = 0
    for item in _evidence(found, holdings, prefix):
        if evidence and size + len(item) > budget:
            break
        evidence.append(item)
        size += len(item)
    answer = {
        "watcher": me,
        "i": prefix,
        "verdict": verdict.value,
        "reason": reason,
        "s": piece.start,
        "n": len(piece.events),
        "matched": found.matched,
        "taken": found.taken,
        "at": found.at,
        "sn": held.sn if held is not None else None,
        "d": held.last_said if held is not None else None,
        "standing": standing.value,
        "duplicitous_from": since,
        "evidence": evidence,
    }
    return Reply.accept(cbor2.dumps(answer))


def _evidence(found: Finding, holdings: Holdings, prefix: str) -> list[bytes]:
    """The conflict found now first, then the evidence held about `prefix` (found now by the
    receipt detector, or before), each once."""
    items = list(found.evidence)
    for held in holdings.about(prefix)[0]:
        if held.evidence not in items:
            items.append(held.evidence)
    return items


def _own(outcomes: Sequence[Outcome], said: str) -> Outcome | None:
    """The outcome of the event `said` itself among what feeding it settled."""
    for outcome in outcomes:
        if outcome.said == said and outcome.ilk != Ilk.RCT:
            return outcome
    return None


def _holds(validator: Validator, prefix: str, sn: int, said: str) -> bool:
    kel = validator.kel(prefix)
    record = kel.at(sn) if kel is not None else None
    return record is not None and record.event.said == said


def _why_not(ilk: str, sn: int, outcome: Outcome | None) -> str:
    if outcome is None:
        return f"its {ilk} at sn {sn} was not taken"
    if outcome.status is Status.ESCROWED:
        return f"its {ilk} at sn {sn} cannot be verified: {outcome.reason}"
    return f"its {ilk} at sn {sn} is {outcome.status.value}: {outcome.reason}"


def _invalid(reason: str, matched: int = 0, taken: int = 0, *, at: int | None = None) -> Finding:
    return Finding(Verdict.INVALID, reason, matched, taken, at)

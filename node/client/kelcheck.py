"""Checking a KEL one was shown against the watchers' copies: the application's side of
`{"t": "check"}` (`roles/checking.py`), for `dkms kel check` and for programs.

    shown = prepare(data)                          # validated here first, or CommandError
    results = await check_kel(transport, watchers, shown, timeout=10.0)
    status(results)                                # 0, 3, 1 or 4, as `dkms kel check` exits

`prepare` validates the bytes on their own (signatures, chain, receipts up to each event's
threshold) and keeps the identifier's accepted chain, each event with its signatures and
receipts attached, cut into pieces of at most `checking.MAX_EVENTS` events and `budget`
bytes (a larger event goes alone). `check_kel` sends each watcher the pieces in order, from
sn 0, and reads the last answer it needs: a watcher that holds every event of a piece (and
maybe more: `behind`) or lacked some of them (`ahead`, and takes them) is sent the next one;
`duplicitous` and `invalid` end it. The evidence a watcher sends is verified here, offline:
a `duplicitous` answer counts only with evidence about this identifier that verifies.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final, Protocol

import cbor2
import trio

from dkms.node.client.home import CommandError
from dkms.node.roles import checking
from dkms.node.roles.checking import MAX_EVENTS, Verdict
from dkms.node.roles.effects import Surface
from dkms.node.roles.pages import page_message
from dkms.node.runtime.transport import Answer, TransportError
from dkms.protocol.errors import ProtocolError
from dkms.protocol.events import Ilk
from dkms.protocol.evidence import Accusation, parse_evidence, verify_evidence
from dkms.protocol.outcomes import Outcome, Status
from dkms.protocol.stream import Message, parse_stream
from dkms.protocol.validator import Validator

BUDGET: Final = 256 * 1024  # bytes of events in one piece (the request cap is 1 MiB)
ERROR: Final = "error"  # the verdict of a watcher that could not check: refused, unreachable


class Requester(Protocol):
    """What a check needs of a transport: requests to nodes by prefix (libp2p's, or the
    HTTP API's way to the node's own role, `node/http/`)."""

    async def request(self, to: str, surface: str, payload: bytes, timeout: float) -> Answer: ...


class Exit(IntEnum):
    """What `dkms kel check` exits with (and `status` returns)."""

    CONSISTENT = 0  # every watcher holds exactly these events
    ERROR = 1  # a watcher could not check it, or found it invalid (and none duplicitous)
    DUPLICITOUS = 3  # a watcher holds evidence, verified here, that the identifier is duplicitous
    DIFFERENT = 4  # no duplicity, no error, but a watcher was behind or ahead of the file


@dataclass(frozen=True, slots=True)
class Shown:
    """A KEL as shown to the application: one identifier's chain, validated, in pieces."""

    prefix: str
    sn: int  # its latest event's
    said: str
    pieces: tuple[tuple[int, bytes], ...]  # (first sn, events) each

    @property
    def events(self) -> int:
        return self.sn + 1


@dataclass(slots=True)
class Checked:
    """One watcher's answer about the whole KEL."""

    watcher: str
    verdict: str = ERROR  # a `Verdict`'s value, or ERROR
    reason: str = ""
    sn: int | None = None  # the watcher's latest sn (after the check)
    said: str | None = None
    matched: int = 0  # events it held already
    taken: int = 0  # events it lacked and took
    at: int | None = None  # where the file and its copy part
    standing: str | None = None
    duplicitous_from: int | None = None
    evidence: list[tuple[bytes, Accusation | str]] = field(default_factory=list)  # or why not

    @property
    def proven(self) -> list[Accusation]:
        """What the evidence sent proves, verified here."""
        return [a for _, a in self.evidence if isinstance(a, Accusation)]

    def to_json(self) -> dict[str, Any]:
        return {
            "watcher": self.watcher,
            "verdict": self.verdict,
            "reason": self.reason,
            "sn": self.sn,
            "d": self.said,
            "matched": self.matched,
            "taken": self.taken,
            "at": self.at,
            "standing": self.standing,
            "duplicitous_from": self.duplicitous_from,
            "evidence": [_evidence_json(data, a) for data, a in self.evidence],
        }


def prepare(data: bytes, prefix: str | None = None, *, budget: int = BUDGET) -> Shown:
    """The KEL in `data` of `prefix` (default: the only identifier it holds), validated on
    its own, in pieces; a CommandError saying what does not validate."""
    try:
        frames = parse_stream(data)
    except ProtocolError as err:
        raise CommandError(f"not a readable KEL: {err}") from None
    validator = Validator()
    last: dict[str, Outcome] = {}  # SAID -> the last outcome of a key event
    for frame in frames:
        if isinstance(frame, Message):
            for outcome in validator.process(frame, 0.0):
                if outcome.ilk != Ilk.RCT:
                    last[outcome.said] = outcome
    if prefix is None:
        held = sorted(validator.prefixes)
        if len(held) != 1:
            found = f"{len(held)} identifiers" if held else "no identifier's inception"
            raise CommandError(f"it holds {found}: name the one to check with --prefix")
        prefix = held[0]
    kel = validator.kel(prefix)
    if kel is None:
        raise CommandError(f"it holds no KEL of {prefix} that validates")
    for said, outcome in last.items():
        if outcome.prefix == prefix and validator.record(said) is None:
            why = outcome.reason or outcome.status.value
            if outcome.status is Status.DUPLICITOUS:
                why = f"it holds two versions of sn {outcome.sn} itself ({why})"
            raise CommandError(
                f"its {outcome.ilk} {said} at sn {outcome.sn} does not validate: {why} "
                "(`dkms kel verify` tells more)"
            )
    pieces: list[tuple[int, bytes]] = []
    piece: list[bytes] = []
    size = start = 0
    for record in kel.chain:
        message = page_message(record)
        if piece and (size + len(message) > budget or len(piece) == MAX_EVENTS):
            pieces.append((start, b"".join(piece)))
            piece, size, start = [], 0, record.event.sn
        piece.append(message)
        size += len(message)
    pieces.append((start, b"".join(piece)))
    return Shown(prefix, kel.sn, kel.last_said, tuple(pieces))


async def check_kel(
    transport: Requester, watchers: Sequence[str], shown: Shown, *, timeout: float
) -> list[Checked]:
    """Each watcher's answer about `shown` (the watchers asked at once), in their order."""
    results = [Checked(w) for w in watchers]
    async with trio.open_nursery() as nursery:
        for result in results:
            nursery.start_soon(_check_one, transport, result, shown, timeout)
    return results


def status(results: Sequence[Checked]) -> Exit:
    """3 if any watcher proved duplicity; else 1 if any could not check, or found the file
    invalid; else 4 if any was behind or ahead of it; else 0."""
    verdicts = {r.verdict for r in results}
    if Verdict.DUPLICITOUS.value in verdicts:
        return Exit.DUPLICITOUS
    if verdicts & {ERROR, Verdict.INVALID.value} or not results:
        return Exit.ERROR
    if verdicts != {Verdict.CONSISTENT.value}:
        return Exit.DIFFERENT
    return Exit.CONSISTENT


async def _check_one(transport: Requester, result: Checked, shown: Shown, timeout: float) -> None:
    took_any = False
    for number, (start, data) in enumerate(shown.pieces):
        ask = checking.ask(shown.prefix, start, data)
        try:
            code, payload, reason = await transport.request(
                result.watcher, Surface.QUERY.value, ask, timeout
            )
        except TransportError as err:
            result.verdict, result.reason = ERROR, f"no answer: {err}"
            return
        if not code.ok:
            result.verdict, result.reason = ERROR, f"refused: {reason or code.text}"
            return
        try:
            _read_answer(result, shown.prefix, payload)
        except ProtocolError as err:
            result.verdict, result.reason = ERROR, f"a malformed answer: {err}"
            return
        took_any = took_any or result.taken > 0
        last = number == len(shown.pieces) - 1
        if result.verdict in (Verdict.DUPLICITOUS, Verdict.INVALID) or last:
            break
        if result.verdict == Verdict.AHEAD and result.taken == 0:
            break  # it took nothing of this piece: the next cannot go on from it
    if result.verdict == Verdict.CONSISTENT and took_any:
        result.verdict = Verdict.AHEAD.value
        result.reason = "it lacked events of the file, and holds them now"
    if result.verdict == Verdict.DUPLICITOUS and not _proves(result, shown.prefix):
        result.verdict = ERROR
        result.reason = f"it answered duplicitous without evidence that verifies ({result.reason})"


def _read_answer(result: Checked, prefix: str, payload: bytes) -> None:
    """Fill `result` from one answer, checking its shape (`ProtocolError` if wrong)."""
    try:
        answer = cbor2.loads(payload)
    except Exception:  # cbor2 raises many types on hostile input
        raise ProtocolError("not CBOR") from None
    if not isinstance(answer, dict) or answer.get("i") != prefix:
        raise ProtocolError(f"not a check answer about {prefix}")
    verdict = answer.get("verdict")
    if verdict not in {v.value for v in Verdict}:
        raise ProtocolError(f"an unknown verdict {verdict!r}")
    reason, evidence = answer.get("reason"), answer.get("evidence")
    if not isinstance(reason, str) or not isinstance(evidence, list):
        raise ProtocolError("no reason or evidence list")
    result.verdict, result.reason = verdict, reason
    result.sn, result.said = _int(answer.get("sn")), _str(answer.get("d"))
    result.matched += _int(answer.get("matched")) or 0
    result.taken += _int(answer.get("taken")) or 0
    result.at = _int(answer.get("at"))
    result.standing = _str(answer.get("standing"))
    result.duplicitous_from = _int(answer.get("duplicitous_from"))
    result.evidence = [(item, _verified(item)) for item in evidence if isinstance(item, bytes)]


def _proves(result: Checked, prefix: str) -> bool:
    """Whether the evidence sent proves duplicity about `prefix` (verified here)."""
    return any(a.prefix == prefix for a in result.proven)


def _verified(item: bytes) -> Accusation | str:
    try:
        return verify_evidence(parse_evidence(item))
    except ProtocolError as err:
        return str(err)


def _evidence_json(data: bytes, accusation: Accusation | str) -> dict[str, Any]:
    """As `dkms evidence list --json` lists evidence (so `dkms evidence verify` reads it)."""
    item: dict[str, Any] = {"cbor": base64.b64encode(data).decode(), "verified": False}
    if isinstance(accusation, str):
        item["error"] = accusation
        return item
    a = accusation
    item.update(kind=a.kind, accused=a.accused, i=a.prefix, s=a.sn, events=list(a.saids))
    item["verified"] = True
    return item


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None

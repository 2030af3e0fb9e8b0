"""Routed messages (`rpy`, `qry`): their bodies, and the signature groups kli attaches to them.

Theory of operation: a routed message is a KERI v1 body like an event's (version string, then
`t` and the SAID `d`), but its fields are `v t d dt r` followed by the route's arguments (`a`
for a reply, `rr q` for a query). `parse_routed` accepts only bytes that re-serialize to
themselves with a SAID that matches, so each message has one byte form, as events do.

Its signatures do not use the event groups alone: keripy wraps them in a `-V` attachment group
(counted in quadlets) holding `-C` couples (a non-transferable signer: prefix + signature),
`-H` groups (a transferable signer's last establishment: prefix + `-A` indexed signatures) or
`-F` groups (prefix, sequence number and SAID of the establishment event + `-A` signatures).
`parse_endorsements` reads that text exactly; `endorse_couple` writes a witness's; and
`check_endorsement` says whether the named signer signed, against its own key (a `B` prefix) or
the key state the caller supplies (this module knows no KEL).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from . import cesr
from .cesr import Codes, Counters, IndexedSig, b64_to_int, parse_indexed_sig
from .crypto import Signer, digest
from .errors import EventError, LocalProtocolError, ParseError
from .events import DUMMY, VERSION_SIZE, Kind, dumps, loads, sniff, version_string
from .keystate import Authority
from .signing import Verifier

ROUTED_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "rpy": ("v", "t", "d", "dt", "r", "a"),
    "qry": ("v", "t", "d", "dt", "r", "rr", "q"),
}
MAX_ROUTE: Final = 256  # characters of `r`; keripy's routes are a few path segments
# keripy's `helping.nowIso8601()`: microseconds and a numeric offset (always +00:00 there).
DATETIME_RE: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?[+-][0-9]{2}:[0-9]{2}"
)
LAST_EST_GROUPS: Final = "-H"  # transferable signer, at its latest establishment event
MAX_NESTING: Final = 2  # keripy wraps once; one more level costs nothing to allow


@dataclass(frozen=True, slots=True)
class Routed:
    """A parsed, self-consistent routed message body. `ked` is its decoded map."""

    raw: bytes
    kind: Kind
    ilk: str
    said: str
    dt: str
    route: str
    ked: dict[str, Any] = field(repr=False, compare=False)


def parse_routed(raw: bytes, ilk: str | None = None) -> Routed:
    """Decode and check one `rpy` or `qry` body (of `ilk`, when given)."""
    kind, size = sniff(raw)
    if size != len(raw):
        raise EventError(f"version string says {size} bytes, the body has {len(raw)}")
    ked = loads(raw, kind)
    if type(ked) is not dict:
        raise EventError("message body is not a map")
    got = ked.get("t")
    fields = ROUTED_FIELDS.get(got) if isinstance(got, str) else None
    if fields is None or not isinstance(got, str) or (ilk is not None and got != ilk):
        raise EventError(f"expected a {ilk or 'rpy or qry'} message, got type {got!r}")
    if tuple(ked) != fields:
        raise EventError(f"{got} fields must be {' '.join(fields)} in that order")
    if ked["v"] != version_string(kind, len(raw)):
        raise EventError(f"version string {ked['v']!r} does not match a {len(raw)}-byte body")
    said, dt, route = ked["d"], ked["dt"], ked["r"]
    if type(said) is not str or len(said) != 44 or said[0] != "E" or not said.isascii():
        raise EventError(f"SAID d must be a Blake3-256 digest, got {said!r}")
    if type(dt) is not str or not DATETIME_RE.fullmatch(dt):
        raise EventError(f"dt must be an ISO-8601 datetime with an offset, got {dt!r}"[:200])
    if type(route) is not str or len(route) > MAX_ROUTE:
        raise EventError(f"route r must be a string of at most {MAX_ROUTE} characters")
    try:
        canonical = dumps(ked, kind)
        ked["d"] = DUMMY
        computed = digest(dumps(ked, kind))
    except Exception:  # what decoded may not encode again (tags, lone surrogates)
        raise EventError("body is not in canonical form (re-serialization differs)") from None
    finally:
        ked["d"] = said
    if canonical != raw:
        raise EventError("body is not in canonical form (re-serialization differs)")
    if computed != said:
        raise EventError("SAID d does not match the message's content")
    return Routed(raw, kind, got, said, dt, route, ked)


def build_routed(ked: dict[str, Any], kind: Kind) -> Routed:
    """Fill in `v` and `d` of a routed body in keripy's field order and parse it back."""
    ked["v"] = "#" * VERSION_SIZE
    ked["d"] = DUMMY
    ked["v"] = version_string(kind, len(dumps(ked, kind)))
    ked["d"] = digest(dumps(ked, kind))
    return parse_routed(dumps(ked, kind), ked["t"])


# ---------------------------------------------------------------- signature groups


class LastEstGroup(NamedTuple):
    """`-H`: a transferable signer's indexed signatures under its latest establishment."""

    prefix: str
    sigs: tuple[IndexedSig, ...]


class EstGroup(NamedTuple):
    """`-F`: indexed signatures under the establishment event (`sn`, `said`) of `prefix`."""

    prefix: str
    sn: int
    said: str
    sigs: tuple[IndexedSig, ...]


@dataclass(frozen=True, slots=True)
class Endorsements:
    """The signatures attached to a routed message."""

    couples: tuple[tuple[str, bytes], ...] = ()  # -C: (non-transferable prefix, signature)
    last_groups: tuple[LastEstGroup, ...] = ()  # -H
    groups: tuple[EstGroup, ...] = ()  # -F

    def qb64(self) -> str:
        """keripy's form: one `-V` group around the signature groups."""
        inner: list[str] = []
        if self.couples:
            inner.append(cesr.counter(Counters.RECEIPT_COUPLES, len(self.couples)))
            inner.extend(p + cesr.encode(Codes.ED25519_SIG, s) for p, s in self.couples)
        if self.groups:
            inner.append(cesr.counter(Counters.TRANS_SIG_GROUPS, len(self.groups)))
            inner.extend(g.prefix + cesr.seqner(g.sn) + g.said + _sigs(g.sigs) for g in self.groups)
        if self.last_groups:
            inner.append(cesr.counter(LAST_EST_GROUPS, len(self.last_groups)))
            inner.extend(g.prefix + _sigs(g.sigs) for g in self.last_groups)
        text = "".join(inner)
        if len(text) % 4:  # cannot happen: every item is whole quadlets
            raise LocalProtocolError("signature groups are not whole quadlets")
        quads = len(text) // 4
        big = quads >= 64**2
        code = Counters.BIG_ATTACHMENT_GROUP if big else Counters.ATTACHMENT_GROUP
        return cesr.counter(code, quads) + text


def _sigs(sigs: tuple[IndexedSig, ...]) -> str:
    return cesr.counter(Counters.CONTROLLER_SIGS, len(sigs)) + "".join(s.qb64() for s in sigs)


def endorse_couple(message: Routed | bytes, signer: Signer) -> Endorsements:
    """A non-transferable signer's couple over the message (what a witness attaches)."""
    raw = message.raw if isinstance(message, Routed) else message
    if signer.transferable:
        raise LocalProtocolError("a couple is a non-transferable signer's signature")
    return Endorsements(couples=((signer.verfer, signer.sign_raw(raw)),))


class _Cursor:
    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def take(self, size: int, what: str) -> str:
        end = self.pos + size
        if end > len(self.text):
            raise ParseError(f"attachments end inside {what}", self.pos)
        out = self.text[self.pos : end]
        self.pos = end
        return out

    def primitive(self, size: int, codes: tuple[str, ...], what: str) -> tuple[str, bytes]:
        at = self.pos
        text = self.take(size, what)
        try:
            return text, cesr.decode(text, expect=codes)[1]
        except ParseError as err:
            raise ParseError(f"{what}: {err.reason}", at) from None

    def counter(self) -> tuple[str, int]:
        at = self.pos
        if self.text[at : at + 1] != "-":
            raise ParseError("expected an attachment counter", at)
        if self.text[at + 1 : at + 2] == "0":
            code, digits = self.take(3, "a counter"), 5
        else:
            code, digits = self.take(2, "a counter"), 2
        try:
            return code, b64_to_int(self.take(digits, "a counter"))
        except ParseError as err:
            raise ParseError(err.reason, at) from None

    def sigs(self) -> tuple[IndexedSig, ...]:
        at = self.pos
        code, count = self.counter()
        if code != Counters.CONTROLLER_SIGS:
            raise ParseError(f"expected a -A signature group, got {code!r}", at)
        out = []
        for _ in range(count):
            try:
                sig, used = parse_indexed_sig(self.text, self.pos)
            except ParseError as err:
                raise ParseError(err.reason, self.pos) from None
            self.pos += used
            out.append(sig)
        return tuple(out)


_KEYS: Final = (Codes.ED25519N, Codes.ED25519, Codes.BLAKE3_256)


def parse_endorsements(text: str | bytes) -> Endorsements:
    """Read the signature groups of a routed message (the whole attachment text)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise ParseError("attachments are not ASCII text") from None
    cursor = _Cursor(text)
    found: dict[str, list[Any]] = {}
    _read(cursor, len(text), found, 0)
    return Endorsements(
        tuple(found.get(Counters.RECEIPT_COUPLES, ())),
        tuple(found.get(LAST_EST_GROUPS, ())),
        tuple(found.get(Counters.TRANS_SIG_GROUPS, ())),
    )


def _read(cursor: _Cursor, end: int, found: dict[str, list[Any]], depth: int) -> None:
    while cursor.pos < end:
        at = cursor.pos
        code, count = cursor.counter()
        if code in (Counters.ATTACHMENT_GROUP, Counters.BIG_ATTACHMENT_GROUP):
            inner = cursor.pos + 4 * count
            if inner > end:
                raise ParseError("attachment group is longer than the attachments", at)
            if depth >= MAX_NESTING:
                raise ParseError("attachment groups nested too deeply", at)
            _read(cursor, inner, found, depth + 1)
            continue
        items = found.setdefault(code, [])
        for _ in range(count):
            if code == Counters.RECEIPT_COUPLES:
                prefix, _ = cursor.primitive(44, (Codes.ED25519N,), "a couple's prefix")
                items.append((prefix, cursor.primitive(88, (Codes.ED25519_SIG,), "a signature")[1]))
            elif code == LAST_EST_GROUPS:
                prefix, _ = cursor.primitive(44, _KEYS, "a signer's prefix")
                items.append(LastEstGroup(prefix, cursor.sigs()))
            elif code == Counters.TRANS_SIG_GROUPS:
                prefix, _ = cursor.primitive(44, _KEYS, "a signer's prefix")
                sn = int.from_bytes(cursor.primitive(24, (Codes.SEQNER,), "a number")[1], "big")
                said, _ = cursor.primitive(44, (Codes.BLAKE3_256,), "a SAID")
                items.append(EstGroup(prefix, sn, said, cursor.sigs()))
            else:
                raise ParseError(f"unsupported attachment counter {code!r} on a routed message", at)
        if cursor.pos > end:
            raise ParseError("attachment group overruns its enclosing group", at)


# ---------------------------------------------------------------- verification


class Endorsed(NamedTuple):
    """Whether `signer` signed: `ok`, else `reason` says why not in one line."""

    ok: bool
    signer: str
    reason: str = ""


def check_endorsement(
    raw: bytes,
    endorsements: Endorsements,
    signer: str,
    authority: Authority | None,
    verify: Verifier,
) -> Endorsed:
    """Did `signer` sign `raw`? A `B` signer by couple, with its own key; a transferable one
    by a `-H` (or `-F` at `authority`'s event) group meeting `authority`'s threshold.
    """
    if signer[:1] == Codes.ED25519N:
        try:
            key = cesr.decode_key(signer)
        except ParseError:
            return Endorsed(False, signer, f"{signer!r} is not a non-transferable prefix")
        for prefix, sig in endorsements.couples:
            if prefix == signer and verify(key, sig, raw):
                return Endorsed(True, signer)
        if any(p == signer for p, _ in endorsements.couples):
            return Endorsed(False, signer, f"the signature of {signer} does not verify")
        return Endorsed(False, signer, f"not signed by {signer}")
    if authority is None:
        return Endorsed(False, signer, f"the key state of {signer} is unknown")
    candidates = [g.sigs for g in endorsements.last_groups if g.prefix == signer]
    candidates += [
        g.sigs
        for g in endorsements.groups
        if g.prefix == signer and g.sn == authority.sn and g.said == authority.said
    ]
    if not candidates:
        return Endorsed(False, signer, f"not signed by {signer}")
    keys = authority.raw_keys
    for sigs in candidates:
        good = {s.index for s in sigs if s.index < len(keys) and verify(keys[s.index], s.raw, raw)}
        if good and authority.kt.satisfied(good):
            return Endorsed(True, signer)
    return Endorsed(
        False, signer, f"the signatures of {signer} do not meet its current keys' threshold"
    )


__all__ = [
    "Endorsed",
    "Endorsements",
    "EstGroup",
    "LastEstGroup",
    "Routed",
    "build_routed",
    "check_endorsement",
    "endorse_couple",
    "parse_endorsements",
    "parse_routed",
]

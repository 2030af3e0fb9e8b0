"""KERI v1 key events: exact serialization, SAIDs, builders and the checks a parser makes.

An event body is an ordered map whose field order is part of its bytes. Its `v` field is a
version string that carries the serialization kind and the body's size; its `d` field (and
`i` for a self-addressing inception) is the SAID: the Blake3-256 digest of the body serialized
with `#` placeholders in those fields. Building reproduces keripy's bytes exactly; parsing
accepts only bytes that re-serialize to themselves, so every event has one byte form.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Sequence
from enum import StrEnum
from json.scanner import make_scanner
from typing import Any, Final, cast

import cbor2

from .canonical import decode_canonical_cbor, surely_canonical_cbor, surely_canonical_json
from .cesr import Codes
from .crypto import digest
from .errors import EventError, LocalProtocolError, ParseError
from .thresholds import (
    ThresholdValue,
    ample,
    default_threshold,
    parse_hex,
    threshold_value,
)


class Kind(StrEnum):
    CBOR = "CBOR"
    JSON = "JSON"


class Ilk(StrEnum):
    ICP = "icp"
    ROT = "rot"
    IXN = "ixn"
    DIP = "dip"
    DRT = "drt"
    RCT = "rct"


FIELDS: Final[dict[str, tuple[str, ...]]] = {
    Ilk.ICP: ("v", "t", "d", "i", "s", "kt", "k", "nt", "n", "bt", "b", "c", "a"),
    Ilk.DIP: ("v", "t", "d", "i", "s", "kt", "k", "nt", "n", "bt", "b", "c", "a", "di"),
    Ilk.ROT: ("v", "t", "d", "i", "s", "p", "kt", "k", "nt", "n", "bt", "br", "ba", "a"),
    Ilk.DRT: ("v", "t", "d", "i", "s", "p", "kt", "k", "nt", "n", "bt", "br", "ba", "a"),
    Ilk.IXN: ("v", "t", "d", "i", "s", "p", "a"),
    Ilk.RCT: ("v", "t", "d", "i", "s"),
}
ESTABLISHMENT: Final = frozenset({Ilk.ICP, Ilk.ROT, Ilk.DIP, Ilk.DRT})
INCEPTION: Final = frozenset({Ilk.ICP, Ilk.DIP})
ROTATION: Final = frozenset({Ilk.ROT, Ilk.DRT})
TRAITS: Final = frozenset({"EO", "DND", "NB"})

VERSION_SIZE: Final = 17
_cbor_dumps = cbor2.dumps
_cbor_loads = cbor2.loads
DUMMY: Final = "#" * 44
VERSION_RE: Final = re.compile(rb"KERI([0-9a-f])([0-9a-f])(JSON|CBOR|MGPK|CESR)([0-9a-f]{6})_")


def version_string(kind: Kind, size: int) -> str:
    return f"KERI10{kind.value}{size:06x}_"


# keripy's JSON form; one encoder made once (json.dumps with options builds one per call)
_JSON_ENCODE: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
# The decoder's C scanner, called directly: `JSONDecoder.decode` adds two whitespace regex
# passes around it, and keripy's bodies have no whitespace to skip.
_JSON_SCAN: Final = make_scanner(cast(Any, json.JSONDecoder()))  # stubs want a scanner-like


def _json_loads(raw: bytes) -> Any:
    text = raw.decode("utf-8")  # keripy's bodies are UTF-8, nothing else
    try:
        value, end = _JSON_SCAN(text, 0)
    except StopIteration as stop:
        raise ValueError(f"no JSON value at character {stop.value}") from None
    if end != len(text):
        raise ValueError(f"extra data at character {end}")
    return value


def dumps(ked: dict[str, Any], kind: Kind) -> bytes:
    """Serialize a body dict exactly as keripy does."""
    if kind is Kind.CBOR:
        out: bytes = _cbor_dumps(ked)
        return out
    return _JSON_ENCODE(ked).encode("utf-8")


def loads(raw: bytes, kind: Kind) -> Any:
    """Decode a body; any failure becomes a `ParseError`."""
    try:
        if kind is Kind.CBOR:
            return _cbor_loads(raw)
        return _json_loads(raw)
    except Exception as exc:  # json and cbor2 raise a zoo of types on hostile input
        detail = f"{type(exc).__name__}: {exc}"[:160]
        raise ParseError(f"{kind.value} body does not decode: {detail}") from None


def saidify(ked: dict[str, Any], kind: Kind, labels: Sequence[str]) -> bytes:
    """Fill in `v` and the SAID fields `labels` of `ked` in place; return the final bytes."""
    for label in labels:
        ked[label] = DUMMY
    ked["v"] = "#" * VERSION_SIZE
    size = len(dumps(ked, kind))
    ked["v"] = version_string(kind, size)
    said = digest(dumps(ked, kind))
    for label in labels:
        ked[label] = said
    raw = dumps(ked, kind)
    if len(raw) != size:  # cannot happen: placeholders have the lengths of what replaces them
        raise LocalProtocolError("serialized size changed while adding the SAID")
    return raw


class Event:
    """A parsed, self-consistent key event (or receipt) body. Treat as immutable.

    An interaction keeps its bytes and the fields the validator reads, not its decoded body:
    a node holds every accepted event, most events are interactions, and the body's map is the
    object the garbage collector would otherwise keep walking (see benchmarks/validate.py).
    `ked` decodes an interaction's body again on the rare occasions it is asked for.
    """

    __slots__ = ("_ked", "anchors", "ilk", "kind", "prefix", "prior", "raw", "said", "sn")

    def __init__(self, raw: bytes, kind: Kind, ked: dict[str, Any], ilk: Ilk, sn: int) -> None:
        self.raw = raw
        self.kind = kind
        self.ilk = ilk
        self.sn = sn
        self.said: str = ked["d"]
        self.prefix: str = ked["i"]
        self.prior: str | None = ked.get("p")  # checked to be a string where present
        anchors: list[Any] | None = ked.get("a")
        self.anchors: Sequence[Any] = anchors if anchors else ()  # the seals it anchors
        self._ked: dict[str, Any] | None = None if ilk is _IXN else ked

    @property
    def ked(self) -> dict[str, Any]:
        """The decoded body; for an interaction, a fresh decode each time it is asked for."""
        if self._ked is not None:
            return self._ked
        ked: dict[str, Any] = loads(self.raw, self.kind)
        return ked

    def __repr__(self) -> str:
        return f"Event({self.ilk} {self.prefix[:12]}.. sn={self.sn} d={self.said[:12]}..)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    @property
    def keys(self) -> list[str]:
        keys: list[str] = self.ked.get("k", [])
        return keys

    @property
    def next_digests(self) -> list[str]:
        digs: list[str] = self.ked.get("n", [])
        return digs

    @property
    def delegator(self) -> str | None:
        di = self.ked.get("di")
        return di if isinstance(di, str) else None

    @property
    def establishment(self) -> bool:
        return self.ilk in ESTABLISHMENT


# ------------------------------------------------------------------------ parsing


def sniff(head: bytes) -> tuple[Kind, int]:
    """Kind and size of the body starting at `head` (at least its first ~24 bytes)."""
    match = VERSION_RE.search(head[:24])
    if match is None:
        raise ParseError("no KERI version string at the start of the body")
    if match.group(1) != b"1":
        raise ParseError(f"unsupported KERI major version {match.group(1).decode()}")
    kind_text = match.group(3).decode()
    if kind_text not in ("CBOR", "JSON"):
        raise ParseError(f"unsupported serialization kind {kind_text}")
    kind = Kind(kind_text)
    first = head[0]
    if (kind is Kind.JSON) != (first == 0x7B):
        raise ParseError(f"body does not start like {kind_text}")
    return kind, int(match.group(4), 16)


_ILKS: Final = {ilk.value: ilk for ilk in Ilk}
_VERSION_HEADS: Final = {Kind.CBOR: "KERI10CBOR", Kind.JSON: "KERI10JSON"}
_DUMMY_BYTES: Final = DUMMY.encode("ascii")
_HEX_SN: Final = re.compile(r"0|[1-9a-f][0-9a-f]{0,31}").fullmatch
# Enum members cost ~60 ns per lookup on CPython 3.11 (a descriptor); the per-event path
# reads these module constants instead.
_RCT: Final = Ilk.RCT
_IXN: Final = Ilk.IXN
_CBOR: Final = Kind.CBOR


_VERSION_TEXTS: Final[dict[int, str]] = {}  # version strings by size (JSON: -size - 1)
_VERSION_TEXTS_KEPT: Final = 4096  # a few kilobytes; KEL bodies come in few sizes


def _version_text(kind: Kind, size: int) -> str:
    """`version_string(kind, size)`, remembered: formatting it per event costs as much as
    decoding a small body's fields."""
    key = size if kind is _CBOR else -size - 1
    text = _VERSION_TEXTS.get(key)
    if text is None:
        text = f"{_VERSION_HEADS[kind]}{size:06x}_"
        if len(_VERSION_TEXTS) < _VERSION_TEXTS_KEPT:
            _VERSION_TEXTS[key] = text
    return text


def _native() -> bool:
    """True when this module runs compiled (setup.py), where functions are not Python's."""
    return not isinstance(_native, types.FunctionType)


# Walking a body beside its decoded value beats encoding it again only when compiled: the
# pure-Python walk costs more than the C encoders, so there the reference check runs.
_NATIVE: Final = _native()


def _surely_canonical(raw: bytes, ked: dict[str, Any], kind: Kind) -> bool:
    if kind is _CBOR:
        return surely_canonical_cbor(raw, ked)
    return surely_canonical_json(raw, ked)


def parse_event(raw: bytes, kind: Kind | None = None) -> Event:
    """Decode and check one event body: fields, version string, canonical bytes, SAID.

    This runs once per event on every node, so it is written for speed: one decode, one
    re-serialization (the canonical-form check) and one digest, with the calls inlined.
    """
    if kind is None:
        kind, _ = sniff(raw)
    # Compiled, a CBOR body in canonical form is decoded and shown canonical in one walk;
    # anything that walk cannot vouch for is decoded by cbor2 and checked below.
    ked: Any = decode_canonical_cbor(raw) if _NATIVE and kind is _CBOR else None
    shown = ked is not None
    if ked is None:
        ked = loads(raw, kind)
    if type(ked) is not dict:
        raise EventError("event body is not a map")
    ilk_text = ked.get("t")
    ilk = _ILKS.get(ilk_text) if type(ilk_text) is str else None
    if ilk is None:
        raise EventError(f"unsupported message type {ilk_text!r}")
    fields = FIELDS[ilk]
    if tuple(ked) != fields:
        raise EventError(f"{ilk_text} fields must be {' '.join(fields)} in that order")
    version = ked["v"]
    if version != _version_text(kind, len(raw)):
        raise EventError(f"version string {version!r} does not match a {len(raw)}-byte body")
    sn_text = ked["s"]
    if type(sn_text) is not str or not _HEX_SN(sn_text):
        raise EventError(f"sequence number s must be lowercase hex, got {sn_text!r}")
    sn = int(sn_text, 16)
    _check_fields(ked, ilk, sn)
    if not (shown or (_NATIVE and _surely_canonical(raw, ked, kind))):
        try:
            canonical = _cbor_dumps(ked) if kind is _CBOR else dumps(ked, kind)
        except Exception:  # what decoded may not encode again (tags, lone surrogates, cycles)
            canonical = b""
        if canonical != raw:
            raise EventError("body is not in canonical form (re-serialization differs)")
    if ilk is not _RCT:
        said = ked["d"]
        if type(said) is not str or len(said) != 44 or said[0] != "E" or not said.isascii():
            raise EventError(f"SAID d must be a Blake3-256 digest, got {said!r}")
        # In canonical bytes the SAID text stands verbatim in its fields, so swapping it for
        # the placeholder gives the bytes it was computed over without serializing again.
        if digest(raw.replace(said.encode("ascii"), _DUMMY_BYTES)) != said:
            raise EventError("SAID d does not match the event's content")
        if ilk in INCEPTION and ked["i"][0] == "E" and ked["i"] != said:
            raise EventError("self-addressing prefix i must equal the SAID d at inception")
    _share_recent(ked, ilk)
    return Event(raw, kind, ked, ilk, sn)


# The prefix and SAID of the event parsed last. A KEL read in order repeats its prefix in
# every event, and each event's prior `p` is its predecessor's SAID: pointing those fields at
# the strings already held (equal values, so nothing else changes) keeps two 44-character
# strings fewer per event a node or `dkms kel verify` holds, a sixth of a parsed message.
_RECENT: Final[list[str]] = ["", ""]


def _share_recent(ked: dict[str, Any], ilk: Ilk) -> None:
    recent = _RECENT
    prefix = ked["i"]
    if prefix == recent[0]:
        ked["i"] = recent[0]
    else:
        recent[0] = prefix
    if ilk is _RCT:
        return
    prior = ked.get("p")
    if prior is not None and prior == recent[1]:
        ked["p"] = recent[1]
    recent[1] = ked["d"]


def _strings(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise EventError(f"{what} must be a list of strings")
    return value


def _check_fields(ked: dict[str, Any], ilk: Ilk, sn: int) -> None:
    prefix = ked["i"]
    if type(prefix) is not str or len(prefix) != 44:
        raise EventError(f"prefix i must be a 44-character qb64 identifier, got {prefix!r}")
    if ilk is _RCT:
        if not isinstance(ked["d"], str):
            raise EventError("receipt d must be the receipted event's SAID")
        return
    if ilk in INCEPTION and sn != 0:
        raise EventError(f"{ilk} must have sequence number 0")
    if ilk not in INCEPTION:
        if sn == 0:
            raise EventError(f"{ilk} cannot have sequence number 0")
        prior = ked["p"]
        if type(prior) is not str or len(prior) != 44:
            raise EventError("prior event digest p must be a 44-character SAID")
    if type(ked["a"]) is not list:
        raise EventError("anchors a must be a list")
    if ilk is _IXN:
        return
    _strings(ked["k"], "keys k")
    _strings(ked["n"], "next key digests n")
    if not ked["k"]:
        raise EventError(f"{ilk} needs at least one signing key")
    parse_hex(ked["bt"], "witness threshold bt")
    if ilk in INCEPTION:
        _check_inception_prefix(ked, ilk)
        wits = _strings(ked["b"], "witnesses b")
        if len(set(wits)) != len(wits):
            raise EventError("witness list b has duplicates")
        traits = _strings(ked["c"], "configuration traits c")
        unknown = set(traits) - TRAITS
        if unknown:
            raise EventError(f"unknown configuration traits {sorted(unknown)}")
        if ilk is Ilk.DIP and not (isinstance(ked["di"], str) and len(ked["di"]) == 44):
            raise EventError("delegator di must be a 44-character prefix")
    else:
        _strings(ked["br"], "witness cuts br")
        _strings(ked["ba"], "witness additions ba")


def _check_inception_prefix(ked: dict[str, Any], ilk: Ilk) -> None:
    prefix: str = ked["i"]
    code = prefix[:1]
    if code == Codes.BLAKE3_256:
        return
    if code not in (Codes.ED25519N, Codes.ED25519) or ilk is Ilk.DIP:
        raise EventError(f"unsupported prefix code {code!r} for {ilk}")
    if ked["k"] != [prefix]:
        raise EventError("a basic prefix must be the event's one and only key")
    if code == Codes.ED25519N and ked["n"]:
        raise EventError("a non-transferable prefix (B) cannot commit to next keys")


# ------------------------------------------------------------------------ builders


def incept(
    keys: Sequence[str],
    *,
    next_digests: Sequence[str] = (),
    kt: int | ThresholdValue | None = None,
    nt: int | ThresholdValue | None = None,
    witnesses: Sequence[str] = (),
    toad: int | None = None,
    traits: Sequence[str] = (),
    anchors: Sequence[Any] = (),
    delegator: str | None = None,
    basic: bool = False,
    kind: Kind = Kind.CBOR,
) -> Event:
    """Build an inception (`icp`, or `dip` with `delegator`).

    The prefix is self-addressing (the SAID) unless `basic`, where it is the single key
    itself: a `B` key makes a non-transferable identifier, which may commit to no next keys.
    """
    if not keys:
        raise LocalProtocolError("an inception needs at least one key")
    if len(set(witnesses)) != len(witnesses):
        raise LocalProtocolError("witnesses must be distinct")
    ked: dict[str, Any] = {
        "v": "",
        "t": Ilk.DIP.value if delegator else Ilk.ICP.value,
        "d": "",
        "i": "",
        "s": "0",
        "kt": threshold_value(kt if kt is not None else default_threshold(len(keys), 1)),
        "k": list(keys),
        "nt": threshold_value(nt if nt is not None else default_threshold(len(next_digests), 0)),
        "n": list(next_digests),
        "bt": threshold_value(toad if toad is not None else ample(len(witnesses))),
        "b": list(witnesses),
        "c": list(traits),
        "a": list(anchors),
    }
    if delegator:
        ked["di"] = delegator
    if basic:
        if len(keys) != 1 or delegator:
            raise LocalProtocolError("a basic prefix is one key and cannot be delegated")
        if keys[0][:1] == Codes.ED25519N and next_digests:
            raise LocalProtocolError("a non-transferable identifier commits to no next keys")
        ked["i"] = keys[0]
        raw = saidify(ked, kind, ("d",))
    else:
        raw = saidify(ked, kind, ("d", "i"))
    return parse_event(raw, kind)


def rotate(
    prefix: str,
    keys: Sequence[str],
    *,
    prior: str,
    sn: int,
    next_digests: Sequence[str] = (),
    kt: int | ThresholdValue | None = None,
    nt: int | ThresholdValue | None = None,
    toad: int | None = None,
    witnesses: Sequence[str] = (),
    cuts: Sequence[str] = (),
    adds: Sequence[str] = (),
    anchors: Sequence[Any] = (),
    delegated: bool = False,
    kind: Kind = Kind.CBOR,
) -> Event:
    """Build a rotation (`rot`, or `drt` when `delegated`).

    `witnesses` is the list in force before this rotation; it is used only to work out the
    default witness threshold of the list after `cuts` and `adds`.
    """
    if sn < 1:
        raise LocalProtocolError("a rotation has a sequence number of at least 1")
    after = [w for w in witnesses if w not in cuts] + list(adds)
    ked: dict[str, Any] = {
        "v": "",
        "t": Ilk.DRT.value if delegated else Ilk.ROT.value,
        "d": "",
        "i": prefix,
        "s": f"{sn:x}",
        "p": prior,
        "kt": threshold_value(kt if kt is not None else default_threshold(len(keys), 1)),
        "k": list(keys),
        "nt": threshold_value(nt if nt is not None else default_threshold(len(next_digests), 0)),
        "n": list(next_digests),
        "bt": threshold_value(toad if toad is not None else ample(len(after))),
        "br": list(cuts),
        "ba": list(adds),
        "a": list(anchors),
    }
    return parse_event(saidify(ked, kind, ("d",)), kind)


def interact(
    prefix: str, *, prior: str, sn: int, anchors: Sequence[Any] = (), kind: Kind = Kind.CBOR
) -> Event:
    """Build an interaction event anchoring `anchors` (seals or other data)."""
    if sn < 1:
        raise LocalProtocolError("an interaction has a sequence number of at least 1")
    ked: dict[str, Any] = {
        "v": "",
        "t": Ilk.IXN.value,
        "d": "",
        "i": prefix,
        "s": f"{sn:x}",
        "p": prior,
        "a": list(anchors),
    }
    return parse_event(saidify(ked, kind, ("d",)), kind)


def receipt(prefix: str, sn: int, said: str, kind: Kind = Kind.CBOR) -> Event:
    """Build a receipt body (`rct`) for the event `said` at (`prefix`, `sn`)."""
    ked: dict[str, Any] = {"v": "", "t": Ilk.RCT.value, "d": said, "i": prefix, "s": f"{sn:x}"}
    ked["v"] = "#" * VERSION_SIZE
    ked["v"] = version_string(kind, len(dumps(ked, kind)))
    return parse_event(dumps(ked, kind), kind)


def seal(event: Event) -> dict[str, str]:
    """The event seal `{i, s, d}` a delegator anchors to approve a delegated event."""
    return {"i": event.prefix, "s": f"{event.sn:x}", "d": event.said}

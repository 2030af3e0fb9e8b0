"""CESR attachment groups: what follows an event body, parsed from and written to text.

A group is a counter (`-A`, `-B`, ... with a two-digit base64 count) and that many items of a
fixed shape; `-V`/`-0V` wrap other groups and count their size in 4-character quadlets. The
caller hands over the whole run of base64 text that follows a body (a body never starts with a
base64 character, so that run is exactly the attachments), which keeps this parser simple:
it must consume the text exactly, or the bytes are malformed.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from . import cesr
from .cesr import (
    Codes,
    Counters,
    IndexedSig,
    b64_to_int,
    new_tuple,
    parse_indexed_sig,
    plain_sig_from_bytes,
)
from .errors import ParseError

Couple = tuple[str, bytes]  # (non-transferable witness prefix, raw signature)
Quadruple = tuple[str, int, str, IndexedSig]  # (prefix, sn, SAID, signature): -D receipts
TransGroup = tuple[str, int, str, tuple[IndexedSig, ...]]  # -F: signer's est event + sigs


class Attachments(NamedTuple):
    """What was attached to an event body."""

    sigs: tuple[IndexedSig, ...] = ()  # -A controller signatures
    wigs: tuple[IndexedSig, ...] = ()  # -B witness signatures (index into the witness list)
    couples: tuple[Couple, ...] = ()  # -C non-transferable receipt couples
    quadruples: tuple[Quadruple, ...] = ()  # -D transferable receipt quadruples
    sources: tuple[tuple[int, str], ...] = ()  # -G delegator (sn, SAID of anchoring event)
    first_seen: tuple[tuple[int, str], ...] = ()  # -E (first-seen ordinal, datetime)
    trans_groups: tuple[TransGroup, ...] = ()  # -F transferable indexed signature groups

    def qb64(self) -> str:
        """Serialize back to CESR text, one group per kind, in keripy's order."""
        out: list[str] = []
        if self.sigs:
            out.append(cesr.counter(Counters.CONTROLLER_SIGS, len(self.sigs)))
            out.extend(s.qb64() for s in self.sigs)
        if self.wigs:
            out.append(cesr.counter(Counters.WITNESS_SIGS, len(self.wigs)))
            out.extend(s.qb64() for s in self.wigs)
        if self.couples:
            out.append(cesr.counter(Counters.RECEIPT_COUPLES, len(self.couples)))
            out.extend(p + cesr.encode(Codes.ED25519_SIG, sig) for p, sig in self.couples)
        if self.quadruples:
            out.append(cesr.counter(Counters.TRANS_RECEIPT_QUADRUPLES, len(self.quadruples)))
            out.extend(p + cesr.seqner(sn) + d + s.qb64() for p, sn, d, s in self.quadruples)
        if self.trans_groups:
            out.append(cesr.counter(Counters.TRANS_SIG_GROUPS, len(self.trans_groups)))
            for prefix, sn, said, sigs in self.trans_groups:
                out.append(prefix + cesr.seqner(sn) + said)
                out.append(cesr.counter(Counters.CONTROLLER_SIGS, len(sigs)))
                out.extend(s.qb64() for s in sigs)
        if self.sources:
            out.append(cesr.counter(Counters.SEAL_SOURCE_COUPLES, len(self.sources)))
            out.extend(cesr.seqner(sn) + said for sn, said in self.sources)
        if self.first_seen:
            out.append(cesr.counter(Counters.FIRST_SEEN_REPLAY, len(self.first_seen)))
            out.extend(cesr.seqner(fn) + dts for fn, dts in self.first_seen)
        return "".join(out)


EMPTY: Final = Attachments()


class _Reader:
    """Cursor over the attachment text; every read checks the text is long enough."""

    __slots__ = ("base", "pos", "text")

    def __init__(self, text: str, base: int) -> None:
        self.text = text
        self.pos = 0
        self.base = base

    def take(self, size: int, what: str) -> str:
        start = self.pos
        end = start + size
        if end > len(self.text):
            raise ParseError(f"attachments end inside {what}", self.base + start)
        self.pos = end
        return self.text[start:end]

    def siger(self) -> IndexedSig:
        try:
            sig, used = parse_indexed_sig(self.text, self.pos)
        except ParseError as err:
            raise ParseError(err.reason, self.base + self.pos) from None
        self.pos += used
        return sig

    def number(self) -> int:
        return int.from_bytes(self._decode(24, Codes.SEQNER), "big")

    def prefix(self, codes: tuple[str, ...]) -> str:
        start = self.pos
        self._decode(44, codes)
        return self.text[start : self.pos]

    def _decode(self, size: int, codes: str | tuple[str, ...]) -> bytes:
        at = self.pos
        text = self.take(size, "a primitive")
        try:
            return cesr.decode(text, expect=codes)[1]
        except ParseError as err:
            raise ParseError(err.reason, self.base + at) from None


_KEYS: Final = (Codes.ED25519N, Codes.ED25519, Codes.BLAKE3_256)


def parse_attachments(data: bytes | str, base: int = 0) -> Attachments:
    """Parse the whole attachment text that follows a body; `base` is its stream offset."""
    if not data:
        return EMPTY
    if isinstance(data, bytes):
        sigs = _plain_sigs(data, base)  # the common case: only controller signatures
        if sigs is not None:
            return new_tuple(Attachments, (sigs, (), (), (), (), (), ()))  # see cesr.new_tuple
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise ParseError("attachments are not ASCII text", base) from None
    else:
        text = data
    groups: dict[str, list[object]] = {}
    reader = _Reader(text, base)
    _groups(reader, len(text), groups, 0)
    get = groups.get
    return Attachments(
        tuple(get(Counters.CONTROLLER_SIGS, ())),  # type: ignore[arg-type]
        tuple(get(Counters.WITNESS_SIGS, ())),  # type: ignore[arg-type]
        tuple(get(Counters.RECEIPT_COUPLES, ())),  # type: ignore[arg-type]
        tuple(get(Counters.TRANS_RECEIPT_QUADRUPLES, ())),  # type: ignore[arg-type]
        tuple(get(Counters.SEAL_SOURCE_COUPLES, ())),  # type: ignore[arg-type]
        tuple(get(Counters.FIRST_SEEN_REPLAY, ())),  # type: ignore[arg-type]
        tuple(get(Counters.TRANS_SIG_GROUPS, ())),  # type: ignore[arg-type]
    )


def _plain_sigs(data: bytes, base: int) -> tuple[IndexedSig, ...] | None:
    """Fast path for attachments that are one `-A` group of `A`/`B` signatures, else None."""
    if len(data) < 92 or data[:3] != b"-AA" or len(data) != 4 + 88 * (data[3] - 65):
        return None
    out = []
    for at in range(4, len(data), 88):
        if data[at] != 0x41 and data[at] != 0x42:  # "A" or "B"
            return None
        try:
            out.append(plain_sig_from_bytes(data, at))
        except ParseError as err:
            raise ParseError(err.reason, base + at) from None
    return tuple(out)


MAX_NESTING: Final = 4  # -V groups inside -V groups; keripy never nests them at all


def _groups(reader: _Reader, end: int, groups: dict[str, list[object]], depth: int) -> None:
    text = reader.text
    while reader.pos < end:
        at = reader.pos
        if text[at] != "-":
            raise ParseError("expected an attachment counter", reader.base + at)
        if text[at + 1 : at + 2] == "0":
            code = reader.take(3, "a counter")
            count = b64_to_int(reader.take(5, "a counter"))
        else:
            code = reader.take(2, "a counter")
            count = b64_to_int(reader.take(2, "a counter"))
        if code in (Counters.ATTACHMENT_GROUP, Counters.BIG_ATTACHMENT_GROUP):
            inner_end = reader.pos + 4 * count
            if inner_end > end:
                raise ParseError(
                    "attachment group is longer than the attachments", reader.base + at
                )
            if depth >= MAX_NESTING:
                raise ParseError("attachment groups nested too deeply", reader.base + at)
            _groups(reader, inner_end, groups, depth + 1)
            if reader.pos != inner_end:
                raise ParseError(
                    "attachment group size does not match its content", reader.base + at
                )
            continue
        read = _ITEMS.get(code)
        if read is None:
            raise ParseError(f"unsupported attachment counter {code!r}", reader.base + at)
        items = groups.setdefault(code, [])
        for _ in range(count):
            items.append(read(reader))
        if reader.pos > end:
            raise ParseError("attachment group overruns its enclosing group", reader.base + at)


def _siger(reader: _Reader) -> object:
    return reader.siger()


def _couple(reader: _Reader) -> object:
    prefix = reader.prefix((Codes.ED25519N,))
    return prefix, reader._decode(88, Codes.ED25519_SIG)


def _quadruple(reader: _Reader) -> object:
    prefix = reader.prefix(_KEYS)
    sn = reader.number()
    said = reader.prefix((Codes.BLAKE3_256,))
    return prefix, sn, said, reader.siger()


def _trans_group(reader: _Reader) -> object:
    prefix = reader.prefix(_KEYS)
    sn = reader.number()
    said = reader.prefix((Codes.BLAKE3_256,))
    at = reader.pos
    if reader.take(2, "a counter") != Counters.CONTROLLER_SIGS:
        raise ParseError("a -F group must hold a -A signature group", reader.base + at)
    count = b64_to_int(reader.take(2, "a counter"))
    return prefix, sn, said, tuple(reader.siger() for _ in range(count))


def _source(reader: _Reader) -> object:
    sn = reader.number()
    return sn, reader.prefix((Codes.BLAKE3_256,))


def _first_seen(reader: _Reader) -> object:
    fn = reader.number()
    at = reader.pos
    stamp = reader.take(36, "a datetime")
    if not stamp.startswith(Codes.DATETIME):
        raise ParseError(f"expected a datetime ({Codes.DATETIME})", reader.base + at)
    return fn, stamp


_ITEMS: Final = {
    Counters.CONTROLLER_SIGS: _siger,
    Counters.WITNESS_SIGS: _siger,
    Counters.RECEIPT_COUPLES: _couple,
    Counters.TRANS_RECEIPT_QUADRUPLES: _quadruple,
    Counters.TRANS_SIG_GROUPS: _trans_group,
    Counters.SEAL_SOURCE_COUPLES: _source,
    Counters.FIRST_SEEN_REPLAY: _first_seen,
}

"""Framing a CESR stream into messages: an event body followed by its attachment groups.

Theory of operation: a stream is messages back to back. A message starts with a body whose
version string (within its first 24 bytes) gives the kind and the exact size. After the body
come zero or more attachment groups, each a counter (`-A`, `-B`, ...) with a count, then that
many fixed-shape items. The message ends where the next body starts (`{` or a CBOR map byte) or
where the stream ends; a `-V` group carries the length of everything inside it.

`StreamReader.feed` takes arbitrary chunks and returns the messages it could finish; it waits
for more bytes rather than guess. Because a message's attachments may continue in the next
chunk, the last message of a feed is held until the next body begins or `close()` is called.
A message whose body breaks the event rules (bad SAID, ...) is returned as a `BadFrame` and
reading goes on, since its size is known. Bytes that cannot be framed raise `ParseError` with
the offset, and the reader refuses further input: there is no safe place to resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from . import cesr
from .cesr import Codes, Counters, IndexedSig, b64_to_int
from .errors import ParseError, RemoteProtocolError
from .events import Event, Kind, parse_event, sniff

DEFAULT_MAX_MESSAGE: Final = 1 << 20  # 1 MiB: libp2p gossip drops anything larger anyway
_HEAD: Final = 24  # bytes that always hold a version string


@dataclass(frozen=True, slots=True)
class Attachments:
    """What was attached to an event body."""

    sigs: tuple[IndexedSig, ...] = ()  # -A controller signatures
    wigs: tuple[IndexedSig, ...] = ()  # -B witness signatures (index into the witness list)
    couples: tuple[tuple[str, bytes], ...] = ()  # -C (witness prefix, raw signature)
    quadruples: tuple[tuple[str, int, str, IndexedSig], ...] = ()  # -D transferable receipts
    sources: tuple[tuple[int, str], ...] = ()  # -G delegator (sn, SAID of anchoring event)
    first_seen: tuple[tuple[int, str], ...] = ()  # -E (first-seen ordinal, datetime)

    def qb64(self) -> str:
        """Serialize back to CESR text, one group per kind, in a fixed order."""
        out: list[str] = []
        if self.sigs:
            out.append(cesr.counter(Counters.CONTROLLER_SIGS, len(self.sigs)))
            out.extend(s.qb64() for s in self.sigs)
        if self.wigs:
            out.append(cesr.counter(Counters.WITNESS_SIGS, len(self.wigs)))
            out.extend(s.qb64() for s in self.wigs)
        if self.couples:
            out.append(cesr.counter(Counters.RECEIPT_COUPLES, len(self.couples)))
            for prefix, sig in self.couples:
                out.append(prefix + cesr.encode(Codes.ED25519_SIG, sig))
        if self.quadruples:
            out.append(cesr.counter(Counters.TRANS_RECEIPT_QUADRUPLES, len(self.quadruples)))
            for prefix, sn, said, siger in self.quadruples:
                out.append(prefix + cesr.seqner(sn) + said + siger.qb64())
        if self.sources:
            out.append(cesr.counter(Counters.SEAL_SOURCE_COUPLES, len(self.sources)))
            for sn, said in self.sources:
                out.append(cesr.seqner(sn) + said)
        if self.first_seen:
            out.append(cesr.counter(Counters.FIRST_SEEN_REPLAY, len(self.first_seen)))
            for fn, dts in self.first_seen:
                out.append(cesr.seqner(fn) + dts)
        return "".join(out)


@dataclass(frozen=True, slots=True)
class Message:
    """One framed, checked event with its attachments and its place in the stream."""

    event: Event
    attachments: Attachments
    offset: int
    length: int

    def serialize(self) -> bytes:
        return self.event.raw + self.attachments.qb64().encode("ascii")


@dataclass(frozen=True, slots=True)
class BadFrame:
    """A framed message whose body was rejected; reading continued after it."""

    offset: int
    length: int
    error: RemoteProtocolError


Frame = Message | BadFrame


def messagize(event: Event, attachments: Attachments | None = None) -> bytes:
    """Body followed by its attachments: the bytes that go on the wire."""
    return event.raw + (attachments.qb64().encode("ascii") if attachments else b"")


def _starts_body(byte: int) -> bool:
    return byte == 0x7B or 0xA0 <= byte <= 0xBB


class _Incomplete(Exception):
    """More bytes are needed (internal to the reader)."""


class StreamReader:
    """Incremental framer: `feed` chunks, collect `Frame`s, `close` at end of input."""

    def __init__(self, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self._base = 0  # stream offset of _buf[0]
        self._max = max_message
        self._failed: ParseError | None = None

    def feed(self, chunk: bytes) -> list[Frame]:
        if self._failed is not None:
            raise self._failed
        self._buf += chunk
        return self._drain(final=False)

    def close(self) -> list[Frame]:
        """End of input: finish the last message or raise if it is truncated."""
        if self._failed is not None:
            raise self._failed
        return self._drain(final=True)

    def _drain(self, final: bool) -> list[Frame]:
        out: list[Frame] = []
        buf = bytes(self._buf)
        pos = 0
        try:
            while pos < len(buf):
                try:
                    frame, end = _frame_one(buf, pos, self._base, final, self._max)
                except _Incomplete:
                    if final:
                        raise ParseError("stream ends inside a message", self._base + pos)
                    if len(buf) - pos > self._max + _HEAD:
                        raise ParseError("message exceeds the size limit", self._base + pos)
                    break
                out.append(frame)
                pos = end
        except ParseError as err:
            self._failed = err
            raise
        del self._buf[:pos]
        self._base += pos
        return out


def parse_stream(data: bytes, max_message: int = DEFAULT_MAX_MESSAGE) -> list[Frame]:
    """Frame a complete stream in one go."""
    reader = StreamReader(max_message)
    return reader.feed(data) + reader.close()


def _frame_one(buf: bytes, pos: int, base: int, final: bool, limit: int) -> tuple[Frame, int]:
    first = buf[pos]
    if not _starts_body(first):
        what = "attachments without a message" if first == 0x2D else f"byte {first:#04x}"
        raise ParseError(f"expected the start of a message body, found {what}", base + pos)
    head = buf[pos : pos + _HEAD]
    if len(head) < _HEAD and not final:
        raise _Incomplete
    try:
        kind, size = sniff(head)
    except ParseError as err:
        raise err.at(base + pos) from None
    if size > limit:
        raise ParseError(f"message body of {size} bytes exceeds the limit of {limit}", base + pos)
    if size < _HEAD:
        raise ParseError(f"body size {size} is too small to hold a version string", base + pos)
    end = pos + size
    if end > len(buf):
        raise _Incomplete
    attachments, att_end = _attachments(buf, end, base)
    if att_end == len(buf) and not final:
        raise _Incomplete  # its attachments may go on in the next chunk
    try:
        event = parse_event(buf[pos:end], kind)
    except RemoteProtocolError as err:
        return BadFrame(base + pos, att_end - pos, err.at(base + pos)), att_end
    return Message(event, attachments, base + pos, att_end - pos), att_end


class _Groups:
    """Attachment items collected while a message's groups are read."""

    __slots__ = ("couples", "first_seen", "quadruples", "sigs", "sources", "wigs")

    def __init__(self) -> None:
        self.sigs: list[IndexedSig] = []
        self.wigs: list[IndexedSig] = []
        self.couples: list[tuple[str, bytes]] = []
        self.quadruples: list[tuple[str, int, str, IndexedSig]] = []
        self.sources: list[tuple[int, str]] = []
        self.first_seen: list[tuple[int, str]] = []

    def freeze(self) -> Attachments:
        return Attachments(
            tuple(self.sigs),
            tuple(self.wigs),
            tuple(self.couples),
            tuple(self.quadruples),
            tuple(self.sources),
            tuple(self.first_seen),
        )


_EMPTY: Final = Attachments()


def _attachments(buf: bytes, pos: int, base: int) -> tuple[Attachments, int]:
    """Parse attachment groups from `pos` until a body starts or the buffer ends."""
    if pos >= len(buf) or buf[pos] != 0x2D:  # "-"
        return _EMPTY, pos
    groups = _Groups()
    while pos < len(buf) and buf[pos] == 0x2D:
        pos = _group(buf, pos, base, groups)
    return groups.freeze(), pos


def _need(buf: bytes, pos: int, size: int) -> str:
    if pos + size > len(buf):
        raise _Incomplete
    try:
        return buf[pos : pos + size].decode("ascii")
    except UnicodeDecodeError:
        raise ParseError("non-ASCII byte inside attachments", None) from None


def _group(buf: bytes, pos: int, base: int, groups: _Groups) -> int:
    at = pos
    try:
        code = _need(buf, pos, 2)
        if code == "-0":
            code = _need(buf, pos, 3)
            if code != Counters.BIG_ATTACHMENT_GROUP:
                raise ParseError(f"unsupported attachment counter {code!r}")
            count = b64_to_int(_need(buf, pos + 3, 5))
            pos += 8
        else:
            count = b64_to_int(_need(buf, pos + 2, 2))
            pos += 4
        if code in (Counters.ATTACHMENT_GROUP, Counters.BIG_ATTACHMENT_GROUP):
            end = pos + count * 4
            if end > len(buf):
                raise _Incomplete
            inner = buf[:end]  # parse nested groups without reading past the group
            while pos < end:
                if inner[pos] != 0x2D:
                    raise ParseError("attachment group holds something other than groups")
                pos = _group(inner, pos, base, groups)
            return pos
        if code in (Counters.CONTROLLER_SIGS, Counters.WITNESS_SIGS):
            sigs = groups.sigs if code == Counters.CONTROLLER_SIGS else groups.wigs
            for _ in range(count):
                sig, pos = _read_siger(buf, pos)
                sigs.append(sig)
        elif code == Counters.RECEIPT_COUPLES:
            for _ in range(count):
                couple, pos = _read_couple(buf, pos)
                groups.couples.append(couple)
        elif code == Counters.TRANS_RECEIPT_QUADRUPLES:
            for _ in range(count):
                quad, pos = _read_quadruple(buf, pos)
                groups.quadruples.append(quad)
        elif code == Counters.SEAL_SOURCE_COUPLES:
            for _ in range(count):
                source, pos = _read_source(buf, pos)
                groups.sources.append(source)
        elif code == Counters.FIRST_SEEN_REPLAY:
            for _ in range(count):
                seen, pos = _read_first_seen(buf, pos)
                groups.first_seen.append(seen)
        else:
            raise ParseError(f"unsupported attachment counter {code!r}")
        return pos
    except _Incomplete:
        raise
    except ParseError as err:
        if err.offset is None:
            raise ParseError(err.reason, base + at) from None
        raise


def _read_siger(buf: bytes, pos: int) -> tuple[IndexedSig, int]:
    head = _need(buf, pos, 2)
    size = 92 if head[0] == "2" else 88
    sig, used = cesr.parse_indexed_sig(_need(buf, pos, size))
    return sig, pos + used


def _read_couple(buf: bytes, pos: int) -> tuple[tuple[str, bytes], int]:
    text = _need(buf, pos, 132)
    cesr.decode(text[:44], expect=(Codes.ED25519N,))
    _, sig = cesr.decode(text[44:], expect=Codes.ED25519_SIG)
    return (text[:44], sig), pos + 132


def _read_quadruple(buf: bytes, pos: int) -> tuple[tuple[str, int, str, IndexedSig], int]:
    text = _need(buf, pos, 112)
    cesr.decode(text[:44])
    sn = int.from_bytes(cesr.decode(text[44:68], expect=Codes.SEQNER)[1], "big")
    cesr.decode(text[68:112], expect=Codes.BLAKE3_256)
    siger, end = _read_siger(buf, pos + 112)
    return (text[:44], sn, text[68:112], siger), end


def _read_source(buf: bytes, pos: int) -> tuple[tuple[int, str], int]:
    text = _need(buf, pos, 68)
    sn = int.from_bytes(cesr.decode(text[:24], expect=Codes.SEQNER)[1], "big")
    cesr.decode(text[24:], expect=Codes.BLAKE3_256)
    return (sn, text[24:]), pos + 68


def _read_first_seen(buf: bytes, pos: int) -> tuple[tuple[int, str], int]:
    text = _need(buf, pos, 60)
    fn = int.from_bytes(cesr.decode(text[:24], expect=Codes.SEQNER)[1], "big")
    if text[24:28] != Codes.DATETIME:
        raise ParseError(f"expected a datetime ({Codes.DATETIME}), got {text[24:28]!r}")
    return (fn, text[24:60]), pos + 60


__all__ = [
    "Attachments",
    "BadFrame",
    "Frame",
    "Kind",
    "Message",
    "StreamReader",
    "messagize",
    "parse_stream",
]

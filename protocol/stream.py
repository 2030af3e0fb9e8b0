"""Framing a CESR stream into messages: an event body followed by its attachment groups.

Theory of operation: a stream is messages back to back. A message starts with a body whose
version string (within its first 24 bytes) gives the kind and the exact size. After the body
comes a run of base64 text (counters and primitives), its attachments. A body never starts
with a base64 character (`{` for JSON, a map byte 0xa0-0xbb for CBOR), so the run ends exactly
where the next message begins, or where the stream ends.

`StreamReader.feed` takes arbitrary chunks and returns the messages it could finish; it waits
for more bytes rather than guess. Because attachments may continue in the next chunk, the last
message of a feed is held until the next body begins or `close()` is called. A message whose
body breaks the event rules (bad SAID, ...) comes back as a `BadFrame` and reading goes on,
since its size is known. Bytes that cannot be framed raise `ParseError` with the offset (after
the messages framed before them have been returned), and the reader refuses further input:
there is no safe place to resume.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from .attachments import Attachments, parse_attachments
from .cesr import new_tuple
from .errors import ParseError, RemoteProtocolError
from .events import Event, Kind, parse_event, sniff

DEFAULT_MAX_MESSAGE: Final = 1 << 20  # 1 MiB: libp2p gossip drops anything larger anyway
_HEAD: Final = 24  # bytes that always hold a version string
_BASE64_RUN: Final = re.compile(rb"[A-Za-z0-9_-]*")
_CBOR_VERSION_AT: Final = 4  # map byte, 0x61 "v", 0x71 (text of 17): version follows
_JSON_VERSION_AT: Final = 6  # {"v":"
_VERSION_SIZE: Final = 17  # KERI10CBOR, six lowercase hex digits of size, "_"
_CBOR_HEAD: Final = b"KERI10CBOR"
_JSON_HEAD: Final = b"KERI10JSON"
_HEX_VALUES: Final = bytes(
    int(chr(b), 16) if chr(b) in "0123456789abcdef" else 255 for b in range(256)
)
# 1 for the bytes of base64url text (what attachments are written in), else 0
_BASE64_BYTES: Final = bytes(
    int(chr(b) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    for b in range(256)
)
_JSON: Final = Kind.JSON  # module constants: enum lookups are slow on the hot path
_CBOR: Final = Kind.CBOR


class Message(NamedTuple):
    """One framed, checked event with its attachments and its place in the stream."""

    event: Event
    attachments: Attachments
    offset: int
    length: int

    def serialize(self) -> bytes:
        return messagize(self.event, self.attachments)


class BadFrame(NamedTuple):
    """A framed message whose body was rejected; reading continued after it."""

    offset: int
    length: int
    error: RemoteProtocolError


Frame = Message | BadFrame


def messagize(event: Event, attachments: Attachments | None = None) -> bytes:
    """Body followed by its attachments: the bytes that go on the wire."""
    return event.raw + (attachments.qb64().encode("ascii") if attachments else b"")


class _Incomplete(Exception):
    """More bytes are needed (internal to the reader).

    `need` is how many bytes from the message start must be buffered before trying again
    (0 when unknown); `scan` is set when only a run of attachment text may still grow: the
    offset from the message start up to which it was found to be all base64.
    """

    def __init__(self, need: int = 0, scan: int = -1) -> None:
        super().__init__()
        self.need = need
        self.scan = scan


class StreamReader:
    """Incremental framer: `feed` chunks, collect `Frame`s, `close` at end of input."""

    def __init__(self, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self._base = 0  # stream offset of _buf[0]
        self._max = max_message
        self._failed: ParseError | None = None
        # Framing the buffer again cannot succeed until it holds `_need` bytes, or (when a
        # message waits only to learn whether its attachments go on) until a byte that is not
        # base64 arrives past `_scan`. Checking that first keeps trickled input linear.
        self._need = 0
        self._scan = -1

    def feed(self, chunk: bytes) -> list[Frame]:
        if self._failed is not None:
            raise self._failed
        self._buf += chunk
        if len(self._buf) < self._need:
            return []
        if self._scan >= 0:
            run = _BASE64_RUN.match(self._buf, self._scan)
            if run is not None and run.end() == len(self._buf) <= 2 * self._max + _HEAD:
                self._scan = run.end()
                return []
        return self._drain(final=False)

    def close(self) -> list[Frame]:
        """End of input: finish the last message or raise if it is truncated."""
        if self._failed is not None:
            raise self._failed
        return self._drain(final=True)

    def _drain(self, final: bool) -> list[Frame]:
        self._need, self._scan = 0, -1
        out: list[Frame] = []
        buf = bytes(self._buf)
        pos = 0
        size = len(buf)
        try:
            while pos < size:
                try:
                    frame, end = _frame_one(buf, pos, self._base, final, self._max)
                except _Incomplete as wait:
                    if final:
                        raise ParseError("stream ends inside a message", self._base + pos) from None
                    if size - pos > 2 * self._max + _HEAD:  # body + attachments at most
                        raise ParseError(
                            "message exceeds the size limit", self._base + pos
                        ) from None
                    self._need = pos + wait.need  # made relative to the kept bytes below
                    self._scan = pos + wait.scan if wait.scan >= 0 else -1
                    break
                out.append(frame)
                pos = end
        except ParseError as err:
            self._failed = err
            if not out:
                raise
            # Hand over what was framed before the bad bytes; the next call raises.
        if self._need or self._scan >= 0:
            self._need = max(self._need - pos, 0)
            self._scan = self._scan - pos if self._scan >= 0 else -1
        del self._buf[:pos]
        self._base += pos
        return out


def parse_stream(data: bytes, max_message: int = DEFAULT_MAX_MESSAGE) -> list[Frame]:
    """Frame a complete stream in one go."""
    reader = StreamReader(max_message)
    return reader.feed(data) + reader.close()


def _version(buf: bytes, pos: int, final: bool) -> tuple[Kind, int]:
    """Kind and size of the body at `pos`; fast path for keripy's layouts, else a search."""
    first = buf[pos]
    if first == 0x7B:
        at, kind = pos + _JSON_VERSION_AT, _JSON
    elif 0xA0 <= first <= 0xB7:
        at, kind = pos + _CBOR_VERSION_AT, _CBOR
    elif 0xB8 <= first <= 0xBB:
        at, kind = -1, Kind.CBOR
    else:
        what = "attachments without a message" if first == 0x2D else f"byte {first:#04x}"
        raise ParseError(f"expected the start of a message body, found {what}", pos)
    if len(buf) - pos < _HEAD and not final:
        raise _Incomplete(_HEAD)
    if at > 0 and len(buf) >= at + _VERSION_SIZE and buf[at + 16] == 0x5F:  # "_" ends it
        head = _CBOR_HEAD if kind is _CBOR else _JSON_HEAD
        size = 0
        for i in range(10):  # KERI10CBOR / KERI10JSON, byte by byte (no slice made)
            if buf[at + i] != head[i]:
                size = -1
                break
        if size == 0:
            for i in range(at + 10, at + 16):  # six lowercase hex digits
                digit = _HEX_VALUES[buf[i]]
                if digit > 15:
                    size = -1
                    break
                size = size * 16 + digit
        if size >= 0:
            return kind, size
    return sniff(buf[pos : pos + _HEAD])


def _frame_one(buf: bytes, pos: int, base: int, final: bool, limit: int) -> tuple[Frame, int]:
    try:
        kind, size = _version(buf, pos, final)
    except ParseError as err:
        raise ParseError(err.reason, base + pos) from None
    if size > limit:
        raise ParseError(f"message body of {size} bytes exceeds the limit of {limit}", base + pos)
    if size < _HEAD:
        raise ParseError(f"body size {size} is too small to hold a version string", base + pos)
    end = pos + size
    if end > len(buf):
        raise _Incomplete(size)
    att_end = end  # the run of base64 text after the body: its attachments
    while att_end < len(buf) and _BASE64_BYTES[buf[att_end]]:
        att_end += 1
    if att_end == len(buf) and not final:
        raise _Incomplete(0, att_end - pos)  # its attachments may go on in the next chunk
    if att_end - end > limit:
        raise ParseError("attachments exceed the size limit", base + end)
    attachments = parse_attachments(buf[end:att_end], base + end)
    try:
        event = parse_event(buf[pos:end], kind)
    except RemoteProtocolError as bad:
        return BadFrame(base + pos, att_end - pos, bad.at(base + pos)), att_end
    message = new_tuple(Message, (event, attachments, base + pos, att_end - pos))  # = Message(...)
    return message, att_end


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

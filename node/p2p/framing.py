"""Request/response frames: bytes in, bytes out, no I/O.

One request and one response travel on their own libp2p stream (one stream per exchange, so
a slow answer never holds up another). Every integer is big-endian.

    request  = length:u32 payload
    response = status:u8 length:u32 reason_length:u16 payload reason

`reason` is UTF-8 text for a log and for the requester; an OK response has none. A peer that
sends a length over its reader's limit is refused *before* its payload is read: the refusal is
a response like any other (status TOO_LARGE), so the requester learns why.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Final, NamedTuple

from .errors import RemoteP2PError

REQUEST_HEADER: Final = struct.Struct(">I")
RESPONSE_HEADER: Final = struct.Struct(">BIH")
MAX_REASON: Final = 1024  # bytes of UTF-8; longer reasons are cut, not refused
DEFAULT_MAX_MESSAGE: Final = 1 << 20  # 1 MiB


class Status(IntEnum):
    """The first byte of a response."""

    OK = 0
    REFUSED = 1  # the handler said no (its reason follows)
    FAILED = 2  # the handler raised; the peer keeps running
    TOO_LARGE = 3  # the request's length is over the responder's limit
    BUSY = 4  # the responder has too many requests in progress


class Response(NamedTuple):
    """What a peer answered: `ok`, its payload, and the reason when not ok."""

    ok: bool
    payload: bytes
    reason: str


class ResponseHead(NamedTuple):
    status: Status
    length: int
    reason_length: int


def encode_request(payload: bytes) -> bytes:
    return REQUEST_HEADER.pack(len(payload)) + payload


def decode_request_head(head: bytes, limit: int) -> tuple[int, str]:
    """The payload length announced by a request header, and a refusal reason if over `limit`."""
    (length,) = REQUEST_HEADER.unpack(head)
    if length > limit:
        return length, f"request of {length} bytes exceeds this peer's limit of {limit} bytes"
    return length, ""


def encode_response(status: Status, payload: bytes = b"", reason: str = "") -> bytes:
    text = _cut(reason)
    return RESPONSE_HEADER.pack(status, len(payload), len(text)) + payload + text


def decode_response_head(head: bytes, limit: int) -> ResponseHead:
    """Check a response header; a bad status or a payload over `limit` is the peer's fault."""
    code, length, reason_length = RESPONSE_HEADER.unpack(head)
    try:
        status = Status(code)
    except ValueError:
        raise RemoteP2PError(f"unknown response status {code}") from None
    if length > limit:
        raise RemoteP2PError(f"response of {length} bytes exceeds our limit of {limit} bytes")
    if status is Status.OK and reason_length:
        raise RemoteP2PError("an OK response carries no reason")
    return ResponseHead(status, length, reason_length)


def decode_response_body(head: ResponseHead, body: bytes) -> Response:
    """`body` is the `length + reason_length` bytes after the header."""
    payload, raw_reason = body[: head.length], body[head.length :]
    try:
        reason = raw_reason.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteP2PError("response reason is not UTF-8") from None
    if head.status is Status.OK:
        return Response(True, payload, "")
    return Response(False, payload, reason or head.status.name.lower().replace("_", " "))


def _cut(reason: str) -> bytes:
    data = reason.encode("utf-8")
    if len(data) <= MAX_REASON:
        return data
    # Cut on a character boundary so the reader's strict decode accepts it.
    return data[:MAX_REASON].decode("utf-8", errors="ignore").encode("utf-8")

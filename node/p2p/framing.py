"""Request/response frames: bytes in, bytes out, no I/O.

These frames carry a request and its response on a libp2p stream of their own: what a
request too large for a session takes, and every request to a peer that serves no sessions
or over Mplex. Other requests share one stream per peer, in the tagged frames of
`sessionframes.py` (`session.py`). Every integer is big-endian.

    request  = length:u32 payload
    response = status:u8 length:u32 reason_length:u16 payload reason

`status` is a `Code` (the roles' answer codes: what the requester acts on); `reason` is UTF-8
text for a log and for the requester, and a response with an ok code has none. A peer that
sends a length over its reader's limit is refused *before* its payload is read: the refusal is
a response like any other (status TOO_LARGE), so the requester learns why.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from dkms.node.roles.codes import Code

from .errors import RemoteP2PError

REQUEST_HEADER: Final = struct.Struct(">I")
RESPONSE_HEADER: Final = struct.Struct(">BIH")
MAX_REASON: Final = 1024  # bytes of UTF-8; longer reasons are cut, not refused
DEFAULT_MAX_MESSAGE: Final = 1 << 20  # 1 MiB


class Response(NamedTuple):
    """What a peer answered: its code, its payload, and the reason when not ok."""

    code: Code
    payload: bytes
    reason: str

    @property
    def ok(self) -> bool:
        return self.code.ok


class ResponseHead(NamedTuple):
    status: Code
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


def encode_response(status: Code, payload: bytes = b"", reason: str = "") -> bytes:
    text = b"" if status.ok else cut_reason(reason)
    return RESPONSE_HEADER.pack(status, len(payload), len(text)) + payload + text


def decode_response_head(head: bytes, limit: int) -> ResponseHead:
    """Check a response header; a bad status or a payload over `limit` is the peer's fault."""
    code, length, reason_length = RESPONSE_HEADER.unpack(head)
    try:
        status = Code(code)
    except ValueError:
        raise RemoteP2PError(f"unknown response status {code}") from None
    if length > limit:
        raise RemoteP2PError(f"response of {length} bytes exceeds our limit of {limit} bytes")
    if status is Code.UNREACHABLE:
        raise RemoteP2PError("status UNREACHABLE is never sent")
    if status.ok and reason_length:
        raise RemoteP2PError("an ok response carries no reason")
    return ResponseHead(status, length, reason_length)


def decode_response_body(head: ResponseHead, body: bytes) -> Response:
    """`body` is the `length + reason_length` bytes after the header."""
    payload, raw_reason = body[: head.length], body[head.length :]
    try:
        reason = raw_reason.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteP2PError("response reason is not UTF-8") from None
    if head.status.ok:
        return Response(head.status, payload, "")
    return Response(head.status, payload, reason or head.status.text)


def cut_reason(reason: str) -> bytes:
    data = reason.encode("utf-8")
    if len(data) <= MAX_REASON:
        return data
    # Cut on a character boundary so the reader's strict decode accepts it.
    return data[:MAX_REASON].decode("utf-8", errors="ignore").encode("utf-8")

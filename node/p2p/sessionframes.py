"""Session frames: requests and answers tagged with an id, so many share one stream. No I/O.

A session (`session.py`) carries every request one host makes to another on one long-lived
stream, and the answers on the same stream in whatever order they are ready. Every integer is
big-endian.

    request  = id:u32 length:u32 protocol_length:u8 protocol payload
    answer   = id:u32 status:u8 length:u32 reason_length:u16 payload reason

`protocol` is the surface asked (`/dkms/1/submit`, ...), ASCII. An answer's `status` is a
`Code`, as in `framing.py`, or `NO_HANDLER`: this peer serves no such protocol (a per-request
stream learns that from protocol negotiation; the requester raises `Refused` either way).
A request's payload is at most `MAX_SESSION_REQUEST` bytes: a larger one goes on a stream of
its own, where the responder can refuse it before reading it. A frame that breaks these rules
is the peer's fault and ends the session.
"""

from __future__ import annotations

import struct
from typing import Final

from dkms.node.roles.codes import Code

from .errors import RemoteP2PError
from .framing import MAX_REASON, RESPONSE_HEADER, cut_reason

REQUEST_HEAD: Final = struct.Struct(">IIB")
ANSWER_HEAD: Final = struct.Struct(">IBIH")
ID_SPACE: Final = 1 << 32
NO_HANDLER: Final = 255
MAX_SESSION_REQUEST: Final = 256 * 1024
assert ANSWER_HEAD.size == 4 + RESPONSE_HEADER.size


class SessionViolation(RemoteP2PError):
    """A frame no honest peer sends: the session ends."""


def encode_request(request_id: int, protocol: str, payload: bytes) -> bytes:
    name = protocol.encode("ascii")
    if not 0 < len(name) < 256:
        raise ValueError(f"protocol name of {len(name)} bytes: need 1..255")
    return REQUEST_HEAD.pack(request_id, len(payload), len(name)) + name + payload


def decode_request_head(head: bytes) -> tuple[int, int, int]:
    """`(id, payload length, protocol length)`; raises `SessionViolation`."""
    request_id, length, name_length = REQUEST_HEAD.unpack(head)
    if length > MAX_SESSION_REQUEST:
        raise SessionViolation(
            f"session request of {length} bytes (at most {MAX_SESSION_REQUEST} on a session)"
        )
    if name_length == 0:
        raise SessionViolation("session request names no protocol")
    return request_id, length, name_length


def decode_protocol(name: bytes) -> str:
    try:
        text = name.decode("ascii")
    except UnicodeDecodeError:
        raise SessionViolation("protocol name is not ASCII") from None
    if not text.isprintable():
        raise SessionViolation("protocol name has unprintable characters")
    return text


def encode_answer(request_id: int, status: int, payload: bytes = b"", reason: str = "") -> bytes:
    ok = status != NO_HANDLER and Code(status).ok
    text = b"" if ok else cut_reason(reason)
    return ANSWER_HEAD.pack(request_id, status, len(payload), len(text)) + payload + text


def decode_answer_head(head: bytes, limit: int) -> tuple[int, int, str]:
    """`(id, body length, violation)` of an answer. `violation` says what would leave the
    stream unreadable (a payload over `limit`, an overlong reason): the session must end, and
    the request with that id fails with it. Whether the answer itself is well formed (its
    status, a reason on an ok answer) is that answer's business: `framing.decode_response_head`
    on `head[4:]` says, and a bad one fails its request only."""
    request_id, _status, length, reason_length = ANSWER_HEAD.unpack(head)
    if length > limit:
        return request_id, 0, f"response of {length} bytes exceeds our limit of {limit} bytes"
    if reason_length > MAX_REASON:
        return request_id, 0, f"response reason of {reason_length} bytes (at most {MAX_REASON})"
    return request_id, length + reason_length, ""

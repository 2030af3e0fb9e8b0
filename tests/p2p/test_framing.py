"""Request/response frames without I/O: round trips, limits, and what a bad peer sends."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dkms.node.p2p import RemoteP2PError, Response
from dkms.node.p2p.framing import (
    MAX_REASON,
    REQUEST_HEADER,
    RESPONSE_HEADER,
    decode_request_head,
    decode_response_body,
    decode_response_head,
    encode_request,
    encode_response,
)
from dkms.node.roles.codes import Code


def decode(frame: bytes, limit: int = 1 << 20) -> Response:
    head = decode_response_head(frame[: RESPONSE_HEADER.size], limit)
    return decode_response_body(head, frame[RESPONSE_HEADER.size :])


@given(st.binary(max_size=2048))
def test_request_round_trip(payload: bytes) -> None:
    frame = encode_request(payload)
    length, refusal = decode_request_head(frame[: REQUEST_HEADER.size], 2048)
    assert (length, refusal) == (len(payload), "")
    assert frame[REQUEST_HEADER.size :] == payload


SENT = [c for c in Code if c is not Code.UNREACHABLE]  # every code a peer may send


@given(st.sampled_from(SENT), st.binary(max_size=512), st.text(max_size=300))
def test_response_round_trip(status: Code, payload: bytes, reason: str) -> None:
    answer = decode(encode_response(status, payload, reason))
    assert answer.code is status
    assert answer.ok is (status in (Code.OK, Code.ALREADY, Code.PARTIAL))
    assert answer.payload == payload
    assert answer.reason == ("" if status.ok else reason or status.text)


def test_request_over_the_limit_is_refused_with_a_reason() -> None:
    length, refusal = decode_request_head(struct.pack(">I", 2_000_000), 1 << 20)
    assert length == 2_000_000
    assert refusal == "request of 2000000 bytes exceeds this peer's limit of 1048576 bytes"


def test_long_reasons_are_cut_on_a_character_boundary() -> None:
    answer = decode(encode_response(Code.REFUSED, b"", "é" * MAX_REASON))
    assert answer.reason == "é" * (MAX_REASON // 2)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (struct.pack(">BIH", 99, 0, 0), "unknown response status 99"),
        (struct.pack(">BIH", 6, 0, 0), "UNREACHABLE is never sent"),
        (struct.pack(">BIH", 0, 2_000_000, 0), "exceeds our limit"),
        (struct.pack(">BIH", 0, 0, 2) + b"no", "ok response carries no reason"),
        (struct.pack(">BIH", 5, 0, 2) + b"no", "ok response carries no reason"),
        (struct.pack(">BIH", 1, 0, 2) + b"\xff\xfe", "not UTF-8"),
    ],
)
def test_a_malformed_response_is_the_peers_fault(frame: bytes, message: str) -> None:
    with pytest.raises(RemoteP2PError, match=message):
        decode(frame)

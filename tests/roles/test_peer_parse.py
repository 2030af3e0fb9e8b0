"""A peer's KERI bytes are read with a body limit: no payload decodes to hundreds of MB."""

from __future__ import annotations

import contextlib
import tracemalloc
from collections.abc import Callable

import pytest

from dkms.node.roles.codes import Code
from dkms.node.roles.effects import Reply, Surface
from dkms.node.roles.inputs import Request
from dkms.node.roles.topics import PEER_BODY_BYTES, ParseCache, peer_parse, well_formed
from dkms.node.roles.witness import Witness
from dkms.node.testing.keys import node_signer
from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.errors import ParseError
from dkms.protocol.events import incept
from dkms.protocol.ids import NodePrefix
from dkms.protocol.stream import Attachments, messagize, parse_stream

WITNESS = node_signer(0)
KEY = Signer(bytes([7]) * 32)


def inception(maps: int) -> bytes:
    """A signed inception naming WITNESS and anchoring `maps` empty CBOR maps (one byte each
    on the wire, some 70 decoded)."""
    event = incept(
        [KEY.verfer],
        next_digests=[next_key_digest(Signer(bytes([8]) * 32).verfer)],
        witnesses=[WITNESS.verfer],
        toad=1,
        anchors=[{} for _ in range(maps)],
    )
    return messagize(event, Attachments(sigs=(KEY.sign_indexed(event.raw, 0),)))


@pytest.fixture(scope="module")
def heavy() -> bytes:
    return inception(900_000)  # about 0.9 MB on the wire


def peak(read: Callable[[bytes], object], data: bytes) -> int:
    """Peak bytes allocated while `read(data)` runs (it may raise ParseError)."""
    tracemalloc.start()
    try:
        with contextlib.suppress(ParseError):
            read(data)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_heavy_body_is_refused_before_it_is_decoded(heavy: bytes) -> None:
    with pytest.raises(ParseError, match=f"exceeds the limit of {PEER_BODY_BYTES}"):
        peer_parse(heavy)
    assert peak(peer_parse, heavy) < 8 * len(heavy)  # the framing's copies, nothing decoded
    assert peak(parse_stream, heavy) > 40 * len(heavy)  # what reading it whole costs


def test_gossip_and_submissions_of_a_heavy_event_are_refused_cheaply(heavy: bytes) -> None:
    assert not well_formed(heavy)
    assert not well_formed(heavy, ParseCache())
    witness = Witness(WITNESS)
    effects = witness.step(Request(Surface.SUBMIT, NodePrefix("Epeer"), heavy), 0.0)
    [reply] = [e for e in effects if isinstance(e, Reply)]
    assert reply.code is Code.MALFORMED and str(PEER_BODY_BYTES) in reply.reason


def test_an_ordinary_event_reads_as_before() -> None:
    light = inception(10)
    assert peer_parse(light) == parse_stream(light)
    witness = Witness(WITNESS)
    effects = witness.step(Request(Surface.SUBMIT, NodePrefix("Epeer"), light), 0.0)
    [reply] = [e for e in effects if isinstance(e, Reply)]
    assert reply.code is Code.OK

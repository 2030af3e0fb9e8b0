"""guards.py against the py-libp2p 0.8.1 behaviour it patches.

Each fault is shown twice: what the unpatched `Pubsub` does (the reason for the patch: if a
new release stops doing it, these tests fail and the patch should be read again), and that
the guarded one contains it. The last test sends a handler's crash through real hosts.
"""

from __future__ import annotations

import multiaddr
import pytest
import trio
from google.protobuf.message import DecodeError
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.stream_muxer.exceptions import MuxedStreamEOF

from dkms.node.p2p import open_host
from dkms.node.p2p.config import HostConfig
from dkms.node.p2p.gossip import build_router
from dkms.node.p2p.guards import FaultLog, GuardedPubsub
from dkms.node.p2p.identity import NodeIdentity
from dkms.node.p2p.stack import build_libp2p_host
from dkms.node.roles.codes import Code

BROKEN = TProtocol("/test/broken/1")
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # unawaited libp2p internals


class _Conn:
    def __init__(self, peer_id: object) -> None:
        self.peer_id = peer_id


class SlowStream:
    """A stream that takes its writes a few bytes at a time, yielding in between, as Yamux
    does when the peer's window is short; reads hand out `incoming` and then EOF."""

    def __init__(self, peer_id: object, incoming: bytes = b"") -> None:
        self.muxed_conn = _Conn(peer_id)
        self.written = bytearray()
        self.incoming = incoming
        self.was_reset = False
        self.metric_send_channel = None

    async def write(self, data: bytes) -> None:
        for i in range(0, len(data), 3):
            self.written += data[i : i + 3]
            await trio.sleep(0)

    async def read(self, n: int | None = None) -> bytes:
        if not self.incoming:
            raise MuxedStreamEOF("end")
        take = len(self.incoming) if n is None else n
        out, self.incoming = self.incoming[:take], self.incoming[take:]
        return out

    async def reset(self) -> None:
        self.was_reset = True


def _pubsub(cls: type[Pubsub]) -> Pubsub:
    identity = NodeIdentity(b"\x07" * 32)
    config = HostConfig()
    host = build_libp2p_host(
        identity, config, multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0"), FaultLog()
    )
    router = build_router(config.gossip)
    if cls is GuardedPubsub:
        return GuardedPubsub(host, router, faults=FaultLog())
    return cls(host, router)


class _Running:
    is_running = True


def _rpc(tag: int) -> rpc_pb2.RPC:
    return rpc_pb2.RPC(
        subscriptions=[rpc_pb2.RPC.SubOpts(subscribe=True, topicid=f"topic-{tag}-" + "x" * 40)]
    )


def _frames(data: bytes) -> list[bytes] | None:
    """The varint-prefixed RPCs in `data`, sorted; None if they do not read (interleaved)."""
    try:
        return sorted(_split(data))
    except (DecodeError, IndexError):
        return None


def _split(data: bytes) -> list[bytes]:
    out = []
    i = 0
    while i < len(data):
        length, shift = 0, 0
        while True:
            b = data[i]
            i += 1
            length |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        body = data[i : i + length]
        i += length
        rpc_pb2.RPC().ParseFromString(body)  # raises on garbage
        out.append(body)
    return out


WRITTEN = sorted(_rpc(t).SerializeToString() for t in range(4))


async def _write_concurrently(pubsub: Pubsub) -> bytes:
    stream = SlowStream(pubsub.my_id)
    async with trio.open_nursery() as nursery:
        for tag in range(4):
            nursery.start_soon(pubsub.write_msg, stream, _rpc(tag))
    return bytes(stream.written)


async def test_unpatched_pubsub_interleaves_two_writers_on_one_stream() -> None:
    written = await _write_concurrently(_pubsub(Pubsub))
    assert _frames(written) != WRITTEN


async def test_guarded_pubsub_has_one_writer_per_stream() -> None:
    written = await _write_concurrently(_pubsub(GuardedPubsub))
    assert _frames(written) == WRITTEN


async def test_unpatched_pubsub_lets_a_malformed_rpc_escape() -> None:
    pubsub = _pubsub(Pubsub)
    pubsub._manager = _Running()  # type: ignore[assignment]  # not run as a service here
    stream = SlowStream(pubsub.my_id, bytes.fromhex("05ffffffffff"))
    with pytest.raises(DecodeError):
        await pubsub.continuously_read_stream(stream)  # type: ignore[arg-type]


async def test_guarded_pubsub_resets_the_stream_of_a_malformed_rpc() -> None:
    pubsub = _pubsub(GuardedPubsub)
    assert isinstance(pubsub, GuardedPubsub)
    pubsub._manager = _Running()  # type: ignore[assignment]  # not run as a service here
    stream = SlowStream(pubsub.my_id, bytes.fromhex("05ffffffffff"))
    await pubsub.continuously_read_stream(stream)  # type: ignore[arg-type]
    assert stream.was_reset
    assert pubsub.faults.counts == {"pubsub": 1}


async def test_a_handler_that_raises_costs_its_stream_not_the_host() -> None:
    """Through real hosts: a protocol handler crashing on a peer's bytes (as py-libp2p's own
    did) resets that stream; the host goes on answering on its other protocols."""
    async with open_host(b"\x01" * 32, config=HostConfig(dial_timeout=2)) as server:

        async def broken(stream: INetStream) -> None:
            await stream.read(8)
            raise ValueError("a handler that trusts its input")

        server.libp2p.set_stream_handler(BROKEN, broken)

        async def echo(peer: str, payload: bytes) -> tuple[Code, bytes, str]:
            return Code.OK, payload, ""

        server.handle("/test/echo/1", echo)
        async with open_host(b"\x02" * 32, config=HostConfig(dial_timeout=2)) as client:
            intro = server.introduction
            with trio.fail_after(10):
                await client.connect([intro])
                for _ in range(3):
                    stream = await client.libp2p.new_stream(server.peer_id, [BROKEN])
                    await stream.write(b"anything")
                    with pytest.raises((StreamReset, StreamEOF)):  # the reset, as Yamux reports it
                        while await stream.read(100):
                            pass
                answer = await client.request(intro, "/test/echo/1", b"still here")
            assert answer[1] == b"still here"
            assert server.faults.counts == {"/test/broken/1": 3}

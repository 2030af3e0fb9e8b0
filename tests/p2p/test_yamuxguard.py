"""yamuxguard.py through real hosts: a peer that writes past its receive window.

The sender is a real py-libp2p host whose stream is told it has a huge send window (what a
hostile or broken implementation does); the receiving handler reads four bytes and then
waits. Unpatched, 0.8.1 keeps everything sent in the stream's buffer (the reason for the
patch: if a new release stops doing so, the first test fails and the patch should be read
again); guarded, the buffer never passes its cap, the stream is reset and the fault
counted, and the host goes on answering.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF, StreamError, StreamReset
from libp2p.stream_muxer.exceptions import MuxedStreamError
from libp2p.stream_muxer.yamux import yamux

from dkms.node.p2p import open_host
from dkms.node.p2p import stack as stack_module
from dkms.node.p2p.config import HostConfig
from dkms.node.p2p.yamuxguard import BUFFER_CAP, WINDOW, YamuxGuard
from dkms.node.roles.codes import Code

SINK = TProtocol("/test/sink/1")
SENT = 3 * BUFFER_CAP
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # unawaited libp2p internals


async def _flood() -> tuple[int, BaseException | None, dict[str, int], bytes]:
    """Send `SENT` bytes past the window to a handler that reads 4; the largest its buffer
    was seen holding, what its next read raised, the server's faults, and an echo after."""
    async with open_host(b"\x01" * 32, config=HostConfig(dial_timeout=2)) as server:
        arrived = trio.Event()
        done = trio.Event()
        seen: dict[str, Any] = {"largest": 0, "raised": None}

        async def sink(stream: INetStream) -> None:
            await stream.read(4)
            muxed: Any = stream.muxed_stream
            arrived.set()
            await done.wait()
            buffer = muxed.conn.stream_buffers.get(muxed.stream_id, b"")
            seen["largest"] = max(seen["largest"], len(buffer))
            try:
                await stream.read(1)
            except (StreamReset, StreamEOF) as err:  # the reset, as Yamux reports it
                seen["raised"] = err

        server.libp2p.set_stream_handler(SINK, sink)

        async def echo(peer: str, payload: bytes) -> tuple[Code, bytes, str]:
            return Code.OK, payload, ""

        server.handle("/test/echo/1", echo)
        async with open_host(b"\x02" * 32, config=HostConfig(dial_timeout=2)) as client:
            intro = server.introduction
            with trio.fail_after(20):
                await client.connect([intro])
                stream = await client.libp2p.new_stream(server.peer_id, [SINK])
                await stream.write(b"head")
                await arrived.wait()
                muxed: Any = stream.muxed_stream
                muxed.send_window = 1 << 40  # ignore the window the server gave
                chunk = b"\x00" * (256 << 10)
                with trio.move_on_after(5):
                    for _ in range(SENT // len(chunk)):
                        try:
                            await stream.write(chunk)
                        except (StreamError, MuxedStreamError):  # the server reset it
                            break
                # Let the server's connection read what was written, then look.
                answer = await client.request(intro, "/test/echo/1", b"still here")
                done.set()
                await trio.sleep(0)
                with trio.fail_after(5):
                    while seen["largest"] == 0 and seen["raised"] is None:
                        await trio.sleep(0.01)
            return seen["largest"], seen["raised"], dict(server.faults.counts), answer[1]


async def test_unpatched_yamux_buffers_whatever_a_peer_sends(monkeypatch: Any) -> None:
    monkeypatch.setattr(YamuxGuard, "install", lambda guard, swarm: None)
    monkeypatch.setattr(stack_module, "cap_window", lambda: None)
    largest, raised, _, answer = await _flood()
    assert largest > BUFFER_CAP
    assert raised is None
    assert answer == b"still here"


async def test_guarded_yamux_resets_a_stream_sent_past_its_window() -> None:
    largest, raised, faults, answer = await _flood()
    assert largest <= BUFFER_CAP
    assert isinstance(raised, (StreamReset, StreamEOF))
    assert faults.get("yamux window") == 1
    assert answer == b"still here"
    assert yamux.MAX_WINDOW_SIZE == WINDOW

"""Pipelined request/response: every request one host makes to a peer on one long-lived stream.

Theory of operation. A request on a stream of its own (`reqresp.exchange`) costs a Yamux
stream open, a multistream-select negotiation, a close each way and a window update per read:
some eight Noise-encrypted writes and their system calls for one question and one answer, and
most of the CPU of a small exchange. A *session* pays the opening once per peer and then
carries every request to that peer as one tagged frame (`sessionframes.py`) and every answer
as another, in whatever order they are ready, so one slow answer holds up no other.

    requester  `Session`: one per peer, opened on the first request (`SessionPool`). A request
               takes an id and a slot (at most `MAX_PENDING` in flight), queues its frame for
               the session's one writer task and waits for the answer with that id until its
               deadline; an answer that comes after the deadline is dropped. The reader task
               hands answers to their waiters. When the stream ends, every waiting request
               fails with `Refused` and the next request opens a new session.
    responder  `SessionServer.serve`, the handler of `SESSION_PROTOCOL`: reads request frames,
               admits each as the per-stream responder would (`Responder.admit`: slots and
               payload bytes for the whole host; BUSY when over), runs its handler as a task
               under the handler deadline and queues the answer for the session's one writer.
               At most `MAX_SESSIONS_PER_PEER` sessions per peer (a new one ends the oldest),
               `MAX_PENDING` requests in progress per session and `MAX_QUEUED_BYTES` of
               answers waiting to be written.

One writer per stream, never cancelled while the session lives: py-libp2p's Noise spends a
nonce before it takes the socket, so a write cancelled at that point breaks the whole
connection (see `reqresp.py`). The writer joins the frames queued at the moment it runs into
one write, which under load puts many answers in one Yamux frame and one Noise message.

Two things stay off sessions. Protocols whose answers can be large (`HostConfig.
stream_protocols`: KEL pages of up to 1 MiB) go on streams of their own, since on a session a
large answer holds up every answer behind it, where Yamux interleaves separate streams. And a
session on which not one answer has come since a request went out, when that request's
deadline passes, is ended (the next request opens another): its stream may have died without
its reader learning of it, and a dead session would time out every later request too.

A frame no honest peer sends (`SessionViolation`: an oversized length, a request over
`MAX_SESSION_REQUEST`, a protocol name that is not text) ends that session and is counted as
a fault; larger requests go on streams of their own, where they can be refused unread.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import trio
from libp2p.abc import INetStream

from dkms.node.roles.codes import Code

from .errors import P2PError, Refused, RemoteP2PError
from .framing import Response, decode_response_body, decode_response_head
from .guards import FaultLog
from .identity import peer_name
from .reqresp import FrameReader, Handler, Responder, StreamEnded, reset_quietly
from .sessionframes import (
    ANSWER_HEAD,
    ID_SPACE,
    NO_HANDLER,
    REQUEST_HEAD,
    SessionViolation,
    decode_answer_head,
    decode_protocol,
    decode_request_head,
    encode_answer,
    encode_request,
)

logger = logging.getLogger(__name__)

SESSION_PROTOCOL: Final = "/dkms/session/1"
MAX_SESSIONS_PER_PEER: Final = 4
MAX_PENDING: Final = 256
MAX_QUEUED_BYTES: Final = 8 << 20
COALESCE_BYTES: Final = 256 * 1024  # the writer joins queued frames up to this many bytes
WRITE_LIMIT: Final = 10.0  # seconds one write may take


class _Outbox:
    """Frames waiting for the session's writer, and their bytes."""

    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[bytes](math.inf)
        self.queued = 0

    def put(self, frame: bytes) -> bool:
        try:
            self.send.send_nowait(frame)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        self.queued += len(frame)
        return True

    async def write_all(self, stream: INetStream) -> None:
        """Write what is queued, joined, until the queue is closed; raises `StreamEnded`."""
        async for first in self.receive:
            frames, size = [first], len(first)
            while size < COALESCE_BYTES:
                try:
                    frame = self.receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                frames.append(frame)
                size += len(frame)
            self.queued -= size
            # Shielded (see above), but bounded: a peer that stops reading stalls it at most
            # WRITE_LIMIT (Yamux itself gives up after 5 s without window).
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + WRITE_LIMIT
                try:
                    await stream.write(frames[0] if len(frames) == 1 else b"".join(frames))
                except Exception as exc:  # stream reset or closed, muxer, connection errors
                    raise StreamEnded(f"write failed: {type(exc).__name__}") from exc
            if scope.cancelled_caught:
                raise StreamEnded(f"a write stalled for {WRITE_LIMIT} s")


@dataclass(slots=True)
class _Waiter:
    protocol: str
    done: trio.Event
    response: Response | None = None
    error: P2PError | None = None


class SessionEnded(P2PError):
    """The session ended before this request was sent: it may go on another."""


class Session:
    """The requester's end of a session with one peer. `run` it in a nursery."""

    def __init__(self, stream: INetStream, max_message: int) -> None:
        self._stream = stream
        self.peer = peer_name(stream.muxed_conn.peer_id)
        self._max_message = max_message
        self._outbox = _Outbox()
        self._waiting: dict[int, _Waiter] = {}
        self._next_id = 0
        self._slots = trio.Semaphore(MAX_PENDING)
        self.ended: str | None = None
        self._last_answer = trio.current_time()  # when an answer last came (trio time)

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write, nursery.cancel_scope)
                self._end(await self._read_answers())
                nursery.cancel_scope.cancel()
        finally:
            self._end("the host stopped")
            await reset_quietly(self._stream)

    async def _write(self, session: trio.CancelScope) -> None:
        try:
            await self._outbox.write_all(self._stream)
        except StreamEnded as exc:
            self._end(str(exc))
        finally:
            session.cancel()

    def _end(self, why: str) -> None:
        if self.ended is not None:
            return
        self.ended = why
        self._outbox.send.close()
        for waiter in self._waiting.values():
            if not waiter.done.is_set():
                waiter.error = Refused(f"the session to {self.peer} ended: {why}")
                waiter.done.set()

    async def request(self, protocol: str, payload: bytes, deadline: float) -> Response:
        """Ask; the answer, or `trio.TooSlowError` at `deadline` (trio time), `Refused` when
        the session ended or the peer does not serve `protocol`, `SessionEnded` when it had
        ended before the request went out, `RemoteP2PError` for a malformed answer."""
        with trio.fail_at(deadline):
            await self._slots.acquire()
        try:
            waiter = _Waiter(protocol, trio.Event())
            request_id = self._next_id
            self._next_id = (request_id + 1) % ID_SPACE
            if self.ended is not None or not self._outbox.put(
                encode_request(request_id, protocol, payload)
            ):
                raise SessionEnded(f"the session to {self.peer} had ended")
            self._waiting[request_id] = waiter
            sent = trio.current_time()
            try:
                with trio.fail_at(deadline):
                    await waiter.done.wait()
            except trio.TooSlowError:
                if self._last_answer < sent:
                    # Not one answer, to this or any request, since this one went out: the
                    # stream may be dead without our reader knowing. A new session costs one
                    # stream open; waiting on a dead one would cost every later request.
                    self._end(f"no answer on the session for {trio.current_time() - sent:.1f} s")
                    await reset_quietly(self._stream)
                raise
            finally:
                del self._waiting[request_id]
        finally:
            self._slots.release()
        if waiter.error is not None:
            raise waiter.error
        assert waiter.response is not None
        return waiter.response

    async def _read_answers(self) -> str:
        """Hand answers to their waiters until the stream ends; why it ended."""
        try:
            await self._read_until_end()
        except StreamEnded as exc:
            return str(exc)
        except SessionViolation as exc:
            logger.warning("session to %s: %s", self.peer, exc)
            return f"the peer broke the session: {exc}"
        raise AssertionError("unreachable")

    async def _read_until_end(self) -> None:
        reader = FrameReader(self._stream)
        while True:
            head = await reader.take(ANSWER_HEAD.size)
            self._last_answer = trio.current_time()
            request_id, body_length, violation = decode_answer_head(head, self._max_message)
            waiter = self._waiting.get(request_id)
            if violation:
                if waiter is not None and not waiter.done.is_set():
                    waiter.error = RemoteP2PError(violation)
                    waiter.done.set()
                raise SessionViolation(violation)
            body = await reader.take(body_length)
            if waiter is None or waiter.done.is_set():
                continue  # its deadline passed: nobody waits for it
            if head[4] == NO_HANDLER:
                waiter.error = Refused(f"{self.peer} does not serve {waiter.protocol}")
            else:
                try:
                    answer = decode_response_head(head[4:], self._max_message)
                    waiter.response = decode_response_body(answer, body)
                except RemoteP2PError as exc:
                    waiter.error = exc
            waiter.done.set()


class SessionServer:
    """The responder's end: serves registered handlers to every session opened to us."""

    def __init__(self, responder: Responder, faults: FaultLog) -> None:
        self._responder = responder
        self._faults = faults
        self._handlers: dict[str, Handler] = {}
        self._per_peer: dict[str, list[trio.CancelScope]] = {}  # each session's, oldest first

    def add(self, protocol: str, handler: Handler) -> None:
        self._handlers[protocol] = handler

    @property
    def sessions(self) -> int:
        return sum(len(scopes) for scopes in self._per_peer.values())

    async def serve(self, stream: INetStream) -> None:
        """The stream handler of `SESSION_PROTOCOL`; nothing escapes it.

        A requester uses only its newest session to us, so one more than
        `MAX_SESSIONS_PER_PEER` ends that peer's oldest (which may be a stream that died
        without our reader learning of it), rather than turning the new one away."""
        peer = peer_name(stream.muxed_conn.peer_id)
        mine = self._per_peer.setdefault(peer, [])
        scope = trio.CancelScope()
        mine.append(scope)
        while len(mine) > MAX_SESSIONS_PER_PEER:
            logger.info("session from %s: its oldest of %d ended", peer, len(mine))
            mine.pop(0).cancel()
        try:
            with scope:
                await self._serve(stream, peer)
        except Exception:  # a bug here must not kill the connection
            logger.exception("session from %s failed", peer)
        finally:
            if scope in mine:
                mine.remove(scope)
            if not mine and self._per_peer.get(peer) is mine:
                del self._per_peer[peer]
            await reset_quietly(stream)

    async def _serve(self, stream: INetStream, peer: str) -> None:
        outbox = _Outbox()

        async def write(session: trio.CancelScope) -> None:
            try:
                await outbox.write_all(stream)
            except StreamEnded as exc:
                logger.debug("session from %s: %s", peer, exc)
                session.cancel()  # nobody would read the answers: stop taking requests

        async with trio.open_nursery() as session:
            session.start_soon(write, session.cancel_scope)
            with outbox.send:
                async with trio.open_nursery() as calls:
                    try:
                        await self._read_requests(stream, peer, outbox, calls.start_soon)
                    except StreamEnded as exc:
                        logger.debug("session from %s ended: %s", peer, exc)
                    except SessionViolation as exc:
                        self._faults.record(stream.muxed_conn.peer_id, SESSION_PROTOCOL, exc)
                    calls.cancel_scope.cancel()
            # The writer writes what is queued, then ends with the closed queue.

    async def _read_requests(
        self,
        stream: INetStream,
        peer: str,
        outbox: _Outbox,
        spawn: Callable[..., object],
    ) -> None:
        reader = FrameReader(stream)
        responder = self._responder
        in_progress = [0]
        while True:
            try:
                head = await reader.take(REQUEST_HEAD.size)
            except StreamEnded:
                return  # the requester closed its side: the session is over
            request_id, length, name_length = decode_request_head(head)
            with trio.move_on_after(responder.limits.read_timeout) as reading:
                rest = await reader.take(name_length + length)
            if reading.cancelled_caught:
                raise StreamEnded("a request was not delivered in time")
            protocol = decode_protocol(rest[:name_length])
            handler = self._handlers.get(protocol)
            if handler is None:
                outbox.put(encode_answer(request_id, NO_HANDLER))
                continue
            if in_progress[0] >= MAX_PENDING or outbox.queued > MAX_QUEUED_BYTES:
                outbox.put(encode_answer(request_id, Code.BUSY, reason="session is full"))
                continue
            refusal = responder.admit(length)
            if refusal:
                outbox.put(encode_answer(request_id, Code.BUSY, reason=refusal))
                continue
            in_progress[0] += 1
            spawn(self._answer, request_id, protocol, handler, peer, rest[name_length:],
                  outbox, in_progress)  # fmt: skip

    async def _answer(
        self,
        request_id: int,
        protocol: str,
        handler: Handler,
        peer: str,
        payload: bytes,
        outbox: _Outbox,
        in_progress: list[int],
    ) -> None:
        try:
            code, out, reason = await self._responder.call(protocol, handler, peer, payload)
            outbox.put(encode_answer(request_id, code, out, reason))
        finally:
            in_progress[0] -= 1
            self._responder.release(len(payload))

"""Request/response over libp2p streams: one stream per exchange, frames from `framing.py`.

Most requests go on a peer's session instead (`session.py`, which shares this module's
`Responder` limits and handler calls); this is the path for the rest (see `framing.py`).

Responder: read the 4-byte length; refuse (TOO_LARGE, BUSY: too many requests, or too many
payload bytes, in progress) before reading a payload it will not take; call the handler under
a deadline; turn a handler exception into a FAILED answer.
Nothing a peer or a handler does may raise out of the stream handler: py-libp2p runs it
inside the connection's nursery, so an exception there would take the connection down.

Requester: the payload is written by a helper task while the answer is read, so an early
refusal is read even when the responder never reads the payload (Yamux; py-libp2p's Mplex
cannot read and write one stream at once, so there we write, then read). The request deadline
covers the reading side only; on expiry the stream is *reset*, which stops the writer at its
next flow-control check instead of cancelling it inside a write.

Why writes are not cancelled: py-libp2p's Noise encrypts (spending a nonce) *before* it waits
for the socket's write lock, so a write cancelled at that moment never sends the nonce it
spent, and the peer fails to decrypt everything after it: the whole connection dies. Reads
cannot avoid the hazard entirely (a Yamux read may write a window update), which is why
deadlines here cover as little as possible.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio
from libp2p.abc import INetStream
from libp2p.stream_muxer.mplex.mplex import Mplex

from dkms.node.roles.codes import Code

from .errors import P2PError, Refused, RemoteP2PError
from .framing import (
    REQUEST_HEADER,
    RESPONSE_HEADER,
    Response,
    decode_request_head,
    decode_response_body,
    decode_response_head,
    encode_request,
    encode_response,
)
from .identity import peer_name

logger = logging.getLogger(__name__)

Handler = Callable[[str, bytes], Awaitable[tuple[Code, bytes, str]]]
"""`async handler(peer, payload) -> (code, payload, reason)`; `peer` is a `B...` prefix."""

StreamHandler = Callable[[INetStream], Awaitable[None]]

READ_CHUNK = 64 * 1024
# After a reset, a writer blocked on flow control notices within ~10 ms (yamux polls).
WRITER_GRACE = 1.0


class StreamEnded(Exception):
    """The stream closed before the bytes we were promised arrived."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_message: int
    read_timeout: float
    handler_timeout: float


class FrameReader:
    """Reads a stream in chunks as large as are buffered, handing out exact byte counts.

    Each muxer read costs a window update frame in Yamux, so a header and its payload are
    taken from one read where they arrived together.
    """

    def __init__(self, stream: INetStream) -> None:
        self._stream = stream
        self._buf = bytearray()

    async def take(self, count: int) -> bytes:
        while len(self._buf) < count:
            want = max(count - len(self._buf), READ_CHUNK)
            try:
                chunk = await self._stream.read(want)
            except Exception as exc:  # StreamEOF, StreamReset, StreamError, muxer errors
                raise StreamEnded(
                    f"{type(exc).__name__} after {len(self._buf)} of {count} bytes"
                ) from exc
            if not chunk:
                raise StreamEnded(f"end of stream after {len(self._buf)} of {count} bytes")
            self._buf += chunk
        out = bytes(self._buf[:count])
        del self._buf[:count]
        return out


async def reset_quietly(stream: INetStream) -> None:
    with trio.CancelScope(shield=True):
        try:
            await stream.reset()
        except Exception:
            logger.debug("stream reset failed", exc_info=True)


async def close_quietly(stream: INetStream) -> None:
    with trio.CancelScope(shield=True):
        try:
            await stream.close()
        except Exception:
            await reset_quietly(stream)


class Responder:
    """Serves registered handlers; one per host, so `max_inbound` bounds the whole host."""

    def __init__(self, limits: Limits, max_inbound: int, max_bytes: int = 32 << 20) -> None:
        self.limits = limits
        self._slots = trio.Semaphore(max_inbound)
        self.max_bytes = max_bytes  # payload bytes of the requests in progress, at most
        self.in_progress = 0  # ... and now (counted from each request's announced length)

    def stream_handler(self, protocol: str, handler: Handler) -> StreamHandler:
        async def serve(stream: INetStream) -> None:
            try:
                await self._serve(stream, protocol, handler)
            except Exception:  # a bug here must not kill the connection
                logger.exception("responder for %s failed", protocol)
                await reset_quietly(stream)

        return serve

    async def _serve(self, stream: INetStream, protocol: str, handler: Handler) -> None:
        peer = peer_name(stream.muxed_conn.peer_id)
        try:
            if not self._take_slot():
                await _answer(stream, Code.BUSY, reason="too many requests in progress")
                return
            try:
                await self._serve_in_slot(stream, protocol, handler, peer)
            finally:
                self._slots.release()
        except StreamEnded as exc:
            logger.info("%s from %s: %s", protocol, peer, exc)
            await reset_quietly(stream)

    def _take_slot(self) -> bool:
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            return False
        return True

    def admit(self, length: int) -> str:
        """Take a slot and `length` payload bytes for a request (session.py), or say why not;
        `release(length)` gives them back."""
        if not self._take_slot():
            return "too many requests in progress"
        if self.in_progress + length > self.max_bytes:
            self._slots.release()
            return "too many request bytes in progress"
        self.in_progress += length
        return ""

    def release(self, length: int) -> None:
        self.in_progress -= length
        self._slots.release()

    async def _serve_in_slot(
        self, stream: INetStream, protocol: str, handler: Handler, peer: str
    ) -> None:
        reader = FrameReader(stream)
        reserved = 0  # of `in_progress`, for this request
        try:
            with trio.move_on_after(self.limits.read_timeout) as reading:
                head = await reader.take(REQUEST_HEADER.size)
                length, refusal = decode_request_head(head, self.limits.max_message)
                if refusal:
                    await _answer(stream, Code.TOO_LARGE, reason=refusal)
                    return
                if self.in_progress + length > self.max_bytes:
                    await _answer(stream, Code.BUSY, reason="too many request bytes in progress")
                    return
                self.in_progress += length
                reserved = length
                payload = await reader.take(length)
            if reading.cancelled_caught:
                logger.info("%s from %s: request not delivered in time", protocol, peer)
                await reset_quietly(stream)
                return
            status, out, reason = await self.call(protocol, handler, peer, payload)
            await _answer(stream, status, out, reason)
        finally:
            self.in_progress -= reserved

    async def call(
        self, protocol: str, handler: Handler, peer: str, payload: bytes
    ) -> tuple[Code, bytes, str]:
        result: Any = None
        with trio.move_on_after(self.limits.handler_timeout) as deadline:
            try:
                result = await handler(peer, payload)
            except Exception as exc:
                logger.exception("%s handler failed on a request from %s", protocol, peer)
                return Code.FAILED, b"", f"handler failed: {type(exc).__name__}"
        if deadline.cancelled_caught:
            return Code.FAILED, b"", "handler timed out"
        if not (
            isinstance(result, tuple)
            and len(result) == 3
            and isinstance(result[0], Code)
            and result[0] is not Code.UNREACHABLE
            and isinstance(result[1], bytes | bytearray)
            and isinstance(result[2], str)
        ):
            logger.error("%s handler returned %r, not (Code, bytes, str)", protocol, result)
            return Code.FAILED, b"", "handler returned a malformed answer"
        code, out, reason = result
        if len(out) > self.limits.max_message:
            logger.error("%s handler answered %d bytes, over the limit", protocol, len(out))
            return Code.FAILED, b"", "answer exceeds the size limit"
        return code, bytes(out), "" if code.ok else reason or code.text


async def _answer(stream: INetStream, status: Code, payload: bytes = b"", reason: str = "") -> None:
    try:
        await stream.write(encode_response(status, payload, reason))
    except Exception as exc:
        raise StreamEnded(f"could not answer: {type(exc).__name__}") from exc
    await close_quietly(stream)


async def exchange(
    stream: INetStream, payload: bytes, max_message: int, deadline: float
) -> Response:
    """Send one request on a fresh stream and read its answer by `deadline` (trio time).

    Raises `trio.TooSlowError` at the deadline, `Refused` when the peer reset the stream
    without answering, `RemoteP2PError` when its answer is malformed.
    """
    sent = trio.Event()
    failure: BaseException | None = None

    async def send() -> None:
        try:
            await stream.write(encode_request(payload))
        except Exception:  # the reader sees what the peer did; nothing to add here
            logger.debug("request write ended early", exc_info=True)
        finally:
            sent.set()

    if isinstance(stream.muxed_conn, Mplex):
        # py-libp2p's Mplex stream takes a lock for a pending read that also shuts out
        # writes: reading while writing deadlocks, so write first (Mplex has no flow control
        # for the write to wait on; a peer that stops reading stalls it up to 5 s instead).
        with trio.move_on_at(deadline):
            await send()
    async with trio.open_nursery() as nursery:
        if not sent.is_set():
            nursery.start_soon(send)
        try:
            with trio.fail_at(deadline):
                response = await _read_response(stream, max_message)
        except (trio.TooSlowError, P2PError) as exc:
            failure = exc  # raised below, outside the nursery, so not inside a group
            await _stop_writer(stream, sent, nursery)
        except BaseException:
            await _stop_writer(stream, sent, nursery)
            raise
        else:
            if not sent.is_set():  # answered before taking the whole payload: early refusal
                await _stop_writer(stream, sent, nursery)
    if failure is not None:
        raise failure
    await close_quietly(stream)
    return response


async def _stop_writer(stream: INetStream, sent: trio.Event, nursery: trio.Nursery) -> None:
    """Reset the stream, give the writer a moment to notice, then cancel it if it has not."""
    await reset_quietly(stream)
    with trio.CancelScope(shield=True), trio.move_on_after(WRITER_GRACE):
        await sent.wait()
    nursery.cancel_scope.cancel()


async def _read_response(stream: INetStream, max_message: int) -> Response:
    reader = FrameReader(stream)
    try:
        head = decode_response_head(await reader.take(RESPONSE_HEADER.size), max_message)
    except StreamEnded as exc:
        raise Refused(f"the peer closed the stream without answering ({exc})") from None
    try:
        body = await reader.take(head.length + head.reason_length)
    except StreamEnded as exc:
        raise RemoteP2PError(f"truncated response: {exc}") from None
    return decode_response_body(head, body)

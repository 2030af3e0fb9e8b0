"""The node's local control socket: `DATA_DIR/control.sock`, what `dkms-node status` asks.

Theory of operation. While a node runs it listens on a Unix socket in its data directory
(mode 0600 in a 0700 directory: only its owner may connect). A client connects, sends one
JSON request of at most `MAX_REQUEST` bytes ended by a newline (or by closing its side) within
`READ_TIMEOUT` seconds, and reads one JSON answer, `{"ok": true, ...}` or `{"ok": false,
"error": "..."}`, after which the node closes the connection. At most `MAX_CLIENTS` are
answered at once; one more is told the node is busy. The only request is `{"t": "status"}`.

The socket is made only once the node holds its store's lock, so a socket file already there
was left by a node that was killed: it is replaced. It is removed when the node stops. A
socket path longer than a Unix socket address holds (`sun_path`, 108 bytes with its NUL) cannot
be bound: `socket_path` says so in one line, and the node runs without a control socket.

`RecentLog` is the bounded ring of the last warnings and errors logged, which the status
carries.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import trio

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

SOCKET_FILE: Final = "control.sock"
SUN_PATH: Final = 107  # bytes of a Unix socket path (Linux's sun_path is 108, NUL included)
MAX_REQUEST: Final = 4096  # bytes a client may send
DRAIN: Final = 1 << 20  # bytes read and dropped after answering, for the answer to arrive
READ_TIMEOUT: Final = 2.0  # seconds a client has to send its request
MAX_CLIENTS: Final = 8  # answered at once
RECENT: Final = 20  # warnings and errors kept
RECENT_CHARS: Final = 500  # characters kept of each

Answer = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlError(Exception):
    """The control socket cannot be used; the message says why, in one line."""


def socket_path(data_dir: Path) -> Path:
    """`DATA_DIR/control.sock`, absolute; `ControlError` when it is too long to bind."""
    path = data_dir.absolute() / SOCKET_FILE
    size = len(os.fsencode(path))
    if size > SUN_PATH:
        raise ControlError(
            f"the control socket {path} would be {size} bytes long, over the {SUN_PATH} a Unix"
            " socket path may have: use a shorter --data-dir"
        )
    return path


async def serve_control(
    path: Path, answer: Answer, *, task_status: TaskStatus[Path] = trio.TASK_STATUS_IGNORED
) -> None:
    """Answer requests on the Unix socket `path` until cancelled; remove it on the way out."""
    _clear_stale(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(os.fspath(path))
        # The data directory is 0700, so the moment before chmod exposes nothing.
        os.chmod(path, 0o600)
        inode = os.lstat(path).st_ino
        sock.listen(MAX_CLIENTS)
    except OSError as err:
        sock.close()
        raise ControlError(f"cannot listen on {path}: {err.strerror or err}") from None
    listener = trio.SocketListener(sock)
    slots = trio.Semaphore(MAX_CLIENTS)
    try:
        task_status.started(path)
        async with listener, trio.open_nursery() as nursery:
            while True:
                stream = await listener.accept()
                try:
                    slots.acquire_nowait()
                except trio.WouldBlock:
                    nursery.start_soon(_turn_away, stream)
                    continue
                nursery.start_soon(_serve_one, stream, answer, slots)
    finally:
        with contextlib.suppress(OSError):
            if os.lstat(path).st_ino == inode:  # ours, not a successor's
                os.unlink(path)


def _clear_stale(path: Path) -> None:
    """Remove a socket a killed node left behind; refuse to remove anything else."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as err:
        raise ControlError(f"cannot look at {path}: {err.strerror}") from None
    if not stat.S_ISSOCK(mode):
        raise ControlError(f"{path} exists and is not a socket: move it away")
    try:
        os.unlink(path)
    except OSError as err:
        raise ControlError(f"cannot remove the stale socket {path}: {err.strerror}") from None


async def _serve_one(stream: trio.SocketStream, answer: Answer, slots: trio.Semaphore) -> None:
    try:
        async with stream:
            request = await _read_request(stream)
            if isinstance(request, str):
                reply: dict[str, Any] = {"ok": False, "error": request}
            else:
                try:
                    reply = await answer(request)
                except Exception as err:  # one bad answer must not end the control socket
                    log.exception("control request failed")
                    reply = {"ok": False, "error": f"the node could not answer: {err}"}
                log.debug("control socket: %.40r answered", request.get("t"))
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(json.dumps(reply).encode() + b"\n")
                await _linger(stream)
    finally:
        slots.release()


async def _linger(stream: trio.SocketStream) -> None:
    """End our side, then read what the client still sends (an over-long request) until it
    closes, within bounds: closing a Unix socket with unread data resets the connection, and
    the client would lose the answer."""
    await stream.send_eof()
    drained = 0
    with trio.move_on_after(READ_TIMEOUT):
        while drained < DRAIN and (chunk := await stream.receive_some(65536)):
            drained += len(chunk)


async def _turn_away(stream: trio.SocketStream) -> None:
    async with stream:
        busy = {"ok": False, "error": f"busy: {MAX_CLIENTS} requests in progress, try again"}
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            with trio.move_on_after(READ_TIMEOUT):
                await stream.send_all(json.dumps(busy).encode() + b"\n")
            await _linger(stream)


async def _read_request(stream: trio.SocketStream) -> dict[str, Any] | str:
    """The client's request, or what is wrong with it (a sentence to send back)."""
    data = b""
    with trio.move_on_after(READ_TIMEOUT) as waited:
        while b"\n" not in data and len(data) <= MAX_REQUEST:
            try:
                chunk = await stream.receive_some(MAX_REQUEST + 1 - len(data))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break
            if not chunk:
                break
            data += chunk
    if waited.cancelled_caught:
        return f"no request within {READ_TIMEOUT:g} s"
    line = data.split(b"\n", 1)[0]
    if len(line) > MAX_REQUEST:
        return f"request over {MAX_REQUEST} bytes"
    try:
        request = json.loads(line)
    except ValueError:
        return 'the request is not JSON: send {"t": "status"}'
    if not isinstance(request, dict):
        return 'the request must be a JSON object: {"t": "status"}'
    return request


class RecentLog(logging.Handler):
    """The last `RECENT` warnings and errors logged, each cut to `RECENT_CHARS` characters."""

    def __init__(self, size: int = RECENT) -> None:
        super().__init__(logging.WARNING)
        self._records: collections.deque[dict[str, Any]] = collections.deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a bad format string in someone's log call
            text = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            text += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        if len(text) > RECENT_CHARS:
            text = text[: RECENT_CHARS - 3] + "..."
        self._records.append(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created)),
                "level": record.levelname,
                "message": text,
            }
        )

    def recent(self) -> list[dict[str, Any]]:
        return list(self._records)

"""Serving an `HttpApp` with hypercorn's trio worker, within the node's limits.

hypercorn bounds what happens before the app sees a request: the request line and headers
(`header_bytes`; more is refused), an idle keep-alive connection (closed after `keep_alive`
seconds; the same timer runs while the first request's headers arrive, so a client that
sends them slowly is cut off too). The app bounds the rest: a body within `read_timeout`.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, cast

import trio
from hypercorn.config import Config, Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.typing import Framework
from hypercorn.utils import wrap_app

from .app import HttpApp

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger("dkms.node.http")


def hypercorn_config(host: str, port: int, app: HttpApp) -> Config:
    limits = app.limits
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.h11_max_incomplete_size = limits.header_bytes
    config.h2_max_header_list_size = limits.header_bytes
    config.h2_max_concurrent_streams = limits.max_requests
    config.keep_alive_timeout = limits.keep_alive
    # No read timeout: it would cut a mailbox stream (server-sent events), during which the
    # client sends nothing. Headers are bounded by the keep-alive timer, bodies by the app.
    config.read_timeout = None
    config.graceful_timeout = 1.0
    config.include_server_header = False
    config.accesslog = None
    config.errorlog = log
    return config


class Listening:
    """An app's sockets, bound and listening, not served yet (`listen_http`)."""

    def __init__(self, app: HttpApp, config: Config, sockets: Sockets) -> None:
        self.app, self.config, self.sockets = app, config, sockets

    def close(self) -> None:
        for sock in self.sockets.insecure_sockets:
            sock.close()


def listen_http(app: HttpApp, host: str, port: int) -> Listening:
    """Bind `host:port` (0: any free port) for `app`; `OSError` if it cannot be. Done apart
    from serving so that a caller can fail plainly before it starts any task (inside
    hypercorn's nurseries the error would come out wrapped in exception groups)."""
    config = hypercorn_config(host, port, app)
    # As hypercorn's `Config.create_sockets` binds, but closing the socket when it fails.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.setblocking(False)
        sock.listen(config.backlog)
    except BaseException:
        sock.close()
        raise
    return Listening(app, config, Sockets([], [sock], []))


async def serve_listening(
    listening: Listening, *, task_status: TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve a bound app until cancelled (then its sockets are closed); `task_status` gets
    the URL it listens on (`http://127.0.0.1:8080`)."""
    config = listening.config
    wrapped = wrap_app(cast(Framework, listening.app), config.wsgi_max_body_size, "asgi")

    async def started(task_status: TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        await worker_serve(wrapped, config, sockets=listening.sockets, task_status=task_status)

    try:
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(started)
            task_status.started(binds[0])
    finally:
        listening.close()


async def serve_http(
    app: HttpApp,
    host: str,
    port: int,
    *,
    task_status: TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """`listen_http`, then `serve_listening`."""
    await serve_listening(listen_http(app, host, port), task_status=task_status)

"""Serving an `HttpApp` with hypercorn's trio worker, within the node's limits.

hypercorn bounds what happens before the app sees a request: the request line and headers
(`header_bytes`; more is refused), an idle keep-alive connection (closed after `keep_alive`
seconds; the same timer runs while the first request's headers arrive, so a client that
sends them slowly is cut off too) and each read (`read_timeout`). The app bounds the rest.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, cast

import trio
from hypercorn.config import Config
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
    config.read_timeout = max(1, math.ceil(limits.read_timeout))
    config.graceful_timeout = 1.0
    config.include_server_header = False
    config.accesslog = None
    config.errorlog = log
    return config


async def serve_http(
    app: HttpApp,
    host: str,
    port: int,
    *,
    task_status: TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` on `host:port` (0: any free port) until cancelled; `task_status` gets
    the URL it listens on (`http://127.0.0.1:8080`). A port that cannot be bound raises
    `OSError` before anything starts (bound here, not inside hypercorn's nurseries, where
    it would come out wrapped in three exception groups)."""
    config = hypercorn_config(host, port, app)
    sockets = config.create_sockets()
    for sock in sockets.insecure_sockets:
        sock.listen(config.backlog)
    wrapped = wrap_app(cast(Framework, app), config.wsgi_max_body_size, "asgi")

    async def started(
        task_status: TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await worker_serve(wrapped, config, sockets=sockets, task_status=task_status)

    try:
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(started)
            task_status.started(binds[0])
    finally:
        for sock in sockets.insecure_sockets:
            sock.close()

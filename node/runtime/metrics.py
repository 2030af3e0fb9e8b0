"""Counters and gauges, a minimal Prometheus endpoint (`GET /metrics`, text format 0.0.4), and
`GET /health` beside it.

Counters counted here (`count`) and values read when scraped (`gauge`, and `counted` for a
count kept elsewhere, such as a role's) may carry labels, e.g. `escrow="out-of-order"`.

The endpoint speaks just enough HTTP/1.0 for a scraper, a load balancer's health check or
`curl`; anything else gets a 404 or 400. `/health` answers 200 or 503 with a small JSON body,
`{"status": "ok" | "unhealthy", "peers": N, "reasons": [...]}`, from the `health` callable the
node hands in (`node/status.py`). It listens on 127.0.0.1 unless told otherwise: metrics are for
the operator.
"""

from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import trio

if TYPE_CHECKING:
    # libp2p pulls in trio-typing, whose trio-stubs shadow trio's own types for mypy.
    from trio_typing import TaskStatus

MAX_REQUEST: Final = 8192  # bytes of request head we read before giving up
HEALTH_WAIT: Final = 5.0  # seconds a health check may take before it counts as unhealthy

Health = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]
"""`health() -> (ok, body)`: whether the node is healthy, and the JSON body saying why."""


Labels = tuple[tuple[str, str], ...]


class Metrics:
    """Named counters with optional labels, plus gauges computed when scraped."""

    def __init__(self, prefix: str = "dkms") -> None:
        self.prefix = prefix
        self._counters: defaultdict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(
            float
        )
        self._help: dict[str, str] = {}
        self._gauges: dict[tuple[str, Labels], tuple[str, Callable[[], float]]] = {}
        self._kinds: dict[str, str] = {}  # name of a value read when scraped -> its type

    def count(self, name: str, value: float = 1.0, help: str = "", **labels: str) -> None:
        self._counters[(name, tuple(sorted(labels.items())))] += value
        if help:
            self._help.setdefault(name, help)

    def gauge(self, name: str, read: Callable[[], float], help: str = "", **labels: str) -> None:
        """A value read when scraped (`read()`), under `name` and `labels`."""
        self._gauges[(name, tuple(sorted(labels.items())))] = (help, read)
        self._kinds[name] = "gauge"

    def counted(self, name: str, read: Callable[[], float], help: str = "", **labels: str) -> None:
        """A counter kept elsewhere (it only grows), read when scraped."""
        self._gauges[(name, tuple(sorted(labels.items())))] = (help, read)
        self._kinds[name] = "counter"

    def value(self, name: str, **labels: str) -> float:
        return self._counters.get((name, tuple(sorted(labels.items()))), 0.0)

    def render(self) -> str:
        lines: list[str] = []
        seen: set[str] = set()
        for (name, labels), value in sorted(self._counters.items()):
            full = f"{self.prefix}_{name}_total"
            if name not in seen:
                seen.add(name)
                lines.append(f"# HELP {full} {self._help.get(name, name)}")
                lines.append(f"# TYPE {full} counter")
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            text = _number(value)
            lines.append(f"{full}{{{label_text}}} {text}" if labels else f"{full} {text}")
        for (name, labels), (help_text, read) in sorted(self._gauges.items()):
            kind = self._kinds[name]
            full = f"{self.prefix}_{name}" + ("_total" if kind == "counter" else "")
            if name not in seen:
                seen.add(name)
                lines.append(f"# HELP {full} {help_text or name}")
                lines.append(f"# TYPE {full} {kind}")
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            text = _number(read())
            lines.append(f"{full}{{{label_text}}} {text}" if labels else f"{full} {text}")
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    """Whole numbers in full (byte counts: 4294967296, not 4.29497e+09), others as floats."""
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


async def serve_metrics(
    metrics: Metrics,
    port: int,
    host: str = "127.0.0.1",
    *,
    health: Health | None = None,
    task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `GET /metrics` (and `GET /health` when `health` is given) until cancelled;
    `task_status` receives the bound port."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    task_status.started(bound)
    await trio.serve_listeners(lambda stream: _answer(stream, metrics, health), listeners)


async def _answer(stream: trio.SocketStream, metrics: Metrics, health: Health | None) -> None:
    async with stream:
        head = b""
        with trio.move_on_after(5):
            while b"\r\n\r\n" not in head and len(head) < MAX_REQUEST:
                chunk = await stream.receive_some(1024)
                if not chunk:
                    break
                head += chunk
        request_line = head.split(b"\r\n", 1)[0].split()
        path = request_line[1].split(b"?")[0] if len(request_line) >= 2 else b""
        if len(request_line) < 2 or request_line[0] != b"GET":
            await _send(stream, b"400 Bad Request", b"send GET /metrics\n")
        elif path == b"/metrics":
            await _send(stream, b"200 OK", metrics.render().encode())
        elif path == b"/health" and health is not None:
            ok, body = await _checked(health)
            status = b"200 OK" if ok else b"503 Service Unavailable"
            await _send(stream, status, json.dumps(body).encode() + b"\n", JSON)
        else:
            await _send(stream, b"404 Not Found", b"try /metrics\n")


async def _checked(health: Health) -> tuple[bool, dict[str, Any]]:
    """The node's health, or unhealthy when the check itself hangs (a stuck node is not up)."""
    with trio.move_on_after(HEALTH_WAIT):
        return await health()
    return False, {"status": "unhealthy", "reasons": [f"no health check within {HEALTH_WAIT:g} s"]}


PROMETHEUS: Final = b"text/plain; version=0.0.4"
JSON: Final = b"application/json"


async def _send(
    stream: trio.SocketStream, status: bytes, body: bytes, kind: bytes = PROMETHEUS
) -> None:
    head = (
        b"HTTP/1.0 " + status + b"\r\nContent-Type: " + kind + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(head + body)  # the scraper may have gone away

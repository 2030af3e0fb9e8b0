"""The Prometheus endpoint, over a real socket on 127.0.0.1."""

from __future__ import annotations

import trio

from dkms.node.runtime.metrics import Metrics, serve_metrics


async def fetch(port: int, request: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        data = b""
        while chunk := await stream.receive_some(4096):
            data += chunk
    return data


async def test_metrics_endpoint_serves_counters_and_gauges() -> None:
    metrics = Metrics()
    metrics.count("requests", help="requests answered", surface="/dkms/1/submit")
    metrics.count("requests", 2, surface="/dkms/1/submit")
    metrics.gauge("store_events", lambda: 7, "events in the store")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_metrics, metrics, 0)
            ok = await fetch(port, b"GET /metrics HTTP/1.0\r\n\r\n")
            missing = await fetch(port, b"GET / HTTP/1.0\r\n\r\n")
            bad = await fetch(port, b"POST /metrics HTTP/1.0\r\n\r\n")
            nursery.cancel_scope.cancel()
    assert ok.startswith(b"HTTP/1.0 200 OK")
    assert b'dkms_requests_total{surface="/dkms/1/submit"} 3' in ok
    assert b"# TYPE dkms_store_events gauge\ndkms_store_events 7" in ok
    assert missing.startswith(b"HTTP/1.0 404")
    assert bad.startswith(b"HTTP/1.0 400")

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


def test_labelled_gauges_read_counters_and_whole_numbers_in_full() -> None:
    metrics = Metrics()
    metrics.gauge("escrow_bytes", lambda: 4 << 30, "bytes", escrow="out-of-order")
    metrics.gauge("escrow_bytes", lambda: 0.5, "bytes", escrow='a "quoted" one')
    metrics.counted("evictions", lambda: 3, "evicted")
    metrics.count("requests", 2**40)
    text = metrics.render()
    assert text.count("# TYPE dkms_escrow_bytes gauge") == 1
    assert 'dkms_escrow_bytes{escrow="out-of-order"} 4294967296\n' in text
    assert 'dkms_escrow_bytes{escrow="a \\"quoted\\" one"} 0.5\n' in text
    assert "# TYPE dkms_evictions_total counter\ndkms_evictions_total 3\n" in text
    assert "dkms_requests_total 1099511627776\n" in text

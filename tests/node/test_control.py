"""The control socket, `/health`, the recent-log ring, the minute summary and SIGHUP's reload,
each in this process (real Unix and TCP sockets; the node's parts are stand-ins only where a
unit's own logic is tested). `test_node_status.py` runs them in real node processes."""

from __future__ import annotations

import functools
import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from libp2p.network.connection import swarm_connection  # logs on the root logger

from dkms.node import lockfile
from dkms.node.cli import nodestatus
from dkms.node.p2p.logs import set_log_level
from dkms.node.runtime import control
from dkms.node.runtime.control import ControlError, RecentLog, serve_control, socket_path
from dkms.node.runtime.metrics import Metrics, serve_metrics
from dkms.node.secretfiles import SEED_FILE
from dkms.node.signals import reload_log_level
from dkms.node.status import SUMMARY_EVERY, MinuteSummary, NodeView, disk_problems, judge

from .test_metrics import fetch


async def answer(request: dict[str, Any]) -> dict[str, Any]:
    if request.get("t") == "status":
        return {"ok": True, "status": {"prefix": "Btest", "asked": request}}
    return {"ok": False, "error": "unknown request"}


async def exchange(path: Path, sent: bytes, *, close_write: bool = True) -> dict[str, Any]:
    stream = await trio.open_unix_socket(os.fspath(path))
    async with stream:
        await stream.send_all(sent)
        if close_write:
            await stream.send_eof()
        data = b""
        while chunk := await stream.receive_some(4096):
            data += chunk
    reply: dict[str, Any] = json.loads(data)
    return reply


async def test_control_socket_answers_and_refuses_bad_requests(tmp_path: Path) -> None:
    path = socket_path(tmp_path)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, path, answer)
            mode = os.lstat(path).st_mode
            ok = await exchange(path, b'{"t": "status"}\n', close_write=False)
            no_newline = await exchange(path, b'{"t": "status"}')
            unknown = await exchange(path, b'{"t": "other"}\n')
            not_json = await exchange(path, b"status please\n")
            not_object = await exchange(path, b"[1, 2]\n")
            too_long = await exchange(path, b'{"t": "' + b"x" * control.MAX_REQUEST + b'"}\n')
            nursery.cancel_scope.cancel()
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert ok == {"ok": True, "status": {"prefix": "Btest", "asked": {"t": "status"}}}
    assert no_newline["ok"] is True
    assert unknown == {"ok": False, "error": "unknown request"}
    assert not_json["ok"] is False and "not JSON" in not_json["error"]
    assert not_object["ok"] is False and "JSON object" in not_object["error"]
    assert too_long == {"ok": False, "error": f"request over {control.MAX_REQUEST} bytes"}
    assert not path.exists(), "the socket is removed when the node stops"


async def test_a_silent_client_is_answered_after_the_read_timeout(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    path = socket_path(tmp_path)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, path, answer)
            stream = await trio.open_unix_socket(os.fspath(path))
            # Only now: trio binds a Unix socket in a thread, which autojump cannot see.
            mock_clock.autojump_threshold = 0
            async with stream:
                start = trio.current_time()
                reply = json.loads(await stream.receive_some(4096))
                waited = trio.current_time() - start
            nursery.cancel_scope.cancel()
    assert reply == {"ok": False, "error": f"no request within {control.READ_TIMEOUT:g} s"}
    assert waited == pytest.approx(control.READ_TIMEOUT, abs=0.1)


async def test_clients_beyond_the_limit_are_told_the_node_is_busy(tmp_path: Path) -> None:
    path = socket_path(tmp_path)
    release = trio.Event()

    async def slow(request: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        return {"ok": True, "status": {}}

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, path, slow)
            held = [
                await trio.open_unix_socket(os.fspath(path)) for _ in range(control.MAX_CLIENTS)
            ]
            try:
                for stream in held:
                    await stream.send_all(b'{"t": "status"}\n')
                await trio.testing.wait_all_tasks_blocked()
                busy = await exchange(path, b'{"t": "status"}\n')
                release.set()
                answers = [json.loads(await s.receive_some(4096)) for s in held]
            finally:
                for stream in held:
                    await stream.aclose()
            nursery.cancel_scope.cancel()
    assert busy["ok"] is False and busy["error"].startswith("busy")
    assert all(a == {"ok": True, "status": {}} for a in answers)


async def test_a_stale_socket_is_replaced_and_anything_else_refused(tmp_path: Path) -> None:
    path = socket_path(tmp_path)
    stale = trio.socket.socket(trio.socket.AF_UNIX)
    await stale.bind(os.fspath(path))  # bound, never listening: what a killed node leaves
    stale.close()
    assert path.exists()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, path, answer)
            reply = await exchange(path, b'{"t": "status"}\n')
            nursery.cancel_scope.cancel()
    assert reply["ok"] is True
    path.write_text("not a socket")
    with pytest.raises(ControlError, match="exists and is not a socket"):
        await serve_control(path, answer)
    assert path.read_text() == "not a socket"


def test_a_socket_path_too_long_is_a_one_line_error(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * (control.SUN_PATH - len(os.fsencode(tmp_path)) - 5))
    with pytest.raises(ControlError, match=r"over the 107 a Unix socket path may have"):
        socket_path(deep)
    deep.mkdir()
    (deep / SEED_FILE).write_bytes(b"x" * 32)
    with pytest.raises(ControlError, match="use a shorter --data-dir"):
        nodestatus.ask(deep)


async def test_the_status_client_asks_over_the_socket(tmp_path: Path) -> None:
    (tmp_path / SEED_FILE).write_bytes(b"x" * 32)  # `ask` wants a node's data directory
    with pytest.raises(nodestatus.NotRunning, match=f"no node is running in {tmp_path}"):
        await trio.to_thread.run_sync(nodestatus.ask, tmp_path)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, socket_path(tmp_path), answer)
            status = await trio.to_thread.run_sync(nodestatus.ask, tmp_path)
            nursery.cancel_scope.cancel()
    assert status == {"prefix": "Btest", "asked": {"t": "status"}}
    with pytest.raises(ControlError, match="no node in"):
        nodestatus.ask(tmp_path / "elsewhere")


def test_a_node_holding_its_store_without_a_socket_is_starting(tmp_path: Path) -> None:
    (tmp_path / SEED_FILE).write_bytes(b"x" * 32)
    lock = tmp_path / nodestatus.LOCK_FILE
    fd = lockfile.exclusive(lock)  # what a node holds while it proves its store
    try:
        assert nodestatus.lock_holder(lock) == os.getpid()
        with pytest.raises(ControlError, match=r"\(pid \d+\) does not answer yet: it is starting"):
            nodestatus.ask(tmp_path)
    finally:
        os.close(fd)
    assert nodestatus.lock_holder(lock) is None
    with pytest.raises(nodestatus.NotRunning):
        nodestatus.ask(tmp_path)


async def test_health_endpoint_says_200_or_503_with_the_reasons(
    autojump_clock: trio.testing.MockClock,
) -> None:
    verdicts = iter([(False, {"status": "unhealthy", "reasons": ["no connected neighbours"]})])

    async def health() -> tuple[bool, dict[str, Any]]:
        try:
            return next(verdicts)
        except StopIteration:
            await trio.sleep_forever()  # a stuck node
            raise

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                functools.partial(serve_metrics, health=health), Metrics(), 0
            )
            sick = await fetch(port, b"GET /health HTTP/1.0\r\n\r\n")
            stuck = await fetch(port, b"GET /health HTTP/1.0\r\n\r\n")
            nursery.cancel_scope.cancel()
    assert sick.startswith(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json")
    assert json.loads(sick.split(b"\r\n\r\n", 1)[1])["reasons"] == ["no connected neighbours"]
    assert stuck.startswith(b"HTTP/1.0 503")
    assert b"no health check within 5 s" in stuck


async def test_health_is_404_where_no_check_is_given() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_metrics, Metrics(), 0)
            missing = await fetch(port, b"GET /health HTTP/1.0\r\n\r\n")
            nursery.cancel_scope.cancel()
    assert missing.startswith(b"HTTP/1.0 404")


def test_judge_needs_a_neighbour_and_a_writable_store(tmp_path: Path) -> None:
    assert judge(1, []).ok
    assert judge(1, []).to_json() == {"status": "ok", "peers": 1, "reasons": []}
    alone = judge(0, ["only 12 bytes free on the file system of /x"])
    assert not alone.ok
    assert alone.reasons == (
        "no connected neighbours",
        "store: only 12 bytes free on the file system of /x",
    )
    assert disk_problems(tmp_path) == []
    assert disk_problems(tmp_path, min_free=1 << 62)[0].startswith("only ")
    assert disk_problems(tmp_path / "absent")[0].startswith("cannot look at")


def test_recent_log_keeps_the_last_warnings_cut_short() -> None:
    ring = RecentLog(size=3)
    logger = logging.getLogger("test_control.ring")
    logger.addHandler(ring)
    logger.propagate = False
    try:
        logger.info("not kept: below WARNING")
        for i in range(5):
            logger.warning("warning %d", i)
        logger.error("x" * 2000)
    finally:
        logger.removeHandler(ring)
        logger.propagate = True
    recent = ring.recent()
    assert [r["message"] for r in recent[:2]] == ["warning 3", "warning 4"]
    assert recent[2]["level"] == "ERROR"
    assert len(recent[2]["message"]) == control.RECENT_CHARS


def test_minute_summary_speaks_only_when_something_changed() -> None:
    summary = MinuteSummary((10, 30, 2, 1))
    assert summary.line((10, 30, 2, 1)) is None
    assert summary.line((14, 42, 2, 2)) == (
        "last minute: 4 events and 12 receipts stored; 2 peers; 2 KELs held"
    )
    assert summary.line((14, 42, 2, 2)) is None
    assert summary.line((14, 42, 3, 2)) is not None  # a peer came


async def test_the_summary_loop_logs_once_a_minute_when_something_changed(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    counts = iter([(0, 0, 1, 0), (0, 0, 1, 0), (3, 9, 1, 1), (3, 9, 1, 1)])

    class Counted(NodeView):
        def __init__(self) -> None:  # the loop reads only `counts`: no node behind it
            pass

        def counts(self) -> tuple[int, int, int, int]:
            return next(counts)

    caplog.set_level(logging.INFO, logger="dkms.node")
    with trio.move_on_after(3 * SUMMARY_EVERY + 1):
        await Counted().summarise_forever()
    lines = [r.getMessage() for r in caplog.records if r.name == "dkms.node"]
    assert lines == ["last minute: 3 events and 9 receipts stored; 1 peers; 1 KELs held"]


@pytest.fixture
def root_level() -> Iterator[None]:
    root, libp2p = logging.getLogger(), logging.getLogger("libp2p")
    saved = root.level, libp2p.level, list(root.filters)
    yield
    root.setLevel(saved[0])
    libp2p.setLevel(saved[1])
    root.filters[:] = saved[2]


def test_sighup_applies_the_config_files_log_level(
    tmp_path: Path, root_level: None, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "node.toml"
    config.write_text('log_level = "debug"\n')
    logging.getLogger().setLevel(logging.INFO)
    with caplog.at_level(logging.NOTSET):
        assert reload_log_level(config, "info") == "debug"
        assert logging.getLogger().level == logging.DEBUG
        assert logging.getLogger("libp2p").level == logging.NOTSET  # libp2p speaks at debug
        config.write_text('[node]\nlog_level = "warning"\n')
        assert reload_log_level(config, "debug") == "warning"
        assert logging.getLogger().level == logging.WARNING
        assert logging.getLogger("libp2p").level == logging.CRITICAL
        config.write_text('log_level = "loud"\n')
        assert reload_log_level(config, "warning") == "warning"
        config.write_text("role = 'witness'\n")
        assert reload_log_level(config, "warning") == "warning"  # said at INFO: not shown
        set_log_level("info")
        assert reload_log_level(config, "info") == "info"
        assert reload_log_level(None, "info") == "info"
    said = [r.getMessage() for r in caplog.records if r.name == "dkms.node"]
    assert said[0] == f"SIGHUP: log level info -> debug (from {config})"
    assert said[1] == f"SIGHUP: log level debug -> warning (from {config})"
    assert "log_level must be debug, info, warning or error, not 'loud'" in said[2]
    assert said[2].endswith("the log level stays warning")
    assert said[3] == f"SIGHUP: {config} sets no log_level; the log level stays info"
    assert said[4].startswith("SIGHUP ignored: started without --config")
    assert len(said) == 5


def test_libp2p_root_logger_warnings_only_at_debug(
    root_level: None, caplog: pytest.LogCaptureFixture
) -> None:
    record = logging.LogRecord(
        "root", logging.WARNING, swarm_connection.__file__, 1, "Error closing muxed", None, None
    )
    ours = logging.LogRecord("root", logging.WARNING, __file__, 1, "ours", None, None)
    set_log_level("info")
    root = logging.getLogger()
    assert not root.filter(record) and root.filter(ours)
    set_log_level("debug")
    assert root.filter(record)


def test_the_human_summary_names_what_is_wrong() -> None:
    status = {
        "role": "watcher",
        "prefix": "Bx",
        "uptime": 3725.2,
        "pid": 7,
        "health": {"status": "unhealthy", "peers": 1, "reasons": ["store: only 3 bytes free"]},
        "introductions": ["Bx@/ip4/127.0.0.1/tcp/1"],
        "peers": [
            {"prefix": "By", "address": "/ip4/127.0.0.1/tcp/2", "direction": "in", "score": -1.5}
        ],
        "peer_count": 1,
        "mesh": {"/a": 0, "/b": 2},
        "roster_epoch": 3,
        "kels": 2,
        "events": 5,
        "receipts": 9,
        "escrows": {"out-of-order": {"entries": 1, "bytes": 2048}},
        "store": {"stored_bytes": 100, "quota": 4 << 30, "file_bytes": 90000},
        "recent": [{"time": "2026-01-01T00:00:00", "level": "WARNING", "message": "isolated"}],
    }
    assert nodestatus.summary(status) == [
        "watcher Bx, up 1h2m (pid 7)",
        "health:   unhealthy: store: only 3 bytes free",
        "address:  Bx@/ip4/127.0.0.1/tcp/1",
        "peers:    1 (1 in, 0 out)",
        "  By  in      /ip4/127.0.0.1/tcp/2  score -1.5",
        "mesh:     2 topics, 0 to 2 peers each (1 with none)",
        "roster:   epoch 3",
        "held:     2 KELs, 5 events, 9 receipts",
        "escrows:  1 entries, 2.0 KiB",
        "store:    100 B of 4.0 GiB (store_quota), 87.9 KiB on disk",
        "recent warnings and errors:",
        "  2026-01-01T00:00:00 WARNING isolated",
    ]

"""Ctrl-C in a `dkms` or `dkms-node` command: one line on stderr, exit status 130, no traceback.

The commands run as real processes and get a real SIGINT while they wait on a peer that
accepted their connection and never answers (a silent listener on 127.0.0.1): the moment
the listener sees the connection is when the command is busy with it. Under trio the
interrupt may come out of a nursery wrapped in exception groups, beside what the cancelled
tasks raised: `interrupt.said` finds it at any depth, which the unit tests below show.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from dkms.node.cli.interrupt import Said, said
from dkms.protocol.crypto import Signer

from .test_idcmd import PASS, closed_port, dkms, witnesses

DKMS = [sys.executable, "-m", "dkms.node.cli"]
DKMS_NODE = [sys.executable, "-m", "dkms.node.cli.node"]


def test_an_interrupt_is_found_in_nested_groups(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dkms.node.cli.interrupt._said", [])
    group = BaseExceptionGroup(
        "nursery", [trio.ClosedResourceError(), ExceptionGroup("inner", [ValueError()])]
    )
    assert not said("dkms", group)  # no Ctrl-C in it: not ours to swallow
    deep = BaseExceptionGroup(
        "nursery", [ValueError(), BaseExceptionGroup("x", [KeyboardInterrupt()])]
    )
    assert said("dkms", deep) and said("dkms", KeyboardInterrupt())
    assert capsys.readouterr().err == "dkms: interrupted\n"  # once per process, however asked


def test_a_command_that_said_its_line_is_not_repeated(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dkms.node.cli.interrupt._said", [])
    assert said("dkms", BaseExceptionGroup("nursery", [Said()]))
    assert capsys.readouterr().err == ""


@asynccontextmanager
async def silent(port: int = 0) -> AsyncIterator[tuple[int, trio.Event]]:
    """A port on 127.0.0.1 that accepts connections and never answers, and an event set at
    its first connection."""
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    connected = trio.Event()

    async def hold(stream: trio.SocketStream) -> None:
        connected.set()
        async with stream:
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, hold, listeners)
        yield listeners[0].socket.getsockname()[1], connected
        nursery.cancel_scope.cancel()


def _default_sigint() -> None:
    # SIGINT as from a terminal, even if the suite runs with it ignored (a shell without job
    # control starts background jobs so, and children inherit that).
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def interrupted(command: list[str], connected: trio.Event) -> tuple[int, list[str]]:
    """Start `command`, send it SIGINT once the silent peer has its connection; its exit
    status and the lines of its stderr."""
    process = await trio.lowlevel.open_process(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_default_sigint,
    )
    assert process.stderr is not None
    err = b""
    try:
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                nonlocal err
                assert process.stderr is not None
                async for chunk in process.stderr:
                    err += chunk

            nursery.start_soon(read)
            await connected.wait()
            process.send_signal(signal.SIGINT)
            status = await process.wait()
    finally:
        with trio.CancelScope(shield=True):  # reaped even when the test timed out
            if process.returncode is None:
                process.kill()
                await process.wait()
            await process.stderr.aclose()
    return status, err.decode(errors="replace").splitlines()


@pytest.mark.slow  # real processes and signals
async def test_ctrl_c_while_interact_waits_for_a_silent_witness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DKMS_PASSPHRASE", PASS)
    home, port = tmp_path / "home", closed_port()
    with trio.fail_after(90):
        async with witnesses(tmp_path, 1, ports=[port]) as (host,):
            assert await dkms(home, "id", "create", "alice", "--witness", host.introduction) == 0
        kel = (home / "kels" / "alice.cesr").read_bytes()
        async with silent(port) as (_, connected):  # the witness's address, now mute
            argv = ["--home", str(home), "id", "interact", "alice", "--data", "{}"]
            status, lines = await interrupted([*DKMS, *argv], connected)
    assert status == 130
    assert lines == [
        "dkms: interrupted while working on alice: an event it made is kept, and running the"
        " same command again finishes it"
    ]
    assert (home / "kels" / "alice.cesr").read_bytes() == kel  # not witnessed: not in the KEL


@pytest.mark.slow
async def test_ctrl_c_while_a_query_waits_is_one_line(tmp_path: Path) -> None:
    prefix = Signer(os.urandom(32), transferable=False).verfer
    with trio.fail_after(60):
        async with silent() as (port, connected):
            node = f"{prefix}@/ip4/127.0.0.1/tcp/{port}"
            argv = ["--home", str(tmp_path / "home"), "keystate", prefix, "--from", node]
            status, lines = await interrupted([*DKMS, *argv], connected)
    assert (status, lines) == (130, ["dkms: interrupted"])


@pytest.mark.slow
async def test_ctrl_c_while_a_node_dials_its_bootstrap_is_one_line(tmp_path: Path) -> None:
    prefix = Signer(os.urandom(32), transferable=False).verfer
    with trio.fail_after(60):
        async with silent() as (port, connected):
            argv = ["run", "--data-dir", str(tmp_path / "node"), "--log-level", "warning"]
            argv += ["--bootstrap", f"{prefix}@/ip4/127.0.0.1/tcp/{port}"]
            status, lines = await interrupted([*DKMS_NODE, *argv], connected)
    assert (status, lines) == (130, ["dkms-node: interrupted"])

"""A controller that cannot equivocate by accident (issue 12), against real witnesses.

Witnesses run in-process on 127.0.0.1 (`test_idcmd.witnesses`); commands run through
`amain(argv)`, or, where what matters is several processes at once or a signal, as real
`python -m dkms.node.cli` processes:

- ten `dkms id interact` at once on one home wait for each other and make ten consecutive
  events, none at a sequence number another took;
- Ctrl-C while a command waits for the identifier ends it with one line, status 130;
- a failed `dkms id create` with a wrong address leaves the address book, and so every other
  identifier of the home, as it was;
- `dkms id abandon` frees the name of an inception no witness accepted, and refuses (or asks
  for `--yes`) when a witness accepted it or may hold it;
- a retry with other flags than the pending event's stops and names them;
- a witness's conflict refusal is told apart by its code: no advice to run it again.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from dkms.node import lockfile
from dkms.node.client.home import Home
from dkms.node.client.keystore import Keystore
from dkms.node.client.session import Session
from dkms.protocol.crypto import Signer

from .test_idcmd import PASS, Capture, as_json, closed_port, dkms, one_error_line, record, witnesses

CLI = [sys.executable, "-m", "dkms.node.cli"]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DKMS_PASSPHRASE", PASS)  # the processes started inherit it
    return tmp_path / "home"


def offline_intro() -> tuple[str, str]:
    """(prefix, introduction) of a witness nobody runs, at a port nobody listens on."""
    prefix = Signer(os.urandom(32), transferable=False).verfer
    return prefix, f"{prefix}@/ip4/127.0.0.1/tcp/{closed_port()}"


@asynccontextmanager
async def silent_listener() -> AsyncIterator[int]:
    """A port on 127.0.0.1 that accepts connections and never says a word: a witness that
    may have received whatever was sent to it, as far as its sender can tell."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    streams: list[trio.SocketStream] = []

    async def hold(stream: trio.SocketStream) -> None:
        streams.append(stream)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, hold, listeners)
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- one at a time


@pytest.mark.slow  # real processes
async def test_ten_interactions_at_once_make_ten_consecutive_events(
    tmp_path: Path, home: Path, capsys: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="dkms.node")
    with trio.fail_after(150):
        async with witnesses(tmp_path, 2) as hosts:
            flags = [arg for h in hosts for arg in ("--witness", h.introduction)]
            assert await dkms(home, "id", "create", "alice", *flags) == 0
            prefix = capsys.readouterr().out.split()[2]

            async def interact(n: int, done: list[subprocess.CompletedProcess[bytes]]) -> None:
                argv = ["--home", str(home), "id", "interact", "alice", "--data", f'{{"n": {n}}}']
                done.append(
                    await trio.run_process(
                        [*CLI, *argv], capture_stdout=True, capture_stderr=True, check=False
                    )
                )

            done: list[subprocess.CompletedProcess[bytes]] = []
            async with trio.open_nursery() as nursery:
                for n in range(10):
                    nursery.start_soon(interact, n, done)

            for process in done:
                assert process.returncode == 0, process.stderr.decode()
                for line in process.stderr.decode().splitlines():  # at most a note it waited
                    # The holder's pid, or "another process" when the lock was read in the
                    # instant between the holder taking it and writing its pid there.
                    assert re.fullmatch(
                        r"dkms: waiting for (process \d+|another process),"
                        r" which is changing alice \.\.\.",
                        line,
                    ), line
            sns = sorted(int(p.stdout.decode().split()[6]) for p in done)
            assert sns == list(range(1, 11))

            made = {p.stdout.decode().split()[8] for p in done}  # `... sn N (ixn)  SAID`
            shown = await as_json(capsys, home, "id", "show", "alice")
            assert shown["sn"] == 10 and [n for n, _ in shown["fel"]] == list(range(11))
            assert {said for _, said in shown["fel"][1:]} == made
            for host in hosts:  # each witness holds the same ten, fully witnessed
                state = await as_json(capsys, home, "keystate", prefix, "--from", host.introduction)
                assert state["fel"] == shown["fel"] and state["fully_witnessed"]
    noted = [r.getMessage() for r in caplog.records]
    assert not [m for m in noted if "duplicitous" in m or "conflict" in m], noted


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow  # a real process and a real signal
async def test_ctrl_c_while_waiting_ends_with_one_line(home: Path) -> None:
    with trio.fail_after(60):
        assert await dkms(home, "id", "create", "solo") == 0  # local only
        before = (home / "kels" / "solo.cesr").read_bytes()
        keystore = Keystore.open(home, PASS)
        async with Session.held(Home(home), "solo", keystore):
            argv = ["--home", str(home), "id", "interact", "solo", "--data", "{}"]
            # SIGINT handled as from a terminal even if the suite runs with it ignored (a shell
            # without job control starts background jobs so, and children inherit that).
            process = await trio.lowlevel.open_process(
                [*CLI, *argv],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                preexec_fn=_default_sigint,
            )
            assert process.stderr is not None
            try:
                err = b""
                while b"\n" not in err:  # the line that says it waits
                    chunk = await process.stderr.receive_some()
                    assert chunk, err
                    err += chunk
                assert f"waiting for process {os.getpid()}".encode() in err
                process.send_signal(signal.SIGINT)
                async for chunk in process.stderr:
                    err += chunk
                assert await process.wait() == 130
            finally:
                with trio.CancelScope(shield=True):  # reaped even when the test timed out
                    if process.returncode is None:
                        process.kill()
                        await process.wait()
                    await process.stderr.aclose()
        lines = err.decode().splitlines()
        assert lines == [
            f"dkms: waiting for process {os.getpid()}, which is changing solo ...",
            "dkms: interrupted while waiting for solo: nothing changed",
        ]
        assert (home / "kels" / "solo.cesr").read_bytes() == before


async def test_a_cancelled_wait_leaves_no_lock_behind(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    with trio.fail_after(10):
        told = trio.Event()
        holder = lockfile.exclusive(path)
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def wait() -> None:
                    await lockfile.waited(path, lambda _: told.set())

                nursery.start_soon(wait)
                await told.wait()
                scope.cancel()
        os.close(holder)
        # The abandoned waiter takes the lock once free and lets it go again at once:
        # a new waiter gets it.
        fd = await lockfile.waited(path, lambda _: None)
        os.close(fd)


# ---------------------------------------------------------------- the address book


async def test_a_failed_create_with_a_wrong_address_changes_no_other_identifier(
    tmp_path: Path, home: Path, capsys: Capture
) -> None:
    with trio.fail_after(40):
        async with witnesses(tmp_path, 2) as hosts:
            flags = [arg for h in hosts for arg in ("--witness", h.introduction)]
            assert await dkms(home, "id", "create", "alice", *flags) == 0
            book = (home / "witnesses.json").read_bytes()
            capsys.readouterr()

            # The prefix of a witness alice uses, at a port where nothing listens.
            wrong = f"{hosts[0].prefix}@/ip4/127.0.0.1/tcp/{closed_port()}"
            assert (
                await dkms(home, "id", "create", "bob", "--witness", wrong, "--timeout", "3") == 1
            )
            assert hosts[0].prefix in one_error_line(capsys)
            assert (home / "witnesses.json").read_bytes() == book

            assert await dkms(home, "id", "interact", "alice", "--data", '{"d": 1}') == 0
            assert "sn 1 (ixn)" in capsys.readouterr().out

            # The same inception with the right address: finished, and nothing else changes.
            right = ["--witness", hosts[0].introduction]
            assert await dkms(home, "id", "create", "bob", *right) == 0
            assert "finishing the inception of bob" in capsys.readouterr().out
            assert (home / "witnesses.json").read_bytes() == book


# ---------------------------------------------------------------- id abandon


async def test_abandon_frees_a_stuck_name(tmp_path: Path, home: Path, capsys: Capture) -> None:
    with trio.fail_after(60):
        async with witnesses(tmp_path, 1) as hosts:
            good = ["--witness", hosts[0].introduction]
            _, offline = offline_intro()
            create = ["id", "create", "bob", "--witness", offline, "--timeout", "3"]
            assert await dkms(home, *create) == 1
            assert "dkms id abandon bob" in one_error_line(capsys)
            stuck = record(home, "bob")["pending"]["said"]

            assert await dkms(home, "id", "create", "bob", *good) == 1  # other flags
            assert "unfinished inception" in one_error_line(capsys)

            # Nobody could have received it (no connection was ever made): no --yes needed.
            assert await dkms(home, "id", "abandon", "bob") == 0
            assert "the name is free" in capsys.readouterr().out
            assert not (home / "keys" / "bob.key").exists()
            assert not (home / "abandoned").exists()

            assert await dkms(home, "id", "create", "bob", *good) == 0
            made = capsys.readouterr().out
            assert "created bob" in made and stuck not in made
            assert await dkms(home, "id", "interact", "bob", "--data", "{}") == 0

            assert await dkms(home, "id", "abandon", "bob") == 1
            assert "cannot be abandoned" in one_error_line(capsys)
            assert await dkms(home, "id", "abandon", "nobody") == 1
            assert "no identifier named 'nobody'" in one_error_line(capsys)


async def test_abandon_refuses_what_a_witness_accepted(
    tmp_path: Path, home: Path, capsys: Capture
) -> None:
    with trio.fail_after(40):
        async with witnesses(tmp_path, 1) as hosts:
            _, offline = offline_intro()
            # One witness accepts it, the other cannot be reached: bt 2 is not met.
            flags = ["--witness", hosts[0].introduction, "--witness", offline, "--timeout", "3"]
            assert await dkms(home, "id", "create", "carol", *flags) == 1
            capsys.readouterr()
            assert await dkms(home, "id", "abandon", "carol", "--yes") == 1
            line = one_error_line(capsys)
            assert f"witness {hosts[0].prefix} accepted the inception of carol" in line
            assert (home / "keys" / "carol.key").exists()


async def test_abandon_asks_for_yes_when_a_witness_may_hold_it(home: Path, capsys: Capture) -> None:
    with trio.fail_after(40):
        async with silent_listener() as port:
            prefix = Signer(os.urandom(32), transferable=False).verfer
            silent = f"{prefix}@/ip4/127.0.0.1/tcp/{port}"
            create = ["id", "create", "dan", "--witness", silent, "--timeout", "2"]
            assert await dkms(home, *create) == 1
            capsys.readouterr()
        pending = record(home, "dan")["pending"]
        assert pending["fates"] == {prefix: "MAYBE"} and not pending["pushing"]

        assert await dkms(home, "id", "abandon", "dan") == 1
        line = one_error_line(capsys)
        assert f"may have reached witness {prefix} (it never answered)" in line
        assert "--yes" in line
        assert (home / "keys" / "dan.key").exists()

        assert await dkms(home, "id", "abandon", "dan", "--yes") == 0
        kept = home / "abandoned" / f"dan.{pending['said']}.key"
        assert str(kept) in capsys.readouterr().out
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
        assert "dan" not in Home(home).names()


# ---------------------------------------------------------------- retries


async def test_a_retry_with_other_flags_stops_and_names_them(
    tmp_path: Path, home: Path, capsys: Capture
) -> None:
    with trio.fail_after(60):
        async with witnesses(tmp_path, 1) as hosts:
            w, offline = offline_intro()
            first = ["--witness", offline, "--timeout", "2"]
            assert await dkms(home, "id", "create", "eve", *first) == 1
            capsys.readouterr()
            other = ["--witness", hosts[0].introduction, "--keys", "2", "--timeout", "2"]
            assert await dkms(home, "id", "create", "eve", *other) == 1
            line = one_error_line(capsys)
            assert f"--witness [{w}] then, [{hosts[0].prefix}] now" in line
            assert "--keys 1 then, 2 now" in line and "--toad" not in line
            assert "dkms id abandon eve" in line
            assert record(home, "eve")["pending"]["witnesses"] == [w]  # nothing remade

            # A rotation adding a witness nobody runs stays pending...
            assert (
                await dkms(home, "id", "create", "frank", "--witness", hosts[0].introduction) == 0
            )
            add = ["id", "rotate", "frank", "--add-witness", offline, "--timeout", "2"]
            assert await dkms(home, *add) == 1
            capsys.readouterr()
            pending = record(home, "frank")["pending"]
            # ... and neither another rotation nor an interaction is made on top of it.
            assert await dkms(home, *add, "--toad", "1") == 1
            assert "--toad 2 then, 1 now" in one_error_line(capsys)
            assert await dkms(home, "id", "interact", "frank", "--data", "{}") == 1
            line = one_error_line(capsys)
            assert "unfinished rotation (sn 1)" in line and f"--add-witness [{w}]" in line
            assert record(home, "frank")["pending"] == pending
            shown = await as_json(capsys, home, "id", "show", "frank")
            assert shown["sn"] == 0


async def test_a_conflict_is_told_apart_by_its_code(
    tmp_path: Path, home: Path, capsys: Capture
) -> None:
    """Two copies of one home (a backup restored, say) each sign an event at sn 1: the
    witnesses hold the first and refuse the second as a conflict, which no retry can mend."""
    with trio.fail_after(40):
        async with witnesses(tmp_path, 2) as hosts:
            flags = [arg for h in hosts for arg in ("--witness", h.introduction)]
            assert await dkms(home, "id", "create", "gail", *flags) == 0
            copy = tmp_path / "copy"
            shutil.copytree(home, copy)
            assert await dkms(home, "id", "interact", "gail", "--data", '{"d": "one"}') == 0
            capsys.readouterr()

            assert await dkms(copy, "id", "interact", "gail", "--data", '{"d": "two"}') == 1
            line = one_error_line(capsys)
            assert "hold another version of it (refused as a conflict)" in line
            assert "cannot help" in line and "run the same command again" not in line
            assert record(copy, "gail")["pending"]["refusals"] == {
                h.prefix: "CONFLICT" for h in hosts
            }
            assert await dkms(copy, "id", "interact", "gail", "--data", '{"d": "three"}') == 1
            line = one_error_line(capsys)
            assert "another version of it" in line and "no event can be made" in line

"""`dkms id ...`, `dkms kel submit|export`, `dkms keystate` against real witnesses on 127.0.0.1.

Witnesses run in-process (`daemon.serve`: libp2p hosts, SQLite stores); each command runs
through `amain(argv)` as the command line would run it, with a fast keystore cost and quick
retries (`Options`).
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import socket
import stat
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from dkms.node import lockfile
from dkms.node.cli.main import amain, main
from dkms.node.client.home import Home, Options
from dkms.node.client.keystore import MINIMUM, Keystore
from dkms.node.client.session import Session
from dkms.node.config import NodeConfig
from dkms.node.daemon import serve
from dkms.node.p2p import P2PHost
from dkms.node.roles.controller import Controller, RetryPolicy
from dkms.node.roles.effects import Send
from dkms.node.secretfiles import SEED_FILE
from dkms.protocol.crypto import Signer

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
PASS = "correct horse battery staple"
BASIC = Path(__file__).parents[1] / "vectors" / "keri-v1" / "cbor" / "basic.cesr"


def _no_prompt(prompt: str) -> str:
    raise AssertionError(f"unexpected passphrase prompt {prompt!r}")


OPTIONS = Options(cost=MINIMUM, retry=RetryPolicy(first=0.05, cap=0.1, attempts=2), ask=_no_prompt)
Capture = pytest.CaptureFixture[str]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DKMS_PASSPHRASE", PASS)
    return tmp_path / "home"


@asynccontextmanager
async def witnesses(
    tmp_path: Path, count: int, *, seeds: list[bytes] | None = None, ports: list[int] | None = None
) -> AsyncIterator[list[P2PHost]]:
    async with trio.open_nursery() as nursery:
        hosts = []
        for i in range(count):
            data = tmp_path / f"w{i}-{os.urandom(4).hex()}"
            if seeds is not None:  # a witness whose prefix is known before it starts
                data.mkdir()
                (data / SEED_FILE).write_bytes(seeds[i])
                (data / SEED_FILE).chmod(0o600)
            listen = f"/ip4/127.0.0.1/tcp/{ports[i]}" if ports else LOOPBACK
            config = NodeConfig(data_dir=data, listen=listen)
            hosts.append(
                await nursery.start(functools.partial(serve, config, announce=lambda _: None))
            )
        yield hosts
        nursery.cancel_scope.cancel()


async def dkms(home: Path, *argv: str, options: Options = OPTIONS) -> int:
    return await amain(["--home", str(home), *argv], options)


async def as_json(capsys: Capture, home: Path, *argv: str) -> Any:
    capsys.readouterr()
    assert await dkms(home, *argv, "--json") == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def one_error_line(capsys: Capture) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dkms: ") and "Traceback" not in err
    return lines[0]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def record(home: Path, name: str) -> dict[str, Any]:
    return Keystore.open(home, PASS).load(name)


# ---------------------------------------------------------------- the whole life


async def test_create_rotate_interact_show_export_keystate(
    tmp_path: Path, home: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(30):
        async with witnesses(tmp_path, 5) as hosts:
            intros = [h.introduction for h in hosts]
            w = [h.prefix for h in hosts]
            flags = [arg for intro in intros[:4] for arg in ("--witness", intro)]
            assert await dkms(home, "id", "create", "alice", *flags, "--toad", "3") == 0
            out = capsys.readouterr().out
            assert "created alice" in out and "bt 3" in out
            prefix = out.split()[2]
            first = record(home, "alice")
            assert first["prefix"] == prefix and first["pending"] is None

            cut_add = ["--cut-witness", w[0], "--add-witness", intros[4], "--toad", "3"]
            assert await dkms(home, "id", "rotate", "alice", *cut_add) == 0
            assert "rotated alice" in capsys.readouterr().out
            second = record(home, "alice")
            assert second["current"] == first["next"]
            assert second["history"] == [{"sn": 1, "current": first["current"]}]

            data = '{"hello": "world"}'
            assert await dkms(home, "id", "interact", "alice", "--data", data) == 0

            shown = await as_json(capsys, home, "id", "show", "alice")
            assert (shown["prefix"], shown["sn"], shown["et"], shown["bt"]) == (prefix, 2, "ixn", 3)
            assert shown["b"] == w[1:]
            assert shown["introductions"] == dict(zip(w[1:], intros[1:], strict=True))
            assert [n for n, _ in shown["fel"]] == [0, 1, 2]

            assert await dkms(home, "id", "list") == 0
            assert f"alice  {prefix}  2" in capsys.readouterr().out

            # Every current witness, including the one added by the rotation, holds the
            # fully witnessed KEL and serves a key state its KEL proves.
            for intro in intros[1:]:
                state = await as_json(capsys, home, "keystate", prefix, "--from", intro)
                assert (state["sn"], state["d"]) == (2, shown["d"])
                assert state["fully_witnessed"] and state["verified"]
                # At least bt: the controller shares receipts once bt are in (a laggard's
                # receipt reaches the others only by gossip).
                assert len(state["receipts"][shown["d"]]) >= 3
                assert state["fel"] == shown["fel"]

            out_file = io.TextIOWrapper(io.BytesIO())
            monkeypatch.setattr(sys, "stdout", out_file)
            assert await dkms(home, "kel", "export", "alice") == 0
            out_file.flush()
            kel = out_file.buffer.getvalue()
            monkeypatch.undo()
            (tmp_path / "alice.cesr").write_bytes(kel)
            capsys.readouterr()
            assert main(["kel", "verify", "--json", str(tmp_path / "alice.cesr")]) == 0
            report = json.loads(capsys.readouterr().out)
            assert report["identifiers"][prefix]["sn"] == 2
            assert {m["status"] for m in report["messages"]} == {"accepted"}

    for path in (home / "keystore.json", home / "keys" / "alice.key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


# ---------------------------------------------------------------- kel submit


async def test_submit_a_kel_made_elsewhere(tmp_path: Path, capsys: Capture) -> None:
    with trio.fail_after(20):
        async with witnesses(tmp_path, 2) as hosts:
            intros, w = [h.introduction for h in hosts], [h.prefix for h in hosts]
            # A controller makes the inception; we keep its message instead of pushing it.
            ctl = Controller()
            effects = ctl.incept("x", [os.urandom(32)], [os.urandom(32)], witnesses=w, now=0.0)
            sends = [e for e in effects if isinstance(e, Send)]
            kel_file = tmp_path / "made.cesr"
            kel_file.write_bytes(sends[0].payload)
            prefix = ctl.identity("x").prefix

            argv = ["kel", "submit", str(kel_file), "--to", *intros, "--json"]
            assert await amain(argv, OPTIONS) == 0
            answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
            assert sorted(a["witness"] for a in answers) == sorted(w)
            for answer in answers:
                assert answer["ok"] and answer["shared"] == "ok"
                assert [e["receipted"] for e in answer["events"]] == [True]

            state = await as_json(capsys, tmp_path, "keystate", prefix, "--from", intros[1])
            assert state["fully_witnessed"] and state["verified"]
            assert sorted(state["receipts"][state["d"]]) == sorted(w)

            # A KEL that does not name the witness (keripy's basic.cesr, bt 0) is refused.
            assert await amain(["kel", "submit", str(BASIC), "--to", intros[0]], OPTIONS) == 1
            captured = capsys.readouterr()
            assert "not a designated witness" in captured.out
            assert "1 of 1 witnesses refused" in captured.err


# ---------------------------------------------------------------- local and failures


async def test_local_only_identifier_through_main(home: Path, capsys: Capture) -> None:
    async def dkms_main(*argv: str) -> int:
        # `main` runs its own trio loop, so it runs in a thread of its own here.
        call = functools.partial(main, ["--home", str(home), *argv], OPTIONS)
        status: int = await trio.to_thread.run_sync(call)
        return status

    with trio.fail_after(20):
        assert await dkms_main("id", "create", "solo", "--toad", "0") == 0
        assert "witnesses 0, bt 0" in capsys.readouterr().out
        assert await dkms_main("id", "rotate", "solo") == 0
        assert await dkms_main("id", "interact", "solo", "--data", "[1, 2]") == 0
        assert await dkms_main("id", "show", "solo", "--json") == 0
        shown = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert (shown["sn"], shown["b"], shown["bt"], shown["introductions"]) == (2, [], 0, {})

        assert await dkms_main("id", "create", "solo") == 1
        assert "exists already" in one_error_line(capsys)


async def test_errors_a_user_can_cause_are_one_line(
    tmp_path: Path, home: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(20):
        assert await dkms(home, "id", "create", "solo") == 0
        capsys.readouterr()

        wrong = tmp_path / "wrong"
        wrong.write_text("not the passphrase\n")
        wrong.chmod(0o600)
        assert await dkms(home, "id", "rotate", "solo", "--passphrase-file", str(wrong)) == 1
        assert "wrong passphrase" in one_error_line(capsys)

        assert await dkms(home, "id", "interact", "nobody", "--data", "{}") == 1
        assert "no identifier named 'nobody'" in one_error_line(capsys)
        assert await dkms(home, "id", "show", "nobody") == 1
        assert "no identifier named 'nobody'" in one_error_line(capsys)

        assert await dkms(home, "id", "create", "bad", "--witness", "B123@/ip4/1.2.3.4") == 1
        assert "bad witness introduction" in one_error_line(capsys)
        assert await dkms(home, "id", "interact", "solo", "--data", "7") == 1
        assert "JSON object or a list" in one_error_line(capsys)

        # A new keystore asks for the passphrase twice, and both must agree.
        monkeypatch.delenv("DKMS_PASSPHRASE")
        answers = iter(["one", "two"])
        prompting = Options(cost=MINIMUM, ask=lambda _: next(answers))
        assert await dkms(tmp_path / "other", "id", "create", "x", options=prompting) == 1
        assert "passphrases differ" in one_error_line(capsys)

        closed = f"{Signer(os.urandom(32), transferable=False).verfer}@/ip4/127.0.0.1/tcp/1"
        assert await amain(["keystate", "Eabc", "--from", closed, "--timeout", "2"], OPTIONS) == 1
        assert "cannot reach" in one_error_line(capsys)


async def test_unreachable_witness_then_the_same_command_finishes_the_event(
    tmp_path: Path, home: Path, capsys: Capture
) -> None:
    with trio.fail_after(25):
        seeds = [os.urandom(32), os.urandom(32)]
        w = [Signer(s, transferable=False).verfer for s in seeds]
        ports = [closed_port(), closed_port()]
        intros = [f"{p}@/ip4/127.0.0.1/tcp/{port}" for p, port in zip(w, ports, strict=True)]
        create = ["id", "create", "bob", "--witness", intros[0], "--timeout", "5"]

        # Nobody listens yet: the inception fails, its keys stay in the keystore.
        assert await dkms(home, *create) == 1
        line = one_error_line(capsys)
        assert w[0] in line and "run the same command again" in line
        pending = record(home, "bob")["pending"]
        assert pending["op"] == "icp"
        assert await dkms(home, "id", "show", "bob") == 1
        assert "no fully witnessed inception" in one_error_line(capsys)

        async with witnesses(tmp_path, 1, seeds=seeds[:1], ports=ports[:1]):
            assert await dkms(home, *create) == 0
            out = capsys.readouterr().out
            assert pending["said"] in out  # the very same inception, now witnessed
            assert record(home, "bob")["pending"] is None

            rotate = ["id", "rotate", "bob", "--add-witness", intros[1], "--toad", "2"]
            assert await dkms(home, *rotate, "--timeout", "5") == 1
            assert w[1] in one_error_line(capsys)
            pending = record(home, "bob")["pending"]
            assert pending["op"] == "rot"

            async with witnesses(tmp_path, 1, seeds=seeds[1:], ports=ports[1:]):
                assert await dkms(home, *rotate) == 0
                captured = capsys.readouterr()
                assert "finishing the rotation" in captured.out
                assert pending["said"] in captured.out
                kept = record(home, "bob")
                assert kept["pending"] is None and len(kept["history"]) == 1
                shown = await as_json(capsys, home, "id", "show", "bob")
                assert (shown["sn"], shown["b"], shown["bt"]) == (1, w, 2)


async def test_a_second_command_on_a_held_identifier_waits_its_turn(
    home: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two commands on one identifier at once could sign two events at one sn (duplicity):
    while one holds the identifier's session, another waits (saying so once, on stderr) and
    then makes the next event on top of the first one's."""
    told = trio.Event()
    real = lockfile.waited

    async def spied(path: Path, waiting: Callable[[str], None]) -> int:
        def tell(holder: str) -> None:
            waiting(holder)
            told.set()

        return await real(path, tell)

    monkeypatch.setattr(lockfile, "waited", spied)
    with trio.fail_after(20):
        assert await dkms(home, "id", "create", "solo") == 0  # local only: no witnesses needed
        capsys.readouterr()
        keystore = Keystore.open(home, PASS)
        statuses: list[int] = []

        async def second() -> None:
            statuses.append(await dkms(home, "id", "interact", "solo", "--data", '{"d": "second"}'))

        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            first = await stack.enter_async_context(Session.held(Home(home), "solo", keystore))
            nursery.start_soon(second)
            await told.wait()
            waited = capsys.readouterr().err
            assert (
                waited == f"dkms: waiting for process {os.getpid()}, which is changing solo ...\n"
            )
            await first.interact([{"d": "first"}], timeout=5, options=OPTIONS)
            assert statuses == []  # still waiting: `first` holds the lock until the block ends
            await stack.aclose()
        assert statuses == [0]
        assert capsys.readouterr().err == ""  # said once
        shown = await as_json(capsys, home, "id", "show", "solo")
        assert shown["sn"] == 2
        kel = (home / "kels" / "solo.cesr").read_bytes()
        assert kel.index(b"first") < kel.index(b"second")


async def test_the_readme_session_example_runs(home: Path, capsys: Capture) -> None:
    """The README's Python example, run as written, on a local-only identifier."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    [example] = [b for b in blocks if "Session.held" in b]
    namespace: dict[str, Any] = {}
    exec(compile(example, "README.md", "exec"), namespace)
    assert await dkms(home, "id", "create", "solo") == 0
    await namespace["anchor"](str(home), "solo", {"d": "EREADME"})
    shown = await as_json(capsys, home, "id", "show", "solo")
    assert (shown["sn"], shown["et"]) == (1, "ixn")
    kel = (home / "kels" / "solo.cesr").read_bytes()
    assert b"EREADME" in kel

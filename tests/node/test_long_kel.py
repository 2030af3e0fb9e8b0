"""KELs longer than one answer, on real nodes (libp2p hosts on 127.0.0.1, SQLite stores).

The witnesses answer KEL pages of `PAGE` bytes (`kel_page`, a few events), so a KEL of some
tens of events takes many pages: it is queried (`dkms keystate`), handed to a witness that a
rotation adds (the first page comes with the rotation, the rest is filled from the
co-witnesses page by page), exported from that witness (`dkms kel export --from`), and a KEL
file is submitted in pieces (`dkms kel submit` with a small `Options.chunk`).
"""

from __future__ import annotations

import functools
import io
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from dkms.node.cli.main import amain, main
from dkms.node.cli.net import SHOWN_EVENTS
from dkms.node.client.controller import ControllerClient
from dkms.node.client.home import Options
from dkms.node.config import NodeConfig
from dkms.node.daemon import serve
from dkms.node.p2p import P2PHost, open_host
from dkms.node.p2p.transport import P2PTransport
from dkms.node.roles.controller import Controller, RetryPolicy
from dkms.node.roles.effects import Send, Surface
from dkms.node.roles.witness import Witness
from dkms.node.runtime.loop import Runtime
from dkms.protocol.stream import Message, parse_stream

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
PAGE = 1500  # bytes: a handful of events a page
EVENTS = 40
LONG = SHOWN_EVENTS + 10
OPTIONS = Options(chunk=PAGE)
Capture = pytest.CaptureFixture[str]
Runtimes = dict[str, Runtime]


@asynccontextmanager
async def witnesses(tmp_path: Path, count: int) -> AsyncIterator[tuple[list[P2PHost], Runtimes]]:
    """`count` witnesses answering small pages, each bootstrapped to those before it."""
    runtimes: Runtimes = {}
    async with trio.open_nursery() as nursery:
        hosts: list[P2PHost] = []
        for i in range(count):
            config = NodeConfig(
                data_dir=tmp_path / f"w{i}",
                listen=LOOPBACK,
                kel_page=PAGE,
                bootstrap=tuple(h.introduction for h in hosts),
            )
            serving = functools.partial(
                serve,
                config,
                announce=lambda _: None,
                on_start=lambda r: runtimes.__setitem__(r.transport.prefix, r),
            )
            hosts.append(await nursery.start(serving))
        yield hosts, runtimes
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def controller(intros: list[str]) -> AsyncIterator[ControllerClient]:
    """A controller handing a new witness one small page with a rotation, and retrying it
    until that witness has filled the rest of the KEL."""
    retry = RetryPolicy(first=0.1, cap=0.5, attempts=40)
    async with open_host(os.urandom(32), LOOPBACK) as host:
        transport = P2PTransport(host)
        for intro in intros:
            transport.learn(intro)
        client = ControllerClient(Controller(retry=retry, prelude_bytes=PAGE), transport)
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            yield client
            nursery.cancel_scope.cancel()


def queries(runtime: Runtime) -> float:
    return runtime.metrics.value("requests", surface=Surface.QUERY.value)


async def as_json(capsys: Capture, *argv: str) -> dict[str, Any]:
    capsys.readouterr()
    assert await amain([*argv, "--json"], OPTIONS) == 0
    answer: dict[str, Any] = json.loads(capsys.readouterr().out)
    return answer


async def export(monkeypatch: pytest.MonkeyPatch, *argv: str) -> bytes:
    out = io.TextIOWrapper(io.BytesIO())
    monkeypatch.setattr(sys, "stdout", out)
    try:
        assert await amain(["kel", "export", *argv], OPTIONS) == 0
        out.flush()
        return out.buffer.getvalue()  # type: ignore[attr-defined,no-any-return]
    finally:
        monkeypatch.undo()


def sns(kel: bytes) -> list[int]:
    return [f.event.sn for f in parse_stream(kel) if isinstance(f, Message)]


async def test_a_long_kel_is_queried_handed_to_a_new_witness_and_exported(
    tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(90):
        async with witnesses(tmp_path, 5) as (hosts, runtimes):
            intros, w = [h.introduction for h in hosts], [h.prefix for h in hosts]
            async with controller(intros) as client:
                ctl = client.controller
                now = client.runtime.now
                effects = ctl.incept(
                    "amy", [os.urandom(32)], [os.urandom(32)], witnesses=w[:4], toad=3, now=now()
                )
                await client.witnessed(effects, ctl.identity("amy").last_said)
                effects = []  # all at once: each witness gets them batched, in order
                for n in range(EVENTS - 1):
                    effects += ctl.interact("amy", [{"n": n}], now=now())
                await client.witnessed(effects, ctl.identity("amy").last_said)
                prefix = ctl.identity("amy").prefix
                assert len(ctl.export("amy")) > 10 * PAGE

                # Queried: the key state, checked against the KEL read page by page.
                asked = queries(runtimes[w[1]])
                state = await as_json(capsys, "keystate", prefix, "--from", intros[1])
                assert (state["sn"], state["verified"]) == (EVENTS - 1, True)
                assert [n for n, _ in state["fel"]] == list(range(EVENTS))
                assert list(state["receipts"]) == [state["d"]]  # the latest event's only
                assert queries(runtimes[w[1]]) - asked > 10  # the state, then many pages

                # Handed over: the rotation adding w[4] comes with the first page only; the
                # new witness fills the rest from its co-witnesses, then receipts it.
                effects = ctl.rotate("amy", [os.urandom(32)], adds=[w[4]], toad=5, now=now())
                prelude = [e.payload for e in effects if isinstance(e, Send) and e.to == w[4]]
                assert len(prelude[0]) < 2 * PAGE
                await client.witnessed(effects, ctl.identity("amy").last_said)
                role = runtimes[w[4]].role
                assert isinstance(role, Witness)
                kel = role.validator.kel(prefix)
                assert kel is not None and kel.sn == EVENTS
                assert w[4] in kel.last.receipts  # it receipted the rotation

                # Exported from the new witness, page by page, and it verifies.
                data = await export(monkeypatch, prefix, "--from", intros[4])
                assert sns(data) == list(range(EVENTS + 1))
                (tmp_path / "amy.cesr").write_bytes(data)
                capsys.readouterr()
                assert main(["kel", "verify", "--json", str(tmp_path / "amy.cesr")]) == 0
                report = json.loads(capsys.readouterr().out)
                assert report["identifiers"][prefix]["sn"] == EVENTS
                assert {m["status"] for m in report["messages"]} == {"accepted"}


async def test_a_long_kel_file_is_submitted_in_pieces(tmp_path: Path, capsys: Capture) -> None:
    with trio.fail_after(60):  # LONG events: summed up per witness when printed
        async with witnesses(tmp_path, 2) as (hosts, runtimes):
            intros, w = [h.introduction for h in hosts], [h.prefix for h in hosts]
            ctl = Controller()  # makes the events; we keep them instead of pushing them
            messages = []
            for effects in [
                ctl.incept("x", [os.urandom(32)], [os.urandom(32)], witnesses=w, now=0.0),
                *(ctl.interact("x", [{"n": n}], now=0.0) for n in range(LONG - 1)),
            ]:
                messages.append(next(e for e in effects if isinstance(e, Send)).payload)
            kel_file = tmp_path / "made.cesr"
            kel_file.write_bytes(b"".join(messages))
            assert len(kel_file.read_bytes()) > 5 * PAGE
            submits = [
                runtimes[p].metrics.value("requests", surface=Surface.SUBMIT.value) for p in w
            ]
            argv = ["kel", "submit", str(kel_file), "--to", *intros, "--json"]
            assert await amain(argv, OPTIONS) == 0
            answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
            for answer in answers:
                assert answer["ok"] and answer["shared"] == "ok"
                assert all(e["receipted"] for e in answer["events"])
                assert len(answer["events"]) == LONG
            for prefix, before in zip(w, submits, strict=True):
                sent = runtimes[prefix].metrics.value("requests", surface=Surface.SUBMIT.value)
                assert sent - before > 5  # in pieces, in order
            prefix = ctl.identity("x").prefix
            state = await as_json(capsys, "keystate", prefix, "--from", intros[1])
            assert state["sn"] == LONG - 1 and state["fully_witnessed"] and state["verified"]

            # Without --json, a long KEL is summed up per witness.
            assert await amain(["kel", "submit", str(kel_file), "--to", *intros], OPTIONS) == 0
            out = capsys.readouterr().out
            assert "RECEIPTED" in out and out.count("every event receipted") == 2

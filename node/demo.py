"""`dkms demo`: a small witness network on loopback, an identifier made and rotated through it.

Five witnesses start in this process (real libp2p hosts on 127.0.0.1, each with its own SQLite
store in a temporary folder). A controller incepts an identifier with four of them and a
witness threshold of three, rotates its keys while swapping one witness for the fifth, anchors
some data, carries on with one witness stopped, and then shows what each witness holds and
verifies the controller's KEL from its bytes.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import cbor2
import trio

from dkms.protocol.stream import Message, parse_stream
from dkms.protocol.validator import Validator

from .client import ControllerClient
from .config import NodeConfig
from .nodecli import quiet_libp2p, serve
from .p2p import P2PHost, open_host
from .p2p_transport import P2PTransport
from .roles.controller import Controller, RetryPolicy
from .roles.effects import Effect

if TYPE_CHECKING:
    # libp2p pulls in trio-typing, whose trio-stubs shadow trio's own types for mypy.
    from trio_typing import TaskStatus

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
WITNESSES = 5


def main(say: Callable[[str], None] = print) -> int:
    quiet_libp2p()
    logging.getLogger("dkms").setLevel(logging.ERROR)  # the story says what happens
    with tempfile.TemporaryDirectory(prefix="dkms-demo-") as tmp:
        trio.run(functools.partial(_demo, Path(tmp), say))
    return 0


async def _demo(tmp: Path, say: Callable[[str], None]) -> None:
    with trio.fail_after(120):
        say(f"Starting {WITNESSES} witnesses on 127.0.0.1 (data in {tmp}):")
        async with _witnesses(tmp) as (hosts, scopes):
            for i, host in enumerate(hosts):
                say(f"  w{i}  {host.introduction}")
            async with _controller([h.introduction for h in hosts]) as client:
                await _story(client, hosts, scopes, say)


async def _story(
    client: ControllerClient,
    hosts: list[P2PHost],
    scopes: list[trio.CancelScope],
    say: Callable[[str], None],
) -> None:
    ctl = client.controller
    w = [h.prefix for h in hosts]
    now = client.runtime.now

    async def step(what: str, effects: list[Effect]) -> None:
        ident = ctl.identity("demo")
        started = time.perf_counter()
        await client.witnessed(effects, ident.last_said)
        record = ctl.validator.record(ident.last_said)
        receipts = len(record.receipts) if record else 0
        ms = (time.perf_counter() - started) * 1000
        say(
            f"  {what}: sn {ident.sn}, {ident.last_said[:16]}.., fully witnessed with "
            f"{receipts} receipts in {ms:.0f} ms"
        )

    say("\nA controller makes identifier 'demo' with witnesses w0-w3, threshold 3:")
    seeds = [os.urandom(32) for _ in range(4)]
    await step(
        "inception", ctl.incept("demo", [seeds[0]], [seeds[1]], witnesses=w[:4], toad=3, now=now())
    )
    say(f"  prefix {ctl.identity('demo').prefix}")
    await step(
        "rotation (new keys; w0 out, w4 in)",
        ctl.rotate("demo", [seeds[2]], cuts=[w[0]], adds=[w[4]], toad=3, now=now()),
    )
    await step(
        "interaction anchoring {'hello': 'world'}",
        ctl.interact("demo", [{"hello": "world"}], now=now()),
    )
    scopes[4].cancel()  # stop w4: three of the four remaining witnesses still suffice
    say("\nWitness w4 stops. Another interaction still gathers 3 receipts:")
    await step("interaction anchoring {'n': 2}", ctl.interact("demo", [{"n": 2}], now=now()))

    prefix = ctl.identity("demo").prefix
    with trio.move_on_after(5):  # the witnesses' receipt exchange (agreement) goes out
        await client.runtime.quiet()
    say("\nWhat each witness says about 'demo' (asked over /dkms/1/query):")
    for i, witness in enumerate(w):
        answer = await _state(client, witness, prefix)
        note = "  (cut by the rotation at sn 1)" if i == 0 else ""
        say(f"  w{i}  {answer}{note}")

    say("\nThe controller's KEL, checked from its bytes alone:")
    validator = Validator()
    for frame in parse_stream(ctl.export("demo")):
        if isinstance(frame, Message):
            validator.process(frame, 0.0)
    state = validator.state(prefix)
    assert state is not None
    say(
        f"  {prefix}: sn {state.sn}, keys {list(state.keys)}, witnesses "
        f"{len(state.witnesses)} with threshold {state.toad}"
    )
    say(
        "\nNext: `dkms-node run --data-dir DIR --listen /ip4/127.0.0.1/tcp/4001` starts a "
        "witness of your own."
    )


async def _state(client: ControllerClient, witness: str, prefix: str) -> str:
    ask = cbor2.dumps({"t": "state", "i": prefix})
    try:
        ok, payload, reason = await client.runtime.transport.request(
            witness, "/dkms/1/query", ask, 2.0
        )
    except Exception as err:  # a stopped witness: say so and go on
        return f"no answer ({err})"
    if not ok:
        return f"refused: {reason}"
    state = cbor2.loads(payload)
    return (
        f"sn {state['sn']}, latest {state['d'][:16]}.., fully witnessed: {state['fully_witnessed']}"
    )


@asynccontextmanager
async def _witnesses(tmp: Path) -> AsyncIterator[tuple[list[P2PHost], list[trio.CancelScope]]]:
    async with trio.open_nursery() as nursery:
        hosts: list[P2PHost] = []
        scopes: list[trio.CancelScope] = []
        for i in range(WITNESSES):
            config = NodeConfig(data_dir=tmp / f"w{i}", listen=LOOPBACK)
            scope = trio.CancelScope()
            hosts.append(await nursery.start(_scoped, scope, config))
            scopes.append(scope)
        yield hosts, scopes
        nursery.cancel_scope.cancel()


async def _scoped(
    scope: trio.CancelScope,
    config: NodeConfig,
    task_status: TaskStatus[P2PHost] = trio.TASK_STATUS_IGNORED,
) -> None:
    with scope:
        await serve(config, announce=lambda _: None, task_status=task_status)


@asynccontextmanager
async def _controller(intros: list[str]) -> AsyncIterator[ControllerClient]:
    async with open_host(os.urandom(32), LOOPBACK) as host:
        transport = P2PTransport(host)
        for intro in intros:
            transport.learn(intro)
        client = ControllerClient(Controller(retry=RetryPolicy(attempts=2)), transport)
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            yield client
            nursery.cancel_scope.cancel()

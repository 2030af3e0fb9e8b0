"""Real witness nodes (libp2p hosts on 127.0.0.1, SQLite stores) and a controller, in one process.

A controller with 4 witnesses and bt=3 incepts, rotates (cutting one witness and adding
another) and interacts; every witness ends with the same fully witnessed KEL; a witness that
is down does not stop events completing; a conflicting version is refused.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import cbor2
import trio

from dkms.node.client.controller import ControllerClient
from dkms.node.config import NodeConfig
from dkms.node.daemon import serve
from dkms.node.p2p import P2PHost, open_host
from dkms.node.p2p.transport import P2PTransport
from dkms.node.roles.controller import Controller, RetryPolicy
from dkms.node.roles.effects import Surface
from dkms.node.testing.keys import seed
from dkms.protocol.crypto import Signer
from dkms.protocol.events import interact
from dkms.protocol.stream import Attachments, messagize

LOOPBACK = "/ip4/127.0.0.1/tcp/0"



@asynccontextmanager
async def witnesses(tmp_path: Path, count: int) -> AsyncIterator[list[P2PHost]]:
    async with trio.open_nursery() as nursery:
        hosts = []
        for i in range(count):
            config = NodeConfig(data_dir=tmp_path / f"w{i}", listen=LOOPBACK)
            hosts.append(
                await nursery.start(functools.partial(serve, config, announce=lambda _: None))
            )
        yield hosts
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def controller(
    intros: list[str],
    retry: RetryPolicy | None = None,
    transport_class: type[P2PTransport] = P2PTransport,
) -> AsyncIterator[ControllerClient]:
    """A controller on its own host, knowing the witnesses `intros`."""
    async with open_host(os.urandom(32), LOOPBACK) as host:
        transport = transport_class(host)
        for intro in intros:
            transport.learn(intro)
        client = ControllerClient(Controller(retry=retry or RetryPolicy(attempts=3)), transport)
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            yield client
            nursery.cancel_scope.cancel()


async def state_at(client: ControllerClient, witness: str, prefix: str) -> dict[str, object]:
    ask = cbor2.dumps({"t": "state", "i": prefix})
    code, payload, reason = await client.runtime.transport.request(witness, "/dkms/1/query", ask, 5)
    assert code.ok, reason
    state: dict[str, object] = cbor2.loads(payload)
    return state


async def test_four_witnesses_bt3_incept_rotate_interact(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with witnesses(tmp_path, 5) as hosts:
            intros = [h.introduction for h in hosts]
            prefixes = [h.prefix for h in hosts]
            async with controller(intros) as client:
                ctl = client.controller
                now = client.runtime.now()
                await client.witnessed(
                    ctl.incept(
                        "alice", [seed(1)], [seed(2)], witnesses=prefixes[:4], toad=3, now=now
                    ),
                    ctl.identity("alice").last_said,
                )
                await client.witnessed(
                    ctl.rotate(
                        "alice", [seed(3)], cuts=[prefixes[0]], adds=[prefixes[4]], toad=3, now=now
                    ),
                    ctl.identity("alice").last_said,
                )
                await client.witnessed(
                    ctl.interact("alice", [{"d": "hello"}], now=now),
                    ctl.identity("alice").last_said,
                )
                alice = ctl.identity("alice")
                await client.runtime.quiet()  # the witness agreement, sent after completion
                for witness in prefixes[1:]:
                    state = await state_at(client, witness, alice.prefix)
                    assert state["fully_witnessed"] and state["sn"] == 2
                    assert state["d"] == alice.last_said
                    assert state["fully_witnessed"]
                    assert state["b"] == prefixes[1:]


async def test_one_witness_down_events_still_complete(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with witnesses(tmp_path, 3) as hosts:
            # A fourth witness that is not running: its introduction points at a closed port.
            absent = Signer(seed(99), transferable=False).verfer
            intros = [h.introduction for h in hosts] + [f"{absent}@/ip4/127.0.0.1/tcp/9"]
            prefixes = [h.prefix for h in hosts] + [absent]
            async with controller(intros) as client:
                ctl = client.controller
                effects = ctl.incept(
                    "bob",
                    [seed(4)],
                    [seed(5)],
                    witnesses=prefixes,
                    toad=3,
                    now=client.runtime.now(),
                )
                await client.witnessed(effects, ctl.identity("bob").last_said)
                assert ctl.status(ctl.identity("bob").last_said) == "done"


async def test_conflicting_version_is_refused(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with witnesses(tmp_path, 4) as hosts:
            intros = [h.introduction for h in hosts]
            prefixes = [h.prefix for h in hosts]
            async with controller(intros) as client:
                ctl = client.controller
                now = client.runtime.now()
                await client.witnessed(
                    ctl.incept("carol", [seed(6)], [seed(7)], witnesses=prefixes, toad=3, now=now),
                    ctl.identity("carol").last_said,
                )
                icp = ctl.identity("carol").last_said
                await client.witnessed(
                    ctl.interact("carol", [{"v": 1}], now=now), ctl.identity("carol").last_said
                )
                carol = ctl.identity("carol").prefix
                other = interact(carol, prior=icp, sn=1, anchors=[{"v": 2}])
                sig = Signer(seed(6)).sign_indexed(other.raw, 0)
                message = messagize(other, Attachments(sigs=(sig,)))
                code, _, reason = await client.runtime.transport.request(
                    prefixes[0], Surface.SUBMIT.value, message, 5
                )
                assert not code.ok
                assert "conflicting version refused" in reason

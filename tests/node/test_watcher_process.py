"""A watcher as a separate `dkms-node run --role watcher` process, killed with SIGKILL.

Witnesses run in this process (real libp2p hosts, SQLite stores); the watcher is its own
process, so `kill -9` is real. After a controller splits its witnesses between two versions
of one event, the watcher publishes evidence and, as the roster's judge, a ruling; it is then
killed at once and restarted on the same data directory: it still holds every piece of
evidence and every ruling it had published, and still calls the identifier duplicitous.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cbor2
import pytest
import trio

from dkms.node.client.controller import ControllerClient
from dkms.node.config import NodeConfig
from dkms.node.p2p import open_host
from dkms.node.p2p.transport import P2PTransport
from dkms.node.roles.controller import Controller, RetryPolicy
from dkms.node.roles.effects import Surface
from dkms.node.roles.governance import roster_bundle
from dkms.node.runtime.loop import Runtime
from dkms.node.testing.localnet import LOOPBACK, LocalNet, start_node
from dkms.protocol.envelope import Signed
from dkms.protocol.roster import Roster

from .test_duplicity_network import seed
from .test_node_processes import WitnessProcess

pytestmark = pytest.mark.slow  # real processes or real time

POLL = 0.05  # seconds between questions to the watcher process (it has no other channel)


async def ask(transport: P2PTransport, to: str, question: dict[str, Any]) -> Any:
    answer = await transport.request(to, Surface.QUERY.value, cbor2.dumps(question), 5)
    assert answer.ok, answer.reason
    return cbor2.loads(answer.payload)


async def test_watcher_keeps_its_evidence_across_kill_9(tmp_path: Path) -> None:
    gov = Controller()
    gov.incept("gov", [seed(90)], [seed(91)], now=0.0)
    governance = gov.identity("gov").prefix
    runtimes: dict[str, Runtime] = {}
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            hosts = [
                await start_node(
                    nursery, NodeConfig(data_dir=tmp_path / f"w{i}", listen=LOOPBACK), runtimes
                )
                for i in range(4)
            ]
            intros = [h.introduction for h in hosts]
            args = ("--role", "watcher", "--governance", governance)
            for intro in intros:
                args += ("--bootstrap", intro)
            watcher = WitnessProcess(tmp_path / "watcher", args)
            try:
                await watcher.start()
                roster = Roster(
                    governance, 1, (watcher.prefix,), (watcher.prefix,), (watcher.prefix,)
                )
                async with open_host(os.urandom(32), LOOPBACK) as host:
                    transport = P2PTransport(host)
                    for intro in [*intros, watcher.introduction]:
                        transport.learn(intro)
                    client = ControllerClient(Controller(retry=RetryPolicy(attempts=3)), transport)
                    await nursery.start(client.run)
                    code, _, reason = await transport.request(
                        watcher.prefix,
                        Surface.GOVERNANCE.value,
                        roster_bundle(gov, "gov", roster),
                        5,
                    )
                    assert code.ok, reason
                    ctl = client.controller
                    w = [h.prefix for h in hosts]
                    effects = ctl.incept(
                        "eve", [seed(60)], [seed(61)], witnesses=w, toad=3, now=0.0
                    )
                    await client.witnessed(effects, ctl.identity("eve").last_said)
                    ident = ctl.identity("eve")
                    net = LocalNet(hosts, [], runtimes, client, governance)
                    _, msg_a = net.signed_ixn("eve", [{"d": "a"}])
                    _, msg_b = net.signed_ixn("eve", [{"d": "b"}])
                    async with trio.open_nursery() as sends:
                        for i, message in ((0, msg_a), (1, msg_a), (2, msg_b), (3, msg_b)):
                            sends.start_soon(net.submit, i, message)
                    # Until the watcher holds the evidence and its own ruling (it is the judge).
                    while True:
                        held = await ask(transport, watcher.prefix, {"t": "evidence"})
                        if held["evidence"] and held["rulings"]:
                            break
                        await trio.sleep(POLL)
                    watcher.kill()  # SIGKILL, straight after it told us
                    await watcher.wait()
                    await watcher.start(watcher.listen)
                    after = await ask(transport, watcher.prefix, {"t": "evidence"})
                    assert set(held["evidence"]) <= set(after["evidence"])
                    assert set(held["rulings"]) <= set(after["rulings"])
                    for envelope in after["evidence"]:
                        assert Signed.from_cbor(envelope).signer == watcher.prefix
                    state = await ask(transport, watcher.prefix, {"t": "state", "i": ident.prefix})
                    assert state["standing"] == "duplicitous"
                    assert state["duplicitous_from"] == 1
                    assert state["sn"] == 0  # the KEL it kept: neither version was witnessed
                    nursery.cancel_scope.cancel()
            finally:
                await watcher.close()

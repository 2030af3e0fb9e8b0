"""A whole DKMS network in one process on 127.0.0.1: witnesses, watchers, governance, and a
controller. Real nodes (libp2p hosts, SQLite stores, the `dkms-node` code path); used by the
demo, the benchmarks and the tests.

    async with local_network(tmp, witnesses=4, watchers=2) as net:
        ...  # net.client is a controller; net.watcher(i) the role of watcher i

The governance identity is made in memory; its roster names every watcher a watcher and a
juror, and the first `judges` watchers judges. Each node can be stopped on its own
(`net.stop(prefix)`), as if its process had ended.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cbor2
import trio

from dkms.node.client.controller import ControllerClient
from dkms.node.config import NodeConfig
from dkms.node.daemon import serve
from dkms.node.p2p import P2PHost, open_host
from dkms.node.p2p.transport import P2PTransport
from dkms.node.roles.controller import Controller, RetryPolicy
from dkms.node.roles.effects import Surface
from dkms.node.roles.governance import roster_bundle
from dkms.node.roles.watcher import Watcher
from dkms.node.roles.witness import Witness
from dkms.node.runtime.loop import Runtime
from dkms.node.runtime.transport import Answer
from dkms.node.secretfiles import SEED_FILE, atomic_write, private_dir
from dkms.protocol.events import Event, interact
from dkms.protocol.roster import Roster
from dkms.protocol.stream import Attachments, messagize

if TYPE_CHECKING:
    from trio_typing import TaskStatus

LOOPBACK = "/ip4/127.0.0.1/tcp/0"


class LocalNetError(Exception):
    """The local network could not be set up (a node refused the roster, ...)."""


@dataclass
class LocalNet:
    witnesses: list[P2PHost]
    watchers: list[P2PHost]
    runtimes: dict[str, Runtime]
    client: ControllerClient
    governance: str
    scopes: dict[str, trio.CancelScope] = field(default_factory=dict)
    relays: list[P2PHost] = field(default_factory=list)  # watchers the roster does not name

    @property
    def w(self) -> list[str]:
        """The witnesses' prefixes."""
        return [h.prefix for h in self.witnesses]

    def watcher(self, i: int) -> Watcher:
        return self.watcher_role(self.watchers[i].prefix)

    def watcher_role(self, prefix: str) -> Watcher:
        """The role of the watcher (or relay) node `prefix`."""
        role = self.runtimes[prefix].role
        if not isinstance(role, Watcher):
            raise TypeError(f"node {prefix} is not a watcher")
        return role

    def witness_role(self, prefix: str) -> Witness:
        role = self.runtimes[prefix].role
        if not isinstance(role, Witness):
            raise TypeError(f"node {prefix} is not a witness")
        return role

    def stop(self, prefix: str) -> None:
        """Stop one node (its host closes, its store stays)."""
        self.scopes[prefix].cancel()

    async def until(self, what: Callable[[], bool], *, on: Sequence[int] | None = None) -> None:
        """Return once `what()` holds, re-checking after every step of the watchers `on`
        (all by default): nothing sleeps, and a step that changes nothing costs one check."""
        indices = range(len(self.watchers)) if on is None else on
        runtimes = [self.runtimes[self.watchers[i].prefix] for i in indices]
        while not what():
            async with trio.open_nursery() as nursery:
                for runtime in runtimes:

                    async def woke(r: Runtime = runtime) -> None:
                        await r.changed.wait()
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(woke)

    async def ask(self, node: str, question: dict[str, Any], timeout: float = 5.0) -> Any:
        """A query (CBOR map) to any node; its decoded answer, or `LocalNetError`."""
        transport = self.client.runtime.transport
        code, payload, reason = await transport.request(
            node, Surface.QUERY.value, cbor2.dumps(question), timeout
        )
        if not code.ok:
            raise LocalNetError(f"{node} refused {question.get('t')}: {reason}")
        return cbor2.loads(payload)

    async def state(self, i: int, prefix: str) -> dict[str, Any]:
        """Key state with standing from watcher `i`, asked as an application would."""
        state: dict[str, Any] = await self.ask(self.watchers[i].prefix, {"t": "state", "i": prefix})
        return state

    async def submit(self, witness: int, message: bytes) -> Answer:
        transport = self.client.runtime.transport
        return await transport.request(self.w[witness], Surface.SUBMIT.value, message, 5)

    async def incept(self, name: str, seeds: tuple[bytes, bytes], toad: int = 3) -> str:
        """Incept `name` with every witness and wait until it is fully witnessed."""
        ctl = self.client.controller
        effects = ctl.incept(
            name, [seeds[0]], [seeds[1]], witnesses=self.w, toad=toad, now=self.client.runtime.now()
        )
        await self.client.witnessed(effects, ctl.identity(name).last_said)
        return ctl.identity(name).prefix

    def signed_ixn(self, name: str, anchors: list[Any]) -> tuple[Event, bytes]:
        """An interaction of `name` at its next sn, signed but not sent (the controller does
        not learn of it): what a thief of the keys, or a cheating controller, can make."""
        ident = self.client.controller.identity(name)
        event = interact(ident.prefix, prior=ident.last_said, sn=ident.sn + 1, anchors=anchors)
        sigs = tuple(s.sign_indexed(event.raw, i) for i, s in enumerate(ident.signers))
        return event, messagize(event, Attachments(sigs=sigs))


async def start_node(
    nursery: trio.Nursery,
    config: NodeConfig,
    runtimes: dict[str, Runtime],
    scopes: dict[str, trio.CancelScope] | None = None,
) -> P2PHost:
    """Start one node under `nursery`; its runtime lands in `runtimes` by prefix."""
    scope = trio.CancelScope()
    host: P2PHost = await nursery.start(_scoped, scope, config, runtimes)
    if scopes is not None:
        scopes[host.prefix] = scope
    return host


async def _scoped(
    scope: trio.CancelScope,
    config: NodeConfig,
    runtimes: dict[str, Runtime],
    task_status: TaskStatus[P2PHost] = trio.TASK_STATUS_IGNORED,
) -> None:
    with scope:
        await serve(
            config,
            announce=lambda _: None,
            on_start=lambda r: runtimes.__setitem__(r.transport.prefix, r),
            task_status=task_status,
        )


@asynccontextmanager
async def local_network(
    tmp: Path,
    *,
    witnesses: int = 4,
    watchers: int = 2,
    judges: int = 1,
    witness_seeds: Sequence[bytes] | None = None,
    governance_seeds: tuple[bytes, bytes] | None = None,
    anomaly_after: float = 30.0,
    relays: int = 0,
    governance: str | None = None,
) -> AsyncIterator[LocalNet]:
    """Witnesses (with these node seeds, if given), watchers bootstrapped to every node
    started before them, a governance roster handed to each watcher, and a controller.
    `relays` more nodes run as watchers the roster does not name: they listen to and relay
    all KEL gossip, and publish nothing of their own. With `governance` (a prefix made
    elsewhere) the watchers follow it and get no roster here: its owner publishes one."""
    gov = Controller()
    if governance is None:
        first, second = governance_seeds or (os.urandom(32), os.urandom(32))
        gov.incept("governance", [first], [second], now=0.0)
        governance = gov.identity("governance").prefix
        own_roster = True
    else:
        own_roster = False
    runtimes: dict[str, Runtime] = {}
    scopes: dict[str, trio.CancelScope] = {}
    async with trio.open_nursery() as nursery:
        wits: list[P2PHost] = []
        for i in range(witnesses):
            data_dir = tmp / f"w{i}"
            if witness_seeds is not None:
                private_dir(data_dir)
                atomic_write(data_dir / SEED_FILE, witness_seeds[i], exclusive=True)
            config = NodeConfig(data_dir=data_dir, listen=LOOPBACK)
            wits.append(await start_node(nursery, config, runtimes, scopes))

        def watcher_config(name: str, peers: list[P2PHost]) -> NodeConfig:
            return NodeConfig(
                role="watcher",
                data_dir=tmp / name,
                listen=LOOPBACK,
                governance=governance,
                bootstrap=tuple(h.introduction for h in peers),
                anomaly_after=anomaly_after,
            )

        watching: list[P2PHost] = []
        for i in range(watchers):
            config = watcher_config(f"v{i}", [*wits, *watching])
            watching.append(await start_node(nursery, config, runtimes, scopes))
        relaying: list[P2PHost] = []
        for i in range(relays):
            config = watcher_config(f"r{i}", [*wits, *watching, *relaying][-8:])
            relaying.append(await start_node(nursery, config, runtimes, scopes))
        async with open_host(os.urandom(32), LOOPBACK) as host:
            transport = P2PTransport(host)
            for node in [*wits, *watching, *relaying]:
                transport.learn(node.introduction)
            client = ControllerClient(Controller(retry=RetryPolicy(attempts=3)), transport)
            await nursery.start(client.run)
            if own_roster:
                names = tuple(h.prefix for h in watching)
                roster = Roster(governance, 1, watchers=names, jurors=names, judges=names[:judges])
                bundle = roster_bundle(gov, "governance", roster)
                for watcher in [*watching, *relaying]:  # relays follow the governance too
                    code, _, reason = await transport.request(
                        watcher.prefix, Surface.GOVERNANCE.value, bundle, 10
                    )
                    if not code.ok:
                        raise LocalNetError(
                            f"watcher {watcher.prefix} refused the roster: {reason}"
                        )
            yield LocalNet(wits, watching, runtimes, client, governance, scopes, relaying)
            nursery.cancel_scope.cancel()


__all__ = ["LOOPBACK", "LocalNet", "LocalNetError", "local_network", "start_node"]

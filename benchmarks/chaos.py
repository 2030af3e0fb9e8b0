"""Chaos under load: witnesses killed, paused and restarted while identifiers keep submitting.

    python benchmarks/chaos.py [--seconds 300] [--identifiers 40] [--seed 1] [--keep DIR]

4 witnesses (bt=3) and 2 watchers, each a `dkms-node run` process on 127.0.0.1. One controller
process (this one) holds `--identifiers` identifiers, each making interaction events one after
another as fast as they are witnessed. Meanwhile a loop picks a random witness every few
seconds and either kill -9s it (restarting it on the same data directory and address 1-5 s
later) or SIGSTOPs it (SIGCONT 1-5 s later); one witness at a time, so three stay up (bt=3).

Every receipt a witness hands out is recorded. After the load, every node must agree on every
identifier's key state within 30 s. Reported (JSON on stdout; exit 1 if any is not zero):

    deaths      nodes that exited without being killed by this script
    lost        receipted events a witness no longer holds afterwards (its KEL, page by page)
    conflicting (witness, identifier, sn) with receipts for two different events
    disagreeing identifiers on which some node's key state differs 30 s after the load

plus events fully witnessed, events/s, kills, pauses, and the seconds agreement took.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import cbor2
import trio

from dkms.node.client.controller import ControllerClient, WitnessingFailed
from dkms.node.client.home import CommandError
from dkms.node.client.paging import kel_pages
from dkms.node.p2p import open_host
from dkms.node.p2p.transport import P2PTransport
from dkms.node.roles.controller import Controller, RetryPolicy
from dkms.node.roles.effects import Surface
from dkms.node.runtime.transport import Answer, TransportError
from dkms.node.testing.cluster import Cluster, NodeProcess, incept_all, start_network
from dkms.protocol.events import Ilk
from dkms.protocol.stream import Message, parse_stream

AGREE_WITHIN = 30.0  # seconds after the load for every node to hold the same key states
RESTART_WITHIN = 120.0  # seconds a restarted witness may take to start (replay) under load
STATE_ASKS = 16  # key-state queries in flight to one node during a check round


def say(text: str) -> None:
    print(f"[chaos] {text}", file=sys.stderr, flush=True)


class Receipts(P2PTransport):
    """A transport that records every receipt a witness hands out on the submit surface."""

    given: defaultdict[tuple[str, str, int], set[str]]  # (witness, prefix, sn) -> SAIDs

    async def request(self, to: str, surface: str, payload: bytes, timeout: float) -> Answer:
        answer = await super().request(to, surface, payload, timeout)
        if surface == Surface.SUBMIT.value and answer.code.ok:
            for frame in parse_stream(answer.payload):
                ours = isinstance(frame, Message) and frame.event.ilk is Ilk.RCT
                if ours and any(witness == to for witness, _ in frame.attachments.couples):
                    key = (to, frame.event.prefix, frame.event.sn)
                    self.given[key].add(frame.event.said)
        return answer


class Chaos:
    def __init__(self, cluster: Cluster, witnesses: list[NodeProcess], rng: random.Random):
        self.cluster = cluster
        self.witnesses = witnesses
        self.rng = rng
        self.kills = self.pauses = 0
        self.deaths: list[str] = []
        self.failed_starts: list[str] = []  # restarts that failed (tried once more)
        self.start_seconds: list[float] = []  # how long each restart took to come up
        self.down: set[int] = set()  # witnesses this script has killed or paused
        self._dead: set[Path] = set()  # data dirs of nodes counted as died on their own

    def check_deaths(self) -> None:
        """Count nodes that exited on their own (once each); a witness among them is marked
        down, so the end of the run restarts it."""
        for node in self.cluster.nodes:
            mine = node in self.witnesses and self.witnesses.index(node) in self.down
            if node.alive() or mine or node.data_dir in self._dead:
                continue
            self._dead.add(node.data_dir)
            self.deaths.append(f"{node.data_dir.name}: {node.log()[-1500:]}")
            if node in self.witnesses:
                self.down.add(self.witnesses.index(node))

    async def run(self, until: float) -> None:
        while time.monotonic() < until:
            await trio.sleep(self.rng.uniform(2.0, 6.0))
            self.check_deaths()
            i = self.rng.randrange(len(self.witnesses))
            if i in self.down:  # died on its own: restart it first
                await self.restart(i)
                self.down.discard(i)
            node = self.witnesses[i]
            self.down.add(i)
            if self.rng.random() < 0.5:
                self.kills += 1
                node.process.kill()
                await trio.to_thread.run_sync(node.process.wait)
                await trio.sleep(self.rng.uniform(1.0, 5.0))
                await self.restart(i)
            else:
                self.pauses += 1
                node.process.send_signal(signal.SIGSTOP)
                await trio.sleep(self.rng.uniform(1.0, 5.0))
                node.process.send_signal(signal.SIGCONT)
            self.down.discard(i)
        self.check_deaths()
        for i in sorted(self.down):  # whatever died on its own comes back for the final count
            await self.restart(i)
        self.down.clear()

    async def restart(self, i: int) -> None:
        """Start witness `i` again; a start that fails (or takes over `RESTART_WITHIN` s) is
        reported, and tried once more."""
        old = self.witnesses[i]
        old.kill()
        started = time.monotonic()
        try:
            new = await trio.to_thread.run_sync(old.restart, RESTART_WITHIN)
        except RuntimeError as err:
            self.failed_starts.append(str(err)[-1500:])
            say(f"a restart failed: {str(err)[:300]}")
            new = await trio.to_thread.run_sync(old.restart, RESTART_WITHIN)
        self.start_seconds.append(time.monotonic() - started)
        self.witnesses[i] = new
        self.cluster.nodes[self.cluster.nodes.index(old)] = new


async def load(client: ControllerClient, names: list[str], until: float, done: list[int]) -> None:
    ctl = client.controller

    async def one(name: str) -> None:
        n = 0
        while time.monotonic() < until:
            n += 1
            effects = ctl.interact(name, [{"n": n}], now=client.runtime.now())
            try:
                await client.witnessed(effects, ctl.identity(name).last_said)
                done[0] += 1
            except WitnessingFailed:
                say(f"{name}: an event failed to gather its receipts; going on")

    async with trio.open_nursery() as nursery:
        for name in names:
            nursery.start_soon(one, name)


async def states(client: ControllerClient, node: str, prefixes: list[str]) -> dict[str, Any]:
    """Each identifier's sn as `node` holds it (None: unknown or no answer), asked all at once
    (at most `STATE_ASKS` in flight), so a check round costs one node's slowest answer and
    not the sum of its answers."""
    out: dict[str, Any] = {}
    limit = trio.Semaphore(STATE_ASKS)

    async def one(prefix: str) -> None:
        ask = cbor2.dumps({"t": "state", "i": prefix})
        async with limit:
            try:
                answer = await client.runtime.transport.request(node, "/dkms/1/query", ask, 5)
                code, payload, _ = answer
                out[prefix] = cbor2.loads(payload).get("sn") if code.ok else None
            except (TransportError, ValueError):
                out[prefix] = None

    async with trio.open_nursery() as nursery:
        for prefix in prefixes:
            nursery.start_soon(one, prefix)
    return out


async def check_round(
    client: ControllerClient, nodes: list[NodeProcess], prefixes: list[str]
) -> dict[str, dict[str, Any]]:
    """Every node's `states`, all nodes asked at once; by the node's data directory name."""
    held: dict[str, dict[str, Any]] = {}

    async def check(node: NodeProcess) -> None:
        held[node.data_dir.name] = await states(client, node.prefix, prefixes)

    async with trio.open_nursery() as nursery:
        for node in nodes:
            nursery.start_soon(check, node)
    return held


async def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    with Cluster(root) as cluster:
        witnesses, watchers = await start_network(cluster)
        say(f"{len(cluster.nodes)} nodes up")
        async with open_host(os.urandom(32)) as host:
            transport = Receipts(host)
            transport.given = defaultdict(set)
            for node in cluster.nodes:
                transport.learn(node.intro)
            retry = RetryPolicy(first=0.05, cap=1.0, attempts=10_000)
            client = ControllerClient(Controller(retry=retry), transport)
            async with trio.open_nursery() as nursery:
                await nursery.start(client.run)
                ctl = client.controller
                names = [f"id{i}" for i in range(args.identifiers)]
                await incept_all(client, names, [w.prefix for w in witnesses], toad=3)
                ids = [ctl.identity(n).prefix for n in names]
                say(f"{len(names)} identifiers incepted; load and chaos for {args.seconds} s")
                chaos = Chaos(cluster, witnesses, rng)
                done = [0]
                start = time.monotonic()
                until = start + args.seconds
                async with trio.open_nursery() as inner:
                    inner.start_soon(load, client, names, until, done)
                    inner.start_soon(chaos.run, until)
                elapsed = time.monotonic() - start
                counts = f"{chaos.kills} kills, {chaos.pauses} pauses"
                say(f"{done[0]} events witnessed in {elapsed:.0f} s; {counts}")

                want = {ctl.identity(n).prefix: ctl.identity(n).sn for n in names}
                agreed_after = None
                settle = time.monotonic()
                disagreeing: set[str] = set(ids)
                while time.monotonic() - settle < args.agree_within:
                    held = await check_round(client, cluster.nodes, ids)
                    behind = {
                        node: sum(answers[p] != want[p] for p in ids)
                        for node, answers in held.items()
                    }
                    disagreeing = {p for a in held.values() for p in ids if a[p] != want[p]}
                    if not disagreeing:
                        agreed_after = time.monotonic() - settle
                        break
                    say(f"{time.monotonic() - settle:.1f} s after the load, behind: {behind}")
                    for name, answers in held.items():  # a sample, to tell stuck from slow
                        late = [(answers[p], want[p]) for p in ids if answers[p] != want[p]]
                        if late:
                            say(f"  {name} holds (sn, of sn): {late[:6]}")
                    await trio.sleep(0.5)
                chaos.check_deaths()

                lost = 0
                for witness in chaos.witnesses:
                    for prefix in ids:
                        try:
                            held = {
                                (m.event.sn, m.event.said)
                                async for _, page in kel_pages(
                                    transport, witness.prefix, prefix, 30
                                )
                                for m in page
                                if m.event.ilk is not Ilk.RCT
                            }
                        except CommandError as err:
                            say(f"cannot read {prefix} from {witness.prefix}: {err}")
                            held = set()
                        for (w, p, sn), saids in transport.given.items():
                            if w == witness.prefix and p == prefix:
                                lost += sum((sn, s) not in held for s in saids)
                conflicting = [k for k, saids in transport.given.items() if len(saids) > 1]
                nursery.cancel_scope.cancel()
    return {
        "seconds": round(elapsed, 1),
        "identifiers": args.identifiers,
        "events_fully_witnessed": done[0],
        "events_per_second": round(done[0] / elapsed, 1),
        "kills": chaos.kills,
        "pauses": chaos.pauses,
        "deaths": len(chaos.deaths),
        "failed_starts": chaos.failed_starts,
        "restart_seconds_max": round(max(chaos.start_seconds, default=0.0), 1),
        "death_logs": chaos.deaths,
        "receipts_recorded": sum(len(s) for s in transport.given.values()),
        "lost": lost,
        "conflicting": len(conflicting),
        "disagreeing": sorted(disagreeing),
        "agreement_seconds": None if agreed_after is None else round(agreed_after, 1),
        "watchers": [w.prefix for w in watchers],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--identifiers", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--agree-within",
        type=float,
        default=AGREE_WITHIN,
        help="seconds after the load for the nodes to agree (the must-show is 30)",
    )
    parser.add_argument(
        "--keep", type=Path, help="run in this (new) directory and keep the nodes' logs and stores"
    )
    args = parser.parse_args()
    if args.keep is not None:
        args.keep.mkdir(parents=True)
        report = trio.run(run, args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="dkms-chaos-") as tmp:
            report = trio.run(run, args, Path(tmp))
    print(json.dumps(report, indent=2))
    bad = (
        report["deaths"]
        or report["failed_starts"]
        or report["lost"]
        or report["conflicting"]
        or report["disagreeing"]
    )
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

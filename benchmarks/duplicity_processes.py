"""The duplicity benchmark with every node in its own `dkms-node` process (10 by default:
4 witnesses with bt=3 and 6 watchers, all jurors, the first the judge), on loopback.

Each round a new identifier is incepted with the four witnesses; its keys then sign two
interactions at sn 1, sent at the same moment to w0+w1 and w2+w3. The clock starts when the
second version is sent (so it includes the submission's way to its first witness, an upper
bound on "reached its first witness"); each watcher is asked for the identifier's standing
every `--poll` seconds until it answers `duplicitous` and holds a ruling. Polling adds load
and `--poll` of resolution; `benchmarks/duplicity.py` measures the same in one process with
no polling.

    python benchmarks/duplicity_processes.py [--rounds 5] [--watchers 6] [--poll 0.01]

Output: one JSON object on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cbor2
import trio

from dkms.node.client.controller import ControllerClient
from dkms.node.p2p import open_host
from dkms.node.p2p.transport import P2PTransport
from dkms.node.roles.controller import Controller, RetryPolicy
from dkms.node.roles.effects import Surface
from dkms.node.roles.governance import roster_bundle
from dkms.node.runtime.transport import TransportError
from dkms.protocol.events import interact
from dkms.protocol.roster import Roster
from dkms.protocol.stream import Attachments, messagize

LOOPBACK = "/ip4/127.0.0.1/tcp/0"


class Node:
    def __init__(self, data_dir: Path, args: list[str]) -> None:
        self.data_dir, self.args = data_dir, args
        self.process: trio.Process | None = None
        self.intro = ""

    @property
    def prefix(self) -> str:
        return self.intro.split("@", 1)[0]

    async def start(self) -> None:
        command = [sys.executable, "-m", "dkms.node.cli.node", "run", "--data-dir"]
        command += [str(self.data_dir), "--listen", LOOPBACK, "--log-level", "error", *self.args]
        self.process = await trio.lowlevel.open_process(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
        )
        assert self.process.stdout is not None
        line = b""
        with trio.fail_after(60):
            while not line.endswith(b"\n"):
                chunk = await self.process.stdout.receive_some(4096)
                if not chunk:
                    raise SystemExit(f"node in {self.data_dir} did not start")
                line += chunk
        self.intro = line.decode().split()[1]

    async def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            with trio.CancelScope(shield=True):
                await self.process.wait()
                if self.process.stdout is not None:
                    await self.process.stdout.aclose()


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 1),
        "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 1),
        "max": round(ordered[-1], 1),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    gov = Controller()
    gov.incept("governance", [os.urandom(32)], [os.urandom(32)], now=0.0)
    governance = gov.identity("governance").prefix
    with tempfile.TemporaryDirectory(prefix="dkms-bench-proc-") as tmp:
        witnesses = [Node(Path(tmp) / f"w{i}", []) for i in range(4)]
        watchers: list[Node] = []
        try:
            async with trio.open_nursery() as nursery:
                for node in witnesses:
                    nursery.start_soon(node.start)
            for i in range(args.watchers):
                boots = [n.intro for n in [*witnesses, *watchers]]
                extra = ["--role", "watcher", "--governance", governance]
                for intro in boots:
                    extra += ["--bootstrap", intro]
                watchers.append(Node(Path(tmp) / f"v{i}", extra))
                await watchers[-1].start()
            print(f"{4 + len(watchers)} node processes up", file=sys.stderr)
            return await _rounds(args, gov, governance, witnesses, watchers)
        finally:
            for node in [*witnesses, *watchers]:
                await node.stop()


async def _rounds(
    args: argparse.Namespace,
    gov: Controller,
    governance: str,
    witnesses: list[Node],
    watchers: list[Node],
) -> dict[str, Any]:
    names = tuple(n.prefix for n in watchers)
    bundle = roster_bundle(gov, "governance", Roster(governance, 1, names, names, names[:1]))
    async with open_host(os.urandom(32), LOOPBACK) as host:
        transport = P2PTransport(host)
        for node in [*witnesses, *watchers]:
            transport.learn(node.intro)
        client = ControllerClient(Controller(retry=RetryPolicy(attempts=3)), transport)
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            for node in watchers:
                code, _, why = await transport.request(
                    node.prefix, Surface.GOVERNANCE.value, bundle, 10
                )
                if not code.ok:
                    raise SystemExit(f"watcher refused the roster: {why}")
            await trio.sleep(2.0)  # gossip meshes form at the first heartbeats
            evidence_ms, ruling_ms = [], []
            for n in range(args.rounds):
                ev, ru = await _round(args, client, transport, witnesses, watchers, n)
                evidence_ms.append(ev)
                ruling_ms.append(ru)
                print(
                    f"round {n + 1}/{args.rounds}: every watcher has evidence {ev:.0f} ms, "
                    f"a ruling {ru:.0f} ms after version b was sent",
                    file=sys.stderr,
                )
            nursery.cancel_scope.cancel()
    return {
        "nodes": len(witnesses) + len(watchers),
        "watchers": len(watchers),
        "rounds": args.rounds,
        "poll_s": args.poll,
        "all_watchers_evidence_ms": percentiles(evidence_ms),
        "all_watchers_ruling_ms": percentiles(ruling_ms),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }


async def _round(
    args: argparse.Namespace,
    client: ControllerClient,
    transport: P2PTransport,
    witnesses: list[Node],
    watchers: list[Node],
    n: int,
) -> tuple[float, float]:
    ctl = client.controller
    w = [node.prefix for node in witnesses]
    name = f"m{n}"
    effects = ctl.incept(name, [os.urandom(32)], [os.urandom(32)], witnesses=w, toad=3, now=0.0)
    await client.witnessed(effects, ctl.identity(name).last_said)
    ident = ctl.identity(name)
    messages = []
    for label in ("a", "b"):
        event = interact(ident.prefix, prior=ident.last_said, sn=1, anchors=[{"v": label}])
        sigs = tuple(s.sign_indexed(event.raw, i) for i, s in enumerate(ident.signers))
        messages.append(messagize(event, Attachments(sigs=sigs)))
    evidence: dict[str, float] = {}
    ruling: dict[str, float] = {}
    ask = cbor2.dumps({"t": "state", "i": ident.prefix})

    async def submit(witness: str, message: bytes) -> None:
        with contextlib.suppress(TransportError):
            await transport.request(witness, Surface.SUBMIT.value, message, 10)

    async def watch(node: Node) -> None:
        while node.prefix not in ruling:
            try:
                answer = await transport.request(node.prefix, Surface.QUERY.value, ask, 5)
            except TransportError:
                answer = None
            if answer is not None and answer.ok:
                state = cbor2.loads(answer.payload)
                now = time.perf_counter()
                if state.get("standing") == "duplicitous":
                    evidence.setdefault(node.prefix, now)
                if state.get("rulings"):
                    ruling.setdefault(node.prefix, now)
            await trio.sleep(args.poll)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            sent = time.perf_counter()
            for witness, message in zip(w, [messages[0]] * 2 + [messages[1]] * 2, strict=True):
                nursery.start_soon(submit, witness, message)
            for node in watchers:
                nursery.start_soon(watch, node)
    return (max(evidence.values()) - sent) * 1000, (max(ruling.values()) - sent) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--watchers", type=int, default=6)
    parser.add_argument("--poll", type=float, default=0.01)
    args = parser.parse_args()
    print(json.dumps(trio.run(run, args)))


if __name__ == "__main__":
    main()

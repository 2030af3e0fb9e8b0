"""Raw request/response round trips between two local hosts: the floor under the witness.

Two `dkms.node.p2p` hosts on 127.0.0.1; the responder echoes the payload back at once, so
what is measured is the transport (TCP, Noise, the muxer, our framing), not any node logic.
Two ways to carry requests, compared in the same run (`--transport both`, the default): a
stream of its own per request (`stream`, what every request took before sessions) and every
request on the peer's one long-lived session stream (`session`, node/p2p/session.py, the
default since). Their repeats are interleaved, so a noisy machine slows both alike. For each
payload size and each number of requests kept in flight, it reports round trips/s, latency
percentiles, the requester's CPU per request and, for sessions, `x_stream`: the ratio to
streams in the same run.

    python benchmarks/reqresp.py [--requests 2000] [--sizes 300,1024] [--concurrency 1,8,32]
                                 [--muxer yamux|mplex|both] [--processes 1|2] [--repeat 2]
                                 [--transport stream|session|both]

`--processes 2` (default) runs the responder in its own process, as a witness would run;
`--processes 1` puts both hosts in one trio loop on one core. Each figure is the best of
`--repeat` runs. Output: one JSON object per line.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import trio

from dkms.node.p2p import HostConfig, P2PHost, open_host
from dkms.node.roles.codes import Code
from dkms.protocol.crypto import Signer, verify

PROTOCOL = "/dkms/bench/echo"
FLOOR_PROTOCOL = "/dkms/bench/floor"  # echo after a witness's least work: see `Floor`
REQUESTER_SEEDS = {"stream": b"\x01" * 32, "session": b"\x03" * 32}
RESPONDER_SEED = b"\x02" * 32


async def echo(peer: str, payload: bytes) -> tuple[Code, bytes, str]:
    return Code.OK, payload, ""


class Floor:
    """The least a durable witness does per event before it answers (`benchmarks/witness.py`'s
    `floor` row): verify one Ed25519 signature, sign one, and make one row durable in SQLite as
    the node's store does (WAL, `synchronous=FULL`, a transaction per commit, on a worker thread
    as its group commit runs), then echo."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS kept (row BLOB)")
        self.signer = Signer(bytes(32))

    def commit(self, row: bytes) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("INSERT INTO kept VALUES (?)", (row,))
        self.db.execute("COMMIT")

    async def __call__(self, peer: str, payload: bytes) -> tuple[Code, bytes, str]:
        signature = self.signer.sign_raw(payload)
        if not verify(self.signer.public, signature, payload):
            return Code.INVALID, b"", "signature did not verify"
        await trio.to_thread.run_sync(self.commit, payload + signature)
        return Code.OK, payload, ""


async def serve(muxer: str, floor_db: Path | None = None) -> None:
    """Responder process: print our introduction, echo until stdin closes (with `floor_db`,
    also `FLOOR_PROTOCOL`, keeping its rows there)."""
    config = HostConfig(muxer=muxer)  # type: ignore[arg-type]
    async with open_host(RESPONDER_SEED, config=config) as host:
        host.handle(PROTOCOL, echo)
        if floor_db is not None:
            host.handle(FLOOR_PROTOCOL, Floor(floor_db))
        print(host.introduction, flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)


async def measure(
    host: P2PHost, target: str, size: int, requests: int, width: int
) -> dict[str, float]:
    """`requests` round trips with `width` in flight at once."""
    payload = bytes(size)
    latencies: list[float] = []
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < requests:
            next_index += 1
            start = time.perf_counter()
            code, answer, _ = await host.request(target, PROTOCOL, payload)
            latencies.append(time.perf_counter() - start)
            if not code.ok or len(answer) != size:
                raise SystemExit("the responder did not echo")

    await host.request(target, PROTOCOL, payload)  # connect and warm up
    wall, cpu = time.perf_counter(), time.process_time()
    async with trio.open_nursery() as nursery:
        for _ in range(width):
            nursery.start_soon(worker)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    latencies.sort()
    return {
        "per_s": requests / wall,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "cpu_ms_per_request": cpu / requests * 1000,
    }


async def run(args: argparse.Namespace, muxer: str, target: str | None) -> None:
    transports = ["stream", "session"] if args.transport == "both" else [args.transport]
    if muxer == "mplex":
        transports = ["stream"]  # sessions need Yamux
    async with AsyncExitStack() as stack:
        hosts: dict[str, P2PHost] = {}
        for name in transports:
            config = HostConfig(muxer=muxer, sessions=name == "session")  # type: ignore[arg-type]
            hosts[name] = await stack.enter_async_context(
                open_host(REQUESTER_SEEDS[name], config=config)
            )
        if target is None:  # one process: the responder lives in this loop too
            config = HostConfig(muxer=muxer)  # type: ignore[arg-type]
            responder = await stack.enter_async_context(open_host(RESPONDER_SEED, config=config))
            responder.handle(PROTOCOL, echo)
            target = responder.introduction
        await report(args, muxer, hosts, target)


async def report(
    args: argparse.Namespace, muxer: str, hosts: dict[str, P2PHost], target: str
) -> None:
    for size in args.sizes:
        for width in args.concurrency:
            best: dict[str, dict[str, float]] = {}
            for _ in range(args.repeat):
                for name, host in hosts.items():
                    got = await measure(host, target, size, args.requests, width)
                    if name not in best or got["per_s"] > best[name]["per_s"]:
                        best[name] = got
            for name, figures in best.items():
                row: dict[str, object] = {
                    "muxer": muxer,
                    "transport": name,
                    "processes": args.processes,
                    "bytes": size,
                    "in_flight": width,
                }
                row.update({k: round(v, 2) for k, v in figures.items()})
                if name == "session" and "stream" in best:
                    row["x_stream"] = round(figures["per_s"] / best["stream"]["per_s"], 2)
                print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--sizes", type=_ints, default=[300, 1024])
    parser.add_argument("--concurrency", type=_ints, default=[1, 8, 32])
    parser.add_argument("--muxer", choices=["yamux", "mplex", "both"], default="yamux")
    parser.add_argument("--processes", type=int, choices=[1, 2], default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--transport", choices=["stream", "session", "both"], default="both")
    parser.add_argument("--serve", choices=["yamux", "mplex"], help=argparse.SUPPRESS)
    parser.add_argument("--floor-db", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        trio.run(serve, args.serve, args.floor_db)
        return
    for muxer in ["yamux", "mplex"] if args.muxer == "both" else [args.muxer]:
        if args.processes == 1:
            trio.run(run, args, muxer, None)
            continue
        responder = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", muxer],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert responder.stdout is not None
            target = responder.stdout.readline().strip()
            if not target:
                raise SystemExit("the responder process did not start")
            trio.run(run, args, muxer, target)
        finally:
            assert responder.stdin is not None
            responder.stdin.close()  # the responder's cue to shut down
            responder.wait(timeout=10)


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


if __name__ == "__main__":
    main()

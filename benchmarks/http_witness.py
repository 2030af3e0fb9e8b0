"""Events/s one witness receipts over HTTP (keripy's `POST /receipts`) next to libp2p.

One `dkms-node run` witness in its own process, a durable SQLite store in a temporary
directory, serving both `/dkms/1/submit` over libp2p and keripy's witness surface over HTTP
(`--http-listen 127.0.0.1:PORT`, node/http/witnessing.py); this process is the controller
side, over loopback. The events are the same kind in both modes: JSON KERI events (what
keripy's `kli` sends), signed in advance, one identifier per request kept in flight, each
identifier's inception sent (untimed) before its interactions:

    libp2p  each event, body and attachments, sent to `/dkms/1/submit` as
            `benchmarks/witness.py`'s `submit` mode does; it counts once the reply carries
            the witness's receipt
    http    each event POSTed to `/receipts` as kli's `--receipt-endpoint` does: the JSON body,
            its attachments as qb64 text in `CESR-ATTACHMENT`, `Content-Type:
            application/cesr+json`, `CESR-DESTINATION` the witness's prefix; it counts once
            the 200 with the `rct` and the witness's `-C` couple arrives. One httpx client per
            identifier, its one HTTP/1.1 connection kept alive across the leg

So the only difference is the transport: py-libp2p (TCP, noise, yamux, a stream per request)
against hypercorn (TCP, HTTP/1.1 keep-alive, ASGI), both in front of the same role. For each
number in flight the legs alternate, libp2p, http, libp2p, http (`--legs`), fresh identifiers
each, so the machine's noise and the store's growth fall on both modes. Receipts are checked
(one per event, signature valid) after each leg's clock stops.

Output, one JSON object per line on stdout: per (mode, in_flight) the legs together, events/s,
latency p50/p99 per request, CPU ms per event here and in the witness (from /proc), and each
leg's events/s; then a `ratio` line, http over libp2p per number in flight.

    python benchmarks/http_witness.py [--events 1500] [--in-flight 1,8] [--legs 2]
                                      [--anchor-bytes 64] [--dir DIR]
                                      [--profile cprofile|py-spy] [--top 25]
                                      [--modes libp2p,http]

`--profile` profiles the witness as `benchmarks/witness.py` does (the profile on stderr).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio
from witness import (
    Chain,
    Peer,
    Timing,
    check_receipts,
    emit,
    machine,
    measure_submit,
    show_profile,
    timed,
    witness_command,
)

from dkms.node.p2p import open_host
from dkms.node.testing.cluster import free_port
from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.events import Kind, incept, interact, sniff
from dkms.protocol.stream import Attachments, messagize

MODES = ("libp2p", "http")
CESR_JSON = "application/cesr+json"


def make_json_chain(witness: str, count: int, anchor_bytes: int) -> Chain:
    """`witness.make_chain`, in JSON: an inception naming `witness`, then `count` interactions."""
    signer, nxt = Signer(os.urandom(32)), Signer(os.urandom(32))
    icp = incept(
        [signer.verfer],
        next_digests=[next_key_digest(nxt.verfer)],
        witnesses=[witness],
        toad=1,
        kind=Kind.JSON,
    )
    prior, messages, raws, saids = icp.said, [], [], []
    for sn in range(1, count + 1):
        anchor = {"i": icp.prefix, "s": f"{sn:x}", "d": prior, "x": "x" * anchor_bytes}
        event = interact(icp.prefix, prior=prior, sn=sn, anchors=[anchor], kind=Kind.JSON)
        messages.append(messagize(event, Attachments(sigs=(signer.sign_indexed(event.raw, 0),))))
        raws.append(event.raw)
        saids.append(event.said)
        prior = event.said
    inception = messagize(icp, Attachments(sigs=(signer.sign_indexed(icp.raw, 0),)))
    return Chain(icp.prefix, inception, messages, raws, saids)


@dataclass(frozen=True, slots=True)
class Post:
    """One message as kli posts it: the JSON body, the attachments in a header."""

    body: bytes
    headers: dict[str, str]


def as_post(message: bytes, witness: str) -> Post:
    """Split a messagized event into keripy's HTTP form, addressed to `witness`."""
    kind, size = sniff(message[:32])
    if kind is not Kind.JSON:
        raise ValueError(f"keripy's HTTP surface takes JSON events, not {kind}")
    headers = {
        "Content-Type": CESR_JSON,
        "CESR-ATTACHMENT": message[size:].decode("ascii"),
        "CESR-DESTINATION": witness,
    }
    return Post(message[:size], headers)


# ---------------------------------------------------------------- the two modes


async def post_receipts(client: httpx.AsyncClient, post: Post) -> bytes:
    answer = await client.post("/receipts", content=post.body, headers=post.headers)
    if answer.status_code != 200:
        raise SystemExit(f"POST /receipts answered {answer.status_code}: {answer.text[:200]}")
    return answer.content


async def measure_http(
    url: str, witness: Peer, prefix: str, chains: list[Chain], replies: list[bytes]
) -> Timing:
    posts = [[as_post(m, prefix) for m in chain.messages] for chain in chains]
    async with AsyncExitStack() as stack:
        clients = []
        for _ in chains:  # one connection each, kept alive
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            client = httpx.AsyncClient(base_url=url, limits=limits, timeout=30)
            clients.append(await stack.enter_async_context(client))
        for client, chain in zip(clients, chains, strict=True):  # untimed; connects too
            replies.append(await post_receipts(client, as_post(chain.inception, prefix)))

        async def submit_chain(
            client: httpx.AsyncClient, chain_posts: list[Post], latencies: list[float]
        ) -> None:
            for post in chain_posts:
                start = time.perf_counter()
                replies.append(await post_receipts(client, post))
                latencies.append(time.perf_counter() - start)

        async def work(latencies: list[float]) -> None:
            async with trio.open_nursery() as nursery:
                for client, chain_posts in zip(clients, posts, strict=True):
                    nursery.start_soon(submit_chain, client, chain_posts, latencies)

        return await timed(witness, sum(len(p) for p in posts), work)


# ---------------------------------------------------------------- legs


def merged(timings: list[Timing]) -> Timing:
    """Several legs as one measurement: their events, clocks and CPU added up."""
    return Timing(
        sum(t.events for t in timings),
        sum(t.wall for t in timings),
        sum(t.cpu for t in timings),
        sum(t.peer_cpu for t in timings),
        [lat for t in timings for lat in t.latencies],
    )


async def run(args: argparse.Namespace, witness: Peer, url: str) -> None:
    prefix = witness.introduction.split("@", 1)[0]
    ratio: dict[str, Any] = {"what": "ratio", "of": "http/libp2p", "per_s": {}, "witness_cpu": {}}
    async with open_host(os.urandom(32)) as host:
        for width in args.in_flight:
            per_chain = max(1, args.events // width)
            legs: dict[str, list[Timing]] = {mode: [] for mode in args.modes}
            for _ in range(args.legs):
                for mode in args.modes:
                    chains = [
                        make_json_chain(prefix, per_chain, args.anchor_bytes) for _ in range(width)
                    ]
                    replies: list[bytes] = []
                    if mode == "libp2p":
                        timing = await measure_submit(host, witness, chains, 1, replies)
                    else:
                        timing = await measure_http(url, witness, prefix, chains, replies)
                    check_receipts(prefix, chains, replies)
                    legs[mode].append(timing)
            rows = {}
            for mode, timings in legs.items():
                row = merged(timings).row(what=mode, in_flight=width, legs=len(timings))
                row["legs_per_s"] = [round(t.events / t.wall, 1) for t in timings]
                rows[mode] = row
                emit(row)
            if len(rows) == len(MODES):
                http, p2p = rows["http"], rows["libp2p"]
                ratio["per_s"][str(width)] = round(http["per_s"] / p2p["per_s"], 3)
                ratio["witness_cpu"][str(width)] = round(
                    http["cpu_ms_per_event_peer"] / p2p["cpu_ms_per_event_peer"], 3
                )
    if ratio["per_s"]:
        emit(ratio)


# ---------------------------------------------------------------- command line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1500, help="events per leg")
    parser.add_argument("--in-flight", type=_ints, default=[1, 8])
    parser.add_argument("--legs", type=int, default=2, help="legs of each mode, alternating")
    parser.add_argument("--modes", type=_modes, default=list(MODES))
    parser.add_argument("--anchor-bytes", type=int, default=64, help="padding in each anchor")
    parser.add_argument("--dir", default=None, help="where the witness keeps its store")
    parser.add_argument("--profile", choices=["cprofile", "py-spy"], default=None)
    parser.add_argument("--top", type=int, default=25, help="profile lines to print")
    parser.add_argument("--profile-out", type=Path, default=None, help="keep the raw profile")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="dkms-http-witness-bench-", dir=args.dir))
    profile_out = directory / ("witness.prof" if args.profile == "cprofile" else "witness.spy")
    port = free_port()
    emit({"machine": machine(), "store_dir": str(directory), "http_port": port})
    try:
        command = witness_command(directory / "witness", args.profile, profile_out)
        command += ["--http-listen", f"127.0.0.1:{port}"]
        # The HTTP socket is bound before the witness prints its introduction: a connection
        # made after it waits in the backlog until hypercorn serves.
        with Peer(command, directory / "witness.log") as witness:
            trio.run(run, args, witness, f"http://127.0.0.1:{port}")
        if args.profile:
            show_profile(args.profile, profile_out, args.top)
            if args.profile_out is not None and profile_out.exists():
                shutil.copy(profile_out, args.profile_out)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def _modes(text: str) -> list[str]:
    modes = [part.strip() for part in text.split(",")]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown mode {unknown[0]!r}: one of {', '.join(MODES)}")
    return modes


if __name__ == "__main__":
    main()

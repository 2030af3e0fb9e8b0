"""Network throughput: what 4 witnesses (bt=3) and 2 watchers absorb, as processes (issue 15).

    python benchmarks/network.py [--seconds 60] [--identifiers 40] [--keep DIR]

Each node is a `dkms-node run` process on 127.0.0.1. One controller (this process, its own
libp2p host) incepts `--identifiers` identifiers with all four witnesses (bt=3), then each
makes interaction events one after another, each as soon as the last is fully witnessed, for
`--seconds`. Reported, as JSON on stdout:

    witnessed_per_s       events fully witnessed per second (receipts of bt witnesses back)
    watched_per_s         events both watchers hold per second (counted at the watchers)
    witness_ms            from signing an event to its being fully witnessed: p50, p99
    watched_ms            from signing to both watchers holding it: p50, p99, approximate:
                          the watchers' event counts (`dkms_store_events`, sampled every
                          0.1 s) are matched in order with the events' signing times
    cpu_ms_per_event      CPU (user + system, /proc/PID/stat) each node spent per event,
                          the controller's (this process, its load and its host), and all
                          of it together (`all`: what the 2 cores must supply per event)
    messages_per_event    per node: requests it received and sent, gossip it published
                          (the nodes' own counters: `dkms_requests_total`, ...)
    crypto_floor          signatures each node (and the controller) verified and made per
                          event, as the nodes count them (`dkms_signatures_checked_total`,
                          `dkms_gossip_signatures_checked_total`, `dkms_receipts_signed_total`,
                          `dkms_gossip_published_total`) until the watchers caught up, over the
                          events signed; an Ed25519 verify and sign timed in this process in
                          the same run; the CPU those signatures cost the whole network per
                          event, and the events/s that bounds on this machine's cores with
                          nothing else done

The load is closed-loop (one event in flight per identifier), so its rate is what the
network turns round, not an offered rate. The issue's goal on 2 cores: >= 1,000 events/s
witnessed and held by both watchers, p99 to both watchers <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from bisect import bisect_left
from pathlib import Path
from typing import Any

import trio

from dkms.node.client.controller import ControllerClient, WitnessingFailed
from dkms.node.p2p import open_host
from dkms.node.p2p.transport import P2PTransport
from dkms.node.roles.controller import Controller, RetryPolicy
from dkms.node.testing.cluster import Cluster, NodeProcess, incept_all, start_network
from dkms.protocol.crypto import MemoVerifier, Signer, verify

COUNTERS = (
    "dkms_requests_total",  # requests received
    "dkms_requests_sent_total",
    "dkms_gossip_published_total",
)
CHECKED = (
    "dkms_signatures_checked_total",  # KERI signatures verified
    "dkms_gossip_signatures_checked_total",  # libp2p's, one per gossip message first heard
)
SIGNED = (
    "dkms_receipts_signed_total",
    "dkms_gossip_published_total",  # gossip messages (a batch once): each signed by libp2p
)
CRYPTO = CHECKED + SIGNED
TICKS = os.sysconf("SC_CLK_TCK")


def say(text: str) -> None:
    print(f"[network] {text}", file=sys.stderr, flush=True)


def cpu_seconds(node: NodeProcess) -> float:
    fields = Path(f"/proc/{node.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def counters(node: NodeProcess, names: tuple[str, ...] = COUNTERS) -> dict[str, float]:
    """Each counter, summed over its labels (requests are counted per surface)."""
    url = f"http://127.0.0.1:{node.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        lines = answer.read().decode().splitlines()
    sums = dict.fromkeys(names, 0.0)
    for line in lines:
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in sums:
            sums[name] += float(line.rsplit(" ", 1)[1])
    return sums


def short(counter: str) -> str:
    """`dkms_requests_total` -> `requests`, as the report names it."""
    return counter.removeprefix("dkms_").removesuffix("_total")


def crypto_costs(rounds: int = 2000) -> tuple[float, float]:
    """Microseconds of one Ed25519 verify and one sign of a 300-byte message, best of 3."""
    signer = Signer(os.urandom(32))
    message = os.urandom(300)
    signature = signer.sign_raw(message)
    best_verify = best_sign = float("inf")
    for _ in range(3):
        start = time.process_time()
        for _ in range(rounds):
            verify(signer.public, signature, message)
        best_verify = min(best_verify, (time.process_time() - start) / rounds)
        start = time.process_time()
        for _ in range(rounds):
            signer.sign_raw(message)
        best_sign = min(best_sign, (time.process_time() - start) / rounds)
    return best_verify * 1e6, best_sign * 1e6


def crypto_floor(
    ops: dict[str, dict[str, float]], controller: tuple[int, int], events: int
) -> dict[str, Any]:
    """Signatures verified and made per event, per node; what they cost together."""
    verify_us, sign_us = crypto_costs()
    per_event: dict[str, dict[str, float]] = {}
    for name, counts in ops.items():
        per_event[name] = {
            "verified": round(sum(counts[key] for key in CHECKED) / events, 2),
            "signed": round(sum(counts[key] for key in SIGNED) / events, 2),
            **{short(key): round(counts[key] / events, 2) for key in CRYPTO},
        }
    per_event["controller"] = {
        "verified": round(controller[0] / events, 2),
        "signed": round(controller[1] / events, 2),
    }
    verified = sum(p["verified"] for p in per_event.values())
    signed = sum(p["signed"] for p in per_event.values())
    ms = (verified * verify_us + signed * sign_us) / 1000
    cores = os.cpu_count() or 1
    return {
        "verify_us": round(verify_us, 1),
        "sign_us": round(sign_us, 1),
        "per_event": per_event,
        "verified_per_event": round(verified, 1),
        "signed_per_event": round(signed, 1),
        "cpu_ms_per_event": round(ms, 2),
        "max_events_per_s": round(cores * 1000 / ms, 0),
        "cores": cores,
    }


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


async def load(
    client: ControllerClient, names: list[str], until: float, signed: list[float], done: list[float]
) -> None:
    """Each identifier: sign an interaction, wait until it is fully witnessed, again."""
    ctl = client.controller

    async def one(name: str) -> None:
        n = 0
        while time.monotonic() < until:
            n += 1
            start = time.monotonic()
            effects = ctl.interact(name, [{"n": n}], now=client.runtime.now())
            signed.append(start)
            try:
                await client.witnessed(effects, ctl.identity(name).last_said)
                done.append(time.monotonic() - start)
            except WitnessingFailed:
                say(f"{name}: an event failed to gather its receipts; going on")

    async with trio.open_nursery() as nursery:
        for name in names:
            nursery.start_soon(one, name)


async def watch_counts(watcher: NodeProcess, base: float, seen: list[tuple[float, float]]) -> None:
    """Sample the watcher's stored-event count (minus `base`) until cancelled."""
    while True:
        count = await trio.to_thread.run_sync(watcher.metric, "dkms_store_events")
        if count is not None:
            seen.append((time.monotonic(), count - base))
        await trio.sleep(0.1)


def reached(seen: list[tuple[float, float]], k: int) -> float | None:
    """When the sampled count first reached `k`."""
    counts = [c for _, c in seen]
    i = bisect_left(counts, k)
    return seen[i][0] if i < len(seen) else None


async def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    with Cluster(root) as cluster:
        witnesses, watchers = await start_network(cluster)
        async with open_host(os.urandom(32)) as host:
            transport = P2PTransport(host)
            for node in cluster.nodes:
                transport.learn(node.intro)
            retry = RetryPolicy(first=0.05, cap=1.0, attempts=10_000)
            memo = MemoVerifier()  # the controller's: its checks counted
            client = ControllerClient(Controller(retry=retry, verify=memo), transport)
            async with trio.open_nursery() as nursery:
                await nursery.start(client.run)
                names = [f"id{i}" for i in range(args.identifiers)]
                await incept_all(client, names, [w.prefix for w in witnesses], toad=3)
                await trio.sleep(2.0)  # the inceptions' gossip settles before the clock starts
                say(f"{len(names)} identifiers incepted; load for {args.seconds} s")
                nodes = {n.data_dir.name: n for n in cluster.nodes}
                bases = {w.data_dir.name: w.metric("dkms_store_events") or 0.0 for w in watchers}
                cpu0 = {name: cpu_seconds(n) for name, n in nodes.items()}
                own0 = time.process_time()  # the controller's (this process's) CPU
                # one scrape per node for both: message and signature counters
                msg0 = crypto0 = {name: counters(n, COUNTERS + CRYPTO) for name, n in nodes.items()}
                checked0 = memo.checked
                seen: dict[str, list[tuple[float, float]]] = {name: [] for name in bases}
                signed: list[float] = []
                done: list[float] = []
                start = time.monotonic()
                async with trio.open_nursery() as sampling:
                    for w in watchers:
                        name = w.data_dir.name
                        sampling.start_soon(watch_counts, w, bases[name], seen[name])
                    await load(client, names, start + args.seconds, signed, done)
                    elapsed = time.monotonic() - start
                    cpu1 = {name: cpu_seconds(n) for name, n in nodes.items()}
                    own1 = time.process_time()
                    msg1 = {name: counters(n) for name, n in nodes.items()}
                    with trio.move_on_after(30):  # the watchers finish what was witnessed
                        while any(not s or s[-1][1] < len(done) for s in seen.values()):
                            await trio.sleep(0.1)
                    sampling.cancel_scope.cancel()
                crypto1 = {name: counters(n, CRYPTO) for name, n in nodes.items()}
                checked1 = memo.checked
                nursery.cancel_scope.cancel()
        events = len(done)
        signed.sort()
        watched: list[float] = []
        for k in range(1, events + 1):
            times = [reached(s, k) for s in seen.values()]
            if all(t is not None for t in times):
                watched.append(max(t for t in times if t is not None) - signed[k - 1])
        last = max((s[-1][0] for s in seen.values() if s), default=start)
        held = min((s[-1][1] for s in seen.values() if s), default=0.0)
        return {
            "seconds": round(elapsed, 1),
            "identifiers": args.identifiers,
            "events_witnessed": events,
            "witnessed_per_s": round(events / elapsed, 1),
            "events_held_by_both_watchers": int(held),
            "watched_per_s": round(min(held, events) / max(last - start, elapsed), 1),
            "witness_ms": {"p50": quantile(done, 0.5), "p99": quantile(done, 0.99)},
            "watched_ms": {"p50": quantile(watched, 0.5), "p99": quantile(watched, 0.99)},
            "cpu_ms_per_event": {
                **{
                    name: round((cpu1[name] - cpu0[name]) * 1000 / max(events, 1), 2)
                    for name in nodes
                },
                "controller": round((own1 - own0) * 1000 / max(events, 1), 2),
                "all": round(
                    (sum(cpu1.values()) - sum(cpu0.values()) + own1 - own0) * 1000 / max(events, 1),
                    2,
                ),
            },
            "messages_per_event": {
                name: {
                    short(key): round((msg1[name][key] - msg0[name][key]) / max(events, 1), 2)
                    for key in COUNTERS
                }
                for name in nodes
            },
            "crypto_floor": crypto_floor(
                {
                    name: {key: crypto1[name][key] - crypto0[name][key] for key in CRYPTO}
                    for name in nodes
                },
                (checked1 - checked0, len(signed)),
                max(len(signed), 1),
            ),
            "dead": cluster.dead(),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--identifiers", type=int, default=40)
    parser.add_argument("--keep", type=Path, default=None, help="keep data and logs here")
    args = parser.parse_args()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        report = trio.run(run, args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="dkms-network-") as tmp:
            report = trio.run(run, args, Path(tmp))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""How fast an equivocation is caught: from the second, conflicting version reaching its
first witness to every watcher holding verified evidence (and the judge's ruling).

A 10-node network on loopback (by default 4 witnesses with bt=3 and 6 watchers, every watcher
a juror, the first the judge), all real nodes (libp2p hosts, SQLite stores, the `dkms-node`
code) in this one process (`dkms.node.testing.localnet`). Each round, a new identifier is incepted
with the four witnesses; its keys then sign two interactions at sn 1, version a sent to w0 and
w1 and version b to w2 and w3 at the same moment. Clocks:

    t0          version b accepted by its first witness (that witness's own step)
    evidence    each watcher's first step holding verified evidence against the identifier
    ruling      each watcher's first step holding a judge's ruling against it (the judge's
                own ruling first)

Reported per round: the slowest watcher's evidence and ruling times after t0; over all
rounds: p50, p90 and max of those. Everything shares one event loop (and the machine's
cores with nothing else), so these are upper bounds for nodes in their own processes.

    python benchmarks/duplicity.py [--rounds 10] [--witnesses 4] [--watchers 6]

Output: one JSON object on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from dkms.node.p2p.logs import quiet_libp2p
from dkms.node.roles.witness import Witness
from dkms.node.testing.localnet import LocalNet, local_network


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"p50": round(statistics.median(ordered), 1), "p90": at(0.9), "max": at(1.0)}


async def one_round(net: LocalNet, n: int) -> dict[str, float]:
    prefix = await net.incept(f"m{n}", (os.urandom(32), os.urandom(32)))
    _, msg_a = net.signed_ixn(f"m{n}", [{"round": n, "v": "a"}])
    b, msg_b = net.signed_ixn(f"m{n}", [{"round": n, "v": "b"}])
    first_b: list[float] = []
    evidence: dict[str, float] = {}
    ruling: dict[str, float] = {}
    witnesses = [net.runtimes[w] for w in net.w[2:]]
    watchers = [(h.prefix, net.runtimes[h.prefix]) for h in net.watchers]

    def witness_step() -> None:
        for runtime in witnesses:
            role = runtime.role
            assert isinstance(role, Witness)
            if not first_b and role.validator.record(b.said) is not None:
                first_b.append(time.perf_counter())

    def watcher_step() -> None:
        now = time.perf_counter()
        for name, runtime in watchers:
            held = runtime.role.holdings  # type: ignore[attr-defined]
            if name not in evidence and held.standing(prefix, True)[0] == "duplicitous":
                evidence[name] = now
            if name not in ruling and any(
                h.accusation.accused == prefix for h in held.rulings.values()
            ):
                ruling[name] = now

    for runtime in witnesses:
        runtime.after_step = witness_step
    for _, runtime in watchers:
        runtime.after_step = watcher_step
    try:
        async with trio.open_nursery() as nursery:
            for i, message in enumerate((msg_a, msg_a, msg_b, msg_b)):
                nursery.start_soon(net.submit, i, message)
            await net.until(lambda: len(evidence) == len(ruling) == len(watchers))
    finally:
        for runtime in witnesses:
            runtime.after_step = None
        for _, runtime in watchers:
            runtime.after_step = None
    t0 = first_b[0] if first_b else min(evidence.values())
    return {
        "evidence_ms": (max(evidence.values()) - t0) * 1000,
        "ruling_ms": (max(ruling.values()) - t0) * 1000,
        "first_evidence_ms": (min(evidence.values()) - t0) * 1000,
        "judge_ruling_ms": (min(ruling.values()) - t0) * 1000,
        "b_accepted": float(bool(first_b)),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="dkms-bench-dup-") as tmp:
        async with local_network(
            Path(tmp), witnesses=args.witnesses, watchers=args.watchers
        ) as net:
            rounds = []
            for n in range(args.rounds):
                with trio.fail_after(60):
                    result = await one_round(net, n)
                rounds.append(result)
                print(
                    f"round {n + 1}/{args.rounds}: every watcher has evidence "
                    f"{result['evidence_ms']:.0f} ms, a ruling {result['ruling_ms']:.0f} ms "
                    "after version b reached its first witness",
                    file=sys.stderr,
                )
    return {
        "nodes": args.witnesses + args.watchers,
        "witnesses": args.witnesses,
        "watchers": args.watchers,
        "rounds": args.rounds,
        "all_watchers_evidence_ms": percentiles([r["evidence_ms"] for r in rounds]),
        "first_watcher_evidence_ms": percentiles([r["first_evidence_ms"] for r in rounds]),
        "judge_ruling_ms": percentiles([r["judge_ruling_ms"] for r in rounds]),
        "all_watchers_ruling_ms": percentiles([r["ruling_ms"] for r in rounds]),
        "rounds_where_b_was_accepted_by_a_witness": sum(r["b_accepted"] for r in rounds),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--witnesses", type=int, default=4)
    parser.add_argument("--watchers", type=int, default=6)
    args = parser.parse_args()
    if args.witnesses < 4 or args.watchers < 1:
        parser.error("need at least 4 witnesses (bt=3 split 2/2) and 1 watcher")
    quiet_libp2p()
    logging.getLogger("dkms").setLevel(logging.ERROR)
    print(json.dumps(trio.run(run, args)))


if __name__ == "__main__":
    main()

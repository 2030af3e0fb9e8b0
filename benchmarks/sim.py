"""The simulator's targets (issue 5), measured: scale, honest latency, equivocation
detection, sybil resistance, determinism.

    python benchmarks/sim.py [--nodes 1000,10000] [--big 100000] [--big-duration S]
                             [--skip-big] [--huge 1000000 --huge-virtual 10]

For each size in --nodes: the shipped `honest`, `equivocation` and `sybil-30pct` scenarios
(60 virtual seconds, 1 new event per virtual second, mesh D=6, lognormal links with a 50 ms
median) at that many nodes; then `honest` at --big nodes, to completion (--big-duration
shortens its workload: us per delivery hardly depends on it); then, with --huge, `honest` at
that many nodes for --huge-virtual seconds of workload (plus the scenario's 5 s to settle).
Each row: wall seconds against virtual seconds, us per delivery, peak RSS (this process:
rows run in separate processes so each peak is its own), and the scenario's own results.
Then the checks:

    scale         wall < virtual, peak < 1.5 GB, <= 10 us/delivery (at 10,000 nodes)
    at scale      --big: <= 2 us/delivery; --huge: runs to completion under 8 GB peak RSS
    honest        p99 to every watcher <= 400 ms (1,000) / 500 ms (10,000), ratio 1.0
    equivocation  every honest watcher detects, no false alarms, p99 detection <= p99
                  propagation + one heartbeat
    sybil-30pct   ratio >= 0.999, p99 <= 2x the honest p99
    determinism   the same seed twice gives identical results.json bytes (1,000 nodes)

Output: a table on stderr, one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
from typing import Any

from dkms.simulations.runner import run
from dkms.simulations.scenario import load


def one(
    name: str, nodes: int, seed: int | None = None, duration: float | None = None
) -> dict[str, Any]:
    changes: dict[str, Any] = {"nodes": nodes}
    if seed:
        changes["seed"] = seed
    if duration:
        changes["duration"] = duration
    scenario = load(name).with_params(**changes)
    outcome = run(scenario)
    return {
        "results": outcome.results,
        "perf": outcome.perf,
        "duration": scenario.duration,
        "settle": scenario.settle,
    }


def isolated(
    name: str, nodes: int, seed: int | None = None, duration: float | None = None
) -> dict[str, Any]:
    """Run in a fresh process, so its peak memory is its own."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        out: dict[str, Any] = pool.apply(one, (name, nodes, seed, duration))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="1000,10000")
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--big-duration", type=float, default=None, metavar="S")
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--huge", type=int, default=0, metavar="N", help="e.g. 1000000")
    parser.add_argument("--huge-virtual", type=float, default=10.0, metavar="S")
    args = parser.parse_args()
    sizes = [int(n) for n in args.nodes.split(",")]
    runs: dict[str, dict[str, Any]] = {}
    for nodes in sizes:
        for name in ("honest", "equivocation", "sybil-30pct"):
            key = f"{name}@{nodes}"
            runs[key] = isolated(name, nodes)
            _row(key, runs[key])
    if not args.skip_big:
        key = f"honest@{args.big}"
        runs[key] = isolated("honest", args.big, duration=args.big_duration)
        _row(key, runs[key])
    if args.huge:
        key = f"honest@{args.huge}"
        runs[key] = isolated("honest", args.huge, duration=args.huge_virtual)
        _row(key, runs[key])
    twice = [
        json.dumps(isolated("equivocation", 1000)["results"], sort_keys=True) for _ in range(2)
    ]
    checks = _checks(runs, sizes, twice[0] == twice[1])
    for check in checks:
        print(
            f"{'met' if check['met'] else 'NOT MET':8} {check['what']}: {check['measured']}",
            file=sys.stderr,
        )
    print(json.dumps({"runs": runs, "checks": checks, "python": sys.version.split()[0]}))


def _end(done: dict[str, Any]) -> float:
    """Virtual seconds the run was asked for (duration + settle)."""
    return float(done["duration"] + done["settle"])


def _row(key: str, run: dict[str, Any]) -> None:
    r, p = run["results"], run["perf"]
    p99 = (r["to_watchers_ms"] or {}).get("p99")
    print(
        f"{key:22} wall {p['wall_s']:7.1f} s / virtual {r['virtual_s']:.0f} s, "
        f"{p['us_per_delivery']:5.2f} us/delivery ({p.get('cpu_us_per_delivery', 0):5.2f} CPU), "
        f"peak {p['peak_rss_mb']:7.1f} MB, "
        f"{r['deliveries']:>11,} deliveries, ratio {r['delivery_ratio']}, p99 to watchers {p99} ms",
        file=sys.stderr,
        flush=True,
    )


def _checks(runs: dict[str, dict[str, Any]], sizes: list[int], same: bool) -> list[dict[str, Any]]:
    out = []

    def add(what: str, met: bool, measured: str) -> None:
        out.append({"what": what, "met": bool(met), "measured": measured})

    if 10_000 in sizes:
        p, r = runs["honest@10000"]["perf"], runs["honest@10000"]["results"]
        add(
            "10,000 nodes: wall < virtual",
            p["wall_s"] < r["virtual_s"],
            f"{p['wall_s']} s wall for {r['virtual_s']} virtual s",
        )
        add("10,000 nodes: peak < 1.5 GB", p["peak_rss_mb"] < 1536, f"{p['peak_rss_mb']} MB")
        add(
            "10,000 nodes: <= 10 us/delivery",
            p["us_per_delivery"] <= 10,
            f"{p['us_per_delivery']} us",
        )
    for key, done in runs.items():
        nodes = int(key.split("@")[1])
        if key.startswith("honest@") and nodes > 10_000:
            r, p = done["results"], done["perf"]
            # The workload's end plus the scenario's 5 s to settle: the run got there.
            end = _end(done)
            add(
                f"{key}: runs to completion ({end:g} virtual s), peak < 8 GB",
                r["virtual_s"] >= end and p["peak_rss_mb"] < 8192,
                f"{p['wall_s']} s wall for {r['virtual_s']} virtual s, peak {p['peak_rss_mb']} MB",
            )
            if nodes < 1_000_000:
                add(
                    f"{key}: <= 2 us/delivery",
                    p["us_per_delivery"] <= 2.0,
                    f"{p['us_per_delivery']} us ({p.get('cpu_us_per_delivery')} us of CPU; "
                    f"{r['deliveries']:,} deliveries)",
                )
    for nodes, bound in ((1000, 400), (10_000, 500)):
        if nodes not in sizes:
            continue
        r = runs[f"honest@{nodes}"]["results"]
        p99 = r["to_watchers_ms"]["p99"]
        add(
            f"honest@{nodes}: p99 to every watcher <= {bound} ms, ratio 1.0",
            p99 <= bound and r["delivery_ratio"] == 1.0,
            f"p99 {p99} ms, ratio {r['delivery_ratio']}",
        )
    for nodes in sizes:
        honest = runs[f"honest@{nodes}"]["results"]
        eq = runs[f"equivocation@{nodes}"]["results"]
        bound = eq["to_watchers_ms"]["p99"] + 1000 * 1.0  # one heartbeat
        det = eq["detection_ms"]["p99"] if eq["detection_ms"] else None
        add(
            f"equivocation@{nodes}: all honest watchers detect, no false alarm, "
            "p99 detection <= p99 propagation + 1 heartbeat",
            eq["detected_fraction"] == 1.0
            and eq["false_alarms"] == 0
            and det is not None
            and det <= bound,
            f"detected {eq['detected_fraction']}, false alarms {eq['false_alarms']}, "
            f"p99 detection {det} ms vs bound {bound:.0f} ms",
        )
        sy = runs[f"sybil-30pct@{nodes}"]["results"]
        ratio, p99 = sy["delivery_ratio"], sy["to_watchers_ms"]["p99"]
        base = honest["to_watchers_ms"]["p99"]
        add(
            f"sybil-30pct@{nodes}: ratio >= 0.999 and p99 <= 2x honest",
            ratio >= 0.999 and p99 <= 2 * base,
            f"ratio {ratio}, p99 {p99} ms vs honest {base} ms",
        )
    add("same seed, same results.json bytes", same, "identical" if same else "different")
    return out


if __name__ == "__main__":
    main()

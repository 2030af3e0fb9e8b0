"""Saturation: delivery ratio and p99 latency against offered load, model beside real nodes.

    python benchmarks/saturation.py [--rates 1,2,4,7,10,20,40] [--seeds 3] [--no-real]
                                    [--real-from FILE] [--data FILE] [--png FILE]

The shipped `saturation` scenario (16 nodes: 4 witnesses, 2 watchers, 8 identifiers, 2
relays; `[capacity]` costs calibrated against real nodes, every node on one CPU) at each
`event_rate`: in the simulator (`--seeds` seeds, mean) and on real py-libp2p nodes on
127.0.0.1 in one process (`run_real`: one run per rate, ~20 s each; its process CPU time is
recorded too). Writes the figures to `--data` (JSON; `--real-from` reads the real half back
from such a file instead of running it again), plots them to `--png` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter, ScalarFormatter

from dkms.simulations.real import run_real
from dkms.simulations.runner import run
from dkms.simulations.scenario import Scenario, load


def figures(results: dict[str, Any]) -> dict[str, Any]:
    """What the plot and table show of one run's results."""
    witnessed, reached = results["witnessed_ms"] or {}, results["to_watchers_ms"] or {}
    return {
        "events": results["events"],
        "delivery_ratio": results["delivery_ratio"],
        "witnessed_p50_ms": witnessed.get("p50"),
        "witnessed_p99_ms": witnessed.get("p99"),
        "to_watchers_p50_ms": reached.get("p50"),
        "to_watchers_p99_ms": reached.get("p99"),
        "reaching_every_watcher": results["events_reaching_every_watcher"],
        "capacity": results.get("capacity"),
    }


def model(sc: Scenario, rate: float, seeds: int) -> dict[str, Any]:
    runs = [
        figures(run(sc.with_params(event_rate=rate, seed=sc.seed + k)).results)
        for k in range(seeds)
    ]
    out: dict[str, Any] = {"by_seed": runs}
    for key in runs[0]:
        values = [r[key] for r in runs if isinstance(r[key], int | float)]
        if values:
            out[key] = round(sum(values) / len(values), 3)
    return out


def real(sc: Scenario, rate: float) -> dict[str, Any]:
    cpu = time.process_time()
    results, perf = run_real(sc.with_params(event_rate=rate))
    return {
        **figures(results),
        "cpu_s": round(time.process_time() - cpu, 2),
        "wall_s": perf["wall_s"],
    }


def plot(data: dict[str, Any], png: Path) -> None:
    fig, (ratio, latency) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, color, marker in (("model", "C0", "o"), ("real", "C1", "s")):
        points = data[name]
        rates = sorted(points, key=float)
        xs = [float(r) for r in rates]
        ratio.plot(
            xs, [points[r]["delivery_ratio"] for r in rates], "-", marker=marker, color=color,
            label=name,
        )  # fmt: skip
        for key, label, style in (
            ("to_watchers_p99_ms", "to every watcher", "-"),
            ("witnessed_p99_ms", "fully witnessed", ":"),
        ):
            pairs = [(x, points[r][key] / 1000) for x, r in zip(xs, rates, strict=True)
                     if points[r].get(key) is not None]  # fmt: skip
            latency.plot(
                [x for x, _ in pairs], [y for _, y in pairs], style, marker=marker,
                color=color, label=f"{name}: {label}",
            )  # fmt: skip
    sc = data["scenario"]
    ratio.set(xlabel="offered load (events/s)", ylabel="delivery ratio", title="delivery ratio")
    ratio.set_ylim(0, 1.05)
    latency.set(xlabel="offered load (events/s)", ylabel="p99 latency (s)", title="p99 latency")
    for ax in (ratio, latency):
        ax.set_xscale("log")
        ax.set_xticks([float(r) for r in data["model"]])
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"{sc['nodes']} nodes ({sc['witnesses']} witnesses, {sc['watchers']} watchers, "
        f"{sc['identifiers']} identifiers) in one process: the model beside real py-libp2p nodes"
    )
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def table(data: dict[str, Any]) -> str:
    head = f"{'rate':>5} | {'ratio':>13} | {'witnessed p99 s':>15} | {'watchers p99 s':>15} | drops"
    lines = [head, "      | model    real | model   real   | model   real   | model", "-" * 70]

    def s(v: Any) -> str:
        return "-" if v is None else f"{v / 1000:.2f}"

    for rate in sorted(data["model"], key=float):
        m, r = data["model"][rate], data["real"].get(rate, {})
        dropped = (m["by_seed"][0].get("capacity") or {}).get("gossip_dropped")
        lines.append(
            f"{float(rate):>5g} | {m['delivery_ratio']:.3f}  {r.get('delivery_ratio', '-')!s:>6} | "
            f"{s(m.get('witnessed_p99_ms')):>5}  {s(r.get('witnessed_p99_ms')):>6} | "
            f"{s(m.get('to_watchers_p99_ms')):>5}  {s(r.get('to_watchers_p99_ms')):>6} | "
            f"{dropped}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1,2,4,7,10,20,40")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--scenario", default="saturation")
    parser.add_argument("--no-real", action="store_true")
    parser.add_argument("--real-from", type=Path, default=None)
    parser.add_argument("--data", type=Path, default=Path("saturation.json"))
    parser.add_argument("--png", type=Path, default=Path("docs/saturation.png"))
    args = parser.parse_args()
    sc = load(args.scenario)
    rates = [float(r) for r in args.rates.split(",")]
    data: dict[str, Any] = {
        "scenario": {k: getattr(sc, k) for k in ("nodes", "witnesses", "watchers", "identifiers")},
        "capacity": asdict(sc.capacity),
        "model": {},
        "real": {},
    }
    if args.real_from is not None:
        data["real"] = json.loads(args.real_from.read_text())["real"]
    for rate in rates:
        key = f"{rate:g}"
        data["model"][key] = model(sc, rate, args.seeds)
        if not args.no_real and args.real_from is None:
            print(f"[saturation] real nodes at {rate:g} events/s", file=sys.stderr, flush=True)
            data["real"][key] = real(sc, rate)
        args.data.write_text(json.dumps(data, indent=2))
    plot(data, args.png)
    print(table(data))


if __name__ == "__main__":
    main()

"""`dkms-sim`: run scenarios, sweep a parameter, list the shipped scenarios.

    dkms-sim run SCENARIO [--nodes N] [--duration S] [--seed S] [--set KEY=VALUE]... [--out DIR]
                 [--no-plots]
    dkms-sim sweep SCENARIO --param KEY=V1,V2,... [--metric NAME] [--seeds N] [--workers N]
                   [--dask ADDRESS] [--out DIR]
    dkms-sim batch SCENARIO --seeds N [--workers N] [--dask ADDRESS] [--out DIR]
    dkms-sim list

SCENARIO is a shipped name (`dkms-sim list`) or a TOML file. `run` shows progress on stderr
(virtual time, events, deliveries per wall second) and writes DIR/results.json, perf.json,
events.csv, detections.csv, delivery.csv and PNG plots. `sweep` and `batch` make their runs
in local worker processes or on a Dask cluster (`--dask`), one progress bar over all runs,
and summarise every numeric metric over the seeds (mean, std, 95% interval). Exit status:
0 done, 1 the scenario could not run (or some runs failed), 2 usage (or no Dask scheduler
at ADDRESS).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import attacks, output, summary
from .batch import batch
from .cluster import ClusterError
from .real import run_real
from .runner import run
from .scenario import Scenario, ScenarioError, load, shipped
from .sweep import sweep
from .world import World

METRICS = (
    "to_watchers_ms.p99",
    "witnessed_ms.p99",
    "delivery_ratio",
    "detection_ms.p99",
    "detected_fraction",
    "messages_per_node.mean",
)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            return _list()
        scenario = load(args.scenario)
        if args.command == "run":
            return _run(scenario, args)
        if args.command == "batch":
            return _batch(scenario, args)
        return _sweep(scenario, args)
    except ScenarioError as err:
        print(f"dkms-sim: {err}", file=sys.stderr)
        return 1
    except ClusterError as err:
        print(f"dkms-sim: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dkms-sim", description="Simulate a DKMS network.")
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("run", help="run one scenario")
    one.add_argument("scenario", metavar="SCENARIO")
    one.add_argument("--nodes", type=int, default=None)
    one.add_argument("--duration", type=float, default=None, help="virtual seconds of workload")
    one.add_argument("--seed", type=int, default=None)
    one.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a setting, e.g. --set link.median_ms=80 (repeatable)",
    )
    one.add_argument("--out", type=Path, default=None, help="default: sim-out/SCENARIO")
    one.add_argument("--no-plots", action="store_true")
    one.add_argument(
        "--real",
        action="store_true",
        help="run on real nodes (py-libp2p on 127.0.0.1) in real time, to calibrate the model",
    )
    one.add_argument("--quiet", action="store_true", help="no progress line")
    grid = commands.add_parser("sweep", help="run a scenario for each value of a parameter")
    grid.add_argument("scenario", metavar="SCENARIO")
    grid.add_argument("--param", required=True, metavar="KEY=V1,V2,...")
    grid.add_argument("--metric", default=METRICS[0], help=f"plotted (default {METRICS[0]})")
    grid.add_argument("--out", type=Path, default=None, help="default: sim-out/SCENARIO-sweep")
    grid.add_argument(
        "--seeds", type=int, default=1, help="runs per value, seeds SEED, SEED+1, ... (default 1)"
    )
    many = commands.add_parser("batch", help="run a scenario for many seeds and summarise")
    many.add_argument("scenario", metavar="SCENARIO")
    many.add_argument(
        "--seeds", type=int, required=True, help="how many runs: seeds SEED, SEED+1, ..."
    )
    many.add_argument("--out", type=Path, default=None, help="default: sim-out/SCENARIO-batch")
    for each in (grid, many):
        each.add_argument("--nodes", type=int, default=None)
        each.add_argument("--seed", type=int, default=None, help="the first seed")
        each.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE", help="as for run"
        )
        where = each.add_mutually_exclusive_group()
        where.add_argument(
            "--workers",
            type=int,
            default=None,
            help="runs at once, each in its own process (default: the core count)",
        )
        where.add_argument(
            "--dask",
            default=None,
            metavar="ADDRESS",
            help="make the runs on the Dask cluster whose scheduler is at ADDRESS "
            "(e.g. tcp://10.0.0.5:8786) instead of local processes",
        )
    commands.add_parser("list", help="the shipped scenarios")
    return parser


def _list() -> int:
    for name in shipped():
        sc = load(name)
        a = sc.adversaries
        tricks = [k for k, v in vars(a).items() if v and k != "spam_rate"]
        tricks += ["partition"] * bool(sc.partition.fraction) + ["churn"] * bool(sc.churn.rate)
        print(
            f"{name:18} {sc.nodes:6} nodes, {sc.witnesses} witnesses, {sc.watchers} watchers, "
            f"{sc.identifiers} identifiers; {', '.join(tricks) or 'honest'}"
        )
    return 0


def _changes(args: argparse.Namespace, extra: Sequence[str] = ()) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if getattr(args, "nodes", None) is not None:
        changes["nodes"] = args.nodes
    if getattr(args, "seed", None) is not None:
        changes["seed"] = args.seed
    if getattr(args, "duration", None) is not None:
        changes["duration"] = args.duration
    for item in extra:
        key, eq, value = item.partition("=")
        if not eq:
            raise ScenarioError(f"--set needs KEY=VALUE, not {item!r}")
        changes[key] = _value(value)
    return changes


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def _run(scenario: Scenario, args: argparse.Namespace) -> int:
    scenario = scenario.with_params(**_changes(args, args.set))
    out = args.out or Path("sim-out") / (scenario.name + ("-real" if args.real else ""))
    if args.real:
        if not args.quiet:
            print(
                f"running {scenario.name} on {scenario.nodes} real nodes for "
                f"{scenario.duration + scenario.settle:g} s ...",
                file=sys.stderr,
            )
        results, perf = run_real(scenario)
        out.mkdir(parents=True, exist_ok=True)
        for name, data in (("results.json", results), ("perf.json", perf)):
            (out / name).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        _summary(results, {**perf, "us_per_delivery": "-", "peak_rss_mb": "-"}, out)
        return 0
    outcome = run(scenario, progress=None if args.quiet else _Progress(scenario))
    if not args.quiet:
        print(file=sys.stderr)
    if args.no_plots:
        output.write_data(out, outcome.results, outcome.perf, outcome.record)
    else:
        output.write(out, outcome.results, outcome.perf, outcome.record)
    _summary(outcome.results, outcome.perf, out)
    return 0


def _sweep(scenario: Scenario, args: argparse.Namespace) -> int:
    key, eq, values = args.param.partition("=")
    if not eq or not values:
        raise ScenarioError("--param needs KEY=V1,V2,...")
    _check_counts(args)
    base = scenario.with_params(**_changes(args, args.set))
    out = args.out or Path("sim-out") / f"{scenario.name}-sweep"
    seeds = [base.seed + i for i in range(args.seeds)]
    grid = [_value(text) for text in values.split(",")]
    points, made = sweep(
        base,
        key,
        grid,
        seeds,
        out,
        lambda r: _metric(r, args.metric),
        workers=args.workers,
        dask=args.dask,
    )
    summaries = [p.summary() for p in points]
    out.mkdir(parents=True, exist_ok=True)
    plot = output.sweep_plot(
        out / "sweep.png",
        key,
        args.metric,
        [(s["value"], s["mean"]) for s in summaries],
        [s["ci95"] for s in summaries],
        note=f"{scenario.name}, {base.nodes} nodes; mean of {len(seeds)} seeds",
    )
    (out / "sweep.json").write_text(
        json.dumps(
            {"param": key, "metric": args.metric, "seeds": seeds, "points": summaries}, indent=2
        )
        + "\n"
    )
    for s in summaries:
        spread = "" if s["ci95"] is None else f", 95% interval {s['ci95']}"
        print(f"{key}={s['value']}: {args.metric} mean {s['mean']} over {s['runs']} runs{spread}")
    failed = sum(len(p.failed) for p in points)
    print(f"{made} runs made, {failed} failed; wrote {plot} and {out / 'sweep.json'}")
    return 1 if failed else 0


def _batch(scenario: Scenario, args: argparse.Namespace) -> int:
    _check_counts(args)
    base = scenario.with_params(**_changes(args, args.set))
    out = args.out or Path("sim-out") / f"{scenario.name}-batch"
    seeds = [base.seed + i for i in range(args.seeds)]
    result = batch(base, seeds, out, workers=args.workers, dask=args.dask)
    report = result.summary()
    out.mkdir(parents=True, exist_ok=True)
    (out / "batch.json").write_text(json.dumps(report, indent=2) + "\n")
    print(summary.table(report["metrics"]))
    for seed, why in report["failed"].items():
        print(f"seed {seed} FAILED: {why}")
    print(
        f"{scenario.name}, {base.nodes} nodes, seeds {seeds[0]}..{seeds[-1]}: "
        f"{result.made} runs made, {len(result.failed)} failed; wrote {out / 'batch.json'}"
    )
    return 1 if result.failed else 0


def _check_counts(args: argparse.Namespace) -> None:
    if args.seeds < 1 or (args.workers is not None and args.workers < 1):
        raise ScenarioError("--seeds and --workers must be at least 1")


def _metric(results: dict[str, Any], name: str) -> Any:
    value: Any = results
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ScenarioError(f"no metric {name!r} in results (try one of {', '.join(METRICS)})")
        value = value[part]
    return value


def _summary(results: dict[str, Any], perf: dict[str, Any], out: Path) -> None:
    def show(key: str) -> str:
        v = results.get(key)
        return "-" if v is None else (json.dumps(v) if isinstance(v, (dict, list)) else str(v))

    print(
        f"{results['scenario']}: {results['nodes']} nodes, seed {results['seed']}, "
        f"{results['virtual_s']} virtual s, {results['events']} events"
    )
    for key in (
        "delivery_ratio",
        "witnessed_ms",
        "to_watchers_ms",
        "detection_ms",
        "detected_fraction",
        "false_alarms",
    ):
        print(f"  {key:18} {show(key)}")
    for key in attacks.RESULT_FIELDS:  # only in the results of scenarios with adversaries
        if key in results:
            print(f"  {key:18} {show(key)}")
    print(
        f"  wall {perf['wall_s']} s, {perf['us_per_delivery']} us/delivery, "
        f"peak {perf['peak_rss_mb']} MB; files in {out}/"
    )


class _Progress:
    """One status line on stderr: virtual time, events, deliveries, deliveries per wall s."""

    def __init__(self, scenario: Scenario) -> None:
        self.end = scenario.duration + scenario.settle
        self.started = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def __call__(self, now: float, world: World) -> None:
        wall = time.perf_counter() - self.started
        done = min(now / self.end, 1.0)
        bar = "#" * int(done * 30)
        rate = world.gossip.deliveries / wall if wall else 0.0
        line = (
            f"[{bar:<30}] {now:6.1f}/{self.end:g} virtual s  events {len(world.record.events)}"
            f"  deliveries {world.gossip.deliveries:,} ({rate:,.0f}/s)"
        )
        print(
            ("\r" if self.tty else "") + line,
            end="" if self.tty else "\n",
            file=sys.stderr,
            flush=True,
        )


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()

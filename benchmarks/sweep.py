"""A parameter sweep made serially, by a pool of worker processes, and on a Dask cluster, in
one run (issue 16).

    python benchmarks/sweep.py [--nodes 2000] [--points 8] [--seeds 4] [--workers 2]

The honest scenario at `--nodes`, swept over `--points` mesh degrees (gossip.d = 4, 5, ...)
with `--seeds` seeds each, made three times: with one worker (here, one run after another),
with `--workers` local processes, and on a dask.distributed LocalCluster of `--workers`
worker processes (one thread each). Reported (JSON on stdout): the three wall times, the
pool's and Dask's as a fraction of the serial one (the issue's target: <= 0.6 with 2
workers), the cluster's start-up time (not in Dask's time), and whether every run's
results.json came out byte-identical all three ways. Progress lines go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dkms.simulations.scenario import load
from dkms.simulations.sweep import sweep


def mean_messages(results: dict[str, Any]) -> Any:
    return results["messages_per_node"]["mean"]


def results_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("results.json"))}


def main() -> None:
    from distributed import LocalCluster  # noqa: PLC0415 - only here, after the arguments

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--points", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    base = load("honest").with_params(nodes=args.nodes)
    values = [4 + i for i in range(args.points)]  # d_low (4) <= d <= d_high (12)
    seeds = [base.seed + i for i in range(args.seeds)]

    def timed(out: Path, **where: Any) -> float:
        start = time.perf_counter()
        _, made = sweep(base, "gossip.d", values, seeds, out, mean_messages, tty=False, **where)
        assert made == len(values) * len(seeds), "the sweep's folder was not empty"
        return time.perf_counter() - start

    with tempfile.TemporaryDirectory(prefix="dkms-sweep-") as tmp:
        root = Path(tmp)
        serial = timed(root / "serial", workers=1)
        pool = timed(root / "pool", workers=args.workers)
        start = time.perf_counter()
        with LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster:
            startup = time.perf_counter() - start
            dask = timed(root / "dask", dask=cluster.scheduler_address)
        made = {way: results_bytes(root / way) for way in ("serial", "pool", "dask")}
    report = {
        "nodes": args.nodes,
        "runs": len(made["serial"]),
        "serial_s": round(serial, 1),
        f"workers_{args.workers}_s": round(pool, 1),
        "ratio": round(pool / serial, 3),
        f"dask_{args.workers}_workers_s": round(dask, 1),
        "dask_ratio": round(dask / serial, 3),
        "dask_cluster_start_s": round(startup, 1),
        "results_identical": made["serial"] == made["pool"],
        "dask_results_identical": made["serial"] == made["dask"],
    }
    print(json.dumps(report, indent=2))
    sys.exit(0 if report["results_identical"] and report["dask_results_identical"] else 1)


if __name__ == "__main__":
    main()

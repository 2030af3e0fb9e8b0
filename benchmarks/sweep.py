"""A parameter sweep run serially and by a pool of worker processes, in one run (issue 16).

    python benchmarks/sweep.py [--nodes 2000] [--points 8] [--seeds 4] [--workers 2]

The honest scenario at `--nodes`, swept over `--points` mesh degrees (gossip.d = 4, 5, ...)
with `--seeds` seeds each, once with one worker and once with `--workers`. Reported (JSON on
stdout): both wall times, their ratio (the issue's target: <= 0.6 with 2 workers), and whether
every run's results.json came out byte-identical both ways.
"""

from __future__ import annotations

import argparse
import json
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--points", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    base = load("honest").with_params(nodes=args.nodes)
    values = [4 + i for i in range(args.points)]  # d_low (4) <= d <= d_high (12)
    seeds = [base.seed + i for i in range(args.seeds)]
    walls = {}
    with tempfile.TemporaryDirectory(prefix="dkms-sweep-") as tmp:
        for workers in (1, args.workers):
            start = time.perf_counter()
            sweep(base, "gossip.d", values, seeds, Path(tmp) / str(workers), mean_messages,
                  workers=workers)  # fmt: skip
            walls[workers] = time.perf_counter() - start
        same = results_bytes(Path(tmp) / "1") == results_bytes(Path(tmp) / str(args.workers))
        runs = len(results_bytes(Path(tmp) / "1"))
    print(
        json.dumps(
            {
                "nodes": args.nodes,
                "runs": runs,
                "serial_s": round(walls[1], 1),
                f"workers_{args.workers}_s": round(walls[args.workers], 1),
                "ratio": round(walls[args.workers] / walls[1], 3),
                "results_identical": same,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

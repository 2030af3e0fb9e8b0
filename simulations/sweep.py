"""Sweeps: one scenario run for each value of a parameter and each of several seeds, in parallel.

Theory of operation. A sweep is a grid of runs, (value, seed) each, written to
`OUT/KEY=VALUE/seed=S/` (results.json and the data files of `output.write_data`). The runs
are made by `cluster.make`: here, in a pool of worker processes (`workers`, default the core
count), or on a Dask cluster (`dask`, a scheduler's address); a run's results.json is the
same bytes whichever way, and one already there is not made again, so a sweep cut short
resumes where it stopped. A run that fails is reported with its value and seed, and the
others' results are kept. Per value, the summary gives the plotted metric's mean, sample
standard deviation and 95% interval (Student's t) over the seeds that gave a number, and the
same for every numeric metric of results.json (`summary.describe_all`): `sweep.json`, and the
plot's error bars.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import summary
from .cluster import Job, make
from .scenario import Scenario


@dataclass
class Point:
    """One value of the parameter: the plotted metric and every metric, per seed."""

    value: Any
    by_seed: dict[int, Any] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        numbers = [v for v in self.by_seed.values() if summary.is_number(v)]
        return {
            "value": self.value,
            **summary.describe(numbers),
            "by_seed": {str(s): v for s, v in sorted(self.by_seed.items())},
            "failed": {str(s): why for s, why in sorted(self.failed.items())},
            "metrics": summary.describe_all(self.metrics[s] for s in sorted(self.metrics)),
        }


def sweep(
    base: Scenario,
    key: str,
    values: Sequence[Any],
    seeds: Sequence[int],
    out: Path,
    metric: Callable[[dict[str, Any]], Any],
    *,
    workers: int | None = None,
    dask: str | None = None,
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    tty: bool | None = None,
) -> tuple[list[Point], int]:
    """Every (value, seed) run (or read back, when already there); the points and how many
    runs were made now. Raises cluster.ClusterError, before any run, if `dask` is unusable;
    what `metric` raises on a result (a wrong metric name) is the caller's to hear."""
    points = [Point(v) for v in values]
    jobs: dict[Job, Point] = {}
    for point in points:
        for seed in seeds:
            where = out / f"{key}={point.value}" / f"seed={seed}"
            job = Job(((key, point.value),), seed, where, f"{key}={point.value} seed {seed}")
            jobs[job] = point
    made = 0
    for outcome in make(base, list(jobs), workers=workers, dask=dask, say=say, tty=tty):
        point, seed = jobs[outcome.job], outcome.job.seed
        made += outcome.made
        if outcome.results is None:
            point.failed[seed] = outcome.why
            continue
        point.by_seed[seed] = metric(outcome.results)
        point.metrics[seed] = summary.flatten(outcome.results)
    return points, made

"""Sweeps: one scenario run for each value of a parameter and each of several seeds, in parallel.

Theory of operation. A sweep is a grid of runs, (value, seed) each, written to
`OUT/KEY=VALUE/seed=S/` (results.json and the data files of `output.write_data`). Runs go to a
pool of worker processes (`workers`, default the core count; 1 runs them here, one after
another). The simulator is deterministic, so a run's results.json is the same bytes whichever
worker ran it, or whether it ran in a sweep at all; perf.json (wall time, memory) is not. A
run whose results.json is already there is not run again, so a sweep cut short resumes where it
stopped. A run that fails is reported with its value and seed, and the others' results are
kept. Per value, the metric's mean, sample standard deviation and 95% interval (Student's t)
over the seeds that gave a number are the sweep's summary (`sweep.json`, and the plot's error
bars).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from . import output
from .runner import run
from .scenario import Scenario

# Two-sided 95% quantiles of Student's t, by degrees of freedom (beyond 30: the normal's).
_T95: Final = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


@dataclass(frozen=True)
class Job:
    key: str
    value: Any
    seed: int
    out: Path


@dataclass
class Point:
    """One value of the parameter: the metric per seed, and its summary."""

    value: Any
    by_seed: dict[int, Any] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        numbers = [v for v in self.by_seed.values() if _is_number(v)]
        mean = statistics.fmean(numbers) if numbers else None
        std = statistics.stdev(numbers) if len(numbers) > 1 else None
        interval = None
        if mean is not None and std is not None:
            t = _T95[len(numbers) - 2] if len(numbers) - 1 <= len(_T95) else 1.96
            half = t * std / math.sqrt(len(numbers))
            interval = [round(mean - half, 6), round(mean + half, 6)]
        return {
            "value": self.value,
            "runs": len(numbers),
            "mean": None if mean is None else round(mean, 6),
            "std": None if std is None else round(std, 6),
            "ci95": interval,
            "by_seed": {str(s): v for s, v in sorted(self.by_seed.items())},
            "failed": {str(s): why for s, why in sorted(self.failed.items())},
        }


def run_job(base: Scenario, job: Job) -> dict[str, Any]:
    """Run one grid cell and write its files (in a worker process); its results."""
    scenario = base.with_params(**{job.key: job.value, "seed": job.seed})
    outcome = run(scenario)
    output.write_data(job.out, outcome.results, outcome.perf, outcome.record)
    return outcome.results


def sweep(
    base: Scenario,
    key: str,
    values: Sequence[Any],
    seeds: Sequence[int],
    out: Path,
    metric: Callable[[dict[str, Any]], Any],
    *,
    workers: int | None = None,
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> tuple[list[Point], int]:
    """Every (value, seed) run (or read back, when already there); the points and how many
    runs were made now."""
    points = [Point(v) for v in values]
    jobs: list[tuple[Point, Job]] = []
    for point in points:
        for seed in seeds:
            job = Job(key, point.value, seed, out / f"{key}={point.value}" / f"seed={seed}")
            done = job.out / "results.json"
            if done.exists():
                point.by_seed[seed] = metric(json.loads(done.read_text()))
            else:
                jobs.append((point, job))
    total, finished = len(jobs), 0
    if jobs:
        say(f"{total} runs to make ({len(points) * len(seeds) - total} already there)")

    def record(point: Point, job: Job, results: dict[str, Any] | None, why: str) -> None:
        nonlocal finished
        finished += 1
        if results is None:
            point.failed[job.seed] = why
            say(f"[{finished}/{total}] {key}={job.value} seed {job.seed} FAILED: {why}")
        else:
            point.by_seed[job.seed] = metric(results)
            say(f"[{finished}/{total}] {key}={job.value} seed {job.seed}")

    count = workers or os.cpu_count() or 1
    # One bad run must not lose the others: a run's failure is recorded, and the sweep goes
    # on. (What `metric` raises on a result is the caller's to hear: a wrong metric name.)
    if count == 1:
        for point, job in jobs:
            try:
                results = run_job(base, job)
            except Exception as err:
                record(point, job, None, f"{type(err).__name__}: {err}")
                continue
            record(point, job, results, "")
    else:
        with ProcessPoolExecutor(max_workers=count) as pool:
            futures: dict[Future[dict[str, Any]], tuple[Point, Job]] = {
                pool.submit(run_job, base, job): (point, job) for point, job in jobs
            }
            for future in as_completed(futures):
                point, job = futures[future]
                try:
                    results = future.result()
                except Exception as err:
                    record(point, job, None, f"{type(err).__name__}: {err}")
                    continue
                record(point, job, results, "")
    return points, total


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)

"""Batches: many seeds of one scenario, in parallel, summarised metric by metric.

Theory of operation. A batch is one run per seed, written to `OUT/seed=S/` and made by
`cluster.make` like a sweep's runs (here, in local worker processes, or on a Dask cluster; the
same results.json bytes whichever way; runs already there read back, not made again; a
failed run reported with its seed and the others kept). Its summary is every numeric metric
of results.json, by dotted path, with mean, sample standard deviation and 95% interval
(Student's t) over the seeds that gave it (`summary.describe_all`): `batch.json`, and a
table.
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
class Batch:
    scenario: str
    seeds: list[int]
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    made: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "seeds": self.seeds,
            "runs": len(self.metrics),
            "failed": {str(s): why for s, why in sorted(self.failed.items())},
            "metrics": summary.describe_all(self.metrics[s] for s in sorted(self.metrics)),
        }


def batch(
    base: Scenario,
    seeds: Sequence[int],
    out: Path,
    *,
    workers: int | None = None,
    dask: str | None = None,
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    tty: bool | None = None,
) -> Batch:
    """One run of `base` per seed (or read back, when already there). Raises
    cluster.ClusterError, before any run, if `dask` is unusable."""
    result = Batch(base.name, list(seeds))
    jobs = [Job((), seed, out / f"seed={seed}", f"seed {seed}") for seed in seeds]
    for outcome in make(base, jobs, workers=workers, dask=dask, say=say, tty=tty):
        result.made += outcome.made
        if outcome.results is None:
            result.failed[outcome.job.seed] = outcome.why
        else:
            result.metrics[outcome.job.seed] = summary.flatten(outcome.results)
    return result

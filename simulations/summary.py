"""Summaries over seeds: every numeric metric of a set of runs' results, with its mean, sample
standard deviation and 95% interval (Student's t), and a plain-text table of them.

A run's results.json nests its metrics (`to_watchers_ms: {p50, p99, ...}`); `flatten` names
each number by its dotted path (`to_watchers_ms.p99`). Lists (the per-second series) and
null metrics (no equivocation, so no detection time) are left out, and so is `seed`, which
differs by design. A metric that is a number in only some runs is summarised over those, and
says how many (`runs`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

# Two-sided 95% quantiles of Student's t, by degrees of freedom (beyond 30: the normal's).
_T95: Final = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_NORMAL95: Final = 1.96
_NOT_METRICS: Final = frozenset({"seed"})


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def flatten(results: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Every finite number in `results`, by dotted path (lists and nulls left out)."""
    flat: dict[str, float] = {}
    for key, value in results.items():
        name = f"{prefix}{key}"
        if name in _NOT_METRICS:
            continue
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        elif is_number(value):
            flat[name] = value
    return flat


def t95(degrees: int) -> float:
    """The two-sided 95% quantile of Student's t with `degrees` degrees of freedom."""
    return _T95[degrees - 1] if 1 <= degrees <= len(_T95) else _NORMAL95


def describe(numbers: Sequence[float]) -> dict[str, Any]:
    """runs, mean, std (sample) and ci95 ([low, high], Student's t) of `numbers`; std and
    ci95 are None below two numbers."""
    mean = statistics.fmean(numbers) if numbers else None
    std = statistics.stdev(numbers) if len(numbers) > 1 else None
    interval = None
    if mean is not None and std is not None:
        half = t95(len(numbers) - 1) * std / math.sqrt(len(numbers))
        interval = [round(mean - half, 6), round(mean + half, 6)]
    return {
        "runs": len(numbers),
        "mean": None if mean is None else round(mean, 6),
        "std": None if std is None else round(std, 6),
        "ci95": interval,
    }


def describe_all(runs: Iterable[Mapping[str, float]]) -> dict[str, dict[str, Any]]:
    """`describe` of each metric over the runs (flattened results) that have it, by name."""
    columns: dict[str, list[float]] = {}
    for flat in runs:
        for name, value in flat.items():
            columns.setdefault(name, []).append(value)
    return {name: describe(columns[name]) for name in sorted(columns)}


def table(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    """One line per metric: runs, mean, std and the 95% interval, aligned."""
    rows = [("metric", "runs", "mean", "std", "95% interval")]
    for name, s in metrics.items():
        interval = "-" if s["ci95"] is None else f"[{_num(s['ci95'][0])}, {_num(s['ci95'][1])}]"
        rows.append((name, str(s["runs"]), _num(s["mean"]), _num(s["std"]), interval))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for row in rows:
        numbers = [c.rjust(w) for c, w in zip(row[1:4], widths[1:], strict=True)]
        cells = [row[0].ljust(widths[0]), *numbers]
        lines.append("  ".join([*cells, row[4]]).rstrip())
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"

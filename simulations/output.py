"""Writing a run's files: `results.json` (what the simulation decided: the same scenario and
seed give the same bytes), `perf.json` (what it cost this machine), per-event CSV files, and
PNG plots.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from .record import Recorder


def write(out: Path, results: dict[str, Any], perf: dict[str, Any], record: Recorder) -> list[Path]:
    return write_data(out, results, perf, record) + plots(out, results, record)


def write_data(
    out: Path, results: dict[str, Any], perf: dict[str, Any], record: Recorder
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [
        _json(out / "results.json", results),
        _json(out / "perf.json", perf),
        _csv(
            out / "events.csv",
            record.rows(),
            ["said", "prefix", "sn", "created_s", "witnessed_ms", "to_watchers_ms"],
        ),
        _csv(
            out / "detections.csv",
            record.detection_rows(),
            ["prefix", "watcher", "eclipsed", "detection_ms"],
        ),
        _csv(
            out / "delivery.csv",
            [{"second": s, "delivery_ratio": r} for s, r in results["delivery_ratio_by_second"]],
            ["second", "delivery_ratio"],
        ),
    ]
    return written


def _json(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def _csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def plots(out: Path, results: dict[str, Any], record: Recorder) -> list[Path]:
    """Latency CDFs, detection CDF, messages and bytes per node, delivery ratio over time."""
    rows = record.rows()
    witnessed = sorted(float(r["witnessed_ms"]) for r in rows if r["witnessed_ms"] != "")
    to_watchers = sorted(float(r["to_watchers_ms"]) for r in rows if r["to_watchers_ms"] != "")
    detection = sorted(
        float(r["detection_ms"])
        for r in record.detection_rows()
        if r["detection_ms"] != "" and not r["eclipsed"]
    )
    title = f"{results['scenario']}: {results['nodes']} nodes, seed {results['seed']}"
    written = []

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for values, label in ((witnessed, "fully witnessed"), (to_watchers, "reached every watcher")):
        if values:
            ax.step(
                values,
                [(i + 1) / len(values) for i in range(len(values))],
                where="post",
                label=label,
            )
    ax.set_xlabel("ms after the event was made")
    ax.set_ylabel("fraction of events")
    ax.set_title(f"Event latency CDF — {title}")
    ax.grid(alpha=0.3)
    ax.legend()
    written.append(_save(fig, out / "latency_cdf.png"))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    if detection:
        ax.step(detection, [(i + 1) / len(detection) for i in range(len(detection))], where="post")
    else:
        ax.text(0.5, 0.5, "no equivocation in this scenario", ha="center", transform=ax.transAxes)
    ax.set_xlabel("ms after the second version reached its first witness")
    ax.set_ylabel("fraction of (equivocation, watcher)")
    ax.set_title(f"Detection time CDF — {title}")
    ax.grid(alpha=0.3)
    written.append(_save(fig, out / "detection_cdf.png"))

    g = record.world.gossip
    members = sorted(
        set(record.world.witness_ids + record.world.watcher_ids + record.world.relay_ids)
    )
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.hist([g.recv_msgs[n] for n in members], bins=40)
    left.set_xlabel("messages received per node")
    right.hist([g.recv_bytes[n] / 1e6 for n in members], bins=40)
    right.set_xlabel("MB received per node")
    for axis in (left, right):
        axis.set_ylabel("nodes")
        axis.grid(alpha=0.3)
    fig.suptitle(f"Load per node — {title}")
    written.append(_save(fig, out / "load_per_node.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    series = results["delivery_ratio_by_second"]
    if series:
        ax.plot([s for s, _ in series], [r for _, r in series], marker=".")
    ax.set_ylim(min([r for _, r in series] + [0.9]) - 0.01, 1.005)
    ax.set_xlabel("virtual second the message was published")
    ax.set_ylabel("delivery ratio")
    ax.set_title(f"Delivery ratio over time — {title}")
    ax.grid(alpha=0.3)
    written.append(_save(fig, out / "delivery_ratio.png"))
    return written


def sweep_plot(
    path: Path,
    param: str,
    metric: str,
    points: list[tuple[Any, Any]],
    intervals: list[list[float] | None] | None = None,
    *,
    note: str = "",
) -> Path:
    """The metric (the mean over seeds) against the parameter, with each point's 95% interval
    as an error bar where there is one. Numeric values go on a numeric axis, others as
    categories in the order given; `note` is a second title line (scenario, seeds)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x, _ in points)
    xs: list[Any] = [x if numeric else str(x) for x, _ in points]
    ys = [y if isinstance(y, int | float) else float("nan") for _, y in points]
    ax.plot(xs, ys, marker="o", label="mean over seeds")
    if intervals is not None and any(i is not None for i in intervals):
        low = [y - i[0] if i else 0.0 for y, i in zip(ys, intervals, strict=True)]
        high = [i[1] - y if i else 0.0 for y, i in zip(ys, intervals, strict=True)]
        ax.errorbar(xs, ys, yerr=[low, high], fmt="none", capsize=4, label="95% interval")
        ax.legend()
    if numeric:
        ax.set_xticks(xs)
    ax.set_xlabel(param)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} against {param}" + (f"\n{note}" if note else ""))
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    # No timestamps in the PNG: the same run gives the same file.
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path

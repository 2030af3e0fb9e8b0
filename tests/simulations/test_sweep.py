"""Sweeps in parallel: the same bytes per run whichever process made it, summaries with
intervals over seeds, resuming where a sweep stopped, and a failed run kept apart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dkms.simulations import cli
from dkms.simulations.scenario import load
from dkms.simulations.sweep import Point, sweep

pytestmark = pytest.mark.timeout(60)


def mean_messages(results: dict[str, Any]) -> Any:
    return results["messages_per_node"]["mean"]


def results_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("results.json"))}


def test_two_workers_make_the_same_bytes_as_one_and_a_second_sweep_resumes(
    tmp_path: Path,
) -> None:
    base = load("honest").with_params(nodes=60, seed=5, duration=8)

    def grid(out: Path, workers: int) -> tuple[list[Point], int]:
        return sweep(base, "gossip.d", [4, 8], [5, 6], out, mean_messages, workers=workers)

    serial, made = grid(tmp_path / "serial", 1)
    assert made == 4
    parallel, made = grid(tmp_path / "parallel", 2)
    assert made == 4
    assert results_bytes(tmp_path / "serial") == results_bytes(tmp_path / "parallel")
    assert len(results_bytes(tmp_path / "serial")) == 4
    assert [p.summary() for p in serial] == [p.summary() for p in parallel]
    # Every numeric metric is summarised per point, the plotted one among them.
    for point in serial:
        summary = point.summary()
        plotted = {k: summary[k] for k in ("runs", "mean", "std", "ci95")}
        assert summary["metrics"]["messages_per_node.mean"] == plotted
        assert summary["metrics"]["to_watchers_ms.p99"]["runs"] == 2
    again, made = grid(tmp_path / "parallel", 2)
    assert made == 0  # everything was there already
    assert [p.summary() for p in again] == [p.summary() for p in parallel]


def test_the_summary_gives_mean_spread_and_a_95_percent_interval() -> None:
    point = Point(4, by_seed={1: 10.0, 2: 12.0, 3: 14.0}, metrics={1: {"m": 1.0}, 2: {"m": 3.0}})
    summary = point.summary()
    assert summary["runs"] == 3 and summary["mean"] == 12.0 and summary["std"] == 2.0
    half = 4.303 * 2.0 / 3**0.5  # Student's t, 2 degrees of freedom
    assert summary["ci95"] == [round(12.0 - half, 6), round(12.0 + half, 6)]
    assert summary["metrics"]["m"]["mean"] == 2.0 and summary["metrics"]["m"]["runs"] == 2
    assert Point(4, by_seed={1: 3.0}).summary()["ci95"] is None  # one run: no spread
    failed = Point(4, by_seed={1: 3.0, 2: None}, failed={3: "ValueError: boom"}).summary()
    assert failed["runs"] == 1 and failed["failed"] == {"3": "ValueError: boom"}


def test_a_failed_run_is_reported_with_its_seed_and_the_others_are_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A mesh degree of 0 cannot run; degree 4 can: the sweep keeps what 4 gave.
    argv = ["sweep", "honest", "--nodes", "60", "--set", "duration=8"]
    argv += ["--param", "gossip.d=0,4", "--seeds", "2"]
    argv += ["--metric", "messages_per_node.mean", "--out", str(tmp_path), "--workers", "2"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "gossip.d=0 seed" in err and "FAILED" in err
    sweep_json = json.loads((tmp_path / "sweep.json").read_text())
    by_value = {p["value"]: p for p in sweep_json["points"]}
    assert by_value[0]["runs"] == 0 and set(by_value[0]["failed"]) == {"1", "2"}
    assert by_value[4]["runs"] == 2 and by_value[4]["ci95"] is not None
    assert by_value[4]["metrics"]["delivery_ratio"]["runs"] == 2
    assert by_value[0]["metrics"] == {}
    assert (tmp_path / "sweep.png").exists()

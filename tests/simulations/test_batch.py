"""Batches and summaries: many seeds of one scenario summarised metric by metric (mean,
sample std, Student's t interval), the same bytes in parallel as serially, resuming, and the
progress a person sees."""

from __future__ import annotations

import io
import json
import math
import statistics
from pathlib import Path

import pytest

from dkms.simulations import cli, cluster, summary
from dkms.simulations.batch import batch
from dkms.simulations.progress import Progress
from dkms.simulations.scenario import Scenario, load

pytestmark = pytest.mark.timeout(60)

SMALL = ["--nodes", "60", "--set", "duration=10"]


def results_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("results.json"))}


def test_flatten_names_every_number_by_its_path_and_leaves_the_rest() -> None:
    results = {
        "seed": 3,
        "delivery_ratio": 1.0,
        "events": 22,
        "to_watchers_ms": {"p50": 10.5, "p99": 20.0},
        "detection_ms": None,
        "delivery_ratio_by_second": [[0, 1.0]],
        "scenario": "honest",
        "flag": True,
        "nested": {"deeper": {"x": 2}, "nan": math.nan},
    }
    assert summary.flatten(results) == {
        "delivery_ratio": 1.0,
        "events": 22,
        "to_watchers_ms.p50": 10.5,
        "to_watchers_ms.p99": 20.0,
        "nested.deeper.x": 2,
    }


def test_describe_gives_the_sample_std_and_a_student_t_interval() -> None:
    numbers = [10.0, 12.0, 17.0, 11.0, 15.0]
    got = summary.describe(numbers)
    mean, std = statistics.fmean(numbers), statistics.stdev(numbers)
    half = 2.776 * std / math.sqrt(5)  # t(0.975, 4 degrees of freedom)
    assert got == {
        "runs": 5,
        "mean": round(mean, 6),
        "std": round(std, 6),
        "ci95": [round(mean - half, 6), round(mean + half, 6)],
    }
    assert summary.describe([]) == {"runs": 0, "mean": None, "std": None, "ci95": None}
    assert summary.describe([4.0])["ci95"] is None
    assert summary.t95(1) == 12.706 and summary.t95(30) == 2.042 and summary.t95(31) == 1.96
    # A metric present in only some runs is summarised over those.
    both = summary.describe_all([{"a": 1.0, "b": 5.0}, {"a": 3.0}])
    assert both["a"]["runs"] == 2 and both["a"]["mean"] == 2.0 and both["b"]["runs"] == 1


def test_the_table_shows_one_aligned_line_per_metric() -> None:
    metrics = summary.describe_all([{"x.p99": 1.0, "y": 2.0}, {"x.p99": 3.0, "y": 2.0}])
    lines = summary.table(metrics).splitlines()
    assert lines[0].split() == ["metric", "runs", "mean", "std", "95%", "interval"]
    assert lines[1].split()[:4] == ["x.p99", "2", "2", "1.41421"]
    assert lines[2].split() == ["y", "2", "2", "0", "[2,", "2]"]
    assert len({line.index("runs") if i == 0 else None for i, line in enumerate(lines)}) == 2


def test_batch_summarises_every_metric_and_two_workers_give_the_serial_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["batch", "honest", *SMALL, "--seeds", "3", "--workers", "2"]
    assert cli.main([*argv, "--out", str(tmp_path / "pool")]) == 0
    out, err = capsys.readouterr()
    assert "3 runs to make in 2 local processes" in err
    assert sorted(line.split("] ")[1] for line in err.splitlines() if line.startswith("[")) == [
        "seed 1",
        "seed 2",
        "seed 3",
    ]
    report = json.loads((tmp_path / "pool" / "batch.json").read_text())
    assert report["seeds"] == [1, 2, 3] and report["runs"] == 3 and report["failed"] == {}
    p99 = [
        json.loads((tmp_path / "pool" / f"seed={s}" / "results.json").read_text())[
            "to_watchers_ms"
        ]["p99"]
        for s in (1, 2, 3)
    ]
    assert report["metrics"]["to_watchers_ms.p99"] == summary.describe(p99)
    assert "delivery_ratio" in report["metrics"] and "seed" not in report["metrics"]
    assert any(line.split()[:2] == ["to_watchers_ms.p99", "3"] for line in out.splitlines())

    base = load("honest").with_params(nodes=60, duration=10)
    serial = batch(base, [1, 2, 3], tmp_path / "serial", workers=1, say=lambda _: None)
    assert serial.made == 3
    assert results_bytes(tmp_path / "serial") == results_bytes(tmp_path / "pool")
    assert serial.summary()["metrics"] == report["metrics"]
    again = batch(base, [1, 2, 3], tmp_path / "serial", workers=2, say=lambda _: None)
    assert again.made == 0 and again.summary() == serial.summary()


def test_a_failed_run_is_named_by_seed_and_the_others_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = cluster.run_files

    def failing_seed_2(base: Scenario, job: cluster.Job) -> dict[str, bytes]:
        if job.seed == 2:
            raise ValueError("boom")
        return real(base, job)

    monkeypatch.setattr(cluster, "run_files", failing_seed_2)
    argv = ["batch", "honest", *SMALL, "--seeds", "3", "--workers", "1"]
    assert cli.main([*argv, "--out", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "seed 2 FAILED: ValueError: boom" in err
    assert "seed 2 FAILED: ValueError: boom" in out and "3 runs made, 1 failed" in out
    report = json.loads((tmp_path / "batch.json").read_text())
    assert report["runs"] == 2 and report["failed"] == {"2": "ValueError: boom"}
    assert report["metrics"]["delivery_ratio"]["runs"] == 2
    assert sorted(results_bytes(tmp_path)) == ["seed=1/results.json", "seed=3/results.json"]
    # Run again: only the failed run is made.
    monkeypatch.setattr(cluster, "run_files", real)
    assert cli.main([*argv, "--out", str(tmp_path)]) == 0
    assert "1 runs to make" in capsys.readouterr().err


def test_progress_is_one_bar_on_a_terminal_and_a_line_per_run_otherwise() -> None:
    screen = io.StringIO()
    bar = Progress(3, stream=screen, tty=True)
    bar.done("seed 1")
    bar.done("seed 2", "ValueError: boom")
    bar.done("seed 3")
    bar.close()
    text = screen.getvalue()
    assert text.count("\n") == 2  # the failure's own line, and the bar's end
    assert "seed 2 FAILED: ValueError: boom\n" in text
    assert "[##############################] 3/3 runs, 1 failed" in text
    assert "seed 1" not in text  # runs that went well only move the bar

    log = io.StringIO()
    lines = Progress(2, stream=log, tty=False)
    lines.done("gossip.d=4 seed 1")
    lines.done("gossip.d=4 seed 2", "ValueError: boom")
    lines.close()
    assert log.getvalue() == (
        "[1/2] gossip.d=4 seed 1\n[2/2] gossip.d=4 seed 2 FAILED: ValueError: boom\n"
    )

"""Runs on a Dask cluster (a distributed.LocalCluster here): the same results.json bytes as
made here one after another, a failed run reported and the others kept, resuming, and a
scheduler that is not there is one error line and exit status 2, quickly."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dkms.simulations import cli, cluster
from dkms.simulations.scenario import load
from dkms.simulations.sweep import Point, sweep

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.timeout(60)

BASE = load("honest").with_params(nodes=60, duration=10, seed=3)


def results_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("results.json"))}


def messages(results: dict[str, Any]) -> Any:
    return results["messages_per_node"]["mean"]


@pytest.fixture
def in_process_cluster() -> Iterator[str]:
    # One worker thread in this process: a real scheduler, client and worker, none of the
    # seconds that starting worker processes takes.
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as local:
        yield local.scheduler_address


def grid(values: list[int], out: Path, dask: str | None = None) -> tuple[list[Point], int]:
    """A sweep over mesh degrees with seeds 3 and 4: here one run after another, or on Dask."""
    return sweep(BASE, "gossip.d", values, [3, 4], out, messages, workers=1, dask=dask,
                 say=lambda _: None, tty=False)  # fmt: skip


def test_a_sweep_on_dask_gives_the_bytes_of_a_serial_sweep(
    tmp_path: Path, in_process_cluster: str
) -> None:
    values = [0, 4, 6]  # a mesh degree of 0 cannot run: it fails on the worker
    here, made = grid(values, tmp_path / "here")
    assert made == 6
    there, made = grid(values, tmp_path / "dask", in_process_cluster)
    assert made == 6
    assert len(results_bytes(tmp_path / "here")) == 4
    assert results_bytes(tmp_path / "here") == results_bytes(tmp_path / "dask")
    assert [p.summary() for p in here] == [p.summary() for p in there]
    assert set(there[0].failed) == {3, 4} and "d_low <= d <= d_high" in there[0].failed[3]
    again, made = grid(values, tmp_path / "dask", in_process_cluster)
    assert made == 2  # only the failed runs are tried again
    assert [p.summary() for p in again] == [p.summary() for p in there]


def test_batch_on_dask_from_the_command_line(
    tmp_path: Path, in_process_cluster: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["batch", "honest", "--nodes", "60", "--set", "duration=10", "--seeds", "2"]
    assert cli.main([*argv, "--dask", in_process_cluster, "--out", str(tmp_path / "d")]) == 0
    err = capsys.readouterr().err
    assert f"2 runs to make on the Dask cluster at {in_process_cluster}" in err
    assert cli.main([*argv, "--workers", "1", "--out", str(tmp_path / "h")]) == 0
    assert results_bytes(tmp_path / "d") == results_bytes(tmp_path / "h")
    dask_report = json.loads((tmp_path / "d" / "batch.json").read_text())
    assert dask_report == json.loads((tmp_path / "h" / "batch.json").read_text())
    assert dask_report["metrics"]["to_watchers_ms.p99"]["runs"] == 2


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:1", "not an address::", "inproc://x"])
def test_no_scheduler_there_is_one_line_and_exit_2(
    address: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 1.0)
    argv = ["sweep", "honest", "--nodes", "60", "--param", "gossip.d=4,6", "--dask", address]
    started = time.monotonic()
    assert cli.main([*argv, "--out", str(tmp_path)]) == 2
    assert time.monotonic() - started < 10
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith(f"dkms-sim: no Dask scheduler at {address}")
    assert not list(tmp_path.rglob("results.json"))


@pytest.mark.slow
def test_two_worker_processes_give_the_bytes_of_a_serial_sweep(tmp_path: Path) -> None:
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as local:
        grid([4, 6], tmp_path / "dask", local.scheduler_address)
    grid([4, 6], tmp_path / "here")
    assert len(results_bytes(tmp_path / "here")) == 4
    assert results_bytes(tmp_path / "here") == results_bytes(tmp_path / "dask")

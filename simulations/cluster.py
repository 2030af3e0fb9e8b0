"""Where a sweep's or a batch's runs are made: here one after another, in a pool of local
worker processes, or on a Dask cluster.

Theory of operation. A run is a `Job`: the settings it changes in the base scenario (a swept
parameter, if any), its seed, and the folder its files go to. Whoever makes it (this
process, a pool worker, a Dask worker on another machine) runs the simulation and hands back
the bytes of its files (`run_files`); this process writes them, results.json last and by
rename, so a results.json on disk always stands for a whole run. Since the simulator is
deterministic and the same function makes the bytes everywhere, a run's results.json is the
same bytes whichever way it ran (perf.json, the machine's wall time and memory, is not).
`make` skips the runs whose results.json is already there (reading them back), makes the
others, and yields each with its results or why it failed, as they finish: one failed run
never stops the others. Progress goes to stderr (`progress.Progress`).

Dask: `dask` is a scheduler's address. It is tried first with a bounded timeout, so a wrong
address is one `ClusterError`, not a hang; `distributed` is imported only then, so the CLI
starts without it. The workers need this project installed, and one thread each
(`dask worker ADDRESS --nthreads 1`): the simulator is single-threaded Python.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import output
from .progress import Progress
from .runner import run
from .scenario import Scenario

CONNECT_TIMEOUT_S = 10.0
RESULTS = "results.json"

Say = Callable[[str], None]


class ClusterError(Exception):
    """The runs could not be sent where they were asked to go (a bad scheduler address)."""


@dataclass(frozen=True)
class Job:
    settings: tuple[tuple[str, Any], ...]
    seed: int
    out: Path
    label: str


@dataclass(frozen=True)
class Outcome:
    job: Job
    results: dict[str, Any] | None  # None: the run failed
    why: str = ""
    made: bool = True  # False: read back from an earlier run


def run_files(base: Scenario, job: Job) -> dict[str, bytes]:
    """Run one job (wherever this is called) and hand back its files: name -> bytes."""
    scenario = base.with_params(**dict(job.settings), seed=job.seed)
    outcome = run(scenario)
    with tempfile.TemporaryDirectory(prefix="dkms-run-") as tmp:
        written = output.write_data(Path(tmp), outcome.results, outcome.perf, outcome.record)
        return {path.name: path.read_bytes() for path in written}


def save(out: Path, files: dict[str, bytes]) -> None:
    """Write a run's files into `out`, results.json last and whole (by rename)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if name != RESULTS:
            (out / name).write_bytes(data)
    partial = out / (RESULTS + ".partial")
    partial.write_bytes(files[RESULTS])
    os.replace(partial, out / RESULTS)


def make(
    base: Scenario,
    jobs: Sequence[Job],
    *,
    workers: int | None = None,
    dask: str | None = None,
    say: Say,
    tty: bool | None = None,
) -> Iterator[Outcome]:
    """Every job's outcome: read back when its results.json is there, else made (here when
    `workers` is 1, in that many processes otherwise, default the core count; or on the
    Dask scheduler at `dask`). Raises ClusterError before any run if `dask` cannot be used."""
    todo = [job for job in jobs if not (job.out / RESULTS).exists()]
    client = _connect(dask) if dask and todo else None
    progress: Progress | None = None
    try:
        waiting = set(todo)
        for job in jobs:
            if job not in waiting:
                yield Outcome(job, json.loads((job.out / RESULTS).read_text()), made=False)
        if not todo:
            return
        where = f"on the Dask cluster at {dask}" if dask else _local(workers, len(todo))
        say(f"{len(todo)} runs to make {where} ({len(jobs) - len(todo)} already there)")
        progress = Progress(len(todo), tty=tty)
        if client is not None:
            made = _on_dask(client, base, todo)
        elif (workers or os.cpu_count() or 1) == 1:
            made = _here(base, todo)
        else:
            made = _in_pool(base, todo, workers or os.cpu_count() or 1)
        for job, files, why in made:
            if files is None:
                progress.done(job.label, why)
                yield Outcome(job, None, why)
                continue
            save(job.out, files)
            progress.done(job.label)
            yield Outcome(job, json.loads(files[RESULTS]))
    finally:
        if progress is not None:
            progress.close()
        if client is not None:
            client.close()


Made = Iterator[tuple[Job, dict[str, bytes] | None, str]]


def _here(base: Scenario, jobs: Sequence[Job]) -> Made:
    for job in jobs:
        try:
            files = run_files(base, job)
        except Exception as err:
            yield job, None, _why(err)
            continue
        yield job, files, ""


def _in_pool(base: Scenario, jobs: Sequence[Job], workers: int) -> Made:
    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)))
    try:
        futures: dict[Future[dict[str, bytes]], Job] = {
            pool.submit(run_files, base, job): job for job in jobs
        }
        for future in as_completed(futures):
            try:
                files = future.result()
            except Exception as err:
                yield futures[future], None, _why(err)
                continue
            yield futures[future], files, ""
    finally:
        # Normally every future is done here; on an interrupt, runs not started are dropped.
        pool.shutdown(wait=True, cancel_futures=True)


def _on_dask(client: Any, base: Scenario, jobs: Sequence[Job]) -> Made:
    from distributed import as_completed as completed  # noqa: PLC0415 - only for --dask

    futures = {client.submit(run_files, base, job, pure=False): job for job in jobs}
    try:
        for future in completed(list(futures), loop=client.loop):  # type: ignore[no-untyped-call]
            job = futures[future]
            try:
                files = future.result()
            except Exception as err:
                yield job, None, _why(err)
                continue
            finally:
                future.release()
            yield job, files, ""
    finally:
        client.cancel([f for f in futures if not f.done()])


def _connect(address: str) -> Any:
    """A distributed.Client on the scheduler at `address`, or one ClusterError line."""
    timeout = CONNECT_TIMEOUT_S
    try:
        from distributed import Client  # noqa: PLC0415 - the CLI starts without it
        from distributed.comm.core import connect  # noqa: PLC0415
    except ImportError:
        needs = "--dask needs dask.distributed: pip install 'dask[distributed]'"
        raise ClusterError(needs) from None

    async def probe() -> None:
        comm = await connect(address, timeout=timeout)  # type: ignore[no-untyped-call]
        await comm.close()

    # Probe with a plain connection first: a Client that fails to connect leaves an object
    # behind whose clean-up prints a traceback and waits for seconds.
    try:
        asyncio.run(probe())
    except MemoryError:  # something answered, but not in Dask's framing
        raise ClusterError(f"no Dask scheduler at {address}: it answers, not as one") from None
    except (OSError, ValueError, TypeError) as err:
        raise ClusterError(f"no Dask scheduler at {address}: {err}") from None
    try:
        return Client(address, timeout=timeout, set_as_default=False)  # type: ignore[no-untyped-call]
    except Exception as err:
        raise ClusterError(f"cannot use the Dask scheduler at {address}: {_why(err)}") from None


def _local(workers: int | None, runs: int) -> str:
    count = min(workers or os.cpu_count() or 1, runs)
    return "here, one after another" if count == 1 else f"in {count} local processes"


def _why(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"

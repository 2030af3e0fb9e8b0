"""The bulk-load scenario: many long KELs submitted at once with `dkms kel submit`.

4 witnesses (bt=3) and 2 watchers as processes (`cluster.py`); `identifiers` identifiers are
created with `dkms id create`, each given `events - 1` signed interactions, and every KEL is
submitted at the same moment by its own `dkms kel submit` process. Then both watchers must
come to hold every KEL (their store's event count, then each identifier's key state through
`dkms keystate --from WATCHER`). With `late`, a third watcher is started once the load is
over (bootstrapped from the last nodes started: a witness and both watchers) and must come to
hold every KEL by reconciling with them (`--reconcile-every`, `roles/reconcile.py`): the
tails were gossiped before it listened. When a watcher ends up short, every live node is
asked (SIGUSR1, `taskdump.py`) to write what its tasks wait on, and the report names the
files: keep `root` to read them. Used by tests/node/test_bulk_load.py and
benchmarks/bulkload.py.
"""

from __future__ import annotations

import functools
import json
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from dkms.node.testing.cluster import Cluster, NodeProcess, wait_until
from dkms.node.testing.keys import node_signer

WITNESSES = 4
TOAD = 3


@dataclass
class BulkReport:
    identifiers: int
    events: int  # per identifier
    submit_seconds: float = 0.0  # from the first submit started to the last one ended
    watched_seconds: float = 0.0  # from the first submit started until both watchers held all
    failed_submits: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    missing: dict[str, list[str]] = field(default_factory=dict)  # watcher -> prefixes
    reconcile_every: float | None = None  # the late watcher's period, if one was started
    late_seconds: float | None = None  # from its start until it held every event
    late_target: int = 0  # events it had to hold: the most another watcher held
    late_serving_seconds: float | None = None  # the same, from when it was up (introduced)
    late_reconciled: int = 0  # KELs its reconciliations found it lacked (its log says)
    task_dumps: list[str] = field(default_factory=list)  # written when a watcher was short

    @property
    def events_per_second(self) -> float:
        return self.identifiers * self.events / self.submit_seconds if self.submit_seconds else 0

    def to_json(self) -> dict[str, object]:
        return {
            "identifiers": self.identifiers,
            "events_per_identifier": self.events,
            "submit_seconds": round(self.submit_seconds, 2),
            "events_per_second_submitted": round(self.events_per_second, 1),
            "seconds_until_both_watchers_held_all": round(self.watched_seconds, 2),
            "events_per_second_held_by_both_watchers": round(
                self.identifiers * self.events / self.watched_seconds
                if self.watched_seconds
                else 0,
                1,
            ),
            "late_watcher_reconcile_every": self.reconcile_every,
            "late_watcher_seconds_until_it_held_all": (
                None if self.late_seconds is None else round(self.late_seconds, 2)
            ),
            "late_watcher_kels_found_by_reconciling": self.late_reconciled,
            "late_watcher_target_events": self.late_target,
            "late_watcher_seconds_from_up_until_it_held_all": (
                None if self.late_serving_seconds is None else round(self.late_serving_seconds, 2)
            ),
            "failed_submits": self.failed_submits,
            "dead_nodes": [d.split(":", 1)[0] for d in self.dead],
            "missing_at_watchers": self.missing,
            "task_dumps": self.task_dumps,
        }


def bulk_load(
    root: Path,
    identifiers: int,
    events: int,
    patience: float = 180.0,
    say: object = None,
    late: float | None = None,
) -> BulkReport:
    """`late`: start a watcher after the load, reconciling every `late` seconds."""
    tell = say if callable(say) else (lambda text: None)
    report = BulkReport(identifiers, events)
    with Cluster(root) as cluster:
        witnesses = [cluster.start("witness") for _ in range(WITNESSES)]
        governance = node_signer(40).verfer  # no roster: the watchers follow every KEL anyway
        watchers = [cluster.start("watcher", "--governance", governance) for _ in range(2)]
        intros = [w.intro for w in witnesses]
        tell(f"{len(cluster.nodes)} nodes up; creating {identifiers} identifiers")
        files: dict[str, Path] = {}
        for i in range(identifiers):
            create = ["id", "create", f"id{i}", "--toad", str(TOAD)]
            for intro in intros:
                create += ["--witness", intro]
            done = cluster.dkms(*create)
            if done.returncode != 0:
                raise RuntimeError(f"dkms id create failed: {done.stderr.decode()[-1000:]}")
            prefix, kel = cluster.signed_kel(f"id{i}", events)
            files[prefix] = root / f"id{i}.cesr"
            files[prefix].write_bytes(kel)
        tell(f"submitting {identifiers} x {events} events at once")
        start = time.monotonic()
        submits = {
            prefix: cluster.spawn(
                "kel", "submit", str(path), "--to", *intros, log=path.with_suffix(".log")
            )
            for prefix, path in files.items()
        }
        for prefix, process in submits.items():
            if process.wait() != 0:
                log = files[prefix].with_suffix(".log").read_text(errors="replace")
                report.failed_submits.append(f"{prefix}: {log[-500:]}")
        report.submit_seconds = time.monotonic() - start
        tell(f"submitted in {report.submit_seconds:.1f} s")
        total = identifiers * events

        def held_all(watcher: NodeProcess) -> bool:
            return (watcher.metric("dkms_store_events") or 0) >= total or not watcher.alive()

        try:
            for watcher in watchers:
                wait_until(
                    f"{watcher.data_dir.name} holds {total} events",
                    functools.partial(held_all, watcher),
                    patience,
                )
        except TimeoutError as err:
            tell(str(err))
        report.watched_seconds = time.monotonic() - start
        if late is not None:
            report.reconcile_every = late
            # what it must come to hold: every event, or, if some KEL never became fully
            # witnessed (a failed submit), as much as the others hold
            target = report.late_target = int(
                max((w.metric("dkms_store_events") or 0) for w in watchers)
            )
            tell(
                f"starting a watcher after the load (--reconcile-every {late:g}), to hold {target}"
            )
            began = time.monotonic()
            newcomer = cluster.start(
                "watcher", "--governance", governance, "--reconcile-every", f"{late:g}"
            )
            watchers.append(newcomer)
            up = time.monotonic()

            def caught_up() -> bool:
                held = newcomer.metric("dkms_store_events") or 0
                return held >= target or not newcomer.alive()

            try:
                wait_until(
                    f"{newcomer.data_dir.name} holds {target} events",
                    caught_up,
                    max(2 * late, 60.0),
                    every=0.2,
                )
                report.late_seconds = time.monotonic() - began
                report.late_serving_seconds = time.monotonic() - up
                tell(f"the late watcher held every KEL {report.late_seconds:.1f} s after it began")
            except TimeoutError as err:
                tell(str(err))
            found = re.findall(r"reconciled with \S+: it holds more of (\d+) KELs", newcomer.log())
            report.late_reconciled = sum(int(n) for n in found)
        for watcher in watchers:
            short = [
                f"{prefix} (sn {sn})"
                for prefix, sn in _held(cluster, watcher, list(files)).items()
                if sn != events - 1
            ]
            if short:
                report.missing[watcher.data_dir.name] = short
        report.dead = cluster.dead()
        if report.missing:
            report.task_dumps = _dump_tasks(cluster)
    return report


_DUMPED = re.compile(r"SIGUSR1: every task and what it waits on in (\S+)")


def _dump_tasks(cluster: Cluster) -> list[str]:
    """Every live node's task dump (SIGUSR1): the files' paths, and a line per node that wrote
    none in 10 s."""
    live = [node for node in cluster.nodes if node.alive()]
    for node in live:
        node.process.send_signal(signal.SIGUSR1)
    paths: list[str] = []
    for node in live:
        try:
            wait_until(
                f"{node.data_dir.name}'s task dump",
                lambda n=node: bool(_DUMPED.search(n.log())),
                10.0,
            )
            paths.append(_DUMPED.findall(node.log())[-1])
        except TimeoutError as err:
            paths.append(str(err))
    return paths


def _held(cluster: Cluster, watcher: NodeProcess, prefixes: list[str]) -> dict[str, int | None]:
    """The sn `watcher` holds of each prefix (None: none, or no answer), as `dkms keystate`
    says: one command for them all (a command each cost 2.5 s of start-up on a busy machine)."""
    answer = cluster.dkms("keystate", *prefixes, "--from", watcher.intro, "--json")
    lines = answer.stdout.splitlines() if answer.returncode == 0 else []
    held: dict[str, int | None] = dict.fromkeys(prefixes)
    for prefix, line in zip(prefixes, lines, strict=False):
        try:
            sn = json.loads(line).get("sn")
        except (ValueError, AttributeError):
            continue
        held[prefix] = sn if isinstance(sn, int) else None
    return held

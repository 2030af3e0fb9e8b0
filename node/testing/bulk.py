"""The bulk-load scenario: many long KELs submitted at once with `dkms kel submit`.

4 witnesses (bt=3) and 2 watchers as processes (`cluster.py`); `identifiers` identifiers are
created with `dkms id create`, each given `events - 1` signed interactions, and every KEL is
submitted at the same moment by its own `dkms kel submit` process. Then both watchers must
come to hold every KEL (their store's event count, then each identifier's key state through
`dkms keystate --from WATCHER`). Used by tests/node/test_bulk_load.py and
benchmarks/bulkload.py.
"""

from __future__ import annotations

import functools
import json
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
            "failed_submits": self.failed_submits,
            "dead_nodes": [d.split(":", 1)[0] for d in self.dead],
            "missing_at_watchers": self.missing,
        }


def bulk_load(
    root: Path, identifiers: int, events: int, patience: float = 180.0, say: object = None
) -> BulkReport:
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
        for watcher in watchers:
            short = []
            for prefix in files:
                answer = cluster.dkms("keystate", prefix, "--from", watcher.intro, "--json")
                try:
                    sn = json.loads(answer.stdout)["sn"] if answer.returncode == 0 else None
                except (ValueError, KeyError):
                    sn = None
                if sn != events - 1:
                    short.append(f"{prefix} (sn {sn})")
            if short:
                report.missing[watcher.data_dir.name] = short
        report.dead = cluster.dead()
    return report

"""What a running node says of itself: its status snapshot, its health, its minute summary.

`NodeView` gathers what `dkms-node status` shows (over the control socket,
`runtime/control.py`) from the parts `daemon.py` assembled: role, host, store, runtime. Health
(`/health` on the HTTP port, and in the status) is two questions: has the node a connected
neighbour (the neighbour upkeep's own notion: a connected peer), and can its store be written.
The store check is real and cheap: the write lock is taken and a row written, then rolled back
(proves the connection is open, the database writable and not stuck behind a commit), and the
file system is asked whether it is read-only or nearly full (which a rolled-back write cannot
show, and which would otherwise surface only as the next commit failing and the node stopping).

`MinuteSummary` is the once-a-minute INFO line: what the node accepted in the last minute,
its peers and KELs held, written only when something changed.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import trio

from dkms.node.p2p import P2PHost
from dkms.node.p2p.peerview import log_peers, mesh_sizes, peer_views
from dkms.node.roles.watcher import Watcher
from dkms.node.roles.witness import Witness
from dkms.node.runtime.control import ControlError, RecentLog, serve_control, socket_path
from dkms.node.runtime.store import Store, StoreError

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger("dkms.node")

MAX_PEERS: Final = 256  # peers listed in a status (the count is always whole)
STORE_WAIT: Final = 2.0  # seconds the store probe may wait for the write lock
MIN_FREE: Final = 16 << 20  # bytes free on the store's file system below which it is unhealthy
SUMMARY_EVERY: Final = 60.0  # seconds between summary lines


@dataclass(frozen=True, slots=True)
class Health:
    """Healthy when nothing is wrong; `reasons` says what is."""

    peers: int
    reasons: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.reasons

    def to_json(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "unhealthy",
            "peers": self.peers,
            "reasons": list(self.reasons),
        }


def judge(peers: int, store_problems: list[str]) -> Health:
    """Health from the number of connected peers and what is wrong with the store."""
    reasons = [] if peers else ["no connected neighbours"]
    return Health(peers, tuple(reasons + [f"store: {p}" for p in store_problems]))


def disk_problems(directory: Path, min_free: int = MIN_FREE) -> list[str]:
    """What the file system under `directory` says against writing to it."""
    try:
        fs = os.statvfs(directory)
    except OSError as err:
        return [f"cannot look at {directory}: {err.strerror}"]
    if fs.f_flag & os.ST_RDONLY:
        return [f"the file system of {directory} is read-only"]
    free = fs.f_bavail * fs.f_frsize
    if free < min_free:
        return [f"only {free} bytes free on the file system of {directory}"]
    return []


async def store_problems(store: Store, limiter: trio.CapacityLimiter) -> list[str]:
    """The store's rolled-back write and its file system's state; `limiter` holds one thread
    (a stuck store must not collect a thread per health check)."""
    problems = disk_problems(store.path.parent)
    with trio.move_on_after(STORE_WAIT) as waited:
        try:
            # A commit in progress holds the store's mutex: wait for it in a thread.
            # (libp2p's trio-typing stubs, which mypy reads, predate `abandon_on_cancel`.)
            await trio.to_thread.run_sync(  # type: ignore[call-arg,unused-ignore]
                store.probe_write, abandon_on_cancel=True, limiter=limiter
            )
        except StoreError as err:
            problems.append(str(err))
    if waited.cancelled_caught:
        problems.append(f"no write possible within {STORE_WAIT:g} s")
    return problems


class NodeView:
    """A running node as its operator sees it."""

    def __init__(self, role: Witness | Watcher, host: P2PHost, store: Store) -> None:
        self.role, self.host, self.store = role, host, store
        self.recent = RecentLog()
        self.started = time.monotonic()
        self._probes = trio.CapacityLimiter(1)

    async def run(
        self, data_dir: Path, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep the recent warnings, log peers coming and going and the minute summary, and
        answer on the control socket, until cancelled."""
        root = logging.getLogger()
        root.addHandler(self.recent)
        log_peers(self.host)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.summarise_forever)
                try:
                    path = socket_path(data_dir)
                    await nursery.start(serve_control, path, self.answer)
                except ControlError as err:  # status is an aid: the node runs without it
                    log.warning("no control socket, so no `dkms-node status`: %s", err)
                task_status.started()
        finally:
            root.removeHandler(self.recent)

    async def health(self) -> Health:
        problems = await store_problems(self.store, self._probes)
        return judge(len(self.host.connected_peers()), problems)

    async def health_check(self) -> tuple[bool, dict[str, Any]]:
        """For `/health` (`runtime/metrics.py`)."""
        health = await self.health()
        return health.ok, health.to_json()

    async def status(self) -> dict[str, Any]:
        """The whole snapshot (`dkms-node status --json` prints it)."""
        role, store = self.role, self.store
        peers, total = peer_views(self.host, MAX_PEERS)
        stats = store.stats()
        storage = role.storage
        health = await self.health()
        return {
            "prefix": role.prefix,
            "role": "watcher" if isinstance(role, Watcher) else "witness",
            "pid": os.getpid(),
            "uptime": round(time.monotonic() - self.started, 1),
            "introductions": [str(i) for i in self.host.introductions()],
            "peers": [p.to_json() for p in peers],
            "peer_count": total,
            "mesh": mesh_sizes(self.host),
            "roster_epoch": _epoch(role),
            "kels": len(role.validator.prefixes),
            "events": stats.events + stats.loose,
            "receipts": stats.receipts,
            "escrows": {
                name: {"entries": entries, "bytes": held}
                for name, (entries, held) in role.validator.escrow_fill().items()
            },
            "store": {
                "path": str(store.path),
                "file_bytes": stats.bytes,
                "stored_bytes": storage.stored,
                "held_bytes": storage.held,
                "quota": storage.quota,
                "unwitnessed_bytes": storage.loose_held,
                "unwitnessed_quota": storage.loose_quota,
            },
            "health": health.to_json(),
            "recent": self.recent.recent(),
        }

    async def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """What the control socket answers (`runtime/control.py`)."""
        if request.get("t") == "status":
            return {"ok": True, "status": await self.status()}
        return {"ok": False, "error": 'unknown request: send {"t": "status"}'}

    def counts(self) -> tuple[int, int, int, int]:
        """(events stored, receipts stored, peers, KELs held), for the minute summary."""
        stats = self.store.stats()
        return (
            stats.events + stats.loose,
            stats.receipts,
            len(self.host.connected_peers()),
            len(self.role.validator.prefixes),
        )

    async def summarise_forever(self, every: float = SUMMARY_EVERY) -> None:
        summary = MinuteSummary(self.counts())
        while True:
            await trio.sleep(every)
            line = summary.line(self.counts())
            if line is not None:
                log.info("%s", line)


def _epoch(role: Witness | Watcher) -> int | None:
    if isinstance(role, Watcher) and role.governance.roster is not None:
        return role.governance.epoch
    return None


class MinuteSummary:
    """One line per period, only when something changed since the last one."""

    def __init__(self, counts: tuple[int, int, int, int]) -> None:
        self._last = counts

    def line(self, counts: tuple[int, int, int, int]) -> str | None:
        if counts == self._last:
            return None
        events, receipts, peers, kels = counts
        before = self._last
        self._last = counts
        return (
            f"last minute: {events - before[0]} events and {receipts - before[1]} receipts"
            f" stored; {peers} peers; {kels} KELs held"
        )

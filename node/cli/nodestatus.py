"""`dkms-node status --data-dir DIR [--json]`: ask the node running on DIR how it is.

The node answers on its control socket, `DIR/control.sock` (`runtime/control.py`). No node
running is one line and exit status 1, never the addresses of a node that has stopped: a
socket file with nobody behind it is a node that was killed. A node that holds its store but
has no socket yet (still proving its store at start) is told apart by its store lock. `ask`
is also how `dkms-node info` tells a running node from the addresses it last had.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Final

from dkms.node.runtime.control import ControlError, socket_path
from dkms.node.runtime.store import FILENAME
from dkms.node.secretfiles import SEED_FILE

TIMEOUT: Final = 5.0  # seconds the node has to answer
MAX_ANSWER: Final = 4 << 20  # bytes of answer read at most
LOCK_FILE: Final = FILENAME + ".lock"  # the store's lock (`runtime/store.py`)


class NotRunning(ControlError):
    """No node answers on the data directory's control socket."""


def ask(data_dir: Path, timeout: float = TIMEOUT) -> dict[str, Any]:
    """The running node's status; `NotRunning` or `ControlError` (one line) otherwise."""
    if not (data_dir / SEED_FILE).exists():
        raise ControlError(
            f"no node in {data_dir}: start one with `dkms-node run --data-dir {data_dir}`"
        )
    path = socket_path(data_dir)
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            holder = lock_holder(data_dir / LOCK_FILE)
            if holder is None:
                raise NotRunning(f"no node is running in {data_dir}") from None
            raise ControlError(
                f"the node in {data_dir} (pid {holder}) does not answer yet: it is starting"
                " (proving its store) or stopping"
            ) from None
        except PermissionError:
            raise ControlError(
                f"not allowed to connect to {path}: run this as the user the node runs as"
            ) from None
        except TimeoutError:
            raise ControlError(
                f"the node in {data_dir} does not answer (busy or stopped)"
            ) from None
        except OSError as err:
            raise ControlError(f"cannot connect to {path}: {err.strerror or err}") from None
        data = b""
        try:
            sock.sendall(b'{"t": "status"}\n')
            while len(data) <= MAX_ANSWER:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise ControlError(
                f"the node in {data_dir} did not answer within {timeout:g} s (busy or stopped)"
            ) from None
        except OSError as err:
            raise ControlError(f"the node in {data_dir} did not answer: {err}") from None
    try:
        answer = json.loads(data)
    except ValueError:
        raise ControlError(f"the node in {data_dir} gave an answer that does not read") from None
    if not isinstance(answer, dict) or not answer.get("ok") or "status" not in answer:
        error = answer.get("error") if isinstance(answer, dict) else None
        raise ControlError(f"the node in {data_dir} says: {error or 'no status'}")
    status: dict[str, Any] = answer["status"]
    return status


def lock_holder(lock: Path) -> int | None:
    """The pid of the process holding the store's lock, from /proc/locks (Linux), or None.

    Read, never tried: taking the lock even for an instant would make a node starting at that
    instant refuse its store. The holder writes its pid into the lock file (`lockfile.py`);
    the lock counts as held when /proc/locks lists a lock by that pid on that inode."""
    try:
        inode = os.stat(lock).st_ino
        pid = int(lock.read_text().strip() or 0)
        table = Path("/proc/locks").read_text()
    except (OSError, ValueError):
        return None
    for line in table.splitlines():
        fields = line.split()  # "1: FLOCK  ADVISORY  WRITE 12345 fe:00:2213137 0 EOF"
        held = len(fields) >= 6 and fields[1] == "FLOCK" and fields[4] == str(pid)
        if held and fields[5].rsplit(":", 1)[-1] == str(inode):
            return pid
    return None


def summary(status: dict[str, Any]) -> list[str]:
    """The human summary of a status (`--json` prints the status itself)."""
    health = status.get("health", {})
    lines = [
        f"{status['role']} {status['prefix']}, up {_duration(status['uptime'])}"
        f" (pid {status['pid']})",
        "health:   "
        + (
            "ok"
            if health.get("status") == "ok"
            else "unhealthy: " + "; ".join(health.get("reasons", []))
        ),
    ]
    lines += [f"address:  {intro}" for intro in status["introductions"]]
    peers = status["peers"]
    ways = {way: sum(p["direction"] == way for p in peers) for way in ("in", "out")}
    lines.append(f"peers:    {status['peer_count']} ({ways['in']} in, {ways['out']} out)")
    for peer in peers:
        score = "" if peer["score"] is None else f"  score {peer['score']:g}"
        lines.append(f"  {peer['prefix']}  {peer['direction']:<7} {peer['address']}{score}")
    mesh = status["mesh"]
    if mesh:
        sizes = sorted(mesh.values())
        spread = f"{sizes[0]}" if sizes[0] == sizes[-1] else f"{sizes[0]} to {sizes[-1]}"
        empty = sum(1 for size in sizes if size == 0)
        lines.append(
            f"mesh:     {len(mesh)} topics, {spread} peers each"
            + (f" ({empty} with none)" if empty and sizes[-1] else "")
        )
    if status.get("roster_epoch") is not None:
        lines.append(f"roster:   epoch {status['roster_epoch']}")
    elif status["role"] == "watcher":
        lines.append("roster:   none yet")
    lines.append(
        f"held:     {status['kels']} KELs, {status['events']} events, {status['receipts']} receipts"
    )
    escrows = status["escrows"]
    waiting = sum(e["entries"] for e in escrows.values())
    held = sum(e["bytes"] for e in escrows.values())
    lines.append(f"escrows:  {waiting} entries, {_bytes(held)}")
    store = status["store"]
    lines.append(
        f"store:    {_bytes(store['stored_bytes'])} of {_bytes(store['quota'])} (store_quota),"
        f" {_bytes(store['file_bytes'])} on disk"
    )
    recent = status.get("recent", [])
    if recent:
        lines.append("recent warnings and errors:")
        lines += [f"  {r['time']} {r['level']} {r['message']}" for r in recent]
    return lines


def _duration(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h{minutes}m"
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m{secs}s"


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def status_command(data_dir: Path, as_json: bool) -> int:
    """`dkms-node status`; raises `ControlError` (the caller prints it: exit 1)."""
    status = ask(data_dir)
    if as_json:
        print(json.dumps(status))
    else:
        print("\n".join(summary(status)))
    return 0

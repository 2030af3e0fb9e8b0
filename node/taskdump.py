"""What every trio task of a running node is waiting on, for `kill -USR1 <pid>`.

A node that stops answering without crashing leaves nothing in its log: its tasks sit parked in
trio. This writes the whole task tree, each task with the chain of awaits it is parked in
(function, file and line, innermost last), to `tasks-<unix time>.txt` in the node's data
directory (mode 0600: it names peers) and logs the file's path, so an operator can say where a
wedged node waits. Nothing is changed by it; tasks are only read.
"""

from __future__ import annotations

import time
from pathlib import Path

import trio

from dkms.node.secretfiles import atomic_write

_PROJECT = Path(__file__).resolve().parents[1]  # protocol/, node/, simulations/


def _short(filename: str) -> str:
    """A source path from its package on: `dkms/node/...`, `trio/_core/_run.py`."""
    path = Path(filename)
    parts = path.parts
    if "site-packages" in parts:
        return "/".join(parts[len(parts) - parts[::-1].index("site-packages") :])
    if path.is_relative_to(_PROJECT):
        return "dkms/" + path.relative_to(_PROJECT).as_posix()
    return filename


def task_tree() -> str:
    """Every task under the root, indented by nesting, with its await chain."""
    lines: list[str] = []
    me = trio.lowlevel.current_task()

    def walk(task: trio.lowlevel.Task, depth: int) -> None:
        pad = "  " * depth
        lines.append(f"{pad}- {task.name}" + ("  (running: it writes this)" if task is me else ""))
        for frame, lineno in task.iter_await_frames():
            code = frame.f_code
            lines.append(f"{pad}    {code.co_name} ({_short(code.co_filename)}:{lineno})")
        for nursery in task.child_nurseries:
            for child in sorted(nursery.child_tasks, key=lambda t: t.name):
                walk(child, depth + 1)

    root = trio.lowlevel.current_root_task()
    assert root is not None  # called from a task
    walk(root, 0)
    return "\n".join(lines) + "\n"


def dump_tasks(data_dir: Path) -> Path:
    """Write the task tree beside the node's store; its path."""
    path = data_dir / f"tasks-{int(time.time())}.txt"
    atomic_write(path, task_tree().encode())
    return path

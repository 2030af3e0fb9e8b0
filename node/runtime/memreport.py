"""Where a node's memory goes, for developers: `DKMS_MEMORY_REPORT=FILE` (or a directory)
makes the daemon trace its allocations (`tracemalloc`, which slows it and takes memory of its
own) and write, every `EVERY` seconds, the `TOP` source lines holding the most memory to FILE
(replaced each time). Off unless the variable is set; for finding what to bound, never for
production.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import tempfile
import tracemalloc
import types
from contextlib import suppress
from pathlib import Path
from typing import Final

import trio

VARIABLE: Final = "DKMS_MEMORY_REPORT"
CENSUS: Final = "DKMS_MEMORY_CENSUS"  # "1": also what each part of the node holds (slow)
TRACE: Final = "DKMS_MEMORY_TRACE"  # "0": only the process's heap figures, no tracemalloc
EVERY: Final = 15.0
EVERY_UNTRACED: Final = 2.0
TOP: Final = 40


def wanted() -> Path | None:
    """The report's file, if asked for: the variable's value, or in a directory it names,
    `memory-PID.txt` (so that several nodes started with it write their own)."""
    value = os.environ.get(VARIABLE, "")
    if not value:
        return None
    path = Path(value)
    return path / f"memory-{os.getpid()}.txt" if path.is_dir() else path


async def report_memory(path: Path, roots: dict[str, object] | None = None) -> None:
    """Run until cancelled: trace allocations and rewrite `path` every `EVERY` seconds (and
    `path`.peak whenever resident memory is the highest yet)."""
    peak = 0
    tracing = os.environ.get(TRACE, "1") != "0"
    if tracing:
        tracemalloc.start(1)
    try:
        while True:
            await trio.sleep(EVERY if tracing else EVERY_UNTRACED)
            lines = heap_lines() + pymalloc_lines()
            if roots and os.environ.get(CENSUS, "") == "1":
                lines += census_lines(roots)
            if tracing:
                stats = tracemalloc.take_snapshot().statistics("lineno")
                total = sum(s.size for s in stats)
                lines.append(f"traced {total / 1e6:.1f} MB in {len(stats)} source lines")
                lines += [
                    f"{s.size / 1e6:9.2f} MB {s.count:9d} {s.traceback[0]}" for s in stats[:TOP]
                ]
            text = "\n".join(lines) + "\n"
            _replace(path, text)
            if (rss := _resident()) >= peak:
                peak = rss
                _replace(Path(f"{path}.peak"), text)
    finally:
        if tracing:
            tracemalloc.stop()


def _replace(path: Path, text: str) -> None:
    Path(f"{path}.tmp").write_text(text)
    os.replace(f"{path}.tmp", path)


def _resident() -> int:
    """This process's resident memory in kB (0 where /proc is not there)."""
    with suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class _MallInfo2(ctypes.Structure):
    _fields_ = [  # glibc's struct mallinfo2, every field a size_t
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def heap_lines() -> list[str]:
    """The process's memory as the kernel and glibc's malloc see it: resident and anonymous
    memory (/proc/self/smaps_rollup), malloc's heap in use and free, and its mmapped blocks;
    what `tracemalloc` does not trace (C libraries' own allocations, fragmentation) shows as
    the difference."""
    lines = []
    try:
        rollup = Path("/proc/self/smaps_rollup").read_text().splitlines()
    except OSError:
        rollup = []
    wanted = {"Rss:", "Anonymous:", "Private_Dirty:"}
    lines += [
        " ".join(line.split()) for line in rollup if line.split()[:1] and line.split()[0] in wanted
    ]
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is not None and hasattr(libc, "mallinfo2"):
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
        lines.append(
            f"malloc: heap {info.arena / 1e6:.1f} MB, in use {info.uordblks / 1e6:.1f} MB, "
            f"free {info.fordblks / 1e6:.1f} MB, mmapped {info.hblkhd / 1e6:.1f} MB "
            f"in {info.hblks} blocks"
        )
    return lines


def pymalloc_lines() -> list[str]:
    """Python's small-object allocator: its arenas (memory it holds from the system, given
    back only when an arena is wholly free) against the bytes of live objects in them. It
    prints to file descriptor 2, so that is pointed at a temporary file meanwhile (whatever
    another thread writes to stderr in those milliseconds lands there too)."""
    debug = getattr(sys, "_debugmallocstats", None)
    if debug is None:
        return []
    with tempfile.TemporaryFile() as out:
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            debug()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")
    keep = (
        "arenas *",
        "arenas highwater mark",
        "# bytes in allocated blocks",
        "# bytes in available blocks",
        "unused pools",
    )
    return [
        "pymalloc: " + " ".join(line.split())
        for line in text.splitlines()
        if any(k in line for k in keep)
    ]


def census_lines(roots: dict[str, object], top: int = 30) -> list[str]:
    """What each of `roots` (and each attribute of theirs) holds, walking the objects it
    reaches (`sys.getsizeof`, each object counted once, for the first part that reaches it).
    Blocks the node while it walks (a few seconds for a million objects)."""
    seen: set[int] = set()
    sizes: list[tuple[int, int, str]] = []
    parts: list[tuple[str, object]] = []
    for name, root in roots.items():  # the attributes' attributes first, then theirs, then ...
        for attr, value in _attributes(root):
            parts += [(f"{name}.{attr}.{sub}", inner) for sub, inner in _attributes(value)]
            parts.append((f"{name}.{attr}", value))
        parts.append((name, root))
    for name, obj in parts:
        size, count = _walk(obj, seen)
        sizes.append((size, count, name))
    sizes.sort(reverse=True)
    return [f"census {size / 1e6:9.2f} MB {count:9d} {name}" for size, count, name in sizes[:top]]


def _attributes(obj: object) -> list[tuple[str, object]]:
    """`obj`'s attributes: its __dict__'s, or those a mypyc-compiled class names."""
    attrs = getattr(obj, "__dict__", None)
    if isinstance(attrs, dict):
        return list(attrs.items())
    names = getattr(type(obj), "__mypyc_attrs__", ())
    return [(name, getattr(obj, name)) for name in names if hasattr(obj, name)]


_OPAQUE: Final = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.MethodType,
    types.BuiltinFunctionType,
    types.CodeType,
    types.FrameType,
)


def _walk(root: object, seen: set[int]) -> tuple[int, int]:
    total = count = 0
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _OPAQUE):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj, 0)
        count += 1
        if isinstance(obj, dict):
            stack += obj.keys()
            stack += obj.values()
        elif isinstance(obj, (list, tuple, set, frozenset)) or type(obj).__name__ == "deque":
            stack += list(obj)  # type: ignore[call-overload]
        else:
            attrs = getattr(obj, "__dict__", None)
            if isinstance(attrs, dict):
                stack.append(attrs)
            kind = type(obj)  # a mypyc-compiled class names its attributes in __mypyc_attrs__
            for slot in (*getattr(kind, "__slots__", ()), *getattr(kind, "__mypyc_attrs__", ())):
                if isinstance(slot, str):
                    value = getattr(obj, slot, None)
                    if value is not None:
                        stack.append(value)
    return total, count

"""The protocol layer stays pure: no I/O, clock, randomness or concurrency runtime.

Each checked package is walked with `ast`; an import of a forbidden module (or of anything
inside it), a call to `open()`, or a dynamic import that could smuggle one in, fails the test.
`PURE_PACKAGES` is the list to extend: `node/roles/` is checked as soon as it exists.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Folders whose modules must be pure. Missing folders are skipped.
PURE_PACKAGES: tuple[str, ...] = ("protocol", "node/roles")
# Pure modules that live beside the adapters they serve.
PURE_MODULES: tuple[str, ...] = ("node/p2p/peering.py", "node/testing/driver.py")

FORBIDDEN_MODULES = frozenset(
    {
        "trio",
        "libp2p",
        "socket",
        "asyncio",
        "time",
        "random",
        "sqlite3",
        "lmdb",
        "os",
        "subprocess",
        "threading",
        "secrets",
        "pathlib",
        "io",
        "datetime",
        # the same capabilities by other names
        "builtins",
        "importlib",
        "multiprocessing",
        "selectors",
        "ssl",
        "urllib",
        "http",
        "shutil",
        "tempfile",
        "glob",
        "signal",
        "concurrent",
        "sys",
    }
)
FORBIDDEN_CALLS = frozenset(
    {"open", "__import__", "exec", "eval", "compile", "input", "breakpoint"}
)


def existing_packages() -> list[Path]:
    return [ROOT / name for name in PURE_PACKAGES if (ROOT / name).is_dir()]


def modules(package: Path) -> list[Path]:
    return sorted(package.rglob("*.py"))


def violations(source: str, filename: str = "<source>") -> Iterator[str]:
    """Every impure construct in `source`, as 'line: what'."""
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    yield f"{node.lineno}: import {alias.name}"
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.split(".")[0] in FORBIDDEN_MODULES:
                yield f"{node.lineno}: from {node.module} import ..."
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else None
            if isinstance(func, ast.Attribute) and func.attr == "open":
                name = "open"  # io.open, os.open, builtins.open, Path(...).open
            if name in FORBIDDEN_CALLS:
                yield f"{node.lineno}: call {name}()"


def checked() -> list[Path]:
    return [m for p in existing_packages() for m in modules(p)] + [
        ROOT / m for m in PURE_MODULES
    ]


def test_pure_packages_are_found() -> None:
    packages = existing_packages()
    assert ROOT / "protocol" in packages
    assert all(modules(p) for p in packages)
    assert all((ROOT / m).is_file() for m in PURE_MODULES)


def test_every_role_module_is_checked() -> None:
    roles = sorted((ROOT / "node" / "roles").glob("*.py"))
    assert len(roles) > 10
    assert set(roles) <= set(checked())


@pytest.mark.parametrize("module", checked(), ids=lambda m: str(m.relative_to(ROOT)))
def test_module_is_pure(module: Path) -> None:
    found = list(violations(module.read_text(encoding="utf-8"), str(module)))
    assert not found, f"{module.relative_to(ROOT)} is not pure:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        "import os",
        "import os.path",
        "import trio as t",
        "from time import monotonic",
        "from datetime import datetime",
        "from libp2p.host import basic_host",
        "import json, random",
        "def f():\n    import socket",
        "open('x')",
        "io.open('x')",
        "Path('x').open()",
        "__import__('os')",
        "from importlib import import_module",
        "if TYPE_CHECKING:\n    import asyncio",
    ],
)
def test_checker_catches(source: str) -> None:
    assert list(violations(source))


@pytest.mark.parametrize(
    "source",
    [
        "import json",
        "from . import cesr",
        "from .time import x",  # a sibling module that happens to be named time
        "import cbor2, blake3",
        "from nacl import bindings",
        "reader.opened()",
        "x = 'open'",
    ],
)
def test_checker_allows(source: str) -> None:
    assert not list(violations(source))

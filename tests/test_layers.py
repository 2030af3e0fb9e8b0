"""The layers stay layered: nothing below the command line imports from it.

`node/cli/` holds the `dkms` and `dkms-node` programs; everything else (the protocol, the
roles, the runtime, the daemon, the client, the simulator, benchmarks and tools) must work
without them, so a module outside `node/cli/` importing from `dkms.node.cli` fails here.
Imports are read with `ast`, relative ones resolved against the module's own package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"protocol": "dkms.protocol", "node": "dkms.node", "simulations": "dkms.simulations"}
SCRIPTS = ("benchmarks", "tools")
CLI = "dkms.node.cli"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    parts = [*PACKAGES.get(rel.parts[0], rel.parts[0]).split("."), *rel.parts[1:]]
    parts[-1] = parts[-1].removesuffix(".py")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, *, package: bool = False) -> set[str]:
    """Every module `source` (the module named `module`) imports, or imports from."""
    here = module.split(".") if package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - (node.level - 1)] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def below_the_cli() -> list[Path]:
    files = [p for top in (*PACKAGES, *SCRIPTS) for p in (ROOT / top).rglob("*.py")]
    return sorted(p for p in files if not p.is_relative_to(ROOT / "node" / "cli"))


@pytest.mark.parametrize("path", below_the_cli(), ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_outside_the_cli_imports_from_it(path: Path) -> None:
    found = imports_of(path.read_text(), module_name(path), package=path.name == "__init__.py")
    bad = sorted(m for m in found if m == CLI or m.startswith(CLI + "."))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}: move what it needs below the CLI"


def test_relative_and_absolute_imports_of_the_cli_are_both_seen() -> None:
    source = "from ..cli.main import entry\nimport dkms.node.cli.textout\nfrom . import store\n"
    found = imports_of(source, "dkms.node.runtime.loop")
    assert {"dkms.node.cli.main", "dkms.node.cli.textout", "dkms.node.runtime.store"} <= found
    assert module_name(ROOT / "node" / "cli" / "__init__.py") == CLI

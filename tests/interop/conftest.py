"""The `kli` fixture: keripy 1.3.6's command line, from its own venv (tools/keripy_env.py).

Built once per session (about ten seconds from pip's cache, a minute cold). When it cannot be
built the test that asked for it fails with the reason: an interop check that silently skips
would let CI pass without keripy ever talking to us.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def load_tool(name: str) -> ModuleType:
    """A module of tools/ (not a package, nor on the path of the tests)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def keripy_env() -> object:
    """tools/keripy_env.py's KeripyEnv (`.python`, `.kli`)."""
    env_tool = load_tool("keripy_env")
    try:
        return env_tool.ensure()
    except env_tool.KeripyEnvError as exc:
        pytest.fail(f"keripy {env_tool.KERI_VERSION} is not available: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def kli(keripy_env: object) -> Path:
    """The path of keripy 1.3.6's `kli`."""
    path = keripy_env.kli
    assert isinstance(path, Path)
    return path

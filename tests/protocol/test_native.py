"""The set-up compiles the protocol's per-event modules (setup.py), and the suite runs them.

Unless `DKMS_PURE_PYTHON` is set (then the `.py` files run), every module setup.py names
must import as an extension module: otherwise a broken build would pass unnoticed, with
the tests exercising only the pure-Python reference.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import os
from pathlib import Path

SETUP = Path(__file__).resolve().parents[2] / "setup.py"


def compiled_names() -> tuple[str, ...]:
    for node in ast.parse(SETUP.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "COMPILED" for t in node.targets
        ):
            names = ast.literal_eval(node.value)
            assert isinstance(names, tuple)
            return names
    raise AssertionError("setup.py has no COMPILED list")


def test_compiled_modules_are_the_ones_running() -> None:
    pure = os.environ.get("DKMS_PURE_PYTHON", "") not in ("", "0")
    names = compiled_names()
    assert "validator" in names and "events" in names
    for name in names:
        module = importlib.import_module(f"dkms.protocol.{name}")
        origin = str(module.__file__)
        native = origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
        assert native != pure, f"dkms.protocol.{name} runs from {origin} (pure={pure})"

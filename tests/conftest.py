"""Suite-wide guard: never test compiled protocol modules built from other sources.

An editable install compiles part of `protocol/` with mypyc (setup.py) and puts the
extension modules beside the `.py` files, where Python imports them first. After an edit
to a `.py` file they would go on running the old code, and the tests would test that. The
build records a digest of the sources it compiled; this refuses to start on a mismatch.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

PROTOCOL = Path(__file__).resolve().parent.parent / "protocol"


def stale_compiled_modules() -> list[str]:
    """Protocol sources that differ from what the compiled modules beside them were built from."""
    if not any(PROTOCOL.glob("*.so")) and not any(PROTOCOL.glob("*.pyd")):
        return []
    try:
        built = json.loads((PROTOCOL / "_native.json").read_text())
    except (OSError, ValueError):
        return ["(no record of the sources compiled: protocol/_native.json)"]
    now = {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(PROTOCOL.glob("*.py"))
    }
    return sorted(name for name in built.keys() | now.keys() if built.get(name) != now.get(name))


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("DKMS_PURE_PYTHON", "") not in ("", "0"):
        return  # the pure-Python run (see .ci/run) imports the sources, not these modules
    stale = stale_compiled_modules()
    if stale:
        pytest.exit(
            "the compiled protocol modules are out of date with their sources ("
            + ", ".join(stale)
            + "). Run the tests with `python3 run.py test`, which rebuilds them, or"
            " rebuild with `python3 run.py setup`.",
            returncode=4,
        )

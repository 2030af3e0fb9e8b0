"""Build hook: compile the protocol layer's per-event path to C with mypyc.

Everything else about the package is declared in pyproject.toml. The modules in `COMPILED`
are the ones every event passes through (framing, parsing, signature and threshold checks,
the validator); compiled, they add about a fifth less time per event on top of the
signature check itself (see benchmarks/validate.py). Their `.py` sources stay the reference:
the compiled modules are built from exactly those files, and the package works unchanged
without them.

- `DKMS_PURE_PYTHON=1` at install time skips the compilation.
- mypyc names modules after their folders, and ours live in `protocol/` but import as
  `dkms.protocol`. So the sources are staged under `build/mypyc-src/dkms/protocol/` first
  and compiled from there; setuptools then places each extension next to its `.py`
  (in `protocol/` for an editable install, in `dkms/protocol/` in a wheel).
- An editable install puts the compiled modules beside their sources, where they shadow
  the `.py` files until rebuilt. So the build records the digest of the sources it compiled
  in `protocol/_native.json`: `python3 run.py` rebuilds when the sources no longer match
  it, and the test suite refuses to run on compiled modules that are out of date.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
SOURCE = ROOT / "protocol"
STAGE = Path("build") / "mypyc-src"  # relative: mypyc writes these paths into tracebacks
MANIFEST = SOURCE / "_native.json"

COMPILED = (
    "attachments",
    "canonical",
    "cesr",
    "crypto",
    "escrow",
    "events",
    "kel",
    "keystate",
    "outcomes",
    "signing",
    "stream",
    "thresholds",
    "validator",
)


BUILDS = ("build", "build_ext", "bdist_wheel", "editable_wheel", "install", "develop")


def compiled_extensions() -> list[object]:
    if not any(command in sys.argv for command in BUILDS):
        return []  # pip asks for metadata first: no need to compile for that
    if os.environ.get("DKMS_PURE_PYTHON", "") not in ("", "0"):
        print("setup.py: DKMS_PURE_PYTHON is set; dkms.protocol stays pure Python", file=sys.stderr)
        for stale in [*SOURCE.glob("*.so"), *SOURCE.glob("*.pyd"), MANIFEST]:
            stale.unlink(missing_ok=True)  # left by an earlier compiled editable install
        return []
    from mypyc.build import mypycify  # noqa: PLC0415 - a build requirement, only for builds

    os.chdir(ROOT)
    staged = STAGE / "dkms" / "protocol"
    shutil.rmtree(STAGE, ignore_errors=True)
    staged.mkdir(parents=True)
    for path in sorted(SOURCE.glob("*.py")):
        shutil.copyfile(path, staged / path.name)
    os.environ["MYPYPATH"] = str(STAGE)
    everything = [str(staged / path.name) for path in sorted(SOURCE.glob("*.py"))]
    targets = [str(staged / f"{name}.py") for name in COMPILED]
    MANIFEST.unlink(missing_ok=True)  # written again once the build has succeeded
    extensions: list[object] = mypycify(
        ["--explicit-package-bases", "--namespace-packages", *everything],
        only_compile_paths=targets,
        group_name="dkms.protocol._native",
        opt_level="3",
    )
    return extensions


def source_digests() -> dict[str, str]:
    """sha256 of every protocol source, by file name (any of them can change what compiles)."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(SOURCE.glob("*.py"))
    }


class BuildAndRecord(build_ext):
    """Build the extensions, then record which sources they were built from."""

    def run(self) -> None:
        super().run()
        built = [Path(self.get_ext_fullpath(ext.name)).resolve() for ext in self.extensions]
        if any(path.parent == SOURCE for path in built):  # in place: beside the sources
            MANIFEST.write_text(json.dumps(source_digests(), indent=1, sort_keys=True) + "\n")


setup(ext_modules=compiled_extensions(), cmdclass={"build_ext": BuildAndRecord})

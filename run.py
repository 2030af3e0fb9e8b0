#!/usr/bin/env python3
"""Set up the project (once) and run its main jobs. Needs only Python 3.11+ to start.

    python3 run.py demo       run a local network: witnesses, watchers, governance, a story
    python3 run.py test       run the whole test suite (extra arguments go to pytest)
    python3 run.py bench      run the validation benchmark
    python3 run.py setup      only create/refresh the virtualenv in .venv

The project is (re)installed whenever pyproject.toml, setup.py or a protocol/ source changes
(set-up compiles the protocol's per-event modules; DKMS_PURE_PYTHON=1 installs them
uncompiled); its state is kept in .venv/.dkms-setup. System prerequisites are checked first,
with the exact fix printed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".dkms-setup"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")


def say(message: str) -> None:
    print(f"[run.py] {message}", file=sys.stderr, flush=True)


def fail(message: str) -> None:
    say(message)
    raise SystemExit(1)


def check_python() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - run.py must explain itself on old Pythons
        fail(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}.")


def needs_native_build() -> bool:
    """libp2p pulls in fastecdsa, which pip compiles from source; setup.py compiles protocol/."""
    return "libp2p" in (ROOT / "pyproject.toml").read_text()


def missing_build_tools() -> list[str]:
    missing = []
    if not any(shutil.which(cc) for cc in (os.environ.get("CC", ""), "cc", "gcc", "clang") if cc):
        missing.append("a C compiler")
    include = Path(sysconfig.get_paths()["include"])
    if not (include / "Python.h").exists():
        missing.append(f"the Python headers (Python.h in {include})")
    dirs = [
        include,
        Path("/usr/include"),
        Path("/usr/local/include"),
        Path("/opt/homebrew/include"),
    ]
    dirs += [Path(p) for p in os.environ.get("CPATH", "").split(os.pathsep) if p]
    dirs += list(Path("/usr/include").glob("*-linux-gnu"))
    if not any((d / "gmp.h").exists() for d in dirs):
        missing.append("the GMP headers (gmp.h)")
    return missing


def check_build_tools() -> None:
    if not needs_native_build():
        return
    missing = missing_build_tools()
    if missing:
        fail(
            "set-up compiles C code (libp2p's dependency fastecdsa, and dkms's protocol modules)"
            + " and needs "
            + ", ".join(missing)
            + ".\n  Debian/Ubuntu: sudo apt-get install build-essential python3-dev libgmp-dev"
            + "\n  Fedora:        sudo dnf install gcc python3-devel gmp-devel"
            + "\n  macOS:         xcode-select --install && brew install gmp"
        )


def wanted_stamp() -> str:
    """What the installed project was built from: a rebuild is due when any of it changes.

    The protocol sources count because setup.py compiles them (mypyc) into modules that sit
    beside them in an editable install and would otherwise go on running the old code.
    """
    digest = hashlib.sha256()
    for path in [ROOT / "pyproject.toml", ROOT / "setup.py", *sorted(ROOT.glob("protocol/*.py"))]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    pure = "pure" if os.environ.get("DKMS_PURE_PYTHON", "") not in ("", "0") else "compiled"
    return f"{digest.hexdigest()} {sys.version_info.major}.{sys.version_info.minor} {pure}"


def setup() -> None:
    """Create .venv and install the project with its test tools, unless already current."""
    check_python()
    if PYTHON.exists() and STAMP.exists() and STAMP.read_text() == wanted_stamp():
        return
    check_build_tools()
    if not PYTHON.exists():
        say(f"creating a virtualenv in {VENV}")
        try:
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        except subprocess.CalledProcessError:
            fail(
                "could not create a virtualenv; on Debian/Ubuntu: sudo apt-get install python3-venv"
            )
    if STAMP.exists():
        say("the protocol sources or the project's set-up changed: reinstalling (about 30 s)")
    else:
        say("installing the project and its test tools (first run only; takes a minute or two)")
    pip = [str(PYTHON), "-m", "pip", "--disable-pip-version-check", "-q"]
    for step in (["install", "--upgrade", "pip"], ["install", "-e", f"{ROOT}[test]"]):
        # pip and setuptools are chatty about things that are not problems; show their
        # output only when a step fails, since then it says why.
        done = subprocess.run([*pip, *step], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.stderr.write(done.stdout + done.stderr)
            fail("pip could not install the project; the messages above say why.")
    STAMP.write_text(wanted_stamp())


def run(args: list[str]) -> int:
    return subprocess.run([str(PYTHON), *args], cwd=ROOT, check=False).returncode


def workers(args: list[str]) -> list[str]:
    """The suite in a worker process per core, up to 4 (pytest-xdist), unless asked otherwise
    (`-n N`, `-n 0` for one process, or `-p no:xdist`)."""
    if any(a.startswith(("-n", "--numprocesses", "--dist")) or "no:xdist" in a for a in args):
        return []
    return ["-n", str(max(1, min(os.cpu_count() or 1, 4)))]


def main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    if command not in ("demo", "test", "bench", "setup"):
        print(__doc__)
        return 2
    setup()
    if command == "demo":
        return run(["-m", "dkms.node.cli", "demo", *rest])
    if command == "test":
        return run(["-m", "pytest", *workers(rest), *rest])
    if command == "bench":
        return run([str(ROOT / "benchmarks" / "validate.py"), *rest])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""keripy 1.3.6 in a virtualenv of its own, for interop tests and the keripy dev tools.

The project never imports keri: keripy needs Python >= 3.12.2 and its own dependency set
(LMDB, hio, falcon), so it lives in `.venv-keripy/` at the root of this checkout (gitignored)
and is driven as a program (`kli`) or by the scripts in tools/ run with its Python.

    python3 tools/keripy_env.py          # prints the kli path, building the venv if needed
    python3 tools/keripy_env.py --python # prints the venv's python instead

`ensure()` finds a Python >= 3.12.2 (pyenv's versions first, then PATH), builds the venv with
`pip install keri==1.3.6` only when it is missing or broken (a venv whose keri does not
import, or is another version, is rebuilt), and returns its paths. Two builds at once (two
pytest sessions) take turns on a lock file. What cannot be done (no such Python, pip failing
without the network) raises `KeripyEnvError` with one line saying why.

kli keeps its keystores under /usr/local/var/keri (or ~/.keri) whatever it is told, named by
`--base`: `forget_base(base)` removes what a run left there.
"""

from __future__ import annotations

import fcntl
import glob
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

KERI_VERSION = "1.3.6"
MIN_PYTHON = (3, 12, 2)
ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-keripy"
BUILD_TIMEOUT = 600.0  # seconds: a cold pip install of keri and its wheels


class KeripyEnvError(Exception):
    """The keripy environment cannot be had here; the message is one line saying why."""


@dataclass(frozen=True, slots=True)
class KeripyEnv:
    python: Path
    kli: Path


def _version(python: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:3])"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return tuple(int(part) for part in out.split())


def candidates() -> list[str]:
    """Pythons that may be new enough, newest pyenv versions first, then PATH's."""
    pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = sorted(
        glob.glob(os.path.join(pyenv, "versions", "3.*", "bin", "python")),
        key=lambda p: [int(n) for n in re.findall(r"\d+", p.split("versions")[-1])[:3]],
        reverse=True,
    )
    for name in ("python3.14", "python3.13", "python3.12", "python3"):
        path = shutil.which(name)
        if path is not None:
            found.append(path)
    return found


def find_python() -> str:
    """The first Python >= 3.12.2 here, or KeripyEnvError naming what was looked at."""
    seen = []
    for python in candidates():
        version = _version(python)
        if version is not None and version >= MIN_PYTHON:
            return python
        seen.append(f"{python} ({'.'.join(map(str, version)) if version else 'does not run'})")
    raise KeripyEnvError(
        f"keripy {KERI_VERSION} needs Python >= 3.12.2 and none was found (looked at: "
        + (", ".join(seen) or "pyenv versions and python3.1x on PATH")
        + "); install one, e.g. `pyenv install 3.13`"
    )


def _works(venv: Path) -> bool:
    python, kli = venv / "bin" / "python", venv / "bin" / "kli"
    if not (python.exists() and kli.exists()):
        return False
    try:
        out = subprocess.run(
            [str(python), "-c", "import keri; print(keri.__version__)"],
            capture_output=True, text=True, timeout=60, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and out.stdout.strip() == KERI_VERSION


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["no output"])[-1]


def _build(venv: Path) -> None:
    python = find_python()
    shutil.rmtree(venv, ignore_errors=True)
    steps = [
        [python, "-m", "venv", str(venv)],
        [str(venv / "bin" / "pip"), "install", "--quiet", f"keri=={KERI_VERSION}"],
    ]
    for step in steps:
        try:
            done = subprocess.run(
                step, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise KeripyEnvError(
                f"building {venv} took over {BUILD_TIMEOUT:.0f} s at `{' '.join(step[:3])}` "
                "(no network to PyPI?)"
            ) from None
        except OSError as exc:
            raise KeripyEnvError(f"building {venv}: {' '.join(step[:3])}: {exc}") from None
        if done.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            raise KeripyEnvError(
                f"building {venv} failed at `{' '.join(step[:3])}`: "
                f"{_last_line(done.stderr + done.stdout)}"
            )
    if not _works(venv):
        raise KeripyEnvError(f"built {venv}, but `import keri` there is not keri {KERI_VERSION}")


def ensure(venv: Path = VENV) -> KeripyEnv:
    """keripy's venv, built first if it is missing or broken."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the second pytest session waits for the first build
        if not _works(venv):
            _build(venv)
    return KeripyEnv(python=venv / "bin" / "python", kli=venv / "bin" / "kli")


def keystore_dirs(base: str) -> list[Path]:
    """Where keripy (LMDB, hio's files) keeps what a `--base` of `base` made."""
    heads = [Path("/usr/local/var"), Path.home()]
    return [
        head / top / kind / base
        for head in heads
        for top in ("keri", ".keri")
        for kind in ("db", "ks", "cf", "reg", "mbx", "clean/db", "rks", "noter", "opr")
    ]


def forget_base(base: str, names: tuple[str, ...] = ()) -> None:
    """Remove every keystore, database and config keripy made under `--base base`, and the
    empty config files `kli incept` leaves for keystore `names` outside any base (its
    Configer is made with base "" whatever `--base` says)."""
    if not base or "/" in base or base.startswith("."):
        raise ValueError(f"not a --base name of this tool's making: {base!r}")
    for path in keystore_dirs(base):
        shutil.rmtree(path, ignore_errors=True)
    for name in names:
        for head in (Path("/usr/local/var/keri"), Path.home() / ".keri"):
            stray = head / "cf" / f"{name}.json"
            if stray.is_file() and stray.stat().st_size == 0:
                stray.unlink()


def main(argv: list[str]) -> int:
    try:
        env = ensure()
    except KeripyEnvError as exc:
        print(f"keripy_env: {exc}", file=sys.stderr)
        return 1
    print(env.python if "--python" in argv else env.kli)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

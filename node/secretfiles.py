"""Secrets at rest: files only their owner can read, written whole or not at all.

Every secret file is created mode 0600 and written atomically: a temporary file in the same
directory is written and fsynced, then renamed over the target (or, when creating something
that must be created once, linked to it, which fails if another process got there first), and
the directory is fsynced so the new name survives a crash. A reader therefore sees the old file
or the new one, never a torn one, and a seed is never replaced by a second random one.

The node's identity seed (its Ed25519 key: libp2p peer id and KERI witness prefix) lives in
`DATA_DIR/node.seed`, 32 raw bytes. A seed file that group or others may read or write is
refused rather than silently fixed: the operator should know that the key may have leaked.
A passphrase file is held to the same rule, and a directory that holds secrets (a node's data
directory, a controller's home) is made 0700, and refused if group or others may write it.

(Named `secretfiles`, not `secrets`, so that no script run from this directory shadows the
standard library's `secrets` module.)
"""

from __future__ import annotations

import contextlib
import getpass
import os
import stat
import tempfile
import unicodedata
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Final

SEED_FILE: Final = "node.seed"
SEED_SIZE: Final = 32
PASSPHRASE_ENV: Final = "DKMS_PASSPHRASE"


class SecretError(Exception):
    """A secret cannot be read, created or trusted; the message says what to do."""


class Passphrase:
    """A passphrase that does not show itself in reprs, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str | bytes) -> None:
        if isinstance(value, str):  # the same phrase typed on any system gives the same key
            value = unicodedata.normalize("NFC", value).encode("utf-8")
        if not value:
            raise SecretError("the passphrase is empty")
        self._value = value

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "Passphrase('***')"

    __str__ = __repr__


def atomic_write(path: Path, data: bytes, *, exclusive: bool = False) -> bool:
    """Write `data` to `path` (mode 0600) atomically and durably.

    `exclusive`: only create; return False, writing nothing, if `path` already exists.
    """
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:  # mkstemp made it 0600
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if exclusive:
            try:
                os.link(temp, path)
            except FileExistsError:
                return False
        else:
            os.replace(temp, path)
        fsync_dir(path.parent)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def fsync_dir(directory: Path) -> None:
    """Make a rename or link in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def private_dir(directory: Path) -> None:
    """Create `directory` (and parents) readable by its owner only, if it does not exist;
    refuse an existing one that group or others may write (they could swap its files)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(directory.stat().st_mode)
    if mode & 0o022:
        raise SecretError(
            f"{directory} may be written by other users (mode {mode:o}), who could replace"
            f" the keys and records in it: if nobody else did, fix it with"
            f" `chmod 700 {directory}`"
        )


def exposed(directory: Path) -> str | None:
    """A warning if group or others may list or read `directory` (None if private)."""
    try:
        mode = stat.S_IMODE(directory.stat().st_mode)
    except OSError:
        return None
    if not mode & 0o077:
        return None
    return (
        f"{directory} may be listed by other users (mode {mode:o});"
        f" `chmod 700 {directory}` keeps it private"
    )


def read_private(path: Path, what: str, *, pipes: bool = False) -> bytes:
    """Read a secret file, refusing one that group or others may read or write.

    `pipes`: also read a pipe or terminal (`--passphrase-file <(...)`), which has no
    permissions at rest to check."""
    fd = os.open(path, os.O_RDONLY)
    try:
        info = os.fstat(fd)
        regular = stat.S_ISREG(info.st_mode)
        if not regular and not (
            pipes and (stat.S_ISFIFO(info.st_mode) or stat.S_ISCHR(info.st_mode))
        ):
            raise SecretError(f"{path} ({what}) is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if regular and mode & 0o077:
            raise SecretError(
                f"{path} ({what}) is accessible by other users (mode {mode:o}): "
                f"if nobody else could have read it, fix it with `chmod 600 {path}`; "
                "otherwise treat the secret as leaked"
            )
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def load_or_create_node_seed(data_dir: str | os.PathLike[str]) -> bytes:
    """The node's 32-byte identity seed from `data_dir/node.seed`, made on first use."""
    directory = Path(data_dir)
    path = directory / SEED_FILE
    try:
        private_dir(directory)
        with contextlib.suppress(FileNotFoundError):
            return _seed(path)
        seed = os.urandom(SEED_SIZE)
        if atomic_write(path, seed, exclusive=True):
            return seed
        return _seed(path)  # another process created it between our two looks
    except OSError as err:
        raise SecretError(f"cannot use node seed {path}: {err.strerror or err}") from None


def _seed(path: Path) -> bytes:
    seed = read_private(path, "node seed")
    if len(seed) != SEED_SIZE:
        raise SecretError(
            f"{path} is not a node seed: {len(seed)} bytes instead of {SEED_SIZE}"
            " (restore it from a backup, or remove it to make a new node identity)"
        )
    return seed


def passphrase_from(
    prompt: str | None = "Passphrase: ",
    file: str | os.PathLike[str] | None = None,
    env: str | None = PASSPHRASE_ENV,
    *,
    confirm: bool = False,
    ask: Callable[[str], str] = getpass.getpass,
) -> Passphrase:
    """The passphrase from `file` (first line ending removed), else `$env`, else a prompt.

    `prompt` None: never ask. `confirm`: ask twice (for a new keystore). `ask`: for tests.
    """
    if file is not None:
        try:
            data = read_private(Path(file), "passphrase file", pipes=True)
        except OSError as err:
            raise SecretError(f"cannot read passphrase file {file}: {err.strerror}") from None
        data = data.removesuffix(b"\n").removesuffix(b"\r")
        if not data:
            raise SecretError(f"passphrase file {file} is empty")
        try:
            return Passphrase(data.decode("utf-8"))
        except UnicodeDecodeError:
            return Passphrase(data)
    if env is not None and env in os.environ:
        if not os.environ[env]:
            raise SecretError(f"{env} is set but empty")
        return Passphrase(os.environ[env])
    if prompt is None:
        raise SecretError(f"no passphrase: give a passphrase file or set {env}")
    first = _ask(ask, prompt, env)
    if confirm and _ask(ask, "Again: ", env) != first:
        raise SecretError("the two passphrases differ")
    return Passphrase(first)


def _ask(ask: Callable[[str], str], prompt: str, env: str | None) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("error", getpass.GetPassWarning)
        try:
            answer = ask(prompt)
        except getpass.GetPassWarning:  # no terminal: getpass would echo the passphrase
            raise SecretError(
                f"no terminal to ask for the passphrase: give a passphrase file or set {env}"
            ) from None
        except EOFError:
            raise SecretError("no passphrase given") from None
    if not answer:
        raise SecretError("the passphrase is empty")
    return answer

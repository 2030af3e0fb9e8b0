"""The controller's home directory: its keystore, each identifier's KEL, the witnesses it knows.

    HOME/                  mode 0700 (`dkms --home DIR`, else $DKMS_HOME, else ~/.dkms)
      keystore.json        } the keystore (keystore.py): every identifier's seeds, sealed
      keys/NAME.key        } with the passphrase
      kels/NAME.cesr       NAME's fully witnessed KEL, as `dkms kel export NAME` prints it
      witnesses.json       {prefix: "PREFIX@MULTIADDR"}: where each known witness listens
      witness-urls.json    {prefix: "http://HOST:PORT/"}: the HTTP URL a witness named by its
                           OOBI URL signed (`client/oobis.py`), for `dkms oobi show`
      witnesses.lock       held while either is read and rewritten
      keys/NAME.lock       held by the one command that works on NAME (client/session.py)
      abandoned/           key files of inceptions given up on that a witness may hold

Theory of operation. The sealed record of NAME holds `current` and `next` seeds that always
match the latest establishment event in kels/NAME.cesr, so the public files can be read (`id
show`, `id list`, `kel export`) without the passphrase. It also holds:

    history   seeds that rotations retired, oldest first, each with the sn that retired them
    pending   an event made but not yet fully witnessed: its kind, SAID and parameters, and
              the seeds it introduces. It is saved *before* the event leaves this machine, so
              keys a witness may have seen are never lost; running the command again remakes
              byte for byte the same event (a witness that holds it already just receipts it
              again) rather than a conflicting one. What each witness may hold of it is
              noted there too when a push fails (`dkms id abandon` decides by it).

The address book is shared by every identifier of the home, so it changes only with what a
witness proved by answering at an address (`learn`), or, for a witness it does not know
yet, once an event naming it was fully witnessed (`learn(..., replace=False)`): a mistyped
address given to one command never replaces the good one others use. A witness's HTTP URL is
its own signed word (`learn_urls`), kept as it was last read. A home without witness-urls.json
(older ones) knows no HTTP URL; older code ignores the file.

Every file is written whole or not at all (`secretfiles.atomic_write`, mode 0600).
"""

from __future__ import annotations

import getpass
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from dkms.node import lockfile
from dkms.node.client.keystore import KEYS, MODERATE, SUFFIX, KdfCost, Keystore
from dkms.node.roles.controller import RetryPolicy
from dkms.node.secretfiles import atomic_write, fsync_dir, passphrase_from, private_dir
from dkms.protocol.errors import ProtocolError
from dkms.protocol.stream import Message, parse_stream
from dkms.protocol.validator import Validator

if TYPE_CHECKING:
    from dkms.node.p2p import Introduction

HOME_ENV: Final = "DKMS_HOME"
KELS: Final = "kels"
KEL_SUFFIX: Final = ".cesr"
BOOK: Final = "witnesses.json"
BOOK_LOCK: Final = "witnesses.lock"
URLS: Final = "witness-urls.json"
ABANDONED: Final = "abandoned"
# The keystore's rule for names (keystore.py), checked here before any file is touched.
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


RETRY: Final = RetryPolicy(first=0.5, cap=4.0, attempts=5)  # gives up on a witness after ~8 s


class CommandError(Exception):
    """Something the user can fix (a name, an address, a witness that failed): one line."""


@dataclass(frozen=True, slots=True)
class Options:
    """What a test or an embedding program may change about the commands."""

    cost: KdfCost = MODERATE  # Argon2id work for a new keystore
    retry: RetryPolicy = RETRY
    settle: float = 5.0  # seconds to let witness agreement finish once an event completes
    ask: Callable[[str], str] = getpass.getpass  # the passphrase prompt
    listen: str = "/ip4/127.0.0.1/tcp/0"  # the controller's ephemeral libp2p host
    chunk: int = 256 * 1024  # bytes at most in one request of `dkms kel submit` (paging.py)
    bootstrap: str | None = None  # PREFIX@MULTIADDR of a node to find others by prefix


def default_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".dkms")


def introduction(text: str) -> Introduction:
    """`PREFIX@MULTIADDR`, or a CommandError saying what is wrong with it."""
    from dkms.node.p2p import parse_introduction  # noqa: PLC0415 - libp2p loads only when needed

    try:
        return parse_introduction(text)
    except ValueError as err:
        raise CommandError(f"bad witness introduction {text!r}: {err}") from None


def read_kel(data: bytes, source: str) -> Validator:
    """A validator that has read the KEL `data` (a stored or received CESR stream)."""
    validator = Validator()
    try:
        frames = parse_stream(data)
    except ProtocolError as err:
        raise CommandError(f"{source} is not a readable KEL: {err}") from None
    for frame in frames:
        if isinstance(frame, Message):
            validator.process(frame, 0.0)
    return validator


class Home:
    """The files of one home directory; the keystore is opened with `keystore`."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def check_name(self, name: str) -> str:
        if not _NAME.fullmatch(name):
            raise CommandError(
                f"bad identifier name {name!r}: use up to 64 letters, digits, '.', '_', '-'"
                " (starting with a letter or digit)"
            )
        return name

    def names(self) -> list[str]:
        """Identifiers with keys or a KEL here (keys without a KEL: inception unfinished)."""
        found = {p.name.removesuffix(SUFFIX) for p in self._glob(KEYS, SUFFIX)}
        found |= {p.name.removesuffix(KEL_SUFFIX) for p in self._glob(KELS, KEL_SUFFIX)}
        return sorted(n for n in found if _NAME.fullmatch(n))

    def known(self, name: str) -> str:
        """`name`, if it is an identifier of this home; else a CommandError."""
        if self.check_name(name) not in self.names():
            raise CommandError(f"no identifier named {name!r} in {self.root} (see `dkms id list`)")
        return name

    # ---------------------------------------------------------------- KELs

    def kel_path(self, name: str) -> Path:
        return self.root / KELS / (self.check_name(name) + KEL_SUFFIX)

    def kel(self, name: str) -> bytes | None:
        """NAME's stored KEL, or None when its inception was never fully witnessed."""
        try:
            return self.kel_path(name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise CommandError(f"cannot read {self.kel_path(name)}: {err.strerror}") from None

    def check_kel(self, name: str) -> None:
        """What `require_kel` refuses, without reading the KEL (before asking a passphrase)."""
        if not self.kel_path(self.known(name)).exists():
            raise _no_inception(name)

    def require_kel(self, name: str) -> bytes:
        kel = self.kel(self.known(name))
        if kel is None:
            raise _no_inception(name)
        return kel

    def save_kel(self, name: str, kel: bytes) -> None:
        path = self.kel_path(name)
        try:
            private_dir(path.parent)
            atomic_write(path, kel)
        except OSError as err:
            raise CommandError(f"cannot write {path}: {err.strerror}") from None

    # ---------------------------------------------------------------- witnesses

    def book(self) -> dict[str, str]:
        """Known witnesses: prefix -> introduction."""
        return self._map(BOOK)

    def urls(self) -> dict[str, str]:
        """Witnesses' HTTP URLs, as they signed them: prefix -> URL."""
        return self._map(URLS)

    def _map(self, name: str) -> dict[str, str]:
        path = self.root / name
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            raise CommandError(f"cannot read {path}: {err}") from None
        if not isinstance(data, dict):
            raise CommandError(f"{path} is damaged: not a JSON object")
        return {str(k): str(v) for k, v in data.items()}

    def learn(self, intros: Iterable[Introduction], *, replace: bool = True) -> None:
        """Remember where these witnesses listen: a newer address replaces an older one,
        unless not `replace` (then only witnesses the book does not know are added)."""
        self._update(BOOK, {i.prefix: str(i) for i in intros}, replace)

    def learn_urls(self, urls: Mapping[str, str]) -> None:
        """Remember the HTTP URLs these witnesses signed (prefix -> URL)."""
        self._update(URLS, urls, True)

    def _update(self, name: str, wanted: Mapping[str, str], replace: bool) -> None:
        if not wanted:
            return
        path = self.root / name
        try:
            private_dir(self.root)
            # Identifiers of one home may run commands at once: no update may be lost.
            with lockfile.blocking(self.root / BOOK_LOCK):
                book = self._map(name)
                changed = {
                    p: i
                    for p, i in wanted.items()
                    if book.get(p) != i and (replace or p not in book)
                }
                if changed:
                    atomic_write(path, json.dumps(book | changed, indent=1).encode() + b"\n")
        except OSError as err:
            raise CommandError(f"cannot write {path}: {err.strerror}") from None

    def introductions(self, prefixes: Iterable[str]) -> list[Introduction]:
        """Introductions of those of `prefixes` this home knows (unknown ones are left out)."""
        book = self.book()
        return [introduction(book[p]) for p in prefixes if p in book]

    # ---------------------------------------------------------------- keystore

    def key_path(self, name: str) -> Path:
        return self.root / KEYS / (self.check_name(name) + SUFFIX)

    def drop_keys(self, name: str, *, keep_as: str | None = None) -> Path | None:
        """Free NAME: delete its key file, or move it (still sealed) to `abandoned/KEEP_AS`.
        Call it holding NAME's lock. Returns where the file went, if kept."""
        path = self.key_path(name)
        kept = None if keep_as is None else self.root / ABANDONED / keep_as
        try:
            if kept is None:
                path.unlink()
            else:
                private_dir(kept.parent)
                if kept.exists():
                    raise CommandError(f"cannot keep the keys of {name}: {kept} exists already")
                os.replace(path, kept)
                fsync_dir(kept.parent)
            fsync_dir(path.parent)
        except OSError as err:
            raise CommandError(f"cannot remove {path}: {err.strerror}") from None
        return kept

    def keystore(self, passphrase_file: str | None, options: Options) -> Keystore:
        """Open (or create, asking for the passphrase twice) the keystore of this home."""
        creating = not Keystore.exists(self.root)
        phrase = passphrase_from(
            f"Passphrase for {self.root}: ",
            file=passphrase_file,
            confirm=creating,
            ask=options.ask,
        )
        return Keystore.open(self.root, phrase, cost=options.cost)

    def _glob(self, folder: str, suffix: str) -> list[Path]:
        try:
            return list((self.root / folder).glob("*" + suffix))
        except OSError as err:
            raise CommandError(f"cannot list {self.root / folder}: {err.strerror}") from None


def _no_inception(name: str) -> CommandError:
    return CommandError(
        f"{name} has no fully witnessed inception yet: run `dkms id create {name}` again"
        f" with the same flags to finish it, or `dkms id abandon {name}` to give it up"
    )

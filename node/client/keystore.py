"""The controller keystore: each identifier's key seeds, encrypted with a passphrase.

A home directory (`dkms --home DIR`, mode 0700) holds:

    keystore.json   the Argon2id salt and cost, and the master key sealed with the passphrase
    keys/NAME.key   one identifier's record (current, next and past seeds, ...), sealed

Theory of operation. The passphrase goes through Argon2id (`nacl.pwhash.argon2id.kdf`, random
salt, cost stored beside it) to a key that opens, with `SecretBox`, a random 32-byte master
key. Each key file has its own random salt and nonce: it is sealed with `SecretBox` under
BLAKE2b(master key, salt). So opening a keystore costs one Argon2id run however many
identifiers it holds, a wrong passphrase is found at `open` (the master key does not decrypt)
and is told apart from a damaged or altered key file (a key file that does not decrypt under
the right master key), and changing the passphrase rewrites `keystore.json` alone.

Files are JSON (base64 for bytes) so an operator can see what they are; the sealed record is
CBOR `{"name": NAME, "record": {...}}`, the name inside guarding against swapped files. Every
file is 0600 and written atomically (see `secretfiles`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import cbor2
import nacl.exceptions
import nacl.secret
import nacl.utils
from nacl.pwhash import argon2id

from dkms.node.secretfiles import Passphrase, SecretError, atomic_write, private_dir

HEADER: Final = "keystore.json"
KEYS: Final = "keys"
SUFFIX: Final = ".key"
FORMAT_VERSION: Final = 1
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SUBKEY_PERSON: Final = b"dkms key file"


class KeystoreError(SecretError):
    """The keystore cannot be opened or an identifier's keys cannot be read or written."""


@dataclass(frozen=True, slots=True)
class KdfCost:
    """Argon2id work per passphrase check: passes over `memlimit` bytes of memory."""

    opslimit: int
    memlimit: int


MODERATE: Final = KdfCost(argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE)  # ~0.4 s
INTERACTIVE: Final = KdfCost(argon2id.OPSLIMIT_INTERACTIVE, argon2id.MEMLIMIT_INTERACTIVE)
MINIMUM: Final = KdfCost(argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN)  # tests only
# A keystore.json asking for more than this is refused: a tampered file must not exhaust memory.
_MOST: Final = KdfCost(argon2id.OPSLIMIT_SENSITIVE, argon2id.MEMLIMIT_SENSITIVE)


class Keystore:
    """An open keystore: the master key in memory, records read and written on demand."""

    def __init__(self, home: Path, master: bytes) -> None:
        self.home = home
        self._master = master

    def __repr__(self) -> str:
        return f"Keystore({str(self.home)!r})"

    @staticmethod
    def exists(home: str | os.PathLike[str]) -> bool:
        """True if `home` holds a keystore (a CLI may then ask for the passphrase only once)."""
        return (Path(home) / HEADER).exists()

    @classmethod
    def open(
        cls,
        home: str | os.PathLike[str],
        passphrase: Passphrase | str | bytes,
        *,
        cost: KdfCost = MODERATE,
    ) -> Keystore:
        """Open the keystore in `home`, creating it (with `cost`) if there is none."""
        directory = Path(home)
        secret = _phrase(passphrase)
        header = directory / HEADER
        try:
            private_dir(directory)
            private_dir(directory / KEYS)
            if not header.exists():
                if any(directory.joinpath(KEYS).glob("*" + SUFFIX)):
                    raise KeystoreError(
                        f"{header} is missing but {directory / KEYS} holds key files:"
                        " restore keystore.json from a backup"
                    )
                master = nacl.utils.random(nacl.secret.SecretBox.KEY_SIZE)
                if atomic_write(header, _seal_master(master, secret, cost), exclusive=True):
                    return cls(directory, master)
            data = header.read_bytes()
        except OSError as err:
            raise KeystoreError(f"cannot open keystore {directory}: {err.strerror}") from None
        return cls(directory, _open_master(data, secret, directory))

    # ---------------------------------------------------------------- records

    def names(self) -> list[str]:
        """Names of the identifiers stored, sorted."""
        try:
            files = list((self.home / KEYS).glob("*" + SUFFIX))
        except OSError as err:
            raise KeystoreError(f"cannot list {self.home / KEYS}: {err.strerror}") from None
        names = (f.name.removesuffix(SUFFIX) for f in files)
        return sorted(n for n in names if _NAME.fullmatch(n))

    def save(self, name: str, record: Mapping[str, Any]) -> None:
        """Seal and store `record` (CBOR-encodable: seeds as bytes) under `name`, atomically."""
        path = self._path(name)
        salt = nacl.utils.random(16)
        box = nacl.secret.SecretBox(self._subkey(salt))
        sealed = bytes(box.encrypt(cbor2.dumps({"name": name, "record": dict(record)})))
        document = {
            "format": "dkms-key",
            "version": FORMAT_VERSION,
            "name": name,
            "salt": _b64(salt),
            "box": _b64(sealed),
        }
        try:
            atomic_write(path, json.dumps(document, indent=1).encode() + b"\n")
        except OSError as err:
            raise KeystoreError(f"cannot write {path}: {err.strerror}") from None

    def load(self, name: str) -> dict[str, Any]:
        """The record stored under `name`."""
        path = self._path(name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise KeystoreError(f"no identifier named {name!r} in {self.home}") from None
        except OSError as err:
            raise KeystoreError(f"cannot read {path}: {err.strerror}") from None
        document = _document(data, path, "dkms-key")
        salt, sealed = _field(document, "salt", path), _field(document, "box", path)
        try:
            plain = nacl.secret.SecretBox(self._subkey(salt)).decrypt(sealed)
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            raise KeystoreError(f"{path} is damaged or was altered: it does not decrypt") from None
        content = cbor2.loads(plain)
        if not isinstance(content, dict) or not isinstance(content.get("record"), dict):
            raise KeystoreError(f"{path} decrypts but holds no record")
        if content.get("name") != name:
            raise KeystoreError(f"{path} holds the keys of {content.get('name')!r}, not {name!r}")
        record: dict[str, Any] = content["record"]
        return record

    def change_passphrase(
        self, passphrase: Passphrase | str | bytes, *, cost: KdfCost = MODERATE
    ) -> None:
        """Seal the master key under a new passphrase; key files stay as they are."""
        header = self.home / HEADER
        try:
            atomic_write(header, _seal_master(self._master, _phrase(passphrase), cost))
        except OSError as err:
            raise KeystoreError(f"cannot write {header}: {err.strerror}") from None

    # ---------------------------------------------------------------- internals

    def _path(self, name: str) -> Path:
        if not _NAME.fullmatch(name):
            raise KeystoreError(
                f"bad identifier name {name!r}: use up to 64 letters, digits, '.', '_', '-'"
                " (starting with a letter or digit)"
            )
        return self.home / KEYS / (name + SUFFIX)

    def _subkey(self, salt: bytes) -> bytes:
        return hashlib.blake2b(
            key=self._master, salt=salt, person=_SUBKEY_PERSON, digest_size=32
        ).digest()


def _phrase(passphrase: Passphrase | str | bytes) -> bytes:
    return (passphrase if isinstance(passphrase, Passphrase) else Passphrase(passphrase)).reveal()


def _seal_master(master: bytes, secret: bytes, cost: KdfCost) -> bytes:
    salt = nacl.utils.random(argon2id.SALTBYTES)
    key = _derive(secret, salt, cost)
    document = {
        "format": "dkms-keystore",
        "version": FORMAT_VERSION,
        "kdf": {"alg": "argon2id", "opslimit": cost.opslimit, "memlimit": cost.memlimit},
        "salt": _b64(salt),
        "master": _b64(bytes(nacl.secret.SecretBox(key).encrypt(master))),
    }
    return json.dumps(document, indent=1).encode() + b"\n"


def _open_master(data: bytes, secret: bytes, home: Path) -> bytes:
    path = home / HEADER
    document = _document(data, path, "dkms-keystore")
    kdf = document.get("kdf")
    if not isinstance(kdf, dict) or kdf.get("alg") != "argon2id":
        raise KeystoreError(f"{path} is damaged: no argon2id parameters")
    ops, mem = kdf.get("opslimit"), kdf.get("memlimit")
    if not (isinstance(ops, int) and isinstance(mem, int)):
        raise KeystoreError(f"{path} is damaged: bad argon2id parameters")
    if not (
        MINIMUM.opslimit <= ops <= _MOST.opslimit and MINIMUM.memlimit <= mem <= _MOST.memlimit
    ):
        raise KeystoreError(f"{path} asks for an out-of-range argon2id cost ({ops}, {mem})")
    salt, sealed = _field(document, "salt", path), _field(document, "master", path)
    if len(salt) != argon2id.SALTBYTES:
        raise KeystoreError(f"{path} is damaged: bad salt")
    try:
        return bytes(
            nacl.secret.SecretBox(_derive(secret, salt, KdfCost(ops, mem))).decrypt(sealed)
        )
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise KeystoreError(f"wrong passphrase for {home} (or {HEADER} was altered)") from None


def _derive(secret: bytes, salt: bytes, cost: KdfCost) -> bytes:
    key: bytes = argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE,
        secret,
        salt,
        opslimit=cost.opslimit,
        memlimit=cost.memlimit,
    )
    return key


def _document(data: bytes, path: Path, kind: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except ValueError:
        raise KeystoreError(f"{path} is damaged: not JSON") from None
    if not isinstance(document, dict) or document.get("format") != kind:
        raise KeystoreError(f"{path} is damaged: not a {kind} file")
    if document.get("version") != FORMAT_VERSION:
        raise KeystoreError(
            f"{path} has format version {document.get('version')!r};"
            f" this dkms reads version {FORMAT_VERSION}"
        )
    return document


def _field(document: dict[str, Any], key: str, path: Path) -> bytes:
    value = document.get(key)
    try:
        if isinstance(value, str):
            return base64.b64decode(value, validate=True)
    except binascii.Error:
        pass
    raise KeystoreError(f"{path} is damaged: bad {key}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")

"""Blake3 digests and Ed25519 signatures in their CESR forms.

Keys come in as seeds from the caller: this module makes no randomness of its own.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field

import blake3
from nacl import bindings
from nacl.exceptions import BadSignatureError

from . import cesr
from .cesr import Codes, IndexedSig
from .errors import LocalProtocolError

_blake3 = blake3.blake3
_b2a = binascii.b2a_base64
_URLSAFE = bytes.maketrans(b"+/", b"-_")


def digest(data: bytes) -> str:
    """qb64 (`E...`) of the Blake3-256 digest of `data` (inlined: it runs on every event)."""
    text = _b2a(b"\x00" + _blake3(data).digest(), newline=False).translate(_URLSAFE)
    return "E" + text[1:].decode("ascii")


def next_key_digest(key_qb64: str) -> str:
    """A next-key commitment: Blake3-256 of the key's qb64 *text* (not its raw bytes)."""
    return digest(key_qb64.encode("ascii"))


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when `signature` is `public_key`'s Ed25519 signature of `message`."""
    try:
        bindings.crypto_sign_open(signature + message, public_key)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class Signer:
    """An Ed25519 key pair made from a 32-byte seed supplied by the caller."""

    seed: bytes = field(repr=False)
    transferable: bool = True
    public: bytes = field(init=False)
    _secret: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise LocalProtocolError("an Ed25519 seed is 32 bytes")
        public, secret = bindings.crypto_sign_seed_keypair(self.seed)
        object.__setattr__(self, "public", public)
        object.__setattr__(self, "_secret", secret)

    @property
    def verfer(self) -> str:
        """The public key in qb64 (`D...` transferable, `B...` non-transferable)."""
        code = Codes.ED25519 if self.transferable else Codes.ED25519N
        return cesr.encode(code, self.public)

    def sign_raw(self, message: bytes) -> bytes:
        signed: bytes = bindings.crypto_sign(message, self._secret)
        return signed[:64]

    def sign(self, message: bytes) -> str:
        """Unindexed signature (`0B...`), as used in receipt couples."""
        return cesr.encode(Codes.ED25519_SIG, self.sign_raw(message))

    def sign_indexed(self, message: bytes, index: int, ondex: int | None = -1) -> IndexedSig:
        """Indexed signature; `ondex` defaults to `index` (a key both current and committed)."""
        return IndexedSig(index, index if ondex == -1 else ondex, self.sign_raw(message))

"""Blake3 digests and Ed25519 signatures in their CESR forms.

Keys come in as seeds from the caller: this module makes no randomness of its own.
"""

from __future__ import annotations

import binascii
from collections import OrderedDict
from dataclasses import dataclass, field

import blake3
from nacl import bindings
from nacl._sodium import ffi as _ffi
from nacl._sodium import lib as _lib

from . import cesr
from .cesr import Codes, IndexedSig
from .errors import LocalProtocolError

_blake3 = blake3.blake3
_b2a = binascii.b2a_base64
_URLSAFE = bytes.maketrans(b"+/", b"-_")
_sign_open = _lib.crypto_sign_open
_NULL = _ffi.NULL
_KEY_BYTES = 32
_SIG_BYTES = 64


def digest(data: bytes) -> str:
    """qb64 (`E...`) of the Blake3-256 digest of `data` (inlined: it runs on every event)."""
    text = _b2a(b"\x00" + _blake3(data).digest(), newline=False).translate(_URLSAFE)
    return "E" + text[1:].decode("ascii")


def next_key_digest(key_qb64: str) -> str:
    """A next-key commitment: Blake3-256 of the key's qb64 *text* (not its raw bytes)."""
    return digest(key_qb64.encode("ascii"))


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when `signature` is `public_key`'s Ed25519 signature of `message`.

    libsodium's `crypto_sign_open` itself, as PyNaCl's `bindings.crypto_sign_open` calls it,
    but told to write no opened message anywhere (both out-pointers NULL, which libsodium
    allows): PyNaCl's wrapper allocates and copies out a buffer the size of the message on
    every call, about 4% of a verification here (`benchmarks/kelverify.py`). The lengths are
    checked first: libsodium reads exactly 32 bytes of key and 64 of signature.
    """
    try:
        if len(public_key) != _KEY_BYTES or len(signature) != _SIG_BYTES:
            return False
        signed = signature + message
        return bool(_sign_open(_NULL, _NULL, signed, len(signed), public_key) == 0)
    except (ValueError, TypeError):  # not bytes
        return False


class MemoVerifier:
    """`verify` with a bounded memory of answers, keyed by (key, signature, Blake3 digest of
    the message).

    The same signature reaches a node more than once (a receipt in a reply, then again in the
    witness agreement; an event submitted, then heard on gossip): each is checked once. A
    simulator shares one across all its nodes. Oldest answers are forgotten first. The
    message is kept as its digest (hashing a kilobyte costs a fiftieth of a verification):
    kept whole, 8192 answers about 64 KiB junk bodies would hold 512 MiB.
    """

    def __init__(self, size: int = 8192) -> None:
        self.size = size
        self._seen: OrderedDict[tuple[bytes, bytes, bytes], bool] = OrderedDict()
        self.hits = 0
        self.checked = 0  # signatures actually verified (answers not remembered)

    def __call__(self, public_key: bytes, signature: bytes, message: bytes) -> bool:
        key = (public_key, signature, _blake3(message).digest())
        answer = self._seen.get(key)
        if answer is not None:
            self.hits += 1
            self._seen.move_to_end(key)
            return answer
        self.checked += 1
        answer = verify(public_key, signature, message)
        self._seen[key] = answer
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return answer

    def remember(
        self, public_key: bytes, signature: bytes, message: bytes, valid: bool = True
    ) -> None:
        """Record an answer known without checking (a signature this node just made)."""
        self._seen[(public_key, signature, _blake3(message).digest())] = valid
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)


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

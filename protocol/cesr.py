"""CESR v1 primitives, indexed signatures and attachment counters (text domain).

A primitive is a code followed by the base64url text of its raw bytes. The raw bytes are
left-padded with zero bytes so that the pad length equals the code length modulo 4, encoded,
and the leading characters (which only carry the zero pad) are replaced by the code. Decoding
reverses that and insists the pad bits are zero, so every primitive has exactly one text form.

Only the codes KERI key event logs need are supported (see KERI-NOTES.md); anything else is a
`ParseError` naming the code and its offset.
"""

from __future__ import annotations

import binascii
from typing import Final, NamedTuple

from .errors import LocalProtocolError, ParseError

B64_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_B64_INDEX: Final = {c: i for i, c in enumerate(B64_ALPHABET)}
_B64_VALUES: Final = bytes(
    B64_ALPHABET.index(chr(b)) if chr(b) in B64_ALPHABET else 255 for b in range(256)
)


class Codes:
    """Matter codes used here. Each maps to (raw size, full text size)."""

    SEED: Final = "A"  # Ed25519 private seed
    ED25519N: Final = "B"  # Ed25519 public key, non-transferable prefix
    ED25519: Final = "D"  # Ed25519 public key, transferable
    BLAKE3_256: Final = "E"  # Blake3-256 digest
    SEQNER: Final = "0A"  # 128-bit number (sequence numbers in attachments)
    ED25519_SIG: Final = "0B"  # Ed25519 signature, not indexed
    DATETIME: Final = "1AAG"  # ISO-8601 datetime in base64 text (first-seen replay)


# code -> (raw size, full qb64 size)
MATTER_SIZES: Final[dict[str, tuple[int, int]]] = {
    Codes.SEED: (32, 44),
    Codes.ED25519N: (32, 44),
    Codes.ED25519: (32, 44),
    Codes.BLAKE3_256: (32, 44),
    Codes.SEQNER: (16, 24),
    Codes.ED25519_SIG: (64, 88),
}


def b64_to_int(text: str) -> int:
    """Decode base64url digits as a big-endian unsigned integer."""
    value = 0
    for ch in text:
        digit = _B64_INDEX.get(ch)
        if digit is None:
            raise ParseError(f"invalid base64 digit {ch!r}")
        value = value * 64 + digit
    return value


def int_to_b64(value: int, length: int) -> str:
    """Encode `value` as exactly `length` base64url digits."""
    if value < 0 or value >= 64**length:
        raise LocalProtocolError(f"{value} does not fit in {length} base64 digits")
    out = []
    for _ in range(length):
        out.append(B64_ALPHABET[value % 64])
        value //= 64
    return "".join(reversed(out))


# urlsafe -> standard alphabet; characters only the standard alphabet has ('+', '/') and
# padding become '!', which the strict decoder refuses: one pass validates and converts.
_STRICT_URLSAFE: Final = bytes.maketrans(b"-_+/=", b"+/!!!")


def _b64decode(text: str) -> bytes:
    """Strict base64url decode of text: no padding, no foreign characters."""
    try:
        data = text.encode("ascii")
    except UnicodeEncodeError:
        raise ParseError("character outside base64url") from None
    return b64decode_bytes(data)


def b64decode_bytes(data: bytes) -> bytes:
    """Strict base64url decode of ASCII bytes."""
    try:
        return binascii.a2b_base64(data.translate(_STRICT_URLSAFE), strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise ParseError(f"invalid base64url text: {exc}") from None


_TO_STD_INV: Final = bytes.maketrans(b"+/", b"-_")


def _encode(code: str, raw: bytes) -> str:
    pad = (3 - len(raw) % 3) % 3
    if len(code) % 4 != pad:
        raise LocalProtocolError(f"code {code!r} cannot carry {len(raw)} raw bytes")
    text = binascii.b2a_base64(bytes(pad) + raw, newline=False).translate(_TO_STD_INV)
    return code + text[pad:].decode("ascii")


def _decode(code_len: int, text: str, raw_size: int) -> bytes:
    pad = code_len % 4
    decoded = _b64decode("A" * code_len + text[code_len:])
    if decoded[:pad] != bytes(pad) or len(decoded) - pad != raw_size:
        raise ParseError("non-canonical primitive: pad bits are not zero")
    return decoded[pad:]


def encode(code: str, raw: bytes) -> str:
    """qb64 text of a fixed-size primitive."""
    sizes = MATTER_SIZES.get(code)
    if sizes is None or len(raw) != sizes[0]:
        raise LocalProtocolError(f"code {code!r} cannot carry {len(raw)} raw bytes")
    return _encode(code, raw)


def matter_code(text: str) -> str:
    """The code of the primitive at the start of `text` (selector by first character)."""
    if not text:
        raise ParseError("empty primitive")
    first = text[0]
    if first in "0":
        return text[:2]
    if first == "1":
        return text[:4]
    return first


def decode(text: str, *, expect: str | tuple[str, ...] | None = None) -> tuple[str, bytes]:
    """Decode one whole qb64 primitive into (code, raw); `expect` restricts the code."""
    code = matter_code(text)
    sizes = MATTER_SIZES.get(code)
    if sizes is None:
        raise ParseError(f"unsupported primitive code {code!r}")
    if expect is not None and code not in (expect if isinstance(expect, tuple) else (expect,)):
        raise ParseError(f"expected code {expect!r}, got {code!r}")
    if len(text) != sizes[1]:
        raise ParseError(f"primitive {code!r} must be {sizes[1]} characters, got {len(text)}")
    return code, _decode(len(code), text, sizes[0])


def decode_key(text: str) -> bytes:
    """Raw Ed25519 public key of a `B` or `D` prefixed key."""
    return decode(text, expect=(Codes.ED25519N, Codes.ED25519))[1]


def seqner(sn: int) -> str:
    """qb64 of a sequence number as a 128-bit `0A` number (used in -G and -E groups)."""
    return encode(Codes.SEQNER, sn.to_bytes(16, "big"))


# ---------------------------------------------------------------- indexed signatures


class IdxCodes:
    """Indexed Ed25519 signature codes: (hard code, soft size, full size)."""

    BOTH: Final = "A"  # index into current keys == index into prior next digests
    CURRENT: Final = "B"  # index into current keys only
    BIG_BOTH: Final = "2A"  # two-digit index and a separate two-digit ondex
    BIG_CURRENT: Final = "2B"  # two-digit index, current only


class IndexedSig(NamedTuple):
    """A signature with the position of its key (and of its prior next digest, `ondex`)."""

    # A NamedTuple (not a frozen dataclass) because one is made per signature read and it is
    # several times cheaper to build; the field shadows tuple.index, which we never use.
    index: int  # type: ignore[assignment]
    ondex: int | None
    raw: bytes

    def qb64(self) -> str:
        if len(self.raw) != 64:
            raise LocalProtocolError("Ed25519 signature must be 64 bytes")
        body = _encode("AA", self.raw)[2:]
        if self.ondex == self.index and self.index < 64:
            return IdxCodes.BOTH + B64_ALPHABET[self.index] + body
        if self.ondex is None and self.index < 64:
            return IdxCodes.CURRENT + B64_ALPHABET[self.index] + body
        if self.ondex is None:
            return IdxCodes.BIG_CURRENT + int_to_b64(self.index, 2) + "AA" + body
        return IdxCodes.BIG_BOTH + int_to_b64(self.index, 2) + int_to_b64(self.ondex, 2) + body


def parse_indexed_sig(text: str, pos: int = 0) -> tuple[IndexedSig, int]:
    """Parse the indexed signature at `text[pos:]`; return it and its length."""
    first = text[pos : pos + 1]
    if first in {"A", "B"}:
        size = 88
        if len(text) < pos + size:
            raise ParseError("truncated indexed signature")
        index = _B64_INDEX.get(text[pos + 1], -1)
        if index < 0:
            raise ParseError(f"invalid base64 digit {text[pos + 1]!r}")
        ondex: int | None = index if first == "A" else None
        body = text[pos + 2 : pos + size]
    elif text[pos : pos + 2] in ("2A", "2B"):
        size = 92
        if len(text) < pos + size:
            raise ParseError("truncated indexed signature")
        index = b64_to_int(text[pos + 2 : pos + 4])
        if text[pos + 1] == "A":
            ondex = b64_to_int(text[pos + 4 : pos + 6])
        elif text[pos + 4 : pos + 6] == "AA":
            ondex = None
        else:
            raise ParseError("a current-only (2B) signature must have a zero ondex")
        body = text[pos + 6 : pos + size]
    else:
        raise ParseError(f"unsupported indexed signature code {text[pos : pos + 2]!r}")
    raw = _b64decode("AA" + body)
    if raw[0] or raw[1]:
        raise ParseError("non-canonical signature: pad bits are not zero")
    return IndexedSig(index, ondex, raw[2:]), size


# `NamedTuple(...)` runs a generated Python-level __new__; on the per-event path the tuple is
# made directly (a fraction of the cost, compiled or not). Fields are passed in order.
new_tuple: Final = tuple.__new__


def plain_sig_from_bytes(data: bytes, at: int) -> IndexedSig:
    """An `A`/`B` indexed signature at `data[at:at + 88]` (the caller checked the code)."""
    index = _B64_VALUES[data[at + 1]]
    if index == 255:
        raise ParseError(f"invalid base64 digit {chr(data[at + 1])!r}")
    raw = b64decode_bytes(b"AA" + data[at + 2 : at + 88])
    if raw[0] or raw[1] or len(raw) != 66:
        raise ParseError("non-canonical signature: pad bits are not zero")
    return new_tuple(IndexedSig, (index, index if data[at] == 0x41 else None, raw[2:]))


# ---------------------------------------------------------------- counters


class Counters:
    """CESR v1 attachment group counters."""

    CONTROLLER_SIGS: Final = "-A"
    WITNESS_SIGS: Final = "-B"
    RECEIPT_COUPLES: Final = "-C"
    TRANS_RECEIPT_QUADRUPLES: Final = "-D"
    FIRST_SEEN_REPLAY: Final = "-E"
    TRANS_SIG_GROUPS: Final = "-F"
    SEAL_SOURCE_COUPLES: Final = "-G"
    ATTACHMENT_GROUP: Final = "-V"
    BIG_ATTACHMENT_GROUP: Final = "-0V"


def counter(code: str, count: int) -> str:
    """qb64 of a counter."""
    if code == Counters.BIG_ATTACHMENT_GROUP:
        return code + int_to_b64(count, 5)
    return code + int_to_b64(count, 2)

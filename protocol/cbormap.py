"""Reading a CBOR map from bytes that came from outside, with one clear error for the rest."""

from __future__ import annotations

from typing import IO, Any, cast

import cbor2

from .errors import ParseError


def first_item_size(data: bytes, what: str) -> int:
    """How many bytes the first CBOR item of `data` takes (several may be joined), or
    `ParseError` naming `what` it was meant to be."""
    stream = _Bytes(data)
    try:
        cbor2.CBORDecoder(cast(IO[bytes], stream)).decode()
    except Exception as exc:  # as in cbor_map
        raise ParseError(f"{what} does not decode as CBOR: {type(exc).__name__}") from None
    return stream.offset


def cbor_map(data: bytes, what: str) -> dict[str, Any]:
    """`data` decoded as a CBOR map, or `ParseError` naming `what` it was meant to be.

    The map must be all of `data`: `cbor2.loads` ignores what follows the first object, and
    a second object joined after it would go unread without a word."""
    stream = _Bytes(data)
    try:
        obj = cbor2.CBORDecoder(cast(IO[bytes], stream)).decode()
    except Exception as exc:  # cbor2 raises a zoo of types on hostile input
        raise ParseError(f"{what} does not decode as CBOR: {type(exc).__name__}") from None
    if not isinstance(obj, dict):
        raise ParseError(f"{what} is not a CBOR map")
    if stream.offset != len(data):
        raise ParseError(f"{what} has {len(data) - stream.offset} trailing bytes after its map")
    return obj


class _Bytes:
    """What `cbor2.CBORDecoder` reads from: bytes in memory, and how far it read. Not
    seekable, so the decoder reads exactly what the item takes (no read-ahead to give back)."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self.offset = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else min(self.offset + size, len(self._data))
        chunk = bytes(self._data[self.offset : end])
        self.offset = end
        return chunk

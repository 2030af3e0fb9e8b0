"""Reading a CBOR map from bytes that came from outside, with one clear error for the rest."""

from __future__ import annotations

from typing import Any

import cbor2

from .errors import ParseError


def cbor_map(data: bytes, what: str) -> dict[str, Any]:
    """`data` decoded as a CBOR map, or `ParseError` naming `what` it was meant to be."""
    try:
        obj = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises a zoo of types on hostile input
        raise ParseError(f"{what} does not decode as CBOR: {type(exc).__name__}") from None
    if not isinstance(obj, dict):
        raise ParseError(f"{what} is not a CBOR map")
    return obj

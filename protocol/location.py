"""Location records: a node's own signed word on where it listens.

A node is named by its non-transferable prefix (`B...`: its Ed25519 key, also its libp2p
identity), and a KEL names its witnesses by prefix alone. A location record binds the prefix
to the addresses the node announces, at a time the node itself gives (integer milliseconds of
its own wall clock: this module reads no clock), signed by the prefix's key, so anyone can
check it from the bytes alone, whoever passed it on. KERI's `/loc/scheme` reply is the model.

The record is a signed envelope (`envelope.Signed`, whose signature covers a domain tag and
the body) of the CBOR body `{"t": "dkms/location/1", "i": PREFIX, "a": [MULTIADDR, ...],
"ts": MILLISECONDS}`. Decoding is strict: a record must be exactly the canonical encoding of
what it decodes to, within `MAX_RECORD` bytes, with at most `MAX_ADDRESSES` addresses of at
most `MAX_ADDRESS` printable ASCII characters each. Whether an address is one this node can
dial is the reader's question, not the record's. A newer time replaces an older record of the
same prefix; what is newer is the reader's decision too (`newer_than`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import cbor2

from . import cesr, crypto
from .cbormap import cbor_map, first_item_size
from .cesr import Codes
from .crypto import Signer
from .envelope import Signed
from .errors import LocalProtocolError, LocationError, ParseError, ProtocolError
from .signing import Verifier

LOCATION_TYPE: Final = "dkms/location/1"
MAX_ADDRESSES: Final = 8
MAX_ADDRESS: Final = 256  # characters of one multiaddr
MAX_TIME: Final = (1 << 63) - 1  # milliseconds: a signed 64-bit integer
# Two fields of at most 44 + 88 characters, the addresses and the CBOR around them.
MAX_RECORD: Final = 512 + MAX_ADDRESSES * (MAX_ADDRESS + 3)
PREFIX_SIZE: Final = 44


@dataclass(frozen=True, slots=True)
class Location:
    """Node `prefix` says it listens at `addresses` (in the order to try them), at `time`
    (milliseconds since the Unix epoch, by its own clock)."""

    prefix: str
    addresses: tuple[str, ...]
    time: int

    def __post_init__(self) -> None:
        _check_prefix(self.prefix, LocalProtocolError)
        _check_fields(self.addresses, self.time, LocalProtocolError)

    def body(self) -> bytes:
        out: bytes = cbor2.dumps(
            {"t": LOCATION_TYPE, "i": self.prefix, "a": list(self.addresses), "ts": self.time}
        )
        return out

    @classmethod
    def from_body(cls, data: bytes) -> Location:
        obj = cbor_map(data, "location record body")
        if obj.get("t") != LOCATION_TYPE or set(obj) != {"t", "i", "a", "ts"}:
            raise ParseError(f"not a {LOCATION_TYPE} body (fields t, i, a, ts)")
        prefix, addresses, time = obj["i"], obj["a"], obj["ts"]
        if not isinstance(prefix, str):
            raise ParseError("location record field i must be a node prefix")
        _check_prefix(prefix, ParseError)
        if not isinstance(addresses, list):
            raise ParseError("location record field a must be a list of multiaddrs")
        if isinstance(time, bool) or not isinstance(time, int):
            raise ParseError("location record field ts must be an integer (milliseconds)")
        _check_fields(addresses, time, ParseError)
        location = cls(prefix, tuple(addresses), time)
        if location.body() != data:
            raise ParseError("location record body is not in canonical form")
        return location


@dataclass(frozen=True, slots=True)
class LocationRecord:
    """A `Location` signed by its prefix's key; `raw` is the record as it travels."""

    location: Location
    signed: Signed
    raw: bytes

    @property
    def prefix(self) -> str:
        return self.location.prefix

    @property
    def addresses(self) -> tuple[str, ...]:
        return self.location.addresses

    @property
    def time(self) -> int:
        return self.location.time

    @classmethod
    def sign(cls, signer: Signer, addresses: Sequence[str], time: int) -> LocationRecord:
        """The record of `signer`'s node (a non-transferable key) at `time` (milliseconds)."""
        if signer.transferable:
            raise LocalProtocolError("a location record is signed with a node's B key")
        location = Location(signer.verfer, tuple(addresses), time)
        signed = Signed.make(signer, location.body())
        return cls(location, signed, signed.to_cbor())

    @classmethod
    def from_cbor(cls, data: bytes) -> LocationRecord:
        """Decode a record (not yet verified: see `verify`); `ParseError` if malformed."""
        if len(data) > MAX_RECORD:
            raise ParseError(f"location record of {len(data)} bytes is over {MAX_RECORD}")
        signed = Signed.from_cbor(data)
        if signed.to_cbor() != data:
            raise ParseError("location record is not in canonical form (or has trailing bytes)")
        location = Location.from_body(signed.body)
        if signed.signer != location.prefix:
            raise ParseError(
                f"location record of {location.prefix} is signed by another node"
                f" ({signed.signer[:12]}...)"
            )
        return cls(location, signed, data)

    def verify(self, verify: Verifier = crypto.verify) -> LocationRecord:
        """Itself, if the prefix's key signed it; else `LocationError`."""
        try:
            self.signed.verify(verify)
        except ProtocolError:
            raise LocationError(
                f"the location record of {self.prefix} is not signed by its key"
            ) from None
        return self

    def newer_than(self, other: LocationRecord | None) -> bool:
        """Whether this record replaces `other` (the one held for the same prefix)."""
        return other is None or self.time > other.time


def read_record(data: bytes, verify: Verifier = crypto.verify) -> LocationRecord:
    """A record decoded and verified; `ParseError` or `LocationError` if it is not one."""
    return LocationRecord.from_cbor(data).verify(verify)


def split_records(payload: bytes, limit: int) -> list[LocationRecord]:
    """The records of a gossip payload, decoded (not yet verified): one record, or several
    concatenated (a runtime joins what queues on one topic into one payload). At most
    `limit` of them; anything else is a `ParseError`."""
    records: list[LocationRecord] = []
    offset = 0
    while offset < len(payload):
        if len(records) == limit:
            raise ParseError(f"a location payload carries at most {limit} records")
        window = payload[offset : offset + MAX_RECORD]
        size = first_item_size(window, "location record")
        records.append(LocationRecord.from_cbor(window[:size]))
        offset += size
    if not records:
        raise ParseError("empty location payload")
    return records


def _check_prefix(prefix: str, error: type[ProtocolError]) -> None:
    try:
        if len(prefix) == PREFIX_SIZE:
            cesr.decode(prefix, expect=Codes.ED25519N)
            return
    except ProtocolError:
        pass
    raise error(f"{prefix[:50]!r} is not a node prefix (a non-transferable B... prefix)")


def _check_fields(addresses: Sequence[object], time: int, error: type[ProtocolError]) -> None:
    if len(addresses) > MAX_ADDRESSES:
        raise error(f"a location record holds at most {MAX_ADDRESSES} addresses")
    for address in addresses:
        if not isinstance(address, str) or not 0 < len(address) <= MAX_ADDRESS:
            raise error(f"a location record's addresses are texts of 1 to {MAX_ADDRESS} characters")
        if not address.isascii() or not address.isprintable():
            raise error("a location record's addresses are printable ASCII")
    if not 0 <= time <= MAX_TIME:
        raise error(f"a location record's time is 0 to {MAX_TIME} milliseconds")

"""Location records: round trips, what verifies, and hostile bytes (only the protocol's own
errors come out; any single-byte change is refused or fails verification)."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dkms.node.testing.keys import seed
from dkms.protocol.crypto import Signer
from dkms.protocol.envelope import Signed
from dkms.protocol.errors import LocalProtocolError, LocationError, ParseError, ProtocolError
from dkms.protocol.location import (
    MAX_ADDRESS,
    MAX_ADDRESSES,
    MAX_RECORD,
    Location,
    LocationRecord,
    read_record,
    split_records,
)

NODE = Signer(seed(21), transferable=False)
OTHER = Signer(seed(22), transferable=False)
ADDRS = ("/ip4/127.0.0.2/tcp/4001", "/ip6/::1/tcp/4001")
T = 1_700_000_000_123


def test_a_signed_record_round_trips_and_verifies() -> None:
    record = LocationRecord.sign(NODE, ADDRS, T)
    again = read_record(record.raw)
    assert again == record
    assert (again.prefix, again.addresses, again.time) == (NODE.verfer, ADDRS, T)


def test_a_record_is_a_signed_envelope_of_its_body() -> None:
    record = LocationRecord.sign(NODE, ADDRS, T)
    signed = Signed.from_cbor(record.raw)
    assert signed.signer == NODE.verfer
    assert signed.kind == "dkms/location/1"
    assert Location.from_body(signed.body) == record.location


def test_newer_is_by_time() -> None:
    old, new = (LocationRecord.sign(NODE, ADDRS, t) for t in (T, T + 1))
    assert new.newer_than(old) and new.newer_than(None)
    assert not old.newer_than(new) and not old.newer_than(old)


def test_a_record_signed_by_another_key_fails() -> None:
    """The body names NODE, the envelope OTHER's key and signature: refused as decoded; and
    an envelope that claims NODE but carries OTHER's signature does not verify."""
    body = Location(NODE.verfer, ADDRS, T).body()
    by_other = Signed.make(OTHER, body).to_cbor()
    with pytest.raises(ParseError, match="signed by another node"):
        LocationRecord.from_cbor(by_other)
    forged = Signed(NODE.verfer, body, Signed.make(OTHER, body).signature).to_cbor()
    record = LocationRecord.from_cbor(forged)
    with pytest.raises(LocationError, match="not signed by its key"):
        record.verify()


def test_only_node_keys_sign_records() -> None:
    with pytest.raises(LocalProtocolError):
        LocationRecord.sign(Signer(seed(23)), ADDRS, T)  # a transferable (D) key


@pytest.mark.parametrize(
    ("addresses", "time", "why"),
    [
        (("/ip4/1.2.3.4/tcp/1",) * (MAX_ADDRESSES + 1), T, "at most"),
        (("x" * (MAX_ADDRESS + 1),), T, "characters"),
        (("",), T, "characters"),
        (("/ip4/1.2.3.4/tcp/1\n",), T, "printable"),
        (("/dns/é.example/tcp/1",), T, "printable"),
        (ADDRS, -1, "milliseconds"),
        (ADDRS, 1 << 63, "milliseconds"),
    ],
)
def test_fields_are_bounded(addresses: tuple[str, ...], time: int, why: str) -> None:
    with pytest.raises(LocalProtocolError, match=why):
        LocationRecord.sign(NODE, addresses, time)
    body = cbor2.dumps({"t": "dkms/location/1", "i": NODE.verfer, "a": list(addresses), "ts": time})
    raw = Signed.make(NODE, body).to_cbor()
    with pytest.raises(ParseError):
        LocationRecord.from_cbor(raw)


@pytest.mark.parametrize(
    "body",
    [
        {"t": "dkms/location/1", "i": NODE.verfer, "a": list(ADDRS)},  # no time
        {"t": "dkms/location/1", "i": NODE.verfer, "a": list(ADDRS), "ts": T, "x": 1},
        {"t": "dkms/roster/1", "i": NODE.verfer, "a": list(ADDRS), "ts": T},
        {"t": "dkms/location/1", "i": NODE.verfer, "a": "/ip4/1.2.3.4/tcp/1", "ts": T},
        {"t": "dkms/location/1", "i": NODE.verfer, "a": list(ADDRS), "ts": True},
        {"t": "dkms/location/1", "i": NODE.verfer, "a": list(ADDRS), "ts": 1.5},
        {"t": "dkms/location/1", "i": NODE.verfer, "a": [1], "ts": T},
        {"t": "dkms/location/1", "i": Signer(seed(24)).verfer, "a": list(ADDRS), "ts": T},
        {"t": "dkms/location/1", "i": 7, "a": list(ADDRS), "ts": T},
    ],
)
def test_malformed_bodies_are_refused(body: dict[str, object]) -> None:
    raw = Signed.make(NODE, cbor2.dumps(body)).to_cbor()
    with pytest.raises(ParseError):
        LocationRecord.from_cbor(raw)


def test_non_canonical_and_oversized_encodings_are_refused() -> None:
    record = LocationRecord.sign(NODE, ADDRS, T)
    with pytest.raises(ParseError, match="trailing"):
        LocationRecord.from_cbor(record.raw + b"\x00")
    body = cbor2.dumps({"ts": T, "a": list(ADDRS), "i": NODE.verfer, "t": "dkms/location/1"})
    with pytest.raises(ParseError, match="canonical"):  # the same fields in another order
        LocationRecord.from_cbor(Signed.make(NODE, body).to_cbor())
    with pytest.raises(ParseError, match="over"):
        LocationRecord.from_cbor(b"\xa0" * (MAX_RECORD + 1))


def test_a_record_at_its_bounds_fits_the_size_limit() -> None:
    record = LocationRecord.sign(NODE, ("/" + "x" * (MAX_ADDRESS - 1),) * MAX_ADDRESSES, 1 << 62)
    assert len(record.raw) <= MAX_RECORD
    assert read_record(record.raw) == record


def test_payloads_carry_one_record_or_several_joined() -> None:
    a = LocationRecord.sign(NODE, ADDRS, T)
    b = LocationRecord.sign(OTHER, ADDRS[:1], T + 5)
    assert split_records(a.raw, 4) == [a]
    assert split_records(a.raw + b.raw + a.raw, 4) == [a, b, a]
    with pytest.raises(ParseError, match="at most 2"):
        split_records(a.raw * 3, 2)
    for bad in (b"", a.raw + b"\x00", a.raw[:-1], a.raw + b.raw[:10], b"\xff" * 40):
        with pytest.raises(ParseError):
            split_records(bad, 4)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_single_byte_change_is_refused_or_fails_verification(data: st.DataObject) -> None:
    record = LocationRecord.sign(NODE, ADDRS, T)
    raw = bytearray(record.raw)
    at = data.draw(st.integers(0, len(raw) - 1), label="offset")
    value = data.draw(st.integers(0, 255).filter(lambda v: v != raw[at]), label="byte")
    raw[at] = value
    try:
        changed = LocationRecord.from_cbor(bytes(raw))
    except ParseError:
        return
    with pytest.raises(LocationError):
        changed.verify()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_raises_only_protocol_errors(blob: bytes) -> None:
    for decode in (LocationRecord.from_cbor, lambda b: split_records(b, 4)):
        with contextlib.suppress(ProtocolError):
            decode(blob)

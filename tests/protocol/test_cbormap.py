"""Reading one CBOR map from outside bytes: all of them, or a ParseError."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dkms.protocol.cbormap import cbor_map
from dkms.protocol.errors import ParseError


def test_a_map_reads_and_anything_after_it_is_refused() -> None:
    one = cbor2.dumps({"t": "x", "n": 1})
    assert cbor_map(one, "thing") == {"t": "x", "n": 1}
    with pytest.raises(ParseError, match="thing has 4 trailing bytes after its map"):
        cbor_map(one + cbor2.dumps({"n": 2}), "thing")  # a second object joined on
    with pytest.raises(ParseError, match="is not a CBOR map"):
        cbor_map(cbor2.dumps([1, 2]), "thing")
    with pytest.raises(ParseError, match="does not decode"):
        cbor_map(b"", "thing")


@given(st.binary(max_size=200))
def test_garbage_is_a_parse_error_or_a_whole_map(data: bytes) -> None:
    try:
        obj = cbor_map(data, "thing")
    except ParseError:
        return
    assert isinstance(obj, dict) and cbor2.dumps(obj) is not None

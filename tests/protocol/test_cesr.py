"""CESR text: primitives, indexed signatures and counters round-trip; bad text is a ParseError.

Every primitive has exactly one text form: the bits that only carry the zero pad must be zero,
the length is fixed by the code, and only base64url characters may appear.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kel_kit import signer

from dkms.protocol import cesr, events
from dkms.protocol.cesr import B64_ALPHABET, MATTER_SIZES, Codes, Counters, IndexedSig
from dkms.protocol.errors import LocalProtocolError, ParseError
from dkms.protocol.stream import Attachments, Message, messagize, parse_stream

CODES = sorted(MATTER_SIZES)
SMALL_COUNTERS = [
    Counters.CONTROLLER_SIGS,
    Counters.WITNESS_SIGS,
    Counters.RECEIPT_COUPLES,
    Counters.TRANS_RECEIPT_QUADRUPLES,
    Counters.FIRST_SEEN_REPLAY,
    Counters.SEAL_SOURCE_COUPLES,
    Counters.ATTACHMENT_GROUP,
]

sig_raw = st.binary(min_size=64, max_size=64)
# Anything that is not base64url: the standard alphabet's extras, padding, whitespace,
# control characters and non-ASCII letters.
foreign = st.characters(codec="utf-8").filter(lambda c: c not in B64_ALPHABET) | st.sampled_from(
    ["+", "/", "=", " ", "\n", "\x00", "é", "\u2028", ".", "#"]
)


def pad_limit(code_size: int, pad: int) -> int:
    """Largest digit (exclusive) the first character after the code may hold.

    The code replaces `code_size` characters of the encoded zero pad; the character after it
    still carries `8 * pad - 6 * code_size` pad bits in its top bits, which must be zero.
    """
    return 64 >> (8 * pad - 6 * code_size)


def replace(text: str, at: int, char: str) -> str:
    return text[:at] + char + text[at + 1 :]


# ------------------------------------------------------------------------ primitives


@pytest.mark.parametrize("code", CODES)
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_primitive_round_trip(code: str, data: st.DataObject) -> None:
    raw_size, text_size = MATTER_SIZES[code]
    raw = data.draw(st.binary(min_size=raw_size, max_size=raw_size))
    text = cesr.encode(code, raw)
    assert len(text) == text_size
    assert text.startswith(code)
    assert cesr.matter_code(text) == code
    assert cesr.decode(text) == (code, raw)
    assert cesr.decode(text, expect=code) == (code, raw)


@pytest.mark.parametrize("code", CODES)
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_primitive_with_nonzero_pad_bits_is_rejected(code: str, data: st.DataObject) -> None:
    raw_size, _ = MATTER_SIZES[code]
    text = cesr.encode(code, data.draw(st.binary(min_size=raw_size, max_size=raw_size)))
    limit = pad_limit(len(code), len(code) % 4)
    digit = data.draw(st.integers(limit, 63))
    with pytest.raises(ParseError, match="pad bits"):
        cesr.decode(replace(text, len(code), B64_ALPHABET[digit]))


@pytest.mark.parametrize("code", CODES)
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_primitive_of_wrong_length_is_rejected(code: str, data: st.DataObject) -> None:
    raw_size, text_size = MATTER_SIZES[code]
    text = cesr.encode(code, data.draw(st.binary(min_size=raw_size, max_size=raw_size)))
    cut = data.draw(st.integers(len(code), text_size - 1))
    extra = data.draw(st.text(B64_ALPHABET, min_size=1, max_size=8))
    with pytest.raises(ParseError):
        cesr.decode(text[:cut])
    with pytest.raises(ParseError):
        cesr.decode(text + extra)


@pytest.mark.parametrize("code", CODES)
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_primitive_with_foreign_character_is_rejected(code: str, data: st.DataObject) -> None:
    raw_size, text_size = MATTER_SIZES[code]
    text = cesr.encode(code, data.draw(st.binary(min_size=raw_size, max_size=raw_size)))
    at = data.draw(st.integers(0, text_size - 1))
    with pytest.raises(ParseError):
        cesr.decode(replace(text, at, data.draw(foreign)))


def test_primitive_codes_and_expectations() -> None:
    key = signer("cesr").verfer
    assert cesr.decode_key(key) == signer("cesr").public
    with pytest.raises(ParseError):
        cesr.decode("")
    with pytest.raises(ParseError, match="expected code"):
        cesr.decode(key, expect=Codes.BLAKE3_256)
    with pytest.raises(ParseError, match="expected code"):
        cesr.decode_key(cesr.encode(Codes.BLAKE3_256, bytes(32)))
    with pytest.raises(ParseError, match="unsupported"):
        cesr.decode("1AAG" + "A" * 32)  # a datetime is not a fixed-size primitive here
    with pytest.raises(ParseError, match="unsupported"):
        cesr.decode("Z" + "A" * 43)
    for code in CODES:
        with pytest.raises(LocalProtocolError):
            cesr.encode(code, bytes(MATTER_SIZES[code][0] + 1))
    with pytest.raises(LocalProtocolError):
        cesr.encode("Z", bytes(32))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**128 - 1))
def test_seqner_round_trip(sn: int) -> None:
    text = cesr.seqner(sn)
    assert len(text) == 24
    _, raw = cesr.decode(text, expect=Codes.SEQNER)
    assert int.from_bytes(raw, "big") == sn


@settings(max_examples=200, deadline=None)
@given(length=st.integers(1, 6), data=st.data())
def test_base64_integers_round_trip(length: int, data: st.DataObject) -> None:
    value = data.draw(st.integers(0, 64**length - 1))
    text = cesr.int_to_b64(value, length)
    assert len(text) == length
    assert cesr.b64_to_int(text) == value
    with pytest.raises(LocalProtocolError):
        cesr.int_to_b64(64**length, length)
    with pytest.raises(LocalProtocolError):
        cesr.int_to_b64(-1, length)
    with pytest.raises(ParseError):
        cesr.b64_to_int(replace(text, data.draw(st.integers(0, length - 1)), data.draw(foreign)))


# ------------------------------------------------------------------------ indexed signatures


small = st.integers(0, 63)
big = st.integers(0, 64**2 - 1)


@settings(max_examples=100, deadline=None)
@given(index=small, raw=sig_raw)
def test_indexed_sig_A_same_index_in_both_lists(index: int, raw: bytes) -> None:
    sig = IndexedSig(index, index, raw)
    text = sig.qb64()
    assert len(text) == 88
    assert text[0] == "A"
    assert text[1] == B64_ALPHABET[index]
    assert cesr.parse_indexed_sig(text) == (sig, 88)


@settings(max_examples=100, deadline=None)
@given(index=small, raw=sig_raw)
def test_indexed_sig_B_current_only(index: int, raw: bytes) -> None:
    sig = IndexedSig(index, None, raw)
    text = sig.qb64()
    assert len(text) == 88
    assert text[0] == "B"
    assert cesr.parse_indexed_sig(text) == (sig, 88)


@settings(max_examples=200, deadline=None)
@given(index=big, ondex=big, raw=sig_raw)
def test_indexed_sig_2A_big_or_different_indexes(index: int, ondex: int, raw: bytes) -> None:
    sig = IndexedSig(index, ondex, raw)
    text = sig.qb64()
    if index == ondex and index < 64:
        assert text[0] == "A"  # the small form wins when it can say the same
        return
    assert len(text) == 92
    assert text[:2] == "2A"
    assert cesr.b64_to_int(text[2:4]) == index
    assert cesr.b64_to_int(text[4:6]) == ondex
    assert cesr.parse_indexed_sig(text) == (sig, 92)


@settings(max_examples=100, deadline=None)
@given(index=st.integers(64, 64**2 - 1), raw=sig_raw)
def test_indexed_sig_2B_big_current_only(index: int, raw: bytes) -> None:
    sig = IndexedSig(index, None, raw)
    text = sig.qb64()
    assert len(text) == 92
    assert text[:2] == "2B"
    assert text[4:6] == "AA"
    assert cesr.parse_indexed_sig(text) == (sig, 92)


@settings(max_examples=50, deadline=None)
@given(index=small, raw=sig_raw)
def test_big_forms_of_small_indexes_parse(index: int, raw: bytes) -> None:
    body = IndexedSig(index, index, raw).qb64()[2:]
    digits = cesr.int_to_b64(index, 2)
    assert cesr.parse_indexed_sig("2A" + digits + digits + body) == (
        IndexedSig(index, index, raw),
        92,
    )
    assert cesr.parse_indexed_sig("2B" + digits + "AA" + body) == (IndexedSig(index, None, raw), 92)


@pytest.mark.parametrize("ondex_text", ["AJ", "_A", "::", "=="])
def test_2B_ondex_digits_must_be_zero(ondex_text: str) -> None:
    text = IndexedSig(70, None, bytes(64)).qb64()
    assert text[4:6] == "AA"
    with pytest.raises(ParseError):
        cesr.parse_indexed_sig(text[:4] + ondex_text + text[6:])


def test_indexed_sig_needs_64_raw_bytes() -> None:
    with pytest.raises(LocalProtocolError):
        IndexedSig(0, 0, bytes(63)).qb64()


sig_forms = st.sampled_from(
    [(0, 0), (5, None), (63, 63), (64, None), (4095, None), (3, 7), (200, 100), (4095, 4095)]
)


@settings(max_examples=200, deadline=None)
@given(form=sig_forms, raw=sig_raw, data=st.data())
def test_indexed_sig_bad_text_is_rejected(
    form: tuple[int, int | None], raw: bytes, data: st.DataObject
) -> None:
    text = IndexedSig(form[0], form[1], raw).qb64()
    size = len(text)
    body_at = 2 if size == 88 else 6
    # pad bits: "AA" stands for the code in the 66-byte decode, so 4 bits of the first body
    # character carry zero pad
    digit = data.draw(st.integers(pad_limit(2, 2), 63))
    with pytest.raises(ParseError):
        cesr.parse_indexed_sig(replace(text, body_at, B64_ALPHABET[digit]))
    with pytest.raises(ParseError):
        cesr.parse_indexed_sig(text[: data.draw(st.integers(0, size - 1))])
    at = data.draw(st.integers(0, size - 1))
    if text[:2] == "2B" and at in (4, 5):
        return  # the unused ondex digits of 2B: see test_2B_ondex_digits_must_be_zero
    with pytest.raises(ParseError):
        cesr.parse_indexed_sig(replace(text, at, data.draw(foreign)))


def test_unknown_indexed_sig_codes_are_rejected() -> None:
    text = IndexedSig(1, 1, bytes(64)).qb64()
    for code in ("C", "0", "2C", "-A", ""):
        with pytest.raises(ParseError):
            cesr.parse_indexed_sig(code + text[len(code) or 1 :])


# ------------------------------------------------------------------------ counters


@pytest.mark.parametrize("code", SMALL_COUNTERS)
@settings(max_examples=30, deadline=None)
@given(count=st.integers(0, 64**2 - 1))
def test_counter_round_trip(code: str, count: int) -> None:
    text = cesr.counter(code, count)
    assert len(text) == 4
    assert text[:2] == code
    assert cesr.b64_to_int(text[2:]) == count


@settings(max_examples=50, deadline=None)
@given(count=st.integers(0, 64**5 - 1))
def test_big_attachment_group_counter(count: int) -> None:
    text = cesr.counter(Counters.BIG_ATTACHMENT_GROUP, count)
    assert len(text) == 8
    assert text[:3] == "-0V"
    assert cesr.b64_to_int(text[3:]) == count


def test_counter_overflow_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        cesr.counter(Counters.CONTROLLER_SIGS, 64**2)
    with pytest.raises(LocalProtocolError):
        cesr.counter(Counters.BIG_ATTACHMENT_GROUP, 64**5)


# Counters as the stream reads them: attach groups of random sizes to one event body.

_EVENT = events.incept([signer("counters").verfer])
_SAID = _EVENT.said


@st.composite
def attachments(draw: st.DrawFn) -> Attachments:
    def sigs() -> tuple[IndexedSig, ...]:
        forms = draw(st.lists(sig_forms, max_size=4))
        return tuple(IndexedSig(i, o, draw(sig_raw)) for i, o in forms)

    couples = tuple(
        (signer(("w", n), transferable=False).verfer, draw(sig_raw))
        for n in draw(st.lists(st.integers(0, 3), max_size=3))
    )
    sources = tuple((sn, _SAID) for sn in draw(st.lists(st.integers(0, 2**128 - 1), max_size=3)))
    first_seen = tuple(
        (fn, "1AAG" + draw(st.text(B64_ALPHABET, min_size=32, max_size=32)))
        for fn in draw(st.lists(st.integers(0, 2**64), max_size=2))
    )
    return Attachments(
        sigs=sigs(), wigs=sigs(), couples=couples, sources=sources, first_seen=first_seen
    )


@settings(max_examples=100, deadline=None)
@given(atc=attachments())
def test_attachment_groups_round_trip_through_the_stream(atc: Attachments) -> None:
    data = messagize(_EVENT, atc)
    frames = parse_stream(data)
    assert len(frames) == 1
    frame = frames[0]
    assert isinstance(frame, Message)
    assert frame.event == _EVENT
    assert frame.attachments == atc
    assert frame.length == len(data)
    assert frame.serialize() == data


@settings(max_examples=50, deadline=None)
@given(atc=attachments(), big_group=st.booleans())
def test_attachment_group_counter_wraps_groups(atc: Attachments, big_group: bool) -> None:
    inner = atc.qb64()
    assert len(inner) % 4 == 0
    code = Counters.BIG_ATTACHMENT_GROUP if big_group else Counters.ATTACHMENT_GROUP
    wrapped = cesr.counter(code, len(inner) // 4) + inner
    frames = parse_stream(_EVENT.raw + wrapped.encode())
    assert len(frames) == 1
    assert isinstance(frames[0], Message)
    assert frames[0].attachments == atc


def test_empty_groups_are_allowed() -> None:
    frames = parse_stream(_EVENT.raw + b"-VAB-AAA-BAA")
    assert len(frames) == 1
    assert isinstance(frames[0], Message)
    assert frames[0].attachments == Attachments()


@pytest.mark.parametrize(
    "text",
    [
        "-Z" + "AA",  # unknown counter
        "-0X" + "AAAAA",  # unknown big counter
        "-AAB",  # one signature announced, none follows
        "-AAC" + IndexedSig(0, 0, bytes(64)).qb64(),  # two announced, one follows
        "-VAC" + "-AAA",  # group claims two quadlets, one follows
        "-CAB" + signer("d").verfer + cesr.encode(Codes.ED25519_SIG, bytes(64)),  # D in a couple
        "-GAB" + cesr.seqner(1) + signer("d").verfer,  # a key where a SAID belongs
        "-EAB" + cesr.seqner(1) + "1AAH" + "A" * 32,  # not a datetime
        "A" * 88,  # a primitive with no counter before it
    ],
)
def test_malformed_attachments_are_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_stream(_EVENT.raw + text.encode())
    offset = err.value.offset
    assert offset is not None
    assert len(_EVENT.raw) <= offset <= len(_EVENT.raw) + len(text)

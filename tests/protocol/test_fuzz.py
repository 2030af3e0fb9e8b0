"""Hostile bytes: only the library's own errors come out, and nothing hangs.

Three sources of hostile input: random bytes (and random soups of CESR-looking tokens), every
truncation and hypothesis-chosen one-byte edits of the keripy vectors (framed, then validated),
and duplicity evidence (random, and mutated valid evidence). Bugs found this way are pinned by
regression tests at the end of this file.
"""

from __future__ import annotations

import contextlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kel_kit import (
    VECTOR_FILES,
    VECTORS,
    Controller,
    frames_until_error,
    library_errors_only,
    vector_id,
)

from dkms.protocol import cesr, events
from dkms.protocol.cesr import B64_ALPHABET
from dkms.protocol.duplicity import EVIDENCE_TYPE, DuplicityEvidence
from dkms.protocol.errors import EvidenceError, ParseError, ProtocolError
from dkms.protocol.events import Kind
from dkms.protocol.stream import Frame, Message, StreamReader, parse_stream
from dkms.protocol.validator import Validator

# Examples take milliseconds; the deadline only catches pathological slowness, the conftest
# alarm catches hangs.
FUZZ = settings(
    max_examples=300,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
BLOBS = {vector_id(p): p.read_bytes() for p in VECTOR_FILES}


def test_all_vectors_are_here() -> None:
    assert len(VECTOR_FILES) == 28


# ------------------------------------------------------------------------ helpers


def describe(frames: list[Frame], error: ProtocolError | None) -> list[tuple[Any, ...]]:
    """A comparable account of a framing: each frame, then the error if any."""
    out: list[tuple[Any, ...]] = []
    for frame in frames:
        if isinstance(frame, Message):
            out.append(("message", frame.event.raw, frame.attachments, frame.offset, frame.length))
        else:
            err = frame.error
            out.append(("bad", frame.offset, frame.length, type(err), err.reason, err.offset))
    if error is not None:
        out.append(("error", type(error), str(error)))
    return out


def read_in_chunks(data: bytes, sizes: list[int]) -> tuple[list[Frame], ProtocolError | None]:
    reader = StreamReader()
    frames: list[Frame] = []
    pos, turn = 0, 0
    try:
        while pos < len(data):
            size = sizes[turn % len(sizes)] if sizes else len(data)
            frames.extend(reader.feed(data[pos : pos + size]))
            pos += size
            turn += 1
        frames.extend(reader.close())
    except ProtocolError as err:
        return frames, err
    return frames, None


def validate(frames: list[Frame]) -> Validator:
    """Every message through one fresh validator; only library errors may come out."""
    validator = Validator()
    for frame in frames:
        if isinstance(frame, Message):
            with library_errors_only():
                validator.process(frame, now=0.0)
    for prefix in validator.prefixes:
        with library_errors_only():
            validator.replay(prefix)
    with library_errors_only():
        validator.expire(now=1e9)
    return validator


def frame_and_validate(data: bytes) -> None:
    with library_errors_only():
        parse_stream(data)
    frames: list[Frame] = []
    with library_errors_only():
        frames, _ = frames_until_error(data)
    validate(frames)


# ------------------------------------------------------------------------ (a) random bytes

# The smallest thing the framer takes for a body: 24 bytes holding a JSON version string.
TINY_BODY = b'{"v":"KERI10JSON000018_"'


TOKENS = [
    b"-A",
    b"-B",
    b"-C",
    b"-D",
    b"-E",
    b"-F",
    b"-G",
    b"-V",
    b"-0V",
    b"-0",
    b"-",
    b"AA",
    b"AB",
    b"BA",
    b"2A",
    b"2B",
    b"0A",
    b"0B",
    b"1AAG",
    b"D",
    b"E",
    b"B",
    b"{",
    b"}",
    b'{"v":"KERI10JSON0000ff_"',
    b'"v":"KERI10JSON',
    b"KERI10CBOR0000b2_",
    b"\xa7avq",
    b"\xadavq",
    b"\xbb",
    b"\xb8",
    b"\xa0",
    b"\xd8\x1c",
    b"\xd8\x1d\x00",
    b"\x80",
]
slices = st.builds(
    lambda blob, a, b: blob[min(a, b) : max(a, b)],
    st.sampled_from(sorted(BLOBS.values())),
    st.integers(0, 2500),
    st.integers(0, 2500),
)
token = st.one_of(
    st.sampled_from(TOKENS),
    st.text(B64_ALPHABET, max_size=12).map(str.encode),
    st.binary(max_size=8),
    slices,
)
soups = st.lists(token, max_size=24).map(b"".join)
hostile = st.binary(max_size=1024) | soups


@FUZZ
@given(data=hostile)
def test_random_bytes_into_parse_stream(data: bytes) -> None:
    frame_and_validate(data)


@FUZZ
@given(data=hostile, sizes=st.lists(st.integers(1, 97), min_size=1, max_size=8))
def test_random_bytes_in_random_chunks_frame_as_a_whole(data: bytes, sizes: list[int]) -> None:
    """Chunking never changes what is read: same frames, same error, as reading it whole."""
    with library_errors_only():
        whole = describe(*frames_until_error(data))
        chunked = describe(*read_in_chunks(data, sizes))
        assert chunked == whole


@settings(max_examples=100, deadline=timedelta(seconds=2))
@given(path=st.sampled_from(VECTOR_FILES), sizes=st.lists(st.integers(1, 300), min_size=1))
def test_vectors_in_random_chunks_frame_as_a_whole(path: Path, sizes: list[int]) -> None:
    data = BLOBS[vector_id(path)]
    frames, error = read_in_chunks(data, sizes)
    assert error is None
    assert describe(frames, None) == describe(parse_stream(data), None)


def test_reader_refuses_input_after_an_error() -> None:
    reader = StreamReader()
    with pytest.raises(ParseError) as first:
        reader.feed(b"-AAB")
    with pytest.raises(ParseError) as again:
        reader.feed(BLOBS["cbor/basic"])
    assert again.value is first.value
    with pytest.raises(ParseError):
        reader.close()


def test_attachments_of_just_dash_AA() -> None:
    """Regression: the `-AA` fast path once read past the end of the text (IndexError)."""
    for tail in (b"-", b"-A", b"-AA", b"-AAB", b"-AAC", b"-AAZ"):
        with pytest.raises(ParseError):
            parse_stream(TINY_BODY + tail)


def test_messages_framed_before_an_error_are_kept() -> None:
    """Regression: a feed that hit bad bytes once dropped the messages framed before them."""
    good = BLOBS["cbor/basic"]
    data = good + b"\x00"
    whole = frames_until_error(data)
    chunked = read_in_chunks(data, [len(good), 1])
    assert describe(*whole) == describe(*chunked)


def test_errors_carry_the_stream_offset() -> None:
    data = BLOBS["cbor/basic"]
    with pytest.raises(ParseError) as err:
        parse_stream(data + b"\x00junk")
    assert err.value.offset == len(data)
    with pytest.raises(ParseError) as err:
        parse_stream(data[:-1])  # the last signature is one character short
    assert err.value.offset is not None
    assert 0 < err.value.offset < len(data)


def test_oversized_messages_are_refused_without_waiting_for_them() -> None:
    ctl = Controller("big")
    icp = ctl.incept(anchors=[{"x": "y" * 5000}])
    reader = StreamReader(max_message=4096)
    with pytest.raises(ParseError, match="limit"):
        reader.feed(icp.raw[:100])
    # Attachments are bounded too: a stream of base64 that never ends is not waited for.
    reader = StreamReader(max_message=4096)
    reader.feed(ctl.signed(ctl.incept()).serialize())
    with pytest.raises(ParseError, match="limit"):
        for _ in range(10):
            reader.feed(b"A" * 4096)


# ------------------------------------------------------------------------ (b) vectors


@pytest.mark.parametrize("path", VECTOR_FILES, ids=vector_id)
def test_every_truncation_of_a_vector(path: Path) -> None:
    """Every prefix of a vector frames to library errors only and validates without crashing.

    Complete messages before the cut are still validated; each distinct set of them once.
    """
    data = BLOBS[vector_id(path)]
    full = {f.offset: f for f in parse_stream(data) if isinstance(f, Message)}
    validated: set[tuple[tuple[int, int], ...]] = set()
    for end in range(len(data) + 1):
        frames: list[Frame] = []
        with library_errors_only():
            with contextlib.suppress(ProtocolError):
                parse_stream(data[:end])
            frames, _ = frames_until_error(data[:end])
        messages = [f for f in frames if isinstance(f, Message)]
        for msg in messages:  # a cut never invents a message, at most it drops attachments
            assert msg.event == full[msg.offset].event
            assert msg.length <= full[msg.offset].length
        key = tuple((m.offset, m.length) for m in messages)
        if key not in validated:
            validated.add(key)
            validate(frames)


@st.composite
def edits(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(BLOBS)))
    data = BLOBS[name]
    op = draw(st.sampled_from(["replace", "insert", "delete"]))
    at = draw(st.integers(0, len(data) - 1))
    value = bytes([draw(st.integers(0, 255))])
    if op == "replace":
        return name, data[:at] + value + data[at + 1 :]
    if op == "insert":
        return name, data[:at] + value + data[at:]
    return name, data[:at] + data[at + 1 :]


@FUZZ
@given(edit=edits())
def test_one_byte_edits_of_vectors(edit: tuple[str, bytes]) -> None:
    frame_and_validate(edit[1])


@FUZZ
@given(data=st.data())
def test_base64_edits_of_vector_attachments(data: st.DataObject) -> None:
    """Edits that keep the attachments base64 reach past the framer into the signatures."""
    blob = BLOBS[data.draw(st.sampled_from(sorted(BLOBS)))]
    frames = parse_stream(blob)
    spans = [
        (f.offset + len(f.event.raw), f.offset + f.length)
        for f in frames
        if isinstance(f, Message) and f.length > len(f.event.raw)
    ]
    if not spans:
        return
    start, stop = data.draw(st.sampled_from(spans))
    at = data.draw(st.integers(start, stop - 1))
    char = data.draw(st.sampled_from(B64_ALPHABET)).encode()
    frame_and_validate(blob[:at] + char + blob[at + 1 :])


# ------------------------------------------------------------------------ (c) evidence


def vector_evidence(kind: str) -> DuplicityEvidence:
    validator = Validator()
    found = []
    for frame in parse_stream((VECTORS / kind / "duplicitous_ixn.cesr").read_bytes()):
        assert isinstance(frame, Message)
        found += [o.evidence for o in validator.process(frame, now=0.0) if o.evidence]
    assert len(found) == 1
    return found[0]


EVIDENCE = {kind: vector_evidence(kind) for kind in ("cbor", "json")}


def signed_content(evidence: DuplicityEvidence) -> tuple[Any, ...]:
    """What the signatures in `evidence` vouch for: every event body, and the claim (i, s)."""

    def body(data: bytes) -> bytes:
        frames = parse_stream(data)
        assert isinstance(frames[0], Message)
        return frames[0].event.raw

    return (
        evidence.prefix,
        evidence.sn,
        tuple(body(m) for m in evidence.establishment),
        body(evidence.first),
        body(evidence.second),
    )


@pytest.mark.parametrize("kind", ["cbor", "json"])
def test_vector_evidence_verifies_and_round_trips(kind: str) -> None:
    evidence = EVIDENCE[kind]
    first, second = evidence.verify()
    assert first.event.sn == second.event.sn == evidence.sn == 1
    assert first.event.said != second.event.said
    again = DuplicityEvidence.from_cbor(evidence.to_cbor())
    assert again == evidence
    assert again.to_cbor() == evidence.to_cbor()
    assert again.verify() == (first, second)
    assert evidence.summary()["events"] == [
        {"d": first.event.said, "t": "ixn"},
        {"d": second.event.said, "t": "ixn"},
    ]


def check_evidence(data: bytes, original: DuplicityEvidence | None = None) -> None:
    """`data` decodes and verifies, or fails with library errors only; if it verifies after
    a mutation, the mutation did not touch anything a signature covers."""
    with library_errors_only():
        evidence = DuplicityEvidence.from_cbor(data)
        try:
            evidence.verify()
        except EvidenceError:
            return
        if original is not None:
            assert signed_content(evidence) == signed_content(original)


@FUZZ
@given(data=st.binary(max_size=600))
def test_evidence_from_random_bytes(data: bytes) -> None:
    check_evidence(data)


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.text(max_size=8)
    | st.binary(max_size=40)
    | st.floats(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=12,
)
pieces = st.sampled_from(
    [m for e in EVIDENCE.values() for m in (e.first, e.second, *e.establishment)]
)


@st.composite
def evidence_shaped(draw: st.DrawFn) -> bytes:
    obj = {
        "t": draw(st.sampled_from([EVIDENCE_TYPE, "x"])),
        "i": draw(st.sampled_from([EVIDENCE["cbor"].prefix, "E"]) | cbor_values),
        "s": draw(st.integers(-2, 3) | cbor_values),
        "e": draw(st.lists(pieces | st.binary(max_size=40), max_size=3) | cbor_values),
        "a": draw(pieces | cbor_values),
        "b": draw(pieces | cbor_values),
    }
    if draw(st.booleans()):
        obj = draw(st.dictionaries(st.text(max_size=2), cbor_values, max_size=4)) | obj
    return cbor2.dumps(obj)


@FUZZ
@given(data=evidence_shaped())
def test_evidence_shaped_cbor(data: bytes) -> None:
    check_evidence(data)


@FUZZ
@given(kind=st.sampled_from(["cbor", "json"]), data=st.data())
def test_mutated_evidence_bytes(kind: str, data: st.DataObject) -> None:
    original = EVIDENCE[kind]
    raw = original.to_cbor()
    op = data.draw(st.sampled_from(["replace", "insert", "delete"]))
    at = data.draw(st.integers(0, len(raw) - 1))
    value = bytes([data.draw(st.integers(0, 255))])
    if op == "replace":
        raw = raw[:at] + value + raw[at + 1 :]
    elif op == "insert":
        raw = raw[:at] + value + raw[at:]
    else:
        raw = raw[:at] + raw[at + 1 :]
    check_evidence(raw, original)


@FUZZ
@given(kind=st.sampled_from(["cbor", "json"]), data=st.data())
def test_mutated_evidence_piece(kind: str, data: st.DataObject) -> None:
    """Change one byte of one piece (an establishment event, or either conflicting message)."""
    original = EVIDENCE[kind]
    names = ["first", "second"] + [f"est{i}" for i in range(len(original.establishment))]
    name = data.draw(st.sampled_from(names))
    piece = original.first if name == "first" else original.second
    if name.startswith("est"):
        piece = original.establishment[int(name[3:])]
    at = data.draw(st.integers(0, len(piece) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda v: v != piece[at]))
    changed = piece[:at] + bytes([value]) + piece[at + 1 :]
    est = tuple(changed if name == f"est{i}" else m for i, m in enumerate(original.establishment))
    mutated = DuplicityEvidence(
        original.prefix,
        original.sn,
        est,
        changed if name == "first" else original.first,
        changed if name == "second" else original.second,
    )
    with library_errors_only():
        try:
            mutated.verify()
        except EvidenceError:
            return
        # It still verifies: then the change was in the attachments, and every body is intact.
        assert at >= len(parse_stream(piece)[0].event.raw)  # type: ignore[union-attr]
        assert signed_content(mutated) == signed_content(original)


def test_evidence_against_recovery_or_itself_is_refused() -> None:
    evidence = EVIDENCE["cbor"]
    same = DuplicityEvidence(
        evidence.prefix, evidence.sn, evidence.establishment, evidence.first, evidence.first
    )
    with pytest.raises(EvidenceError, match="same event"):
        same.verify()
    wrong_sn = DuplicityEvidence(
        evidence.prefix, 2, evidence.establishment, evidence.first, evidence.second
    )
    with pytest.raises(EvidenceError):
        wrong_sn.verify()
    no_chain = DuplicityEvidence(evidence.prefix, 1, (), evidence.first, evidence.second)
    with pytest.raises(EvidenceError):
        no_chain.verify()


def test_from_cbor_refuses_other_objects() -> None:
    objects: list[object] = [[], {"t": "other"}, {"t": EVIDENCE_TYPE}, {"t": EVIDENCE_TYPE, "i": 1}]
    for obj in objects:
        with pytest.raises(ParseError):
            DuplicityEvidence.from_cbor(cbor2.dumps(obj))
    with pytest.raises(ParseError):
        DuplicityEvidence.from_cbor(b"\xff")


# ------------------------------------------------------------------------ regressions
#
# Each test below pins, with a minimal input, a bug that fuzzing found in `protocol/` and that
# has since been fixed.


def json_body(ked: dict[str, Any]) -> bytes:
    """Serialize `ked` as JSON with a version string that matches its size."""
    ked = {**ked, "v": "KERI10JSON000000_"}
    text = json.dumps(ked, separators=(",", ":"), ensure_ascii=False)
    raw = text.encode("utf-8", "surrogatepass")
    return raw.replace(b"KERI10JSON000000_", b"KERI10JSON%06x_" % len(raw))


def cbor_body(ked: dict[str, Any], tail: bytes = b"") -> bytes:
    """CBOR of `ked` (whose last value must be an empty list) with that list's byte replaced
    by `tail` (hand-made CBOR), and a version string that matches the final size."""
    raw = cbor2.dumps({**ked, "v": "KERI10CBOR000000_"})
    if tail:
        assert raw[-1] == 0x80
        raw = raw[:-1] + tail
    return raw.replace(b"KERI10CBOR000000_", b"KERI10CBOR%06x_" % len(raw))


IXN = {"v": "", "t": "ixn", "d": "E" * 44, "i": "E" * 44, "s": "1", "p": "E" * 44, "a": []}


def assert_library_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_stream(data)


def test_deeply_nested_attachment_groups() -> None:
    depth = 1100  # level k is a -V counting the (depth - 1 - k) quadlets nested inside it
    nested = b"".join(b"-V" + cesr.int_to_b64(n, 2).encode() for n in range(depth - 1, -1, -1))
    assert_library_error(TINY_BODY + nested)


@pytest.mark.parametrize("kind", ["json", "cbor"])
def test_non_ascii_said(kind: str) -> None:
    ked = {**IXN, "d": "E" + "\u00e9" * 43}
    body = json_body(ked) if kind == "json" else cbor_body(ked)
    assert_library_error(body)


def test_json_lone_surrogate() -> None:
    short = json_body(IXN)
    body = short.replace(b'"a":[]', b'"a":["\\ud800"]')
    body = body.replace(b"KERI10JSON%06x_" % len(short), b"KERI10JSON%06x_" % len(body))
    assert events.sniff(body[:24]) == (Kind.JSON, len(body))
    assert_library_error(body)


@pytest.mark.parametrize(
    "tail",
    [bytes.fromhex("d81c81d81d00"), bytes.fromhex("81d82462") + b"hi"],
    ids=["cyclic", "mime"],
)
def test_cbor_that_cannot_be_re_encoded(tail: bytes) -> None:
    assert_library_error(cbor_body(IXN, tail))

"""What a client reads from a node's own OOBI answer (`client/oobis.read_answer`) and URL
(`parse_url`): the node's prefix and the URL it signed, or one CommandError line, whatever
the bytes; no change to an answer makes it say something else. Pure: no network."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dkms.node.client.home import CommandError
from dkms.node.client.oobis import NodeOobi, parse_url, read_answer
from dkms.node.http.oobis import own_inception
from dkms.node.testing.keys import node_signer
from dkms.protocol.attachments import Attachments
from dkms.protocol.crypto import Signer, digest
from dkms.protocol.events import Kind, incept
from dkms.protocol.replies import end_role, loc_scheme
from dkms.protocol.stream import messagize

NODE = node_signer(3)
OTHER = node_signer(4)
DT = "2025-01-01T00:00:00.000000+00:00"
LATER = "2025-06-01T00:00:00.000000+00:00"
URL = "http://127.0.0.1:5631/"


def answer(signer: Signer = NODE, url: str = URL) -> bytes:
    """A node's own OOBI answer, as `node/http/oobis.py` serves it."""
    return (
        own_inception(signer)
        + loc_scheme(signer, url, DT).serialize()
        + end_role(signer, DT).serialize()
    )


GOOD = answer()
EXPECTED = NodeOobi(NODE.verfer, URL, DT)


def one_line(err: CommandError) -> str:
    text = str(err)
    assert text and "\n" not in text and "Traceback" not in text
    return text


def test_a_node_answer_reads() -> None:
    assert read_answer(GOOD, "X", NODE.verfer) == EXPECTED
    assert read_answer(GOOD, "X") == EXPECTED
    # The newest signed location counts, wherever it stands.
    older = loc_scheme(NODE, URL, DT).serialize()
    newer = loc_scheme(NODE, "http://w.example:80/", LATER).serialize()
    for locations in (older + newer, newer + older):
        got = read_answer(own_inception(NODE) + locations, "X", NODE.verfer)
        assert got == NodeOobi(NODE.verfer, "http://w.example:80/", LATER)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"", "no node's inception event first"),
        (b"not cesr", "no CESR stream"),
        (own_inception(NODE), f"no /loc/scheme reply signed by {NODE.verfer}"),
        (
            own_inception(NODE) + loc_scheme(OTHER, URL, DT).serialize(),
            f"the location of another node ({OTHER.verfer})",
        ),
        (GOOD + own_inception(OTHER), f"more than a node's inception (icp of {OTHER.verfer})"),
        (loc_scheme(NODE, URL, DT).serialize() + GOOD, "first message that does not read"),
        (
            own_inception(NODE) + loc_scheme(NODE, "http://", DT).serialize(),
            "signed a URL no HTTP client can use",
        ),
    ],
)
def test_answers_that_are_not_a_node_s(body: bytes, said: str) -> None:
    with pytest.raises(CommandError) as caught:
        read_answer(body, "X")
    assert said in one_line(caught.value)


def test_another_node_or_an_identifier_is_refused() -> None:
    with pytest.raises(CommandError, match=f"answered for {OTHER.verfer}, not for {NODE.verfer}"):
        read_answer(answer(OTHER), "X", NODE.verfer)
    # A transferable identifier's inception (its prefix is no key of a node).
    key, nxt = Signer(bytes(range(32))), Signer(bytes(range(1, 33)))
    event = incept([key.verfer], next_digests=[digest(nxt.verfer.encode())], kind=Kind.JSON)
    icp = messagize(event, Attachments(sigs=(key.sign_indexed(event.raw, 0),)))
    with pytest.raises(CommandError, match="not of a node"):
        read_answer(icp + loc_scheme(NODE, URL, DT).serialize(), "X")
    # A location signed by the wrong key: its couple names the node, its signature is OTHER's.
    forged = bytearray(loc_scheme(NODE, URL, DT).serialize())
    theirs = loc_scheme(OTHER, URL, DT).serialize()
    forged[-88:] = theirs[-88:]
    with pytest.raises(CommandError, match="does not verify"):
        read_answer(own_inception(NODE) + bytes(forged), "X")


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_any_bytes_read_or_fail_in_one_line(data: bytes) -> None:
    try:
        got = read_answer(data, "X")
    except CommandError as err:
        one_line(err)
    else:
        assert got.prefix.startswith("B")


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_no_change_to_an_answer_says_something_else(data: st.DataObject) -> None:
    body = bytearray(GOOD)
    how = data.draw(st.sampled_from(["flip", "cut", "insert", "splice"]))
    at = data.draw(st.integers(0, len(body) - 1))
    if how == "flip":
        body[at] ^= data.draw(st.integers(1, 255))
    elif how == "cut":
        del body[at : at + data.draw(st.integers(1, 64))]
    elif how == "insert":
        body[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    else:
        body[at:] = data.draw(st.binary(max_size=64))
    try:
        got = read_answer(bytes(body), "X", NODE.verfer)
    except CommandError as err:
        one_line(err)
    else:  # the role reply is not read, so a change there may pass: never a changed answer
        assert got == EXPECTED


@settings(max_examples=400)
@given(st.text(max_size=300))
def test_any_url_text_reads_or_fails_in_one_line(text: str) -> None:
    for candidate in (text, "http://" + text, f"http://h:1/oobi/{text}"):
        try:
            url = parse_url(candidate)
        except CommandError as err:
            one_line(err)
        else:
            assert url.base.startswith(("http://", "https://"))
            assert url.prefix is None or len(url.prefix) == 44

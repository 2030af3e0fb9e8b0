"""Mailbox `qry` messages: every query kli posted (tests/vectors/keripy-http) reads and verifies
against its controller's key state, round trips, what is refused, and hostile bytes."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dkms.node.testing.keys import seed
from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.errors import EventError, ProtocolError
from dkms.protocol.events import Kind, incept, parse_event
from dkms.protocol.keystate import Authority, authority_of
from dkms.protocol.queries import mailbox_query, read_query, verify_query
from dkms.protocol.routed import Endorsements, LastEstGroup, build_routed

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "keripy-http"
STEPS = (  # the order tools/keripy_http_capture.py ran them
    "init",
    "oobi-witness",
    "incept-mailbox",
    "rotate-mailbox",
    "interact-mailbox",
    "incept-endpoint",
    "rotate-endpoint",
    "interact-endpoint",
)
DT = "2026-12-05T19:02:46.953616+00:00"
KEYS = [Signer(seed(41)), Signer(seed(42))]
NEXT = [Signer(seed(43))]


def our_authority(kt: int = 2) -> tuple[str, Authority]:
    icp = incept([s.verfer for s in KEYS], next_digests=[next_key_digest(NEXT[0].verfer)], kt=kt)
    return icp.prefix, authority_of(icp, ())


def test_every_mailbox_query_kli_sent_verifies_against_the_keys_it_had_then() -> None:
    latest: dict[str, Authority] = {}
    older: dict[str, list[Authority]] = {}
    checked = 0
    for name in STEPS:
        step = json.loads((VECTORS / f"{name}.json").read_text())
        # kli rotates, then polls with its new keys, sometimes before it posts the rotation:
        # a step's queries are signed under the step's last establishment event.
        for exchange in step["exchanges"]:
            body = exchange["request"].get("body", "")
            if '"t":"icp"' in body or '"t":"rot"' in body:
                event = parse_event(body.encode())
                if event.prefix in latest and latest[event.prefix].said != event.said:
                    older.setdefault(event.prefix, []).append(latest[event.prefix])
                latest[event.prefix] = authority_of(event, ())
        for exchange in step["exchanges"]:
            request = exchange["request"]
            body = request.get("body", "")
            headers = {k.lower(): v for k, v in request["headers"]}
            if '"t":"qry"' not in body:
                continue
            query = read_query(body.encode(), headers["cesr-attachment"])
            box = query.mailbox
            assert box is not None and box.pre == box.requester
            assert dict(box.topics).keys() == {"/receipt", "/replay", "/reply"}
            assert box.src == exchange["witness_prefix"]
            assert verify_query(query, latest[box.pre]).ok, (name, box)
            for stale in older.get(box.pre, []):
                got = verify_query(query, stale)
                assert not got.ok and "threshold" in got.reason
            assert query.serialize() == (body + headers["cesr-attachment"]).encode()
            checked += 1
    assert checked == 27


@pytest.mark.parametrize("kind", [Kind.JSON, Kind.CBOR])
@pytest.mark.parametrize("establishment", [False, True])
def test_a_mailbox_query_round_trips_and_verifies(kind: Kind, establishment: bool) -> None:
    pre, authority = our_authority()
    made = mailbox_query(
        KEYS,
        pre,
        {"/receipt": 3, "/replay": 0},
        DT,
        src="B" + "A" * 43,
        establishment=(authority.sn, authority.said) if establishment else None,
        kind=kind,
    )
    raw = made.serialize()
    size = len(made.message.raw)
    again = read_query(raw[:size], raw[size:])
    assert again.mailbox == made.mailbox and again.endorsements == made.endorsements
    assert again.mailbox is not None and again.mailbox.topics == (("/receipt", 3), ("/replay", 0))
    assert verify_query(again, authority).ok
    assert raw[size:].startswith(b"-V")


def test_what_a_mailbox_query_is_refused_for() -> None:
    pre, authority = our_authority()
    made = mailbox_query(KEYS, pre, {"/receipt": 0}, DT)
    assert not verify_query(made, None).ok  # key state unknown
    one = Endorsements(last_groups=(LastEstGroup(pre, made.endorsements.last_groups[0].sigs[:1]),))
    got = verify_query(read_query(made.message.raw, one.qb64()), authority)
    assert not got.ok and "threshold" in got.reason
    assert verify_query(read_query(made.message.raw, one.qb64()), our_authority(kt=1)[1]).ok
    got = verify_query(read_query(made.message.raw, ""), authority)
    assert not got.ok and got.reason == f"not signed by {pre}"
    _, other = our_authority(kt=1)
    stranger = mailbox_query(KEYS, pre, {"/receipt": 0}, DT)
    body = dict(stranger.message.ked)
    body["q"] = {**body["q"], "i": "E" + "B" * 43}
    asked = build_routed(body, Kind.JSON)
    got = verify_query(read_query(asked.raw, ""), other)
    assert not got.ok and "may not read the mailbox" in got.reason
    ksn = dict(made.message.ked)
    ksn["r"] = "ksn"
    got = verify_query(read_query(build_routed(ksn, Kind.JSON).raw, ""), authority)
    assert not got.ok and "not read here" in got.reason


def test_bad_mailbox_arguments_say_what_is_wrong() -> None:
    pre, _ = our_authority()
    made = mailbox_query(KEYS, pre, {"/receipt": 0}, DT)
    for q, reason in (
        ([], "q must be a map"),
        ({"pre": pre, "topics": {"/receipt": -1}, "i": pre}, "whole index"),
        ({"pre": pre, "topics": {"/receipt": "0"}, "i": pre}, "whole index"),
        ({"pre": pre, "topics": {f"/t{i}": 0 for i in range(17)}, "i": pre}, "at most 16"),
        ({"pre": "short", "topics": {}, "i": pre}, "pre must be"),
        ({"pre": pre, "topics": {}, "i": pre, "src": 5}, "src must be"),
    ):
        body = {**made.message.ked, "q": q}
        with pytest.raises(EventError, match=reason):
            read_query(build_routed(body, Kind.JSON).raw, "")


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_single_byte_change_is_refused_or_fails_verification(data: st.DataObject) -> None:
    pre, authority = our_authority()
    made = mailbox_query(KEYS, pre, {"/receipt": 0, "/replay": 0, "/reply": 0}, DT)
    raw = bytearray(made.serialize())
    at = data.draw(st.integers(0, len(raw) - 1), label="offset")
    raw[at] = data.draw(st.integers(0, 255).filter(lambda v: v != raw[at]), label="byte")
    size = len(made.message.raw)
    try:
        changed = read_query(bytes(raw[:size]), bytes(raw[size:]))
    except ProtocolError:
        return
    assert not verify_query(changed, authority).ok


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.binary(max_size=300))
def test_garbage_raises_only_protocol_errors(body: bytes, attachment: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        read_query(body, attachment)

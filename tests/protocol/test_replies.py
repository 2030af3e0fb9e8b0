"""`rpy` replies and the signature groups of routed messages: keripy's bytes reproduced exactly
(tests/vectors/keripy-http), round trips in JSON and CBOR, what verifies, and hostile bytes (only
the protocol's errors come out; any single-byte change is refused or fails verification)."""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dkms.node.testing.keys import seed
from dkms.protocol.crypto import Signer
from dkms.protocol.errors import EventError, LocalProtocolError, ParseError, ProtocolError
from dkms.protocol.events import Kind
from dkms.protocol.queries import mailbox_query
from dkms.protocol.replies import (
    KSN_FIELDS,
    EndRole,
    LocScheme,
    end_role,
    key_state_notice,
    loc_scheme,
    read_reply,
    verify_reply,
)
from dkms.protocol.routed import Endorsements, build_routed, parse_endorsements, parse_routed

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "keripy-http"
# The seeds keripy derives from `kli witness demo`'s salts (b"wann-the-witness", ...) for its
# non-transferable witness habs: keripy 1.3.6's Habery(salt=Salter(raw=SALT).qb64) then
# makeHab(name, transferable=False), read back from its keystore (`mgr.ks.pris`).
KERIPY_WITNESS_SEEDS = {
    "wan": "nTQBuMAtroKI82YRU6hyGy8UgY5Yilxo1R1OnuECvq4=",
    "wil": "0DbB+AIwTmQcM33/vmyb4qxJHjXl2LYb6h13DG6A7f4=",
    "wes": "xnN1adZyAzd5N0vTjWAsylhYiJw//cDEipvjU4KCB9E=",
}
DT = "2025-01-01T00:00:00.000000+00:00"  # the capture tool's fixed reply time
WITNESS = Signer(seed(31), transferable=False)
OTHER = Signer(seed(32), transferable=False)


def keripy_signer(name: str) -> Signer:
    return Signer(base64.b64decode(KERIPY_WITNESS_SEEDS[name]), transferable=False)


def posted(ilk: str) -> list[tuple[str, dict[str, Any], str, str]]:
    """(step, body, body text, CESR-ATTACHMENT) of every `ilk` message kli posted."""
    out = []
    for path in sorted(VECTORS.glob("*.json")):
        step = json.loads(path.read_text())
        for exchange in step["exchanges"]:
            request = exchange["request"]
            body = request.get("body", "")
            if f'"t":"{ilk}"' not in body:
                continue
            headers = {k.lower(): v for k, v in request["headers"]}
            out.append((step["step"], step, body, headers["cesr-attachment"]))
    return out


def test_keripy_witness_seeds_are_the_vector_witnesses() -> None:
    step = json.loads((VECTORS / "oobi-witness.json").read_text())
    for name, prefix in step["witnesses"].items():
        assert keripy_signer(name).verfer == prefix


def test_our_loc_scheme_replies_are_keripys_bytes() -> None:
    seen = 0
    for _, step, body, attachment in posted("rpy"):
        names = {prefix: name for name, prefix in step["witnesses"].items()}
        eid = json.loads(body)["a"]["eid"]
        url = step["witness_urls"][names[eid]]
        ours = loc_scheme(keripy_signer(names[eid]), url, DT)
        assert ours.serialize() == (body + attachment).encode()
        seen += 1
    assert seen >= 12


def test_the_oobi_replies_of_a_keripy_witness_are_ours_byte_for_byte() -> None:
    step = json.loads((VECTORS / "oobi-witness.json").read_text())
    served = step["exchanges"][0]["response"]["body"]
    wan = keripy_signer("wan")
    loc = loc_scheme(wan, step["witness_urls"]["wan"], DT).serialize().decode()
    role = end_role(wan, DT).serialize().decode()
    assert served.endswith(loc + role)


def test_our_key_state_notices_are_keripys_bytes() -> None:
    """keripy's witness wan answered `GET /ksn`; the same record, key and dt give its bytes."""
    step = json.loads((VECTORS / "errors.json").read_text())
    [served] = [
        x["response"]["body"]
        for x in step["exchanges"]
        if x["request"]["target"].startswith("/ksn") and x["response"]["status"] == 200
    ]
    size = int(served[16:22], 16)
    ked = json.loads(served[:size])
    assert tuple(ked["a"]) == KSN_FIELDS
    ours = key_state_notice(keripy_signer("wan"), ked["a"], ked["dt"])
    assert ours.serialize() == served.encode()
    reply = read_reply(served[:size].encode(), served[size:])
    assert reply.says is None and reply.message.route == f"/ksn/{keripy_signer('wan').verfer}"
    with pytest.raises(LocalProtocolError, match="fields"):
        key_state_notice(WITNESS, {k: ked["a"][k] for k in reversed(KSN_FIELDS)}, DT)


def test_every_reply_kli_posted_reads_and_verifies() -> None:
    for _, _, body, attachment in posted("rpy"):
        reply = read_reply(body.encode(), attachment)
        assert isinstance(reply.says, LocScheme)
        assert verify_reply(reply).ok
        assert reply.serialize() == (body + attachment).encode()


@pytest.mark.parametrize("kind", [Kind.JSON, Kind.CBOR])
def test_replies_round_trip_in_both_kinds(kind: Kind) -> None:
    for made in (
        loc_scheme(WITNESS, "http://127.0.0.5:5631/", DT, kind=kind),
        end_role(WITNESS, DT, kind=kind),
    ):
        raw = made.serialize()
        size = len(made.message.raw)
        again = read_reply(raw[:size], raw[size:])
        assert again.says == made.says and again.endorsements == made.endorsements
        assert again.message.raw == made.message.raw and again.message.kind is kind
        assert verify_reply(again).ok
    assert read_reply(made.message.raw, made.endorsements.qb64()).says == EndRole(
        WITNESS.verfer, "controller", WITNESS.verfer
    )


def test_a_reply_signed_by_someone_else_does_not_verify() -> None:
    made = loc_scheme(WITNESS, "http://127.0.0.5:5631/", DT)
    forged = Endorsements(couples=((OTHER.verfer, OTHER.sign_raw(made.message.raw)),))
    got = verify_reply(read_reply(made.message.raw, forged.qb64()))
    assert not got.ok and got.reason == f"not signed by {WITNESS.verfer}"
    wrong = Endorsements(couples=((WITNESS.verfer, OTHER.sign_raw(made.message.raw)),))
    got = verify_reply(read_reply(made.message.raw, wrong.qb64()))
    assert not got.ok and "does not verify" in got.reason
    unsigned = verify_reply(read_reply(made.message.raw, ""))
    assert not unsigned.ok


def test_a_transferable_signer_needs_its_key_state() -> None:
    made = end_role(WITNESS, DT, eid=OTHER.verfer)
    assert verify_reply(made).ok
    body = dict(made.message.ked)
    body["a"] = {"cid": "E" + "A" * 43, "role": "witness", "eid": OTHER.verfer}
    message = build_routed(body, Kind.JSON)
    got = verify_reply(read_reply(message.raw, ""))
    assert not got.ok and "key state" in got.reason


def test_bad_reply_bodies_say_what_is_wrong() -> None:
    good = loc_scheme(WITNESS, "http://127.0.0.5:5631/", DT).message
    ked = dict(good.ked)
    cases = {
        "fields must be": {k: v for k, v in ked.items() if k != "dt"},
        "dt must be": {**ked, "dt": "yesterday"},
        "scheme must be": {**ked, "a": {**ked["a"], "scheme": "ftp"}},
        "eid scheme url": {**ked, "a": {"eid": WITNESS.verfer, "url": "x", "scheme": "http"}},
    }
    for reason, body in cases.items():
        with pytest.raises(EventError, match=reason):
            made = build_routed(dict(body), Kind.JSON)
            read_reply(made.raw, "")
    query = mailbox_query([Signer(seed(33))], "E" + "A" * 43, {"/receipt": 0}, DT)
    with pytest.raises(EventError, match="expected a rpy message, got type 'qry'"):
        read_reply(query.message.raw, "")
    with pytest.raises(EventError, match="SAID d does not match"):
        parse_routed(good.raw.replace(b"5631", b"5632"))
    with pytest.raises(EventError, match="canonical"):
        parse_routed(good.raw.replace(b'"url":"http://127.0.0.5:5631/', b'"url": "http://127.0.0.5:563/'))
    with pytest.raises(LocalProtocolError):
        loc_scheme(WITNESS, "http://x/", "not a time")


def test_signature_groups_parse_exactly() -> None:
    made = loc_scheme(WITNESS, "http://127.0.0.5:5631/", DT)
    text = made.endorsements.qb64()
    assert text.startswith("-VAi-CAB" + WITNESS.verfer)
    assert parse_endorsements(text) == made.endorsements
    assert parse_endorsements(text[4:]) == made.endorsements  # bare groups, no -V
    for bad, reason in (
        (text[:-4], "longer than the attachments"),
        (text + "-", "counter"),
        ("-VAi" + text, "attachment"),
        (text.replace("-CAB", "-XAB"), "unsupported attachment counter"),
        ("-VAD-VAC-VAB-CAA", "nested too deeply"),
        (text.replace("-CAB", "-CAC"), "attachments end inside"),
    ):
        with pytest.raises(ParseError, match=reason):
            parse_endorsements(bad)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_single_byte_change_is_refused_or_fails_verification(data: st.DataObject) -> None:
    made = loc_scheme(WITNESS, "http://127.0.0.5:5631/", DT)
    raw = bytearray(made.serialize())
    at = data.draw(st.integers(0, len(raw) - 1), label="offset")
    raw[at] = data.draw(st.integers(0, 255).filter(lambda v: v != raw[at]), label="byte")
    size = len(made.message.raw)
    try:
        changed = read_reply(bytes(raw[:size]), bytes(raw[size:]))
    except ProtocolError:
        return
    assert not verify_reply(changed).ok


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.text(max_size=300))
def test_garbage_raises_only_protocol_errors(body: bytes, attachment: str) -> None:
    with contextlib.suppress(ProtocolError):
        read_reply(body, attachment)
    with contextlib.suppress(ProtocolError):
        parse_endorsements(attachment)
    with contextlib.suppress(ProtocolError):
        parse_endorsements(body)

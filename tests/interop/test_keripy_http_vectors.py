"""What keripy 1.3.6's kli and witnesses exchanged over HTTP (tests/vectors/keripy-http, made
by tools/keripy_http_capture.py) holds the facts docs/keripy-http.md states, and what they
carry verifies with our own protocol code: the receipts keripy's witnesses signed, in
`POST /receipts` answers and in mailbox server-sent events, are valid couples over kli's JSON
events, and the OOBI bodies are KELs we parse.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dkms.protocol.cesr import decode_key
from dkms.protocol.crypto import verify
from dkms.protocol.events import Ilk, Kind
from dkms.protocol.stream import Message, parse_stream

from .conftest import load_tool

VECTORS = Path(__file__).parents[1] / "vectors" / "keripy-http"
STEPS = [
    "init", "oobi-witness", "incept-mailbox", "rotate-mailbox", "interact-mailbox",
    "incept-endpoint", "rotate-endpoint", "interact-endpoint", "oobi-controller", "errors",
]
SSE_EVENT = re.compile(r"id: (\d+)\nevent: (/[a-z]+)\nretry: (\d+)\ndata: (.*?)\n\n", re.S)


def step(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / f"{name}.json").read_text())
    return data


def header(headers: list[list[str]], name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name.lower()), None)


def kli_posts(name: str) -> list[dict[str, Any]]:
    return [x for x in step(name)["exchanges"] if x["request"]["method"] == "POST"]


def ilk(exchange: dict[str, Any]) -> str:
    body = json.loads(exchange["request"]["body"])
    return f"{body['t']} {body.get('r', '')}".strip()


def test_every_step_was_captured() -> None:
    for name in STEPS:
        assert step(name)["exchanges"], name


@pytest.mark.parametrize("name", [s for s in STEPS if s != "errors" and "oobi" not in s])
def test_kli_posts_one_json_message_with_cesr_headers(name: str) -> None:
    for x in kli_posts(name):
        req, body = x["request"], x["request"]["body"].encode()
        assert header(req["headers"], "Content-Type") == "application/cesr+json"
        assert header(req["headers"], "Cesr-Destination") == x["witness_prefix"]
        assert int(header(req["headers"], "Content-Length") or -1) == len(body)
        assert header(req["headers"], "Cesr-Attachment")
        assert int(json.loads(body)["v"][10:16], 16) == len(body)  # one whole message
        assert req["target"] in ("/", "/receipts")


def test_witness_answers_to_posts() -> None:
    seen: dict[tuple[str, str], set[int]] = {}
    for name in STEPS[2:8]:
        for x in kli_posts(name):
            seen.setdefault((x["request"]["target"], ilk(x)), set()).add(x["response"]["status"])
    assert seen == {
        ("/", "icp"): {204}, ("/", "rot"): {204}, ("/", "ixn"): {204},
        ("/", "rpy /loc/scheme"): {204},
        ("/", "rct"): {200},  # not among HttpEnd.on_post's 204 ilks: falcon's default 200
        ("/", "qry mbx"): {200},
        ("/receipts", "icp"): {200}, ("/receipts", "rot"): {200}, ("/receipts", "ixn"): {200},
    }


def event_of(x: dict[str, Any]) -> Message:
    req = x["request"]
    frames = parse_stream((req["body"] + header(req["headers"], "Cesr-Attachment")).encode())
    assert isinstance(frames[0], Message) and frames[0].event.kind is Kind.JSON
    return frames[0]


def test_receipt_endpoint_answers_a_couple_that_verifies() -> None:
    for name in ("incept-endpoint", "rotate-endpoint", "interact-endpoint"):
        for x in kli_posts(name):
            if x["request"]["target"] != "/receipts":
                continue
            resp = x["response"]
            assert header(resp["headers"], "Content-Type") == "application/json+cesr"
            event = event_of(x).event
            (rct,) = parse_stream(resp["body"].encode())
            assert isinstance(rct, Message) and rct.event.ilk is Ilk.RCT
            assert rct.event.said == event.said
            assert resp["body"][rct.event.raw.__len__():].startswith("-CAB")
            ((wit, sig),) = rct.attachments.couples
            assert wit == x["witness_prefix"]
            assert verify(decode_key(wit), sig, event.raw)


def test_mailbox_is_server_sent_events_of_signed_receipts() -> None:
    streams = 0
    for name in ("incept-mailbox", "rotate-mailbox", "interact-mailbox"):
        events = {e.event.said: e.event for x in kli_posts(name)
                  if ilk(x) in ("icp", "rot", "ixn") for e in [event_of(x)]}
        for x in kli_posts(name):
            if ilk(x) != "qry mbx":
                continue
            query = json.loads(x["request"]["body"])
            assert set(query["q"]["topics"]) == {"/receipt", "/replay", "/reply"}
            resp = x["response"]
            assert header(resp["headers"], "Content-Type") == "text/event-stream"
            assert resp["body"].startswith("retry: 5000\n\n")
            for _, topic, retry, data in SSE_EVENT.findall(resp["body"]):
                assert topic == "/receipt" and retry == "5000"
                (rct,) = parse_stream(data.encode())
                assert isinstance(rct, Message) and rct.event.ilk is Ilk.RCT
                ((wit, sig),) = rct.attachments.couples
                if rct.event.said in events:
                    assert verify(decode_key(wit), sig, events[rct.event.said].raw)
                    streams += 1
    assert streams >= 3  # every mailbox step delivered receipts that verify


def test_oobi_answers_are_kels_with_keri_aid() -> None:
    for name in ("init", "oobi-witness", "oobi-controller"):
        for x in step(name)["exchanges"]:
            aid = x["request"]["target"].split("/")[2]
            resp = x["response"]
            assert resp["status"] == 200
            assert header(resp["headers"], "Content-Type") == "application/json+cesr"
            assert header(resp["headers"], "Keri-Aid") == aid
            assert resp["body"].startswith('{"v":"KERI10JSON')
            assert '"r":"/loc/scheme"' in resp["body"]


def test_error_statuses() -> None:
    got = [(x["request"]["method"], x["request"]["target"].split("?")[0].split("/")[1],
            x["response"]["status"]) for x in step("errors")["exchanges"]]
    assert got[:5] == [
        ("POST", "", 406),  # application/json
        ("POST", "", 412),  # no CESR-ATTACHMENT
        ("POST", "", 400),  # not JSON
        ("POST", "", 406),  # application/cesr: keripy 1.3.6 takes only application/cesr+json
        ("GET", "oobi", 404),  # an identifier the witness does not know
    ]


@pytest.mark.slow
def test_capture_tool_regenerates_every_step(tmp_path: Path, keripy_env: Any) -> None:
    """The tool itself, against real keripy witnesses and kli (about 25 s)."""
    tool = load_tool("keripy_http_capture")
    assert tool.main(["--out", str(tmp_path)]) == 0
    for name in STEPS:
        fresh = json.loads((tmp_path / f"{name}.json").read_text())
        assert fresh["exchanges"], name
        assert fresh["witnesses"] == step(name)["witnesses"]  # fixed salts, same prefixes


def test_kli_fixture_is_keripy_1_3_6(kli: Path) -> None:
    done = subprocess.run([str(kli), "version"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "1.3.6" in done.stdout

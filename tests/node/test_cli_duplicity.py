"""`dkms governance roster ...`, `dkms evidence ...` and `dkms keystate` against watchers.

Evidence is made offline first (a local KEL, two interactions signed at one sn); then a
network of 4 witnesses and 2 watchers runs in-process on 127.0.0.1, governed by an
identifier of a `--home`, and every command runs through `amain(argv)` / `main(argv)`.
"""

from __future__ import annotations

import base64
import io
import json
import sys
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import cbor2
import pytest
import trio

from dkms.node.cli.main import amain, main
from dkms.node.client.home import Options
from dkms.node.client.keystore import MINIMUM
from dkms.node.roles.controller import Controller, RetryPolicy
from dkms.node.roles.governance import read_bundle
from dkms.node.testing.localnet import LocalNet, local_network
from dkms.protocol.crypto import Signer
from dkms.protocol.envelope import Signed
from dkms.protocol.events import interact
from dkms.protocol.ruling import Ruling
from dkms.protocol.stream import Attachments, Message, messagize, parse_stream
from dkms.protocol.validator import Validator

from .test_duplicity_network import full_kel_at, seed
from .test_idcmd import one_error_line

PASS = "correct horse battery staple"
Capture = pytest.CaptureFixture[str]


def _no_prompt(prompt: str) -> str:
    raise AssertionError(f"unexpected passphrase prompt {prompt!r}")


OPTIONS = Options(cost=MINIMUM, retry=RetryPolicy(first=0.05, cap=0.1, attempts=2), ask=_no_prompt)


def make_evidence() -> tuple[str, bytes]:
    """A local identifier that signed two interactions at sn 1: (prefix, evidence CBOR)."""
    ctl = Controller()
    ctl.incept("eve", [seed(50)], [seed(51)], now=0.0)
    ident = ctl.identity("eve")
    messages = []
    for anchor in ("pay bob", "pay mallory"):
        event = interact(ident.prefix, prior=ident.last_said, sn=1, anchors=[{"d": anchor}])
        sigs = tuple(s.sign_indexed(event.raw, i) for i, s in enumerate(ident.signers))
        messages.append(messagize(event, Attachments(sigs=sigs)))
    validator = Validator()
    evidence = []
    for frame in parse_stream(ctl.export("eve") + b"".join(messages)):
        assert isinstance(frame, Message)
        evidence += [o.evidence for o in validator.process(frame, 0.0) if o.evidence]
    assert len(evidence) == 1
    return ident.prefix, evidence[0].to_cbor()


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


def verify_file(path: Path, capsys: Capture) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(["evidence", "verify", str(path)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_evidence_verify_offline(tmp_path: Path, capsys: Capture) -> None:
    prefix, body = make_evidence()
    juror = Signer(seed(60), transferable=False)
    envelope = Signed.make(juror, body)
    ruling = Signed.make(juror, Ruling.on(body).to_cbor())
    files = {
        "raw": body,
        "envelope": envelope.to_cbor(),
        "ruling": ruling.to_cbor(),
        "bad-sig": Signed(envelope.signer, body, flip(envelope.signature, 5)).to_cbor(),
        "bad-ruling": Signed(ruling.signer, ruling.body, flip(ruling.signature, 0)).to_cbor(),
        "garbage": b"\xff\x00 no CBOR at all \x01\x02",
        "other-cbor": cbor2.dumps({"t": "something/else"}),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)

    status, out, _ = verify_file(tmp_path / "raw", capsys)
    assert status == 0
    assert "valid evidence" in out and f"the controller of {prefix} signed two" in out
    status, out, _ = verify_file(tmp_path / "envelope", capsys)
    assert status == 0 and f"(signed by {juror.verfer})" in out
    status, out, _ = verify_file(tmp_path / "ruling", capsys)
    assert status == 0
    assert f"valid ruling: judge {juror.verfer} ruled controller {prefix} duplicitous" in out

    for name in ("bad-sig", "bad-ruling"):
        status, out, err = verify_file(tmp_path / name, capsys)
        assert status == 1
        assert f"INVALID: the signature of {juror.verfer} does not verify" in out
        assert err == "dkms: 1 of 1 do not verify\n"

    # A signature inside the evidence itself (the second event's) altered.
    evidence = cbor2.loads(body)
    evidence["b"] = flip(evidence["b"], len(evidence["b"]) - 10)
    (tmp_path / "bad-evidence").write_bytes(cbor2.dumps(evidence))
    status, out, _ = verify_file(tmp_path / "bad-evidence", capsys)
    assert status == 1 and "INVALID: " in out

    for name, why in (("garbage", "is not evidence, an envelope or JSON"), ("other-cbor", "else")):
        capsys.readouterr()
        assert main(["evidence", "verify", str(tmp_path / name)]) == 1
        assert why in one_error_line(capsys)
    assert main(["evidence", "verify", str(tmp_path / "missing")]) == 1
    assert "cannot read" in one_error_line(capsys)
    assert main(["evidence", "verify"]) == 2


def test_evidence_verify_json_and_stdin(
    tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix, body = make_evidence()
    envelope = Signed.make(Signer(seed(61), transferable=False), body).to_cbor()
    item = {"kind": "controller", "accused": prefix, "i": prefix, "s": 1}
    listing = {
        "watcher": "B-test",
        "evidence": [item | {"cbor": base64.b64encode(envelope).decode()}],
        "rulings": [],
    }
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(json.dumps(listing).encode())))
    assert main(["evidence", "verify", "-"]) == 0
    assert "evidence 1: valid evidence" in capsys.readouterr().out

    # A summary edited to accuse someone else is caught; so is a cbor field that is no base64.
    listing["evidence"] = [
        item | {"accused": "Esomeone-else", "cbor": base64.b64encode(envelope).decode()},
        item | {"cbor": "@@@"},
    ]
    (tmp_path / "edited.json").write_text(json.dumps(listing))
    status, out, err = verify_file(tmp_path / "edited.json", capsys)
    assert status == 1 and err == "dkms: 2 of 2 do not verify\n"
    assert "evidence 1: INVALID: its summary says accused Esomeone-else" in out
    assert "evidence 2: INVALID: its cbor field is not base64" in out

    (tmp_path / "empty.json").write_text('{"evidence": [], "rulings": []}')
    assert verify_file(tmp_path / "empty.json", capsys)[0] == 0
    (tmp_path / "broken.json").write_text('{"evidence": [')
    assert main(["evidence", "verify", str(tmp_path / "broken.json")]) == 1
    assert "is not JSON" in one_error_line(capsys)


def test_roster_create_usage_errors(tmp_path: Path, capsys: Capture) -> None:
    node = Signer(seed(62), transferable=False).verfer
    base = ["--home", str(tmp_path), "governance", "roster", "create", "gov"]
    transferable = Signer(seed(63)).verfer
    for bad in ("Bshort", transferable, node[:-1] + "!"):
        assert main([*base, "--watcher", bad, "--out", str(tmp_path / "r")]) == 2
        assert "is not a node prefix" in capsys.readouterr().err
    assert main([*base, "--watcher", node]) == 2
    assert "--publish-to PREFIX@MULTIADDR, --out FILE, or both" in one_error_line(capsys)
    assert main([*base, "--out", str(tmp_path / "r")]) == 2  # --watcher is required
    capsys.readouterr()
    assert main([*base, "--watcher", node, "--out", str(tmp_path / "r")], OPTIONS) == 1
    assert "no identifier named 'gov'" in one_error_line(capsys)


# ---------------------------------------------------------------- against a network


def governed_network(tmp_path: Path, governance: str) -> AbstractAsyncContextManager[LocalNet]:
    """4 witnesses and 2 watchers of `governance`, which has published no roster yet."""
    return local_network(tmp_path, governance=governance)


@pytest.mark.slow
async def test_rosters_standing_and_evidence_through_the_cli(
    tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DKMS_PASSPHRASE", PASS)
    home = tmp_path / "home"

    async def dkms(*argv: str) -> int:
        return await amain(["--home", str(home), *argv], OPTIONS)

    async def as_json(*argv: str) -> Any:
        capsys.readouterr()
        assert await dkms(*argv, "--json") == 0, capsys.readouterr().err
        return json.loads(capsys.readouterr().out)

    with trio.fail_after(60):
        assert await dkms("id", "create", "gov", "--toad", "0") == 0
        governance = (await as_json("id", "show", "gov"))["prefix"]
        async with governed_network(tmp_path, governance) as net:
            v = [h.prefix for h in net.watchers]
            vi = [h.introduction for h in net.watchers]
            roles = ["--watcher", *v, "--juror", *v, "--judge", v[0]]

            # Epoch 1: written to a file and handed to both watchers.
            bundle_file = tmp_path / "roster.cbor"
            capsys.readouterr()
            create = ["governance", "roster", "create", "gov", *roles]
            assert await dkms(*create, "--publish-to", *vi, "--out", str(bundle_file)) == 0
            out = capsys.readouterr().out
            assert "roster epoch 1 of governance gov" in out
            for prefix in v:
                assert f"{prefix}: accepted (in force there: epoch 1)" in out
            _, signed = read_bundle(bundle_file.read_bytes())
            assert signed.roster.epoch == 1 and signed.roster.judges == (v[0],)
            assert net.watcher(1).governance.epoch == 1

            shown = await as_json("governance", "roster", "show", "--from", vi[0])
            assert shown == {
                "governance": governance,
                "governance_sn": 0,
                "epoch": 1,
                "watchers": v,
                "jurors": v,
                "judges": [v[0]],
                "verified": True,
            }

            # Epoch 2 by default: the home remembers epoch 1. A witness keeps it too.
            witness = net.witnesses[0].introduction
            capsys.readouterr()
            assert await dkms(*create, "--publish-to", witness, *vi, "--timeout", "5") == 0
            out = capsys.readouterr().out
            assert "roster epoch 2 of governance gov" in out
            assert f"{net.witnesses[0].prefix}: accepted (in force there: epoch 2)" in out
            assert f"{v[0]}: accepted (in force there: epoch 2)" in out
            assert json.loads((home / "governance" / "gov.json").read_text()) == {
                "prefix": governance,
                "epoch": 2,
            }
            capsys.readouterr()
            assert await dkms("governance", "roster", "show", "--from", vi[1]) == 0
            out = capsys.readouterr().out
            assert "epoch      2" in out and "verified: signed by the keys" in out
            other = ["governance", "roster", "show", "--from", vi[1], "--governance", "Eother"]
            assert await dkms(*other) == 1
            assert "not Eother" in one_error_line(capsys)
            assert await dkms("governance", "roster", "show", "--from", witness) == 0
            assert "epoch      2" in capsys.readouterr().out
            other = ["governance", "roster", "show", "--from", witness, "--governance", "Eother"]
            assert await dkms(*other) == 1
            assert "no roster of governance Eother held here" in one_error_line(capsys)
            assert await dkms("evidence", "list", "--from", witness) == 1
            assert "only watchers hold evidence" in one_error_line(capsys)
            assert await dkms(*create, "--epoch", "1", "--publish-to", vi[0]) == 1
            assert f"{v[0]}: ignored (it keeps epoch 2 of governance {governance}" in (
                capsys.readouterr().out
            )

            # An honest identifier: standing ok.
            alice = await net.incept("alice", (seed(1), seed(2)))
            await net.until(lambda: all(full_kel_at(net, i, alice, 0) for i in (0, 1)))
            capsys.readouterr()
            assert await dkms("keystate", alice, "--from", vi[0]) == 0
            out = capsys.readouterr().out
            assert "verified: the KEL it serves" in out and "standing: ok" in out
            assert "evidence: 0, rulings: 0" in out
            state = await as_json("keystate", alice, "--from", vi[1])
            assert (state["standing"], state["duplicitous_from"]) == ("ok", None)
            assert state["verified"] and state["evidence"] == state["rulings"] == []
            unknown = await as_json("keystate", "Eunknown", "--from", vi[0])
            assert unknown["standing"] == "unknown" and "d" not in unknown
            capsys.readouterr()
            assert await dkms("keystate", "Eunknown", "--from", vi[0]) == 0
            assert "standing: unknown" in capsys.readouterr().out
            # Several identifiers in one command: one JSON line each, in the order asked.
            assert await dkms("keystate", "Eunknown", alice, "--from", vi[0], "--json") == 0
            lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
            assert [line["standing"] for line in lines] == ["unknown", "ok"]
            assert "d" not in lines[0] and lines[1]["verified"] and lines[1]["sn"] == 0

            # A controller splits its witnesses between two versions of sn 1.
            mallory = await net.incept("mallory", (seed(10), seed(11)))
            await net.until(lambda: all(full_kel_at(net, i, mallory, 0) for i in (0, 1)))
            a, msg_a = net.signed_ixn("mallory", [{"d": "pay bob"}])
            b, msg_b = net.signed_ixn("mallory", [{"d": "pay eve"}])
            async with trio.open_nursery() as nursery:
                for witness_no, message in ((0, msg_a), (1, msg_a), (2, msg_b), (3, msg_b)):
                    nursery.start_soon(net.submit, witness_no, message)
            await net.until(lambda: bool(net.watcher(1).holdings.rulings))

            held = await as_json("evidence", "list", "--from", vi[1], "--prefix", mallory)
            assert held["watcher"] == v[1]
            assert held["evidence"] and len(held["rulings"]) == 1
            for item in held["evidence"] + held["rulings"]:
                assert (item["kind"], item["accused"], item["i"], item["s"]) == (
                    "controller",
                    mallory,
                    mallory,
                    1,
                )
                assert set(item["events"]) == {a.said, b.said} and item["verified"]
            assert held["rulings"][0]["signer"] == v[0]
            listing = tmp_path / "held.json"
            listing.write_text(json.dumps(held))
            status, out, _ = verify_file(listing, capsys)
            assert status == 0
            assert f"rulings 1: valid ruling: judge {v[0]} ruled controller {mallory}" in out
            assert "INVALID" not in out

            capsys.readouterr()
            assert await dkms("evidence", "list", "--from", vi[0]) == 0
            out = capsys.readouterr().out
            assert "ruling 1, signed by " + v[0] in out
            assert f"the controller of {mallory} signed two different events" in out

            state = await as_json("keystate", mallory, "--from", vi[0])
            assert (state["standing"], state["duplicitous_from"]) == ("duplicitous", 1)
            assert state["rulings"][0]["signer"] == v[0]
            capsys.readouterr()
            assert await dkms("keystate", mallory, "--from", vi[0]) == 0
            out = capsys.readouterr().out
            assert "standing: duplicitous" in out and "duplicitous from sn 1" in out

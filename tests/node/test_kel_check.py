"""`dkms kel check` with real nodes: libp2p hosts on 127.0.0.1, SQLite stores.

4 witnesses (bt = 3) and 2 rostered watchers (`test_duplicity_network.network`; both are
jurors). Version a of sn 1 is fully witnessed and gossiped. Then three colluding witnesses
receipt version b of sn 1 with their own keys, outside any witness role: b never reaches a
witness's store or the gossip, and no watcher hears of it. An application shown the KEL with
b runs `dkms kel check` (its main function, in this process): the answer is `duplicitous`,
status 3, with evidence that `dkms evidence verify` accepts, and afterwards every rostered
watcher holds the evidence, even one the application never asked. A recovery rotation that
supersedes an interaction raises no alarm.
"""

from __future__ import annotations

import base64
import io
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio

from dkms.node.cli.evidence import check_envelope
from dkms.node.cli.main import amain, main
from dkms.node.client.home import CommandError
from dkms.node.client.kelcheck import ERROR, Checked, Exit, prepare, status
from dkms.node.roles.controller import Controller
from dkms.node.roles.pages import page_message
from dkms.node.secretfiles import load_or_create_node_seed
from dkms.node.testing.keys import seed
from dkms.protocol.cesr import IndexedSig
from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.events import Event, interact, rotate
from dkms.protocol.evidence import Accusation, parse_evidence, verify_evidence
from dkms.protocol.stream import Attachments, messagize

from .test_cli_duplicity import OPTIONS
from .test_duplicity_network import Net, incept_and_interact, network

Capture = pytest.CaptureFixture[str]


def served(net: Net, prefix: str, end: int | None = None) -> bytes:
    """The KEL as watcher 0 serves it (`dkms kel export --from`): events with their receipts
    (all four, once `full_kel_at`; a witness may still wait for its co-witnesses')."""
    kel = net.watcher(0).validator.kel(prefix)
    assert kel is not None
    return b"".join(page_message(r) for r in kel.chain[:end])


def colluded(net: Net, tmp_path: Path, event: Event, signers: list[Signer], who: range) -> bytes:
    """`event` signed by `signers`, with receipts that the witnesses numbered `who` make with
    their own keys (read from their data directories), as no witness role would."""
    sigs = tuple(s.sign_indexed(event.raw, i) for i, s in enumerate(signers))
    wigs = []
    for i in who:
        key = Signer(load_or_create_node_seed(tmp_path / f"w{i}"), transferable=False)
        assert key.verfer == net.w[i]
        wigs.append(IndexedSig(i, None, key.sign_raw(event.raw)))
    return messagize(event, Attachments(sigs=sigs, wigs=tuple(wigs)))


async def kel_check(
    capsys: Capture, path: Path, net: Net, watchers: list[int], *extra: str
) -> tuple[int, list[dict[str, Any]]]:
    """`dkms kel check PATH --with ... --json`: its status and its JSON objects."""
    intros = [net.watchers[i].introduction for i in watchers]
    capsys.readouterr()
    argv = ["kel", "check", str(path), "--with", *intros, "--json", "--timeout", "10", *extra]
    status = await amain(argv, OPTIONS)
    out = capsys.readouterr().out
    return status, [json.loads(line) for line in out.splitlines()]


def agree(net: Net, i: int, prefix: str) -> int:
    """How many of the roster's watchers watcher `i` knows to hold its state of `prefix`."""
    found: int = net.watcher(i).views.agreement(prefix)["agree"]
    return found


def proven(answer: dict[str, Any]) -> list[Accusation]:
    """What a JSON answer's evidence proves, checked again here from its CBOR."""
    return [
        verify_evidence(parse_evidence(base64.b64decode(e["cbor"]))) for e in answer["evidence"]
    ]


async def held_evidence(net: Net, i: int, prefix: str) -> list[Accusation]:
    """What the evidence watcher `i` lists about `prefix` proves (as held: a juror's signed
    evidence, or a judge's ruling that carries it), checked here."""
    held = await net.ask(net.watchers[i].prefix, {"t": "evidence", "i": prefix})
    return [check_envelope(envelope).accusation for envelope in held["evidence"]]


async def hidden_fork(net: Net, tmp_path: Path) -> tuple[str, Event, Event, Path]:
    """mallory with a (sn 1) witnessed and gossiped, and the file of the KEL with b instead,
    receipted by witnesses 0, 1 and 2 out of sight: (prefix, a, b, file)."""
    ctl = net.client.controller
    prefix = await incept_and_interact(net, "mallory", 10, "pay bob")
    kel = net.witness_role(net.w[0]).validator.kel(prefix)
    assert kel is not None
    a = kel.chain[1].event
    b = interact(prefix, prior=kel.chain[0].event.said, sn=1, anchors=[{"d": "pay eve"}])
    fork = served(net, prefix, end=1) + colluded(
        net, tmp_path, b, ctl.identity("mallory").signers, range(3)
    )
    path = tmp_path / "shown.cesr"
    path.write_bytes(fork)
    return prefix, a, b, path


async def test_a_fork_kept_off_the_gossip_is_duplicitous_and_every_watcher_holds_it(
    tmp_path: Path, capsys: Capture
) -> None:
    with trio.fail_after(60):
        async with network(tmp_path) as net:
            prefix, a, b, path = await hidden_fork(net, tmp_path)
            for i in (0, 1):  # nothing told the watchers of b
                assert (await net.state(i, prefix))["standing"] == "ok"
            assert all(net.witness_role(w).validator.record(b.said) is None for w in net.w)
            status, answers = await kel_check(capsys, path, net, [0, 1])
            assert status == 3
            assert [x["watcher"] for x in answers] == [h.prefix for h in net.watchers]
            for answer in answers:
                assert answer["verdict"] == "duplicitous" and answer["at"] == 1, answer
                assert answer["i"] == prefix and answer["events"] == 2
                controller = [p for p in proven(answer) if p.kind == "controller"]
                assert controller and all(set(p.saids) == {a.said, b.said} for p in controller)
                colluders = {p.accused for p in proven(answer) if p.kind == "witness"}
                assert colluders == set(net.w[:3])
                assert all(e["verified"] for e in answer["evidence"])
            # The JSON is what `dkms evidence verify` reads: it checks the evidence offline.
            (tmp_path / "answer.json").write_text(json.dumps(answers[0]))
            capsys.readouterr()
            assert main(["evidence", "verify", str(tmp_path / "answer.json")]) == 0
            out = capsys.readouterr().out
            assert f"the controller of {prefix} signed two different events" in out
            assert "INVALID" not in out
            # Every rostered watcher holds the evidence now.
            for i in (0, 1):
                held = await held_evidence(net, i, prefix)
                assert any(
                    p.kind == "controller" and set(p.saids) == {a.said, b.said} for p in held
                )
                state = await net.state(i, prefix)
                assert state["standing"] == "duplicitous" and state["duplicitous_from"] == 1
            # The text form: one line per watcher.
            capsys.readouterr()
            intros = [h.introduction for h in net.watchers]
            assert await amain(["kel", "check", str(path), "--with", *intros], OPTIONS) == 3
            lines = capsys.readouterr().out.splitlines()
            assert len(lines) == 2
            assert all("duplicitous" in line and "evidence verify" in line for line in lines)


async def test_a_watcher_never_asked_holds_the_evidence_through_its_publication(
    tmp_path: Path, capsys: Capture
) -> None:
    with trio.fail_after(60):
        async with network(tmp_path) as net:
            prefix, a, b, path = await hidden_fork(net, tmp_path)
            status, [answer] = await kel_check(capsys, path, net, [0])
            assert status == 3 and answer["verdict"] == "duplicitous"

            def holds(i: int) -> bool:
                return net.watcher(i).holdings.standing(prefix, True)[0] == "duplicitous"

            await net.until(lambda: holds(1), on=[1])
            held = await held_evidence(net, 1, prefix)
            assert any(p.kind == "controller" and set(p.saids) == {a.said, b.said} for p in held)
            signers = {h.envelope.signer for h in net.watcher(1).holdings.evidence.values()}
            assert net.watchers[0].prefix in signers  # published by the watcher asked
            assert net.watcher(1).validator.record(b.said) is None  # it never heard b itself


async def test_recovery_consistent_behind_and_errors(
    tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(60):
        async with network(tmp_path) as net:
            prefix = await incept_and_interact(net, "rita", 20, "maybe stolen")
            # The key state says how many of the roster's watchers hold it (their tips,
            # exchanged every second while they move).
            await net.until(lambda: all(agree(net, i, prefix) == 2 for i in (0, 1)))
            capsys.readouterr()
            intro = net.watchers[0].introduction
            assert await amain(["keystate", prefix, "--from", intro, "--json"], OPTIONS) == 0
            state = json.loads(capsys.readouterr().out)
            assert state["agreement"]["roster"] == 2 and state["agreement"]["agree"] == 2
            [view] = state["agreement"]["views"]
            assert view == {
                "watcher": net.watchers[1].prefix,
                "view": "agree",
                "sn": 1,
                "d": state["d"],
            }
            assert await amain(["keystate", prefix, "--from", intro], OPTIONS) == 0
            assert "agreement: 2 of 2 watcher(s) of the roster hold this state" in (
                capsys.readouterr().out
            )
            stale = tmp_path / "stale.cesr"
            stale.write_bytes(served(net, prefix))
            status, answers = await kel_check(capsys, stale, net, [0, 1])
            assert status == 0 and {x["verdict"] for x in answers} == {"consistent"}
            # Behind: the watchers hold a later event than the file.
            short = tmp_path / "short.cesr"
            short.write_bytes(served(net, prefix, end=1))
            status, answers = await kel_check(capsys, short, net, [0, 1])
            assert status == 4 and {x["verdict"] for x in answers} == {"behind"}
            # A recovery rotation supersedes the interaction.
            nxt = Signer(seed(21))
            kel = net.witness_role(net.w[0]).validator.kel(prefix)
            assert kel is not None
            recovery = rotate(
                prefix,
                keys=[nxt.verfer],
                prior=kel.chain[0].event.said,
                sn=1,
                next_digests=[next_key_digest(Signer(seed(22)).verfer)],
                witnesses=net.w,
                toad=3,
            )
            message = messagize(recovery, Attachments(sigs=(nxt.sign_indexed(recovery.raw, 0),)))
            async with trio.open_nursery() as nursery:
                for witness in range(4):
                    nursery.start_soon(net.submit, witness, message)

            def recovered(i: int) -> bool:
                kel = net.watcher(i).validator.kel(prefix)
                return kel is not None and kel.last.event.said == recovery.said

            await net.until(lambda: recovered(0) and recovered(1))
            fixed = tmp_path / "recovered.cesr"
            fixed.write_bytes(served(net, prefix))
            status, answers = await kel_check(capsys, fixed, net, [0, 1])
            assert status == 0 and {x["verdict"] for x in answers} == {"consistent"}
            # The same, one event a piece (as a KEL too long for one request is sent).
            argv = ["kel", "check", str(fixed), "--with", net.watchers[1].introduction, "--json"]
            capsys.readouterr()
            assert await amain(argv, replace(OPTIONS, chunk=1)) == 0
            assert json.loads(capsys.readouterr().out)["matched"] == 2
            # From standard input.
            stdin = io.TextIOWrapper(io.BytesIO(fixed.read_bytes()))
            monkeypatch.setattr(sys, "stdin", stdin)
            argv = ["kel", "check", "-", "--with", net.watchers[0].introduction]
            assert await amain(argv, OPTIONS) == 0
            assert f"{net.watchers[0].prefix}: consistent" in capsys.readouterr().out
            # The KEL shown before the recovery: superseded, behind, no alarm.
            status, answers = await kel_check(capsys, stale, net, [0, 1])
            assert status == 4
            for answer in answers:
                assert answer["verdict"] == "behind" and answer["standing"] == "ok"
                assert "supersedes it (a recovery)" in answer["reason"]
                assert answer["evidence"] == []
            for i in (0, 1):
                assert net.watcher(i).holdings.evidence == {}
            # Errors: a file that does not validate, a watcher that is no watcher.
            broken = tmp_path / "broken.cesr"
            broken.write_bytes(fixed.read_bytes()[:-20])
            capsys.readouterr()
            assert await amain(["kel", "check", str(broken), "--with", intro], OPTIONS) == 1
            assert "broken.cesr" in capsys.readouterr().err
            witness = net.witnesses[0].introduction
            status, answers = await kel_check(capsys, fixed, net, [0], "--with", witness)
            assert status == 1
            assert [x["verdict"] for x in answers] == ["consistent", "error"]
            assert "refused" in answers[1]["reason"], answers[1]


def test_prepare_validates_the_file_first_and_cuts_it_in_pieces() -> None:
    ctl = Controller()
    ctl.incept("ann", [seed(60)], [seed(61)], now=0.0)
    for n in range(3):
        ctl.interact("ann", [{"n": n}], now=0.0)
    kel = ctl.export("ann")
    shown = prepare(kel)
    assert (shown.prefix, shown.sn, shown.events) == (ctl.identity("ann").prefix, 3, 4)
    assert [start for start, _ in shown.pieces] == [0]
    assert [start for start, _ in prepare(kel, budget=1).pieces] == [0, 1, 2, 3]
    ctl.incept("bo", [seed(62)], [seed(63)], now=0.0)
    both = kel + ctl.export("bo")
    assert prepare(both, ctl.identity("bo").prefix).sn == 0
    ident = ctl.identity("ann")
    other = interact(ident.prefix, prior=ident.last_said, sn=3, anchors=[{"d": "fork"}])
    fork = messagize(other, Attachments(sigs=(ident.signers[0].sign_indexed(other.raw, 0),)))
    for data, why in (
        (b"garbage", "not a readable KEL"),
        (b"", "no identifier's inception"),
        (both, "holds 2 identifiers: name the one to check with --prefix"),
        (kel + fork, "it holds two versions of sn 3 itself"),
    ):
        with pytest.raises(CommandError, match=why):
            prepare(data)
    with pytest.raises(CommandError, match="no KEL of Enobody"):
        prepare(kel, "Enobody")


def test_the_exit_status_a_script_reads() -> None:
    def of(*verdicts: str) -> Exit:
        return status([Checked(f"B{n}", verdict=v) for n, v in enumerate(verdicts)])

    assert of("consistent", "consistent") == 0
    assert of("consistent", "behind") == of("ahead") == 4
    assert of("consistent", ERROR) == of("invalid", "ahead") == of() == 1
    assert of("duplicitous", ERROR) == of("consistent", "duplicitous") == 3

"""`dkms kel verify` on files of repeated messages, and `dkms kel submit` event by event.

Verify runs offline on KELs built here with real signatures; submit runs against real
witnesses on 127.0.0.1 (`test_idcmd.witnesses`: in-process nodes, SQLite stores) through
`amain(argv)`, as the command line runs it.
"""

from __future__ import annotations

import collections
import gc
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio

from dkms.node.cli.kelverify import collector_paused
from dkms.node.cli.main import amain, main
from dkms.node.cli.submitted import NOT_OURS, Plan, Submitted
from dkms.node.roles.codes import Code
from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.events import Event, incept, interact, receipt, rotate
from dkms.protocol.stream import Attachments, messagize, parse_stream

from .test_idcmd import OPTIONS, one_error_line, witnesses

VECTORS = Path(__file__).parents[1] / "vectors" / "keri-v1"
Capture = pytest.CaptureFixture[str]


def signer(n: int) -> Signer:
    return Signer(bytes([n]) * 32)


class Kel:
    """A KEL built here: messages by name, each signed by the keys in force."""

    def __init__(self, keys: int = 1, witnesses: Sequence[str] = ()) -> None:
        self.current = [signer(10 + i) for i in range(keys)]
        self.next = [signer(20 + i) for i in range(keys)]
        self.icp = incept(
            [s.verfer for s in self.current],
            kt=keys,
            next_digests=[next_key_digest(s.verfer) for s in self.next],
            witnesses=witnesses,
        )
        self.prefix = self.icp.prefix

    def sign(self, event: Event, signers: list[Signer] | None = None) -> bytes:
        chosen = self.current if signers is None else signers
        sigs = tuple(s.sign_indexed(event.raw, self.current.index(s)) for s in chosen)
        return messagize(event, Attachments(sigs=sigs))

    def ixn(self, prior: Event, sn: int, anchor: str = "") -> Event:
        return interact(self.prefix, prior=prior.said, sn=sn, anchors=[{"d": anchor or str(sn)}])

    def rot(self, prior: Event, sn: int, **witnessing: Any) -> Event:
        """A rotation to the next keys; `witnessing`: `rotate`'s witnesses, adds, toad."""
        self.current, self.next = self.next, [signer(30 + sn)]
        return rotate(
            self.prefix,
            [s.verfer for s in self.current],
            prior=prior.said,
            sn=sn,
            next_digests=[next_key_digest(s.verfer) for s in self.next],
            **witnessing,
        )


def verify(capsys: Capture, path: Path) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["kel", "verify", "--json", str(path)]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


def statuses(report: dict[str, Any]) -> list[str]:
    return [m["status"] for m in report["messages"]]


# ---------------------------------------------------------------- kel verify: repeats


def test_a_kel_repeated_is_accepted_once_and_known_after(tmp_path: Path, capsys: Capture) -> None:
    kel = Kel()
    icp = kel.icp
    one = kel.sign(icp)
    ixn1 = kel.ixn(icp, 1)
    two = kel.sign(ixn1)
    rot = kel.rot(ixn1, 2)
    three = kel.sign(rot)
    four = kel.sign(kel.ixn(rot, 3))
    messages = [one, two, three, four]
    path = tmp_path / "thrice.cesr"
    path.write_bytes(b"".join(messages * 3))

    report = verify(capsys, path)
    assert statuses(report) == ["accepted"] * 4 + ["known"] * 8
    assert report["duplicity"] == [] and report["error"] is None
    assert report["identifiers"][kel.prefix]["sn"] == 3
    # Each repeat names the accepted message it repeats.
    offsets = [m["offset"] for m in report["messages"]]
    for n, message in enumerate(report["messages"][4:]):
        assert message["d"] == report["messages"][n % 4]["d"]
        assert message["reason"].endswith(f"a repeat of the message at offset {offsets[n % 4]}")

    # One event many times over: the same.
    path.write_bytes(one + two * 500)
    report = verify(capsys, path)
    assert statuses(report) == ["accepted"] * 2 + ["known"] * 499


def test_a_rival_version_among_repeats_is_duplicity(tmp_path: Path, capsys: Capture) -> None:
    kel = Kel()
    ixn1 = kel.ixn(kel.icp, 1, "pay bob")
    rival = kel.ixn(kel.icp, 1, "pay mallory")
    good, bad = kel.sign(ixn1), kel.sign(rival)
    path = tmp_path / "rival.cesr"
    path.write_bytes(kel.sign(kel.icp) + good + good + bad + good + bad)

    report = verify(capsys, path)
    assert statuses(report) == [
        "accepted", "accepted", "known", "duplicitous", "known", "duplicitous"
    ]  # fmt: skip
    (evidence,) = report["duplicity"]  # the same pair, reported once
    assert evidence["s"] == 1
    assert [e["d"] for e in evidence["events"]] == [ixn1.said, rival.said]

    capsys.readouterr()
    assert main(["kel", "verify", str(path)]) == 0
    text = capsys.readouterr().out
    assert text.count("DUPLICITY") == 1
    assert text.count(" known ") == 2 and text.count(" duplicitous ") == 2


def test_copies_escrowed_together_are_accepted_together(tmp_path: Path, capsys: Capture) -> None:
    # Two keys, threshold 2: each of the first two copies brings one signature, and both
    # are accepted once the second arrives; a full copy after that is a repeat.
    kel = Kel(keys=2)
    ixn1 = kel.ixn(kel.icp, 1)
    a, b = kel.current
    path = tmp_path / "multisig.cesr"
    path.write_bytes(kel.sign(kel.icp) + kel.sign(ixn1, [a]) + kel.sign(ixn1, [b]) + kel.sign(ixn1))
    report = verify(capsys, path)
    assert statuses(report) == ["accepted", "accepted", "accepted", "known"]
    assert report["messages"][3]["reason"].endswith(f"at offset {report['messages'][1]['offset']}")

    # An event repeated before its inception waits, every copy with it, then is accepted.
    ixn2 = kel.sign(kel.ixn(ixn1, 2))
    path.write_bytes(ixn2 * 3 + kel.sign(kel.icp) + kel.sign(ixn1) + ixn2)
    report = verify(capsys, path)
    assert statuses(report) == ["accepted"] * 5 + ["known"]


def test_a_recovery_supersedes_every_copy(tmp_path: Path, capsys: Capture) -> None:
    kel = Kel()
    icp = kel.sign(kel.icp)
    ixn1 = kel.ixn(kel.icp, 1)
    first = kel.sign(ixn1)
    recovery = kel.rot(kel.icp, 1)  # rotation at sn 1: replaces the interaction
    path = tmp_path / "recovered.cesr"
    path.write_bytes(icp + first + first + kel.sign(recovery) + first)

    report = verify(capsys, path)
    assert statuses(report) == ["accepted", "superseded", "superseded", "accepted", "superseded"]
    assert report["identifiers"][kel.prefix]["d"] == recovery.said


@pytest.mark.parametrize("name", ["witnessed", "out_of_order", "delegation", "multisig"])
def test_a_vector_file_twice(name: str, tmp_path: Path, capsys: Capture) -> None:
    # keripy's vectors, receipts and escrows included: the first copy ends as it does read
    # alone (all accepted).
    data = (VECTORS / "cbor" / f"{name}.cesr").read_bytes()
    path = tmp_path / "twice.cesr"
    path.write_bytes(data + data)
    report = verify(capsys, path)
    half = len(report["messages"]) // 2
    assert set(statuses(report)[:half]) == {"accepted"}
    # Events and receipts again are repeats: they add nothing.
    assert set(statuses(report)[half:]) == {"known"}
    assert report["duplicity"] == []


def test_stdin_repeats(monkeypatch: pytest.MonkeyPatch, capsys: Capture) -> None:
    data = (VECTORS / "json" / "basic.cesr").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data * 2)))
    capsys.readouterr()
    assert main(["kel", "verify", "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    half = len(report["messages"]) // 2
    assert statuses(report) == ["accepted"] * half + ["known"] * half


# ---------------------------------------------------------------- kel submit


def witness_signer(seed: bytes) -> Signer:
    return Signer(seed, transferable=False)


def rct(event: Event, *signers: Signer) -> bytes:
    """A receipt message of `event` with a couple from each witness signer."""
    couples = tuple((s.verfer, s.sign_raw(event.raw)) for s in signers)
    return messagize(receipt(event.prefix, event.sn, event.said), Attachments(couples=couples))


def table_rows(out: str) -> list[list[str]]:
    """The rows of the submit table: WITNESS, SN, ILK, EVENT, then the RESULT text."""
    lines = [line for line in out.splitlines() if line and not line.startswith("receipts of")]
    assert lines[0].split()[:5] == ["WITNESS", "SN", "ILK", "EVENT", "RESULT"]
    return [line.split(maxsplit=4) for line in lines[1:]]


async def test_submit_reads_standard_input(
    tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(30):
        async with witnesses(tmp_path, 2) as hosts:
            intros, w = [h.introduction for h in hosts], [h.prefix for h in hosts]
            kel = Kel(witnesses=w)
            ixn1 = kel.ixn(kel.icp, 1)
            ixn2 = kel.ixn(ixn1, 2)
            data = kel.sign(kel.icp) + kel.sign(ixn1) + kel.sign(ixn2)
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
            capsys.readouterr()
            assert await amain(["kel", "submit", "-", "--to", *intros, "--json"], OPTIONS) == 0
            answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
            assert sorted(a["witness"] for a in answers) == sorted(w)
            saids = [kel.icp.said, ixn1.said, ixn2.said]
            for answer in answers:
                assert answer["ok"] and answer["reason"] == "" and answer["shared"] == "ok"
                assert [e["d"] for e in answer["events"]] == saids
                assert [(e["receipted"], e["result"]) for e in answer["events"]] == [
                    (True, "receipted")
                ] * 3

            # Nothing on standard input: one line, no traceback.
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
            assert await amain(["kel", "submit", "-", "--to", intros[0]], OPTIONS) == 1
            assert "- holds no key events" in one_error_line(capsys)


async def test_submit_shows_each_witness_reason_per_event(tmp_path: Path, capsys: Capture) -> None:
    seeds = [bytes([70 + i]) * 32 for i in range(2)]
    w0, w1 = (witness_signer(s) for s in seeds)
    # w0 witnesses from the inception; a rotation at sn 2 adds w1; the interaction at sn 3
    # is signed with a key that is not the identifier's, and sn 4 follows it.
    kel = Kel(witnesses=[w0.verfer])
    icp = kel.sign(kel.icp)
    ixn1 = kel.ixn(kel.icp, 1)
    ixn1_signed = kel.sign(ixn1)
    rot2 = kel.rot(ixn1, 2, adds=[w1.verfer], witnesses=[w0.verfer], toad=1)
    ixn3 = kel.ixn(rot2, 3)
    ixn4 = kel.ixn(ixn3, 4)
    forged = messagize(ixn3, Attachments(sigs=(signer(99).sign_indexed(ixn3.raw, 0),)))
    path = tmp_path / "kel.cesr"
    path.write_bytes(
        icp
        + rct(kel.icp, w0)
        + ixn1_signed
        + rct(ixn1, w0)
        + kel.sign(rot2)
        + forged
        + kel.sign(ixn4)
    )
    with trio.fail_after(40):
        async with witnesses(tmp_path, 2, seeds=seeds) as hosts:
            intros = [h.introduction for h in hosts]
            capsys.readouterr()
            assert await amain(["kel", "submit", str(path), "--to", *intros], OPTIONS) == 1
            captured = capsys.readouterr()
            assert "2 of 2 witnesses refused" in captured.err
            rows = table_rows(captured.out)
            by_witness: dict[str, list[str]] = collections.defaultdict(list)
            for witness, sn, _, _, result in rows:
                by_witness[witness].append(f"{sn} {result}")
            first, second = (by_witness[w.verfer[:12] + ".."] for w in (w0, w1))
            refused = first[3]
            assert refused.startswith("3 refused: ") and "signature" in refused, refused
            assert first == [
                "0 receipted",
                "1 receipted",
                "2 receipted",
                refused,
                "4 no receipt: it follows the refused sn 3",
            ]
            # w1 took sn 0 and 1 on w0's receipts without receipting them itself: passed
            # over, not refused; the refusal is about sn 3 alone.
            assert second == [
                "0 accepted, no receipt (not a designated witness at this sn)",
                "1 accepted, no receipt (not a designated witness at this sn)",
                "2 receipted",
                refused,
                "4 no receipt: it follows the refused sn 3",
            ]

            # One message a piece: sn 4 is never sent once sn 3 is refused. The JSON says
            # the same per event as the table, and the reason of the first refusal per witness.
            one_each = replace(OPTIONS, chunk=1)
            argv = ["kel", "submit", str(path), "--to", intros[1], "--json"]
            assert await amain(argv, one_each) == 1
            (answer,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
            assert not answer["ok"] and answer["reason"] == refused.removeprefix("3 refused: ")
            assert [(e["s"], e["result"], e["receipted"]) for e in answer["events"]] == [
                (0, "accepted", False),
                (1, "accepted", False),
                (2, "receipted", True),
                (3, "refused", False),
                (4, "unsent", False),
            ]
            assert answer["events"][4]["reason"] == "the witness refused sn 3"


def test_submitted_verdicts_for_every_kind_of_answer() -> None:
    # The attribution alone (cli.submitted), with answers made up: one message a piece.
    kel = Kel(witnesses=["B" + "w" * 43])
    events = [kel.icp]
    for sn in range(1, 6):
        events.append(kel.ixn(events[-1], sn))
    data = b"".join(kel.sign(e) for e in events)
    plan = Plan(data, parse_stream(data), budget=1)
    assert [(p.first, p.count) for p in plan.pieces] == [(i, 1) for i in range(6)]
    said = events[0].said

    def verdicts(*answers: tuple[Code, str]) -> list[str]:
        result = Submitted("B" + "w" * 43, receipts={said: b""})
        for n, (code, reason) in enumerate(answers):
            result.answered(n, code, reason, last=n == plan.last)
        return [v.text() for v in plan.verdicts(result)]

    unanswered = verdicts((Code.OK, ""), (Code.NOT_WITNESS, "no"), (Code.UNREACHABLE, "gone"))
    assert unanswered == [
        "receipted",
        f"accepted, no receipt ({NOT_OURS})",
        "no answer: gone",
        "not sent: the witness did not answer an earlier piece",
        "not sent: the witness did not answer an earlier piece",
        "not sent: the witness did not answer an earlier piece",
    ]
    assert verdicts((Code.OK, ""), (Code.MALFORMED, "unreadable submission: bad"))[1:3] == [
        "refused: unreadable submission: bad",
        "not sent: the witness refused an earlier piece",
    ]
    # A piece answered NOT_WITNESS fails the submission only as the last piece.
    result = Submitted("B" + "w" * 43)
    result.answered(0, Code.NOT_WITNESS, "not ours", last=False)
    result.answered(1, Code.OK, "", last=True)
    assert result.ok
    result.answered(2, Code.NOT_WITNESS, "not ours at sn 2", last=True)
    assert not result.ok and result.reason == "not ours at sn 2"
    # A file may end with receipts: the last piece that counts is the last with events.
    tail = data + rct(events[-1], witness_signer(b"\x05" * 32))
    assert Plan(tail, parse_stream(tail), budget=1).last == plan.last == 5

    # One piece refused for an event in its middle, summed up as for a long KEL.
    whole = Plan(data, parse_stream(data), budget=1 << 20)
    result = Submitted("B" + "w" * 43, receipts={e.said: b"" for e in events[:2]})
    result.answered(0, Code.INVALID, "rejected: bad", last=True)
    assert [v.result.value for v in whole.verdicts(result)] == [
        "receipted", "receipted", "refused", "unjudged", "unjudged", "unjudged"
    ]  # fmt: skip
    assert whole.summary(result) == (
        "4 not receipted, from sn 2: refused: rejected: bad (1 refused, 3 unjudged)"
    )


def test_the_cycle_collector_is_paused_while_a_file_is_read_and_restored_after() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        assert not gc.isenabled()
        raise RuntimeError("a failure inside")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # left as it was
    finally:
        gc.enable()

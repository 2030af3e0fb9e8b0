"""`dkms kel verify` on files of repeated messages, and `dkms kel submit` event by event.

Verify runs offline on KELs built here with real signatures; submit runs against real
witnesses on 127.0.0.1 (`test_idcmd.witnesses`), through `amain(argv)`.
"""

from __future__ import annotations

import collections
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from dkms.node.cli.main import main
from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.events import Event, incept, interact, rotate
from dkms.protocol.stream import Attachments, messagize

VECTORS = Path(__file__).parents[1] / "vectors" / "keri-v1"
Capture = pytest.CaptureFixture[str]


def signer(n: int) -> Signer:
    return Signer(bytes([n]) * 32)


class Kel:
    """A KEL built here: messages by name, each signed by the keys in force."""

    def __init__(self, keys: int = 1) -> None:
        self.current = [signer(10 + i) for i in range(keys)]
        self.next = [signer(20 + i) for i in range(keys)]
        self.icp = incept(
            [s.verfer for s in self.current],
            kt=keys,
            next_digests=[next_key_digest(s.verfer) for s in self.next],
        )
        self.prefix = self.icp.prefix

    def sign(self, event: Event, signers: list[Signer] | None = None) -> bytes:
        chosen = self.current if signers is None else signers
        sigs = tuple(s.sign_indexed(event.raw, self.current.index(s)) for s in chosen)
        return messagize(event, Attachments(sigs=sigs))

    def ixn(self, prior: Event, sn: int, anchor: str = "") -> Event:
        return interact(self.prefix, prior=prior.said, sn=sn, anchors=[{"d": anchor or str(sn)}])

    def rot(self, prior: Event, sn: int) -> Event:
        self.current, self.next = self.next, [signer(30 + sn)]
        return rotate(
            self.prefix,
            [s.verfer for s in self.current],
            prior=prior.said,
            sn=sn,
            next_digests=[next_key_digest(s.verfer) for s in self.next],
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
    path.write_bytes(
        kel.sign(kel.icp) + kel.sign(ixn1, [a]) + kel.sign(ixn1, [b]) + kel.sign(ixn1)
    )
    report = verify(capsys, path)
    assert statuses(report) == ["accepted", "accepted", "accepted", "known"]
    assert report["messages"][3]["reason"].endswith(
        f"at offset {report['messages'][1]['offset']}"
    )

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
    # alone (all accepted), the second adds nothing.
    data = (VECTORS / "cbor" / f"{name}.cesr").read_bytes()
    path = tmp_path / "twice.cesr"
    path.write_bytes(data + data)
    report = verify(capsys, path)
    half = len(report["messages"]) // 2
    assert set(statuses(report)[:half]) == {"accepted"}
    second = collections.Counter(
        (m["t"] == "rct", m["status"]) for m in report["messages"][half:]
    )
    # Receipts again are stored again (nothing new); events again are repeats.
    assert set(second) <= {(False, "known"), (True, "accepted")}, second
    assert report["duplicity"] == []


def test_stdin_repeats(monkeypatch: pytest.MonkeyPatch, capsys: Capture) -> None:
    data = (VECTORS / "json" / "basic.cesr").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data * 2)))
    capsys.readouterr()
    assert main(["kel", "verify", "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    half = len(report["messages"]) // 2
    assert statuses(report) == ["accepted"] * half + ["known"] * half

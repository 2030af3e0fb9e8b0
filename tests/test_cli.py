"""The `dkms` command line, called as a function: `main(argv)` returns the exit status."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dkms.node.cli.main import main

VECTORS = Path(__file__).parent / "vectors" / "keri-v1"
CESR_FILES = sorted(VECTORS.glob("*/*.cesr"))
STATE_KEYS = ("sn", "d", "k", "n", "kt", "nt", "b", "bt", "c", "di", "et", "ee")


def verify_json(capsys: pytest.CaptureFixture[str], *paths: str) -> tuple[int, list[Any]]:
    status = main(["kel", "verify", "--json", *paths])
    lines = capsys.readouterr().out.splitlines()
    return status, [json.loads(line) for line in lines]


def test_vector_files_were_found() -> None:
    assert len(CESR_FILES) == 28


@pytest.mark.parametrize("cesr", CESR_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_verify_matches_keripy(cesr: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = json.loads(cesr.with_suffix(".json").read_text())
    status, (report,) = verify_json(capsys, str(cesr))
    assert status == 0
    assert report["file"] == str(cesr)
    assert report["error"] is None

    # Key state and first-seen log of every identifier keripy accepted, exactly.
    assert set(report["identifiers"]) == set(expected["identifiers"])
    for prefix, keripy in expected["identifiers"].items():
        ours = report["identifiers"][prefix]
        assert {k: ours[k] for k in STATE_KEYS} == keripy["state"]
        assert ours["fel"] == keripy["fel"]

    # Messages line up with keripy's by byte position in the file.
    assert [(m["offset"], m["length"]) for m in report["messages"]] == [
        (m["offset"], m["length"]) for m in expected["messages"]
    ]
    for ours, keripy in zip(report["messages"], expected["messages"], strict=True):
        if keripy["expected"] != "accepted":
            assert ours["status"] != "accepted", keripy["note"]
        elif "superseded_by" in keripy:
            # keripy files a superseded interaction as accepted: it stays in its first-seen
            # log. We report that the recovery rotation replaced it, and the KEL compared above
            # (state and fel) is what shows both agree on what happened.
            assert ours["status"] == "superseded"
            assert keripy["superseded_by"] in ours["reason"]
        else:
            assert ours["status"] == "accepted", (ours, keripy["note"])
            assert (ours["d"], ours["t"], ours["s"]) == (keripy["d"], keripy["t"], keripy["s"])

    duplicity = report["duplicity"]
    if cesr.stem == "duplicitous_ixn":
        (evidence,) = duplicity
        contested = [m["d"] for m in expected["messages"] if m["s"] == 1]
        assert evidence["s"] == 1
        assert [e["d"] for e in evidence["events"]] == contested
        assert report["messages"][-1]["status"] == "duplicitous"
    else:
        assert duplicity == []


def test_verify_several_files_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    paths = [str(p) for p in CESR_FILES[:3]]
    status, reports = verify_json(capsys, *paths)
    assert status == 0
    assert [r["file"] for r in reports] == paths


def test_escrowed_until_the_missing_piece_arrives(capsys: pytest.CaptureFixture[str]) -> None:
    # The first copy of a partially signed event, and an event arriving before its receipts
    # complete, end up accepted: a message's fate is its final one, not its first verdict.
    for name in ("multisig", "witnessed", "out_of_order", "delegation"):
        _, (report,) = verify_json(capsys, str(VECTORS / "cbor" / f"{name}.cesr"))
        assert {m["status"] for m in report["messages"]} == {"accepted"}, name


def test_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    data = (VECTORS / "json" / "delegation.cesr").read_bytes()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    status, (report,) = verify_json(capsys, "-")
    assert status == 0
    assert report["file"] == "-"
    assert len(report["identifiers"]) == 2


def test_missing_file_is_reported_and_others_still_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.cesr"
    good = VECTORS / "cbor" / "basic.cesr"
    status = main(["kel", "verify", "--json", str(missing), str(good)])
    captured = capsys.readouterr()
    assert status == 1
    err_lines = captured.err.strip().splitlines()
    assert len(err_lines) == 1
    assert str(missing) in err_lines[0]
    assert "Traceback" not in captured.err
    reports = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["file"] for r in reports] == [str(missing), str(good)]
    assert reports[1]["error"] is None and len(reports[1]["identifiers"]) == 1


def test_garbage_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.cesr"
    garbage.write_bytes(b"\x00\x01 this is not CESR")
    status, (report,) = verify_json(capsys, str(garbage))
    assert status == 1
    assert "at byte 0" in report["error"]
    assert report["messages"] == [] and report["identifiers"] == {}


def test_garbage_after_good_messages_keeps_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    basic = (VECTORS / "cbor" / "basic.cesr").read_bytes()
    bad = tmp_path / "tail.cesr"
    bad.write_bytes(basic + b"\x00junk")
    status, (report,) = verify_json(capsys, str(bad))
    assert status == 1
    assert f"at byte {len(basic)}" in report["error"]
    assert len(report["messages"]) == 7
    assert {m["status"] for m in report["messages"]} == {"accepted"}


def test_truncated_file_reports_what_was_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = json.loads((VECTORS / "cbor" / "basic.json").read_text())["messages"]
    cut = expected[3]["offset"] + 100  # inside the fourth message
    short = tmp_path / "short.cesr"
    short.write_bytes((VECTORS / "cbor" / "basic.cesr").read_bytes()[:cut])
    status, (report,) = verify_json(capsys, str(short))
    assert status == 1
    assert [m["d"] for m in report["messages"]] == [m["d"] for m in expected[:3]]


def test_bad_body_is_a_rejected_message_not_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, (report,) = verify_json(capsys, str(VECTORS / "cbor" / "bad_said.cesr"))
    assert status == 0
    bad = report["messages"][1]
    assert bad["status"] == "rejected" and "SAID" in bad["reason"]


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    path = VECTORS / "cbor" / "duplicitous_ixn.cesr"
    assert main(["kel", "verify", str(path)]) == 0
    out = capsys.readouterr().out
    prefix = next(iter(json.loads(path.with_suffix(".json").read_text())["identifiers"]))
    assert prefix in out
    assert "duplicitous" in out and "DUPLICITY" in out


def test_inspect(capsys: pytest.CaptureFixture[str]) -> None:
    path = VECTORS / "cbor" / "witnessed.cesr"
    assert main(["kel", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    for text in (
        "icp",
        "rot",
        "rct",
        "ixn",
        "receipt couples (-C)",
        "witness sigs (-B)",
        "witnesses cut (br)",
        "index 0 ondex 0",
    ):
        assert text in out
    delegation = VECTORS / "json" / "delegation.cesr"
    assert main(["kel", "inspect", str(delegation)]) == 0
    out = capsys.readouterr().out
    assert "seal sources (-G)" in out and "delegator" in out


def test_inspect_garbage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.cesr"
    garbage.write_bytes(b"-AAB")
    assert main(["kel", "inspect", str(garbage)]) == 1
    assert "at byte 0" in capsys.readouterr().err


@pytest.mark.slow
def test_demo(capsys: pytest.CaptureFixture[str]) -> None:
    # The demo runs five real witnesses and two watchers on 127.0.0.1: an identifier through
    # them, then another one equivocating.
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert out.count("fully witnessed with") == 4
    # w1-w3 hold the whole KEL (w0 was cut at sn 1; it may or may not have heard the rest
    # on gossip by the time it is asked; w4 stopped)
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  w")}
    assert all("sn 3, latest" in lines[w] for w in ("w1", "w2", "w3"))
    assert "no answer" in lines["w4"]
    assert "fully witnessed: False" not in out
    assert "checked from its bytes alone" in out
    assert out.count("sn 3, standing: ok") == 2  # both watchers
    assert out.count("holds verified evidence") == 2
    assert out.count("standing: duplicitous from sn 1") == 2
    assert "signed two different events at sequence number 1" in out


@pytest.mark.slow
def test_module_entry_point_exits_with_the_status() -> None:
    # run.py starts the demo as `python -m dkms.node.cli`; that goes through `entry`.
    demo = subprocess.run(
        [sys.executable, "-m", "dkms.node.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert demo.returncode == 0 and "fully witnessed with" in demo.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "dkms.node.cli", "kel", "verify", "/no/such"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 1 and "Traceback" not in missing.stderr


def test_demo_sample_is_the_two_vectors() -> None:
    sample = Path(__file__).parent.parent / "node" / "samples" / "sample.cesr"
    cbor = VECTORS / "cbor"
    expected = (cbor / "witnessed.cesr").read_bytes() + (cbor / "delegation.cesr").read_bytes()
    assert sample.read_bytes() == expected


@pytest.mark.parametrize(
    "argv", [[], ["kel"], ["kel", "verify"], ["bogus"], ["kel", "verify", "--nope", "x"]]
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_home_is_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(VECTORS / "cbor" / "basic.cesr")
    assert main(["--home", "/nonexistent", "kel", "verify", path]) == 0


def test_truncated_signature_counter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cut = tmp_path / "cut.cesr"
    cut.write_bytes((VECTORS / "cbor" / "basic.cesr").read_bytes()[:252])  # body + "-AA"
    assert main(["kel", "verify", str(cut)]) == 1


@pytest.mark.parametrize("name", ["cbor/witnessed", "json/delegation"])
@pytest.mark.slow
def test_damaged_files_never_crash(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every command either reads the file (0) or says which bytes are bad (1), and prints only
    # printable ASCII, whatever the damage: flipped bytes (in attachments, bodies and
    # signatures) and truncations. Every truncation goes to every command; each flipped byte
    # to one of them in turn, so each command sees flips all along the file.
    commands = (["kel", "verify", "--json"], ["kel", "verify"], ["kel", "inspect"])
    data = (VECTORS / f"{name}.cesr").read_bytes()
    runs = [(data[:i], argv) for i in range(0, len(data), 11) for argv in commands]
    for n, i in enumerate(range(0, len(data), 2)):
        flipped = bytearray(data)
        flipped[i] ^= 0x5A
        runs.append((bytes(flipped), commands[n % len(commands)]))
    path = tmp_path / "damaged.cesr"
    for blob, argv in runs:
        path.write_bytes(blob)
        status = main([*argv, str(path)])
        assert status in (0, 1)
        out = capsys.readouterr().out
        assert out.isascii() and all(c.isprintable() or c == "\n" for c in out)

"""Events built here from keripy's seeds and fields reproduce keripy's bytes exactly.

`tests/vectors/keripy-seeded/vectors.json` was made by keripy 1.3.6 (tools/keripy_vectors.py)
from fixed test seeds. For every case we derive the keys from the seeds, rebuild the event with
our builders, sign it with our signer, and compare bodies, SAIDs, signatures and whole
messages byte for byte. The multi-event streams must validate to keripy's key states.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.events import Event, Ilk, Kind, incept, interact, receipt, rotate
from dkms.protocol.stream import Attachments, BadFrame, messagize, parse_stream
from dkms.protocol.validator import Validator

VECTORS = json.loads(
    (Path(__file__).parents[1] / "vectors" / "keripy-seeded" / "vectors.json").read_text()
)
CASES = VECTORS["cases"]


def _signers(hexes: list[str], transferable: bool = True) -> list[Signer]:
    return [Signer(bytes.fromhex(h), transferable) for h in hexes]


def _build(case: dict[str, Any]) -> Event:
    ked, kind = case["ked"], Kind(case["kind"])
    ilk = Ilk(case["ilk"])
    if ilk is Ilk.RCT:
        return receipt(ked["i"], int(ked["s"], 16), ked["d"], kind=kind)
    if ilk is Ilk.IXN:
        return interact(ked["i"], prior=ked["p"], sn=int(ked["s"], 16), anchors=ked["a"], kind=kind)
    keys = [s.verfer for s in _signers(case["signer_seeds_hex"], ked["i"][0] != "B")]
    assert keys == ked["k"], "keys derived from keripy's seeds differ"
    digests = [next_key_digest(s.verfer) for s in _signers(case["next_seeds_hex"])]
    assert digests == ked["n"], "next-key digests differ from keripy's"
    common: dict[str, Any] = {
        "kt": ked["kt"],
        "nt": ked["nt"],
        "next_digests": digests,
        "toad": int(ked["bt"], 16),
        "anchors": ked["a"],
        "kind": kind,
    }
    if ilk in (Ilk.ICP, Ilk.DIP):
        witnesses = [s.verfer for s in _signers(case["witness_seeds_hex"], False)]
        assert witnesses == ked["b"]
        return incept(
            keys,
            witnesses=witnesses,
            traits=ked["c"],
            delegator=ked.get("di"),
            basic=ked["i"] != ked["d"],
            **common,
        )
    return rotate(
        ked["i"],
        keys,
        prior=ked["p"],
        sn=int(ked["s"], 16),
        cuts=ked["br"],
        adds=ked["ba"],
        delegated=ilk is Ilk.DRT,
        **common,
    )


@pytest.mark.parametrize("case", CASES, ids=[f"{c['kind']}-{c['name']}" for c in CASES])
def test_builder_reproduces_keripy_bytes(case: dict[str, Any]) -> None:
    event = _build(case)
    assert event.raw == base64.b64decode(case["raw_b64"])
    assert event.said == case["said"]
    signers = _signers(case["signer_seeds_hex"], event.prefix[0] != "B")
    sigs = tuple(s.sign_indexed(event.raw, i) for i, s in enumerate(signers))
    assert [s.qb64() for s in sigs] == case["sigs_qb64"]
    if sigs:
        assert Attachments(sigs=sigs).qb64() == case["attachments"]
    message = base64.b64decode(case["message_b64"])
    if case["ilk"] != "rct":
        assert messagize(event, Attachments(sigs=sigs)) == message
    # And our reader gives back exactly what keripy wrote, attachments included.
    frames = parse_stream(message)
    assert len(frames) == 1 and not isinstance(frames[0], BadFrame)
    assert frames[0].serialize() == message


@pytest.mark.parametrize("stream", VECTORS["streams"], ids=[s["name"] for s in VECTORS["streams"]])
def test_streams_reach_keripy_key_state(stream: dict[str, Any]) -> None:
    validator = Validator()
    frames = parse_stream(base64.b64decode(stream["stream_b64"]))
    assert len(frames) == stream["message_count"]
    for frame in frames:
        assert not isinstance(frame, BadFrame), frame.error
        validator.process(frame, 0.0)
    for prefix, expected in stream["key_states"].items():
        state = validator.state(prefix)
        assert state is not None, f"{prefix} not accepted"
        got = state.to_json()
        assert f"{got['sn']:x}" == expected["s"]
        for field in ("d", "k", "n", "kt", "nt", "b", "c", "di"):
            assert got[field] == expected[field], field
        assert f"{got['bt']:x}" == expected["bt"]

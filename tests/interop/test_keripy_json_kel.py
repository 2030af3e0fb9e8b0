"""A KEL that keripy 1.3.6 serialises as JSON (what kli sends over HTTP) is receipted by our
witnesses exactly like a CBOR one, and watched.

keripy itself (its own venv, the `keripy_env` fixture) builds and signs icp, ixn, rot, ixn
in JSON, naming as witnesses the prefixes of four of our nodes (their node seeds are the test
seeds 0x41-0x44, as in tests/node/test_keripy_watched.py). `dkms kel submit --json` sends it
to those nodes over libp2p; every witness must answer `receipted` for every event, and both
watchers must end up holding the KEL at sn 3, fully receipted, with standing ok.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import trio

from dkms.node.cli.main import amain
from dkms.node.client.home import Options
from dkms.node.testing.keys import seed
from dkms.node.testing.localnet import local_network
from dkms.protocol.events import Kind
from dkms.protocol.stream import Message, parse_stream

WITNESS_SEEDS = [0x41, 0x42, 0x43, 0x44]

# Run by keripy's Python: prints {"prefix", "saids", "kel_b64"} for a JSON KEL.
KERIPY_SCRIPT = """
import base64, json, sys
from keri.core import eventing
from keri.core.coring import Diger, MtrDex
from keri.core.eventing import messagize
from keri.core.signing import Signer
from keri.kering import Kinds

def signer(n, transferable=True):
    return Signer(raw=bytes([n]) * 32, transferable=transferable)

def digs(*ns):
    return [Diger(ser=signer(n).verfer.qb64b, code=MtrDex.Blake3_256).qb64 for n in ns]

wits = [signer(n, transferable=False).verfer.qb64 for n in json.loads(sys.argv[1])]
kind = Kinds.json
icp = eventing.incept([signer(0x80).verfer.qb64], ndigs=digs(0x81), toad=3, wits=wits,
                      code=MtrDex.Blake3_256, kind=kind)
ixn1 = eventing.interact(icp.pre, icp.said, sn=1, kind=kind,
                         data=[dict(d=Diger(ser=b"json kel", code=MtrDex.Blake3_256).qb64)])
rot = eventing.rotate(icp.pre, [signer(0x81).verfer.qb64], ixn1.said, sn=2, ndigs=digs(0x82),
                      toad=3, wits=wits, kind=kind)
ixn3 = eventing.interact(icp.pre, rot.said, sn=3, kind=kind)
kel = bytearray()
for serder, key in ((icp, 0x80), (ixn1, 0x80), (rot, 0x81), (ixn3, 0x81)):
    kel += messagize(serder, sigers=[signer(key).sign(serder.raw, index=0)])
print(json.dumps(dict(prefix=icp.pre, saids=[e.said for e in (icp, ixn1, rot, ixn3)],
                      wits=wits, kel_b64=base64.b64encode(bytes(kel)).decode())))
"""


async def keripy_json_kel(python: Path) -> dict[str, Any]:
    done = await trio.run_process(
        [str(python), "-c", KERIPY_SCRIPT, json.dumps(WITNESS_SEEDS)],
        capture_stdout=True, capture_stderr=True, check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    kel: dict[str, Any] = json.loads(done.stdout)
    return kel


async def test_keripy_json_kel_is_receipted_like_cbor(
    tmp_path: Path, keripy_env: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(90):
        vec = await keripy_json_kel(keripy_env.python)
        data = base64.b64decode(vec["kel_b64"])
        frames = parse_stream(data)
        assert all(isinstance(f, Message) and f.event.kind is Kind.JSON for f in frames)
        assert [f.event.said for f in frames if isinstance(f, Message)] == vec["saids"]
        seeds = [bytes([n]) * 32 for n in WITNESS_SEEDS]
        async with local_network(  # as tests/node/test_duplicity_network.py's network
            tmp_path, witness_seeds=seeds, governance_seeds=(seed(90), seed(91)),
            anomaly_after=5.0,
        ) as net:
            assert sorted(h.prefix for h in net.witnesses) == sorted(vec["wits"])
            path = tmp_path / "keripy-json.cesr"
            path.write_bytes(data)
            capsys.readouterr()
            intros = [h.introduction for h in net.witnesses]
            status = await amain(["kel", "submit", str(path), "--to", *intros, "--json"],
                                 Options())
            shown = capsys.readouterr().out
            assert status == 0, shown
            per_witness = [json.loads(line) for line in shown.splitlines() if line.strip()]
            assert len(per_witness) == 4
            for answer in per_witness:
                assert [e["result"] for e in answer["events"]] == ["receipted"] * 4, answer

            prefix = vec["prefix"]

            def held(i: int) -> bool:
                kel = net.watcher(i).validator.kel(prefix)
                return kel is not None and kel.sn == 3 and len(kel.last.receipts) == 4

            await net.until(lambda: held(0) and held(1))
            for i in (0, 1):
                state = await net.state(i, prefix)
                assert state["standing"] == "ok" and state["evidence"] == []
    capsys.readouterr()

"""A KEL made by keripy, submitted with `dkms kel submit`, is watched like our own, duplicity
included.

The vectors (tests/vectors/keripy-seeded/vectors.json, key "watched", made by
tools/keripy_vectors.py) name four witnesses by their seeds; our witness nodes run with those
seeds, so keripy's events designate them. keripy also signed two different interactions at
sn 2 and a recovery rotation at sn 2 (keripy accepts each against the KEL; see the tool).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from dkms.node.cli.main import amain
from dkms.node.client.home import Options
from dkms.protocol.envelope import Signed
from dkms.protocol.evidence import parse_evidence, verify_evidence

from .test_duplicity_network import Net, network

VECTORS = Path(__file__).parents[1] / "vectors" / "keripy-seeded" / "vectors.json"


def watched() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTORS.read_text())["watched"]
    return data


@asynccontextmanager
async def watched_network(tmp_path: Path) -> AsyncIterator[tuple[dict[str, Any], Net, list[str]]]:
    """The vectors, a network whose witnesses run with the seeds they name, and the
    witnesses' introductions."""
    vec = watched()
    seeds = [bytes.fromhex(s) for s in vec["witness_seeds_hex"]]
    async with network(tmp_path, witness_seeds=seeds) as net:
        yield vec, net, [h.introduction for h in net.witnesses]


async def submit(tmp_path: Path, name: str, data: bytes, to: list[str]) -> int:
    """`dkms kel submit` of `data` (written to `name`) to the witnesses `to`; its status."""
    path = tmp_path / name
    path.write_bytes(data)
    return await amain(["kel", "submit", str(path), "--to", *to], Options())


def kel_at(net: Net, prefix: str, sn: int) -> bool:
    kels = [net.watcher(i).validator.kel(prefix) for i in (0, 1)]
    return all(k is not None and k.sn == sn and len(k.last.receipts) == 4 for k in kels)


async def test_keripy_kel_is_watched_and_its_duplicity_caught(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(60):
        async with watched_network(tmp_path) as (vec, net, intros):
            prefix, saids = vec["prefix"], vec["saids"]
            assert await submit(tmp_path, "kel.cesr", base64.b64decode(vec["kel_b64"]), intros) == 0
            await net.until(lambda: kel_at(net, prefix, 1))
            for i in (0, 1):
                assert (await net.state(i, prefix))["standing"] == "ok"
            async with trio.open_nursery() as nursery:  # keripy's two versions of sn 2
                a, b = base64.b64decode(vec["ixn_a_b64"]), base64.b64decode(vec["ixn_b_b64"])
                # A witness that heard the other version first refuses it: the status is not
                # what this test is about.
                nursery.start_soon(submit, tmp_path, "a.cesr", a, intros[:2])
                nursery.start_soon(submit, tmp_path, "b.cesr", b, intros[2:])

            def caught(i: int) -> bool:
                return net.watcher(i).holdings.standing(prefix, True)[0] == "duplicitous"

            await net.until(lambda: caught(0) and caught(1))
            for i in (0, 1):
                state = await net.state(i, prefix)
                assert state["standing"] == "duplicitous" and state["duplicitous_from"] == 2
                accusation = verify_evidence(
                    parse_evidence(Signed.from_cbor(state["evidence"][0]).body)
                )
                assert set(accusation.saids) == {saids["ixn_a"], saids["ixn_b"]}
    capsys.readouterr()


async def test_keripy_recovery_rotation_raises_no_alarm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(60):
        async with watched_network(tmp_path) as (vec, net, intros):
            prefix, saids = vec["prefix"], vec["saids"]
            kel = base64.b64decode(vec["kel_b64"])
            first = kel + base64.b64decode(vec["ixn_a_b64"])
            assert await submit(tmp_path, "kel.cesr", first, intros) == 0
            await net.until(lambda: kel_at(net, prefix, 2))
            assert await submit(tmp_path, "rot.cesr", base64.b64decode(vec["rot_b64"]), intros) == 0

            def recovered(i: int) -> bool:
                kel = net.watcher(i).validator.kel(prefix)
                return kel is not None and kel.last.event.said == saids["rot"]

            await net.until(lambda: recovered(0) and recovered(1))
            for i in (0, 1):
                state = await net.state(i, prefix)
                assert state["standing"] == "ok" and state["evidence"] == []
    capsys.readouterr()

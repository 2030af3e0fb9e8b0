"""The duplicity infrastructure with real nodes: libp2p hosts on 127.0.0.1, SQLite stores.

4 witnesses (bt=3), 2 watchers, and a governance identity whose roster names both watchers
as watchers and jurors and the first as the judge. Scenarios from issue 4: an honest
controller; a controller splitting its witnesses between two versions; a recovery rotation;
a witness receipting two versions; evidence from a node not on the roster.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from dkms.node.p2p import open_host
from dkms.node.roles.topics import DUPLICITY_TOPIC, kel_topic
from dkms.node.secretfiles import load_or_create_node_seed
from dkms.node.testing.keys import seed
from dkms.node.testing.localnet import LOOPBACK, LocalNet, local_network
from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.envelope import Signed
from dkms.protocol.events import Event, receipt, rotate
from dkms.protocol.evidence import parse_evidence, verify_evidence
from dkms.protocol.stream import Attachments, Message, messagize, parse_stream
from dkms.protocol.validator import Validator
from dkms.protocol.witness_duplicity import WitnessDuplicity

Net = LocalNet


@asynccontextmanager
async def network(tmp_path: Path, witness_seeds: list[bytes] | None = None) -> AsyncIterator[Net]:
    """4 witnesses (with these node seeds, if given), 2 watchers, a governance roster naming
    both watchers jurors and the first the judge."""
    async with local_network(
        tmp_path,
        witness_seeds=witness_seeds,
        governance_seeds=(seed(90), seed(91)),
        anomaly_after=5.0,
    ) as net:
        yield net


async def incept(net: Net, name: str, first: int) -> str:
    return await net.incept(name, (seed(first), seed(first + 1)))


async def incept_and_interact(net: Net, name: str, first: int, data: str) -> str:
    """`name` incepted and its interaction `{"d": data}` fully witnessed, until both watchers
    hold the KEL with every receipt; its prefix."""
    ctl = net.client.controller
    prefix = await incept(net, name, first)
    await net.client.witnessed(
        ctl.interact(name, [{"d": data}], now=net.client.runtime.now()),
        ctl.identity(name).last_said,
    )
    await net.until(lambda: all(full_kel_at(net, i, prefix, 1) for i in (0, 1)))
    return prefix


def signed_ixn(net: Net, name: str, anchors: list[Any]) -> tuple[Event, bytes]:
    return net.signed_ixn(name, anchors)


def full_kel_at(net: Net, i: int, prefix: str, sn: int) -> bool:
    kel = net.watcher(i).validator.kel(prefix)
    return kel is not None and kel.sn == sn and all(len(r.receipts) == 4 for r in kel.chain)


async def test_honest_controller_is_ok_with_full_kel_at_both_watchers(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with network(tmp_path) as net:
            ctl = net.client.controller
            prefix = await incept(net, "alice", 1)
            now = net.client.runtime.now()
            await net.client.witnessed(
                ctl.rotate("alice", [seed(3)], now=now), ctl.identity("alice").last_said
            )
            await net.client.witnessed(
                ctl.interact("alice", [{"d": "hello"}], now=now), ctl.identity("alice").last_said
            )
            await net.until(lambda: all(full_kel_at(net, i, prefix, 2) for i in (0, 1)))
            for i in (0, 1):
                state = await net.state(i, prefix)
                assert state["standing"] == "ok"
                assert state["d"] == ctl.identity("alice").last_said
                assert state["evidence"] == [] and state["rulings"] == []
                assert all(len(r) == 4 for r in state["receipts"].values())
            unknown = await net.state(0, "Eunknown-prefix-xxxxxxxxxxxxxxxxxxxxxxxxxxx")
            assert unknown["standing"] == "unknown"


async def test_split_witnesses_are_caught_and_ruled_on(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with network(tmp_path) as net:
            prefix = await incept(net, "mallory", 10)
            await net.until(lambda: all(full_kel_at(net, i, prefix, 0) for i in (0, 1)))
            a, msg_a = signed_ixn(net, "mallory", [{"d": "pay bob"}])
            b, msg_b = signed_ixn(net, "mallory", [{"d": "pay eve"}])
            async with trio.open_nursery() as nursery:
                for witness, message in ((0, msg_a), (1, msg_a), (2, msg_b), (3, msg_b)):
                    nursery.start_soon(net.submit, witness, message)

            def caught(i: int) -> bool:
                standing, _ = net.watcher(i).holdings.standing(prefix, True)
                return standing == "duplicitous"

            await net.until(lambda: caught(0) and caught(1))
            # The judge (watcher 0) rules; the ruling reaches watcher 1 over gossip.
            await net.until(lambda: bool(net.watcher(1).holdings.rulings))
            for i in (0, 1):
                state = await net.state(i, prefix)
                assert state["standing"] == "duplicitous"
                assert state["duplicitous_from"] == 1
                assert state["evidence"]
                for envelope in state["evidence"]:
                    signed = Signed.from_cbor(envelope)
                    signed.verify()
                    accusation = verify_evidence(parse_evidence(signed.body))
                    assert accusation.kind == "controller" and accusation.accused == prefix
                    assert set(accusation.saids) == {a.said, b.said}
                ruling = Signed.from_cbor(state["rulings"][0])
                assert ruling.signer == net.watchers[0].prefix
            # Watcher 1 is no judge: it made no ruling of its own.
            assert all(
                h.envelope.signer == net.watchers[0].prefix
                for h in net.watcher(1).holdings.rulings.values()
            )


async def test_recovery_rotation_superseding_an_interaction_is_no_alarm(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with network(tmp_path) as net:
            ctl = net.client.controller
            prefix = await incept_and_interact(net, "rita", 20, "maybe stolen")
            ident = ctl.identity("rita")
            icp_said = ctl.validator.kel(prefix).chain[0].event.said  # type: ignore[union-attr]
            nxt = Signer(seed(21))
            recovery = rotate(
                prefix,
                keys=[nxt.verfer],
                prior=icp_said,
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
            for i in (0, 1):
                state = await net.state(i, prefix)
                assert state["standing"] == "ok", state
                assert state["evidence"] == []
            assert ident.prefix == prefix


async def test_witness_receipting_two_versions_is_named(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with network(tmp_path) as net:
            prefix = await incept(net, "walt", 30)
            await net.until(lambda: all(full_kel_at(net, i, prefix, 0) for i in (0, 1)))
            _a, msg_a = signed_ixn(net, "walt", [{"d": "one"}])
            b, msg_b = signed_ixn(net, "walt", [{"d": "two"}])
            for witness in range(4):  # version a is fully witnessed by all four
                code, _, reason = await net.submit(witness, msg_a)
                assert code.ok, reason
            # Witness 1 colludes: it also receipts version b (a receipt made with its own key),
            # which reaches the watchers over KEL gossip with version b itself.
            colluder = net.witnesses[1].prefix
            key = Signer(_node_seed(tmp_path / "w1"), transferable=False)
            assert key.verfer == colluder
            rct = receipt(prefix, b.sn, b.said)
            forged = messagize(rct, Attachments(couples=((colluder, key.sign_raw(b.raw)),)))
            async with open_host(os.urandom(32), LOOPBACK) as gossiper:
                await gossiper.connect([h.introduction for h in net.watchers])
                await gossiper.subscribe(kel_topic(prefix))
                await gossiper.wait_for_peers(2)

                def named(i: int) -> bool:
                    standing, _ = net.watcher(i).holdings.standing(colluder, False)
                    return standing == "duplicitous"

                # Gossip is best effort until the mesh forms: publish again until both heard.
                while not (named(0) and named(1)):
                    await gossiper.publish(kel_topic(prefix), msg_b + forged)
                    with trio.move_on_after(1):
                        await net.until(lambda: named(0) and named(1))
            for i in (0, 1):
                state = await net.state(i, colluder)
                assert state["standing"] == "duplicitous"
                kinds = {
                    parse_evidence(Signed.from_cbor(e).body).__class__ for e in state["evidence"]
                }
                assert WitnessDuplicity in kinds
                walt = await net.state(i, prefix)
                assert colluder in walt["duplicitous_witnesses"]


def _node_seed(data_dir: Path) -> bytes:
    return load_or_create_node_seed(data_dir)


async def test_evidence_from_a_node_off_the_roster_is_not_forwarded(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with network(tmp_path) as net:
            prefix = await incept(net, "oscar", 40)
            await net.until(lambda: all(full_kel_at(net, i, prefix, 0) for i in (0, 1)))
            _a, msg_a = signed_ixn(net, "oscar", [{"d": "x"}])
            _b, msg_b = signed_ixn(net, "oscar", [{"d": "y"}])
            # Real evidence, made locally: only its signer is wrong.
            validator = Validator()
            evidence = []
            for frame in parse_stream(net.client.controller.export("oscar") + msg_a + msg_b):
                assert isinstance(frame, Message)
                evidence += [o.evidence for o in validator.process(frame, 0.0) if o.evidence]
            assert evidence
            body = evidence[0].to_cbor()
            rogue = Signed.make(Signer(os.urandom(32), transferable=False), body)
            # The same evidence signed by watcher 1 (on the roster as a juror) follows it on
            # the same path: once it has reached watcher 0, the rogue one had its chance.
            juror = Signed.make(Signer(_node_seed(tmp_path / "v1"), transferable=False), body)
            async with open_host(os.urandom(32), LOOPBACK) as rogue_host:
                await rogue_host.connect([net.watchers[1].introduction])
                await rogue_host.subscribe(DUPLICITY_TOPIC)
                await rogue_host.wait_for_peers(1)
                while not net.watcher(0).holdings.evidence:
                    await rogue_host.publish(DUPLICITY_TOPIC, rogue.to_cbor())
                    await rogue_host.publish(DUPLICITY_TOPIC, juror.to_cbor())
                    with trio.move_on_after(1):
                        await net.until(lambda: bool(net.watcher(0).holdings.evidence), on=[0])
            for i in (0, 1):
                signers = {h.envelope.signer for h in net.watcher(i).holdings.evidence.values()}
                assert signers == {juror.signer}, signers

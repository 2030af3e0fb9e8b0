"""The duplicitous-event log with real nodes: libp2p hosts on 127.0.0.1, SQLite stores.

4 witnesses (bt = 3) and 2 rostered watchers (`test_duplicity_network.network`). Version a of
sn 1 is fully witnessed and gossiped; then the same keys sign version b, submitted to one
witness only. That witness refuses b, and before the duplicitous-event log every watcher went
on answering `standing: ok`; now the witness publishes b and both watchers answer
`duplicitous`, with evidence that verifies offline. A recovery rotation superseding an
interaction stays no alarm, and a KEL made by keripy (`dkms kel submit`) is caught the same.
The time from b's submission to each watcher's duplicitous standing is printed (`-s`), not
asserted: the machine is shared.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from dkms.node.roles.codes import Code
from dkms.node.runtime.loop import Runtime
from dkms.node.testing.keys import seed
from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.envelope import Signed
from dkms.protocol.events import Event, interact, rotate
from dkms.protocol.evidence import Accusation, parse_evidence, verify_evidence
from dkms.protocol.stream import Attachments, messagize

from .test_duplicity_network import Net, full_kel_at, incept_and_interact, network
from .test_keripy_watched import kel_at, submit, watched_network


def second_version(net: Net, name: str, sn: int, anchors: list[Any]) -> tuple[Event, bytes]:
    """Another interaction at `sn` (taken already) of `name`, signed by its current keys."""
    ident = net.client.controller.identity(name)
    kel = net.witness_role(net.w[0]).validator.kel(ident.prefix)
    assert kel is not None
    prior = kel.chain[sn - 1].event.said
    event = interact(ident.prefix, prior=prior, sn=sn, anchors=anchors)
    sigs = tuple(s.sign_indexed(event.raw, i) for i, s in enumerate(ident.signers))
    return event, messagize(event, Attachments(sigs=sigs))


async def witnesses_until(net: Net, what: Callable[[], bool]) -> None:
    """`LocalNet.until` for the witnesses: re-check after every step of any of them."""
    while not what():
        async with trio.open_nursery() as nursery:
            for runtime in [net.runtimes[w] for w in net.w]:

                async def woke(r: Runtime = runtime) -> None:
                    await r.changed.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(woke)


def duplicitous(net: Net, i: int, prefix: str) -> bool:
    return net.watcher(i).holdings.standing(prefix, True)[0] == "duplicitous"


async def detection(net: Net, prefix: str, since: float) -> list[float]:
    """Seconds from `since` until each watcher stands `prefix` duplicitous."""
    took: list[float] = [0.0, 0.0]

    async def one(i: int) -> None:
        await net.until(lambda: duplicitous(net, i, prefix), on=[i])
        took[i] = trio.current_time() - since

    async with trio.open_nursery() as nursery:
        for i in (0, 1):
            nursery.start_soon(one, i)
    return took


def accusations(state: dict[str, Any]) -> list[Accusation]:
    """What each piece of evidence in a key state proves, checked offline."""
    out = []
    for envelope in state["evidence"]:
        signed = Signed.from_cbor(envelope)
        signed.verify()
        out.append(verify_evidence(parse_evidence(signed.body)))
    return out


async def test_a_rival_shown_to_one_witness_makes_both_watchers_answer_duplicitous(
    tmp_path: Path,
) -> None:
    with trio.fail_after(60):
        async with network(tmp_path) as net:
            ctl = net.client.controller
            prefix = await incept_and_interact(net, "mallory", 10, "pay bob")
            a = ctl.identity("mallory").last_said
            for i in (0, 1):
                assert (await net.state(i, prefix))["standing"] == "ok"
            b, message = second_version(net, "mallory", 1, [{"d": "pay eve"}])
            since = trio.current_time()
            code, _, reason = await net.submit(0, message)
            assert code is Code.CONFLICT, reason
            took = await detection(net, prefix, since)
            print(
                "\nrival detection: "
                + ", ".join(f"watcher {i} {t * 1000:.1f} ms" for i, t in enumerate(took))
            )
            for i in (0, 1):
                state = await net.state(i, prefix)
                assert state["standing"] == "duplicitous" and state["duplicitous_from"] == 1
                proven = accusations(state)
                assert proven and all(p.kind == "controller" for p in proven)
                assert all(set(p.saids) == {a, b.said} for p in proven)
            # The witness serves what it kept, as evidence that verifies offline.
            answer = await net.ask(net.w[0], {"t": "rivals", "i": prefix})
            [item] = answer["rivals"]
            assert verify_evidence(parse_evidence(item)).saids == (a, b.said)
            # Its co-witnesses heard b on the gossip and keep it too.
            await witnesses_until(
                net, lambda: all(net.witness_role(w).rivals.held(prefix, 1, b.said) for w in net.w)
            )


async def test_a_recovery_rotation_superseding_an_interaction_raises_no_alarm(
    tmp_path: Path,
) -> None:
    with trio.fail_after(60):
        async with network(tmp_path) as net:
            prefix = await incept_and_interact(net, "rita", 20, "maybe stolen")
            kel = net.witness_role(net.w[0]).validator.kel(prefix)
            assert kel is not None
            stale = kel.chain[1]
            nxt, after = Signer(seed(21)), Signer(seed(22))
            recovery = rotate(
                prefix,
                keys=[nxt.verfer],
                prior=kel.chain[0].event.said,
                sn=1,
                next_digests=[next_key_digest(after.verfer)],
                witnesses=net.w,
                toad=3,
            )
            signed = messagize(recovery, Attachments(sigs=(nxt.sign_indexed(recovery.raw, 0),)))
            async with trio.open_nursery() as nursery:
                for witness in range(4):
                    nursery.start_soon(net.submit, witness, signed)
            # The interaction it superseded, shown to a witness again: no rival either.
            old = messagize(stale.event, Attachments(sigs=stale.sigs))
            code, _, reason = await net.submit(1, old)
            assert code in (Code.ALREADY, Code.SUPERSEDED), reason  # held before; not a rival
            # Then an interaction by the new keys; once the watchers hold it, whatever the
            # witnesses published before it on this KEL's shard has reached them.
            ixn = interact(prefix, prior=recovery.said, sn=2, anchors=[{"d": "back"}])
            last = messagize(ixn, Attachments(sigs=(nxt.sign_indexed(ixn.raw, 0),)))
            async with trio.open_nursery() as nursery:
                for witness in range(4):
                    nursery.start_soon(net.submit, witness, last)
            await net.until(lambda: all(full_kel_at(net, i, prefix, 2) for i in (0, 1)))
            for i in (0, 1):
                state = await net.state(i, prefix)
                assert state["d"] == ixn.said
                assert state["standing"] == "ok" and state["evidence"] == [], state
            for w in net.w:
                assert net.witness_role(w).rivals.table_sizes()["rivals"] == 0
                answer = await net.ask(w, {"t": "rivals", "i": prefix})
                assert answer["rivals"] == []


async def test_a_keripy_rival_submitted_to_one_witness_is_caught(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(60):
        async with watched_network(tmp_path) as (vec, net, intros):
            prefix, saids = vec["prefix"], vec["saids"]
            kel = base64.b64decode(vec["kel_b64"]) + base64.b64decode(vec["ixn_a_b64"])
            assert await submit(tmp_path, "kel.cesr", kel, intros) == 0
            await net.until(lambda: kel_at(net, prefix, 2))
            for i in (0, 1):
                assert (await net.state(i, prefix))["standing"] == "ok"
            since = trio.current_time()
            b = base64.b64decode(vec["ixn_b_b64"])
            assert await submit(tmp_path, "b.cesr", b, intros[:1]) != 0  # refused: a conflict
            took = await detection(net, prefix, since)
            capsys.readouterr()
            with capsys.disabled():
                print(
                    "\nkeripy rival detection (from the submit command's start): "
                    + ", ".join(f"watcher {i} {t * 1000:.1f} ms" for i, t in enumerate(took))
                )
            for i in (0, 1):
                state = await net.state(i, prefix)
                assert state["standing"] == "duplicitous" and state["duplicitous_from"] == 2
                proven = accusations(state)
                assert proven
                assert all(set(p.saids) == {saids["ixn_a"], saids["ixn_b"]} for p in proven)
            answer = await net.ask(net.w[0], {"t": "rivals", "i": prefix})
            [item] = answer["rivals"]
            assert set(verify_evidence(parse_evidence(item)).saids) == {
                saids["ixn_a"],
                saids["ixn_b"],
            }
    capsys.readouterr()

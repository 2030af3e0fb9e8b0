"""`dkms demo`: the whole story on a local network: propagation, then duplicity caught.

Five witnesses and two watchers start in this process (real libp2p hosts on 127.0.0.1, each
with its own SQLite store in a temporary folder), with a governance identity whose roster
appoints both watchers as jurors and the first as judge. Act one: a controller incepts an
identifier with four witnesses and a threshold of three, rotates its keys while swapping one
witness for the fifth, anchors data, carries on with one witness stopped, and shows what each
witness holds and what the watchers say. Act two: another controller's keys sign two
different interactions at one sequence number and show each to a different pair of
witnesses; the watchers catch it, the judge rules, and the evidence is checked from its bytes.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import cbor2
import trio

from dkms.node.client.controller import ControllerClient
from dkms.node.p2p.logs import quiet_libp2p
from dkms.node.roles.effects import Effect
from dkms.node.roles.watcher import Watcher
from dkms.node.testing.localnet import LocalNet, local_network
from dkms.protocol.envelope import Signed
from dkms.protocol.evidence import explain, parse_evidence, verify_evidence
from dkms.protocol.stream import Message, parse_stream
from dkms.protocol.validator import Validator

if TYPE_CHECKING:
    # libp2p pulls in trio-typing, whose trio-stubs shadow trio's own types for mypy.
    pass

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
WITNESSES = 5
WATCHERS = 2


def main(say: Callable[[str], None] = print) -> int:
    quiet_libp2p()
    logging.getLogger("dkms").setLevel(logging.ERROR)  # the story says what happens
    with tempfile.TemporaryDirectory(prefix="dkms-demo-") as tmp:
        trio.run(functools.partial(_demo, Path(tmp), say))
    return 0


async def _demo(tmp: Path, say: Callable[[str], None]) -> None:
    with trio.fail_after(120):
        started = time.perf_counter()
        say(f"Starting {WITNESSES} witnesses and {WATCHERS} watchers on 127.0.0.1 (data in {tmp}):")
        async with local_network(tmp, witnesses=WITNESSES, watchers=WATCHERS) as net:
            for i, host in enumerate(net.witnesses):
                say(f"  w{i}  witness  {host.introduction}")
            for i, host in enumerate(net.watchers):
                say(f"  v{i}  watcher  {host.introduction}")
            say(
                f"  governance {net.governance[:16]}.. signed roster epoch 1: watchers and "
                "jurors v0, v1; judge v0"
            )
            say(f"  up in {(time.perf_counter() - started) * 1000:.0f} ms")
            await _propagation(net, say)
            await _equivocation(net, say)


async def _propagation(net: LocalNet, say: Callable[[str], None]) -> None:
    client = net.client
    ctl = client.controller
    w = net.w
    now = client.runtime.now

    async def step(what: str, effects: list[Effect]) -> None:
        ident = ctl.identity("demo")
        started = time.perf_counter()
        await client.witnessed(effects, ident.last_said)
        record = ctl.validator.record(ident.last_said)
        receipts = len(record.receipts) if record else 0
        ms = (time.perf_counter() - started) * 1000
        say(
            f"  {what}: sn {ident.sn}, {ident.last_said[:16]}.., fully witnessed with "
            f"{receipts} receipts in {ms:.0f} ms"
        )

    say("\nAct one. A controller makes identifier 'demo' with witnesses w0-w3, threshold 3:")
    seeds = [os.urandom(32) for _ in range(4)]
    await step(
        "inception", ctl.incept("demo", [seeds[0]], [seeds[1]], witnesses=w[:4], toad=3, now=now())
    )
    say(f"  prefix {ctl.identity('demo').prefix}")
    await step(
        "rotation (new keys; w0 out, w4 in)",
        ctl.rotate("demo", [seeds[2]], cuts=[w[0]], adds=[w[4]], toad=3, now=now()),
    )
    await step(
        "interaction anchoring {'hello': 'world'}",
        ctl.interact("demo", [{"hello": "world"}], now=now()),
    )
    net.stop(w[4])  # three of the four remaining witnesses still suffice
    say("\nWitness w4 stops. Another interaction still gathers 3 receipts:")
    await step("interaction anchoring {'n': 2}", ctl.interact("demo", [{"n": 2}], now=now()))

    prefix = ctl.identity("demo").prefix
    with trio.move_on_after(5):  # the witnesses' receipt exchange (agreement) goes out
        await client.runtime.quiet()
    say("\nWhat each witness says about 'demo' (asked over /dkms/1/query):")
    for i, witness in enumerate(w):
        answer = await _state(client, witness, prefix)
        note = "  (cut by the rotation at sn 1)" if i == 0 else ""
        say(f"  w{i}  {answer}{note}")
    last = ctl.identity("demo").last_said
    with trio.move_on_after(5):
        await net.until(lambda: all(_holds(net.watcher(i), prefix, last) for i in (0, 1)))
    for i in range(len(net.watchers)):
        seen = await net.state(i, prefix)
        say(f"  v{i}  sn {seen.get('sn')}, standing: {seen['standing']}")

    say("\nThe controller's KEL, checked from its bytes alone:")
    validator = Validator()
    for frame in parse_stream(ctl.export("demo")):
        if isinstance(frame, Message):
            validator.process(frame, 0.0)
    state = validator.state(prefix)
    assert state is not None
    say(
        f"  {prefix}: sn {state.sn}, keys {list(state.keys)}, witnesses "
        f"{len(state.witnesses)} with threshold {state.toad}"
    )


def _holds(watcher: Watcher, prefix: str, said: str) -> bool:
    kel = watcher.validator.kel(prefix)
    return kel is not None and kel.last.event.said == said


async def _equivocation(net: LocalNet, say: Callable[[str], None]) -> None:
    say("\nAct two. 'mallory' (witnesses w0-w3, threshold 3) equivocates:")
    prefix = await net.incept("mallory", (os.urandom(32), os.urandom(32)))
    say(f"  inception fully witnessed; prefix {prefix}")
    a, msg_a = net.signed_ixn("mallory", [{"pay": "bob"}])
    b, msg_b = net.signed_ixn("mallory", [{"pay": "eve"}])
    say(f"  its keys sign two interactions at sn {a.sn}: {a.said[:16]}.. and {b.said[:16]}..")
    say("  version a goes to w0 and w1, version b to w2 and w3, at the same moment")
    caught: dict[int, float] = {}
    ruled: dict[int, float] = {}

    def progress() -> bool:
        for i in range(len(net.watchers)):
            held = net.watcher(i).holdings
            if i not in caught and held.standing(prefix, True)[0] == "duplicitous":
                caught[i] = time.perf_counter()
            if i not in ruled and held.rulings:
                ruled[i] = time.perf_counter()
        return len(caught) == len(ruled) == len(net.watchers)

    sent = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i, message in enumerate((msg_a, msg_a, msg_b, msg_b)):
            nursery.start_soon(net.submit, i, message)
        nursery.start_soon(net.until, progress)
    for i in range(len(net.watchers)):
        say(
            f"  v{i} holds verified evidence {(caught[i] - sent) * 1000:.0f} ms after the "
            f"versions were sent; a judge's ruling {(ruled[i] - sent) * 1000:.0f} ms after"
        )
    say("\nAn application asks each watcher (dkms keystate --from WATCHER):")
    for i in range(len(net.watchers)):
        state = await net.state(i, prefix)
        say(
            f"  v{i}  standing: {state['standing']} from sn {state['duplicitous_from']}, "
            f"{len(state['evidence'])} evidence, {len(state['rulings'])} ruling(s)"
        )
    envelope = Signed.from_cbor((await net.state(1, prefix))["evidence"][0])
    envelope.verify()
    accusation = verify_evidence(parse_evidence(envelope.body))
    say("\nThe evidence, checked offline from its bytes (dkms evidence verify):")
    say(f"  signed by juror {envelope.signer[:16]}..; {explain(accusation)}")
    say(
        "\nNext: `dkms-node run --data-dir DIR --listen /ip4/127.0.0.1/tcp/4001` starts a "
        "witness of your own; add `--role watcher --governance PREFIX` for a watcher."
    )


async def _state(client: ControllerClient, witness: str, prefix: str) -> str:
    ask = cbor2.dumps({"t": "state", "i": prefix})
    try:
        code, payload, reason = await client.runtime.transport.request(
            witness, "/dkms/1/query", ask, 2.0
        )
    except Exception as err:  # a stopped witness: say so and go on
        return f"no answer ({err})"
    if not code.ok:
        return f"refused: {reason}"
    state = cbor2.loads(payload)
    return (
        f"sn {state['sn']}, latest {state['d'][:16]}.., fully witnessed: {state['fully_witnessed']}"
    )

"""Witnesses as separate `dkms-node run` processes on 127.0.0.1, and a controller in this one.

Each witness is `python -m dkms.node.cli.node run --listen /ip4/127.0.0.1/tcp/0`; the test
reads its introduction (`witness PREFIX@MULTIADDR`) from its stdout and talks to it over real
libp2p, as a user's controller would. What only separate processes can show:

- a controller with 4 witnesses and bt=3 incepts, rotates (cutting one witness, adding
  another) and interacts; every witness ends with the same fully witnessed KEL;
- `kill -9` of a witness while a controller streams events to it: after a restart on the same
  data directory it still has every event it receipted, refuses another version of one, and
  its store holds one event per (prefix, sn); events complete while it is down;
- SIGTERM stops a witness within 5 s.

Every process is killed when its test ends, whatever happened.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cbor2
import pytest
import trio

from dkms.node.client.controller import ControllerClient
from dkms.node.p2p.transport import P2PTransport
from dkms.node.roles.controller import RetryPolicy
from dkms.node.roles.effects import Surface
from dkms.node.runtime.store import FILENAME, Store
from dkms.node.runtime.transport import Answer
from dkms.node.testing.keys import seed
from dkms.protocol.events import Ilk, interact
from dkms.protocol.stream import Attachments, Message, messagize, parse_stream

from . import test_witness_network as witness_network

pytestmark = pytest.mark.slow  # real processes or real time

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
STARTUP = 20.0  # seconds for a process to print its introduction (imports dominate)
SHUTDOWN = 5.0  # seconds a witness may take to stop on SIGTERM (the bound)



class WitnessProcess:
    """One `dkms-node run` process on a data directory; its log goes to `DIR.log`."""

    def __init__(self, data_dir: Path, args: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.args = args  # more `dkms-node run` options, e.g. ("--role", "watcher", ...)
        self.log = data_dir.with_name(data_dir.name + ".log")
        self.process: trio.Process | None = None
        self.introduction = ""

    @property
    def prefix(self) -> str:
        return self.introduction.split("@", 1)[0]

    @property
    def listen(self) -> str:
        return self.introduction.split("@", 1)[1]

    async def start(self, listen: str = LOOPBACK) -> str:
        """Start the process and return its introduction once it listens."""
        assert self.process is None or self.process.returncode is not None
        await self.close()  # the last run's pipe
        command = [sys.executable, "-m", "dkms.node.cli.node", "run"]
        command += ["--data-dir", str(self.data_dir), "--listen", listen, *self.args]
        with self.log.open("ab") as log:
            self.process = await trio.lowlevel.open_process(
                command, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL
            )
        assert self.process.stdout is not None
        line = b""
        with trio.move_on_after(STARTUP):
            while not line.endswith(b"\n"):
                chunk = await self.process.stdout.receive_some(4096)
                if not chunk:
                    break
                line += chunk
        words = line.decode(errors="replace").split()
        if len(words) != 2 or words[0] not in ("witness", "watcher"):
            self.kill()
            raise AssertionError(f"no introduction from {self.data_dir}: {line!r}\n{self.tail()}")
        self.introduction = words[1]
        return self.introduction

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()  # SIGKILL

    async def close(self) -> None:
        """SIGKILL if still running, reap it, and close its pipes."""
        self.kill()
        if self.process is not None:
            with trio.CancelScope(shield=True):
                await self.process.wait()
                if self.process.stdout is not None:
                    await self.process.stdout.aclose()

    async def wait(self) -> int:
        assert self.process is not None
        return await self.process.wait()

    async def terminate(self) -> float:
        """SIGTERM; the seconds it took to exit (failing if it ran over `SHUTDOWN`)."""
        assert self.process is not None
        start = trio.current_time()
        self.process.send_signal(signal.SIGTERM)
        with trio.move_on_after(SHUTDOWN):
            await self.wait()
        took = trio.current_time() - start
        code = self.process.returncode
        assert code is not None, f"still running {SHUTDOWN:g} s after SIGTERM\n{self.tail()}"
        assert code == 0, f"exit status {code} after SIGTERM\n{self.tail()}"
        return took

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"


@asynccontextmanager
async def witness_processes(tmp_path: Path, count: int) -> AsyncIterator[list[WitnessProcess]]:
    """`count` running witnesses; every one is SIGKILLed and reaped when the block ends."""
    nodes = [WitnessProcess(tmp_path / f"w{i}") for i in range(count)]
    try:
        async with trio.open_nursery() as nursery:  # start them all at once: imports are slow
            for node in nodes:
                nursery.start_soon(node.start)
        yield nodes
    finally:
        for node in nodes:
            node.kill()
        for node in nodes:
            await node.close()


@dataclass
class Seen:
    """Every receipt one witness's submit replies carried: sn -> SAIDs, SAID -> signature."""

    witness: str
    saids: dict[int, set[str]] = field(default_factory=dict)
    signatures: dict[str, bytes] = field(default_factory=dict)


class RecordingTransport(P2PTransport):
    """A P2P transport that also keeps the receipts a chosen witness hands out."""

    watch: Seen | None = None

    async def request(self, to: str, surface: str, payload: bytes, timeout: float) -> Answer:
        answer = await super().request(to, surface, payload, timeout)
        seen = self.watch
        if seen is not None and to == seen.witness and surface == Surface.SUBMIT.value:
            for frame in parse_stream(answer.payload):
                if isinstance(frame, Message) and frame.event.ilk is Ilk.RCT:
                    for prefix, signature in frame.attachments.couples:
                        if prefix == to:
                            seen.saids.setdefault(frame.event.sn, set()).add(frame.event.said)
                            seen.signatures[frame.event.said] = signature
        return answer


def controller(
    intros: list[str], retry: RetryPolicy | None = None
) -> AbstractAsyncContextManager[ControllerClient]:
    return witness_network.controller(intros, retry, RecordingTransport)


async def ask(client: ControllerClient, witness: str, query: dict[str, object]) -> bytes:
    code, payload, reason = await client.runtime.transport.request(
        witness, Surface.QUERY.value, cbor2.dumps(query), 5
    )
    assert code.ok, f"{witness}: {reason}"
    return payload


async def state_at(client: ControllerClient, witness: str, prefix: str) -> dict[str, object]:
    state: dict[str, object] = cbor2.loads(await ask(client, witness, {"t": "state", "i": prefix}))
    return state


def events_of(stream: bytes) -> list[tuple[int, str]]:
    """(sn, SAID) of every key event in a CESR stream, in order (receipts left out)."""
    out = []
    for frame in parse_stream(stream):
        assert isinstance(frame, Message), frame
        if frame.event.ilk is not Ilk.RCT:
            out.append((frame.event.sn, frame.event.said))
    return out


async def kel_at(client: ControllerClient, witness: str, prefix: str) -> list[tuple[int, str]]:
    return events_of(await ask(client, witness, {"t": "kel", "i": prefix, "s": 0}))


async def test_four_witness_processes_bt3_incept_rotate_interact(tmp_path: Path) -> None:
    with trio.fail_after(45):
        async with witness_processes(tmp_path, 5) as nodes:
            prefixes = [n.prefix for n in nodes]
            async with controller([n.introduction for n in nodes]) as client:
                ctl = client.controller
                now = client.runtime.now()
                effects = ctl.incept(
                    "alice", [seed(1)], [seed(2)], witnesses=prefixes[:4], toad=3, now=now
                )
                await client.witnessed(effects, ctl.identity("alice").last_said)
                effects = ctl.rotate(
                    "alice", [seed(3)], cuts=[prefixes[0]], adds=[prefixes[4]], toad=3, now=now
                )
                await client.witnessed(effects, ctl.identity("alice").last_said)
                for n in range(3):
                    effects = ctl.interact("alice", [{"n": n}], now=client.runtime.now())
                    await client.witnessed(effects, ctl.identity("alice").last_said)
                alice = ctl.identity("alice")
                expected = events_of(ctl.export("alice"))
                assert [sn for sn, _ in expected] == [0, 1, 2, 3, 4]
                # Witness agreement (every receipt to every witness) follows completion.
                await client.runtime.quiet()
                for witness in prefixes[1:]:
                    state = await state_at(client, witness, alice.prefix)
                    assert state["fully_witnessed"] and state["sn"] == alice.sn
                    assert state["d"] == alice.last_said
                    assert state["b"] == prefixes[1:]
                    assert state["bt"] == 3
                    receipts = state["receipts"]  # the latest event's: the answer is bounded
                    assert isinstance(receipts, dict) and list(receipts) == [alice.last_said]
                    assert len(receipts[alice.last_said]) >= 3
                    assert await kel_at(client, witness, alice.prefix) == expected
                # The cut witness saw the inception only; the rotation was not its to witness.
                assert await kel_at(client, prefixes[0], alice.prefix) == expected[:1]


async def test_kill_9_mid_stream_then_restart_keeps_every_receipted_event(
    tmp_path: Path,
) -> None:
    total, kill_at, restart_at = 300, 100, 200
    with trio.fail_after(50):
        async with witness_processes(tmp_path, 4) as nodes:
            victim = nodes[3]
            prefixes = [n.prefix for n in nodes]
            # Retries back off from 50 ms (capped at 1 s) so the restarted witness is soon
            # asked again for what it missed: that is how it catches up here.
            retry = RetryPolicy(first=0.05, cap=1.0, attempts=1000)
            async with controller([n.introduction for n in nodes], retry) as client:
                transport = client.runtime.transport
                assert isinstance(transport, RecordingTransport)
                seen = transport.watch = Seen(victim.prefix)
                ctl = client.controller
                effects = ctl.incept(
                    "dave", [seed(8)], [seed(9)], witnesses=prefixes, toad=3, now=0.0
                )
                await client.witnessed(effects, ctl.identity("dave").last_said)
                dave = ctl.identity("dave")

                async def kill_mid_stream() -> None:
                    while dave.sn < kill_at:
                        await client.runtime.changed.wait()
                    # This runs between two steps of the stream: requests to it are in flight.
                    victim.kill()
                    await victim.wait()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(kill_mid_stream)
                    for n in range(1, total + 1):
                        if n == restart_at:
                            # Events kill_at..restart_at completed with one witness of 4 down.
                            assert victim.process is not None
                            assert victim.process.returncode == -signal.SIGKILL
                            before_kill = dict(seen.signatures)
                            await victim.start(victim.listen)  # same data dir, same port
                        effects = ctl.interact("dave", [{"n": n}], now=client.runtime.now())
                        await client.witnessed(effects, dave.last_said)
                assert len(before_kill) >= kill_at // 2, "it was receipting before the kill"
                expected = events_of(ctl.export("dave"))
                assert len(expected) == total + 1

                # The controller's retries bring the restarted witness what it missed.
                with trio.fail_after(15):
                    while len(seen.signatures) < total + 1:
                        await client.runtime.changed.wait()

                # After the restart it has every event it receipted, before or after the kill,
                # each the version the controller made.
                kel = await kel_at(client, victim.prefix, dave.prefix)
                assert kel == expected
                assert set(before_kill) <= set(seen.signatures)
                # It never signed two versions of one event...
                assert all(len(saids) == 1 for saids in seen.saids.values())
                # ... and will not now: another version of an event it receipted is refused.
                sn = max(
                    s for s, saids in seen.saids.items() if s >= 1 and saids <= set(before_kill)
                )
                other = interact(dave.prefix, prior=expected[sn - 1][1], sn=sn, anchors=[{"x": 1}])
                message = messagize(
                    other, Attachments(sigs=(dave.signers[0].sign_indexed(other.raw, 0),))
                )
                code, _, reason = await transport.request(
                    victim.prefix, Surface.SUBMIT.value, message, 5
                )
                assert not code.ok
                assert "conflicting version refused" in reason

                # SIGTERM stops every witness within 5 s; then its store can be read directly.
                async with trio.open_nursery() as nursery:
                    for node in nodes:
                        nursery.start_soon(node.terminate)
                stored, receipts = read_store(victim.data_dir, victim.prefix)
                # One event per (prefix, sn), the controller's version of each, every one it
                # receipted, and its own receipt as it handed it out.
                places = [(prefix, sn) for prefix, sn, _ in stored]
                assert len(places) == len(set(places)), "two events stored at one (prefix, sn)"
                # Stored in first-seen order, which for one KEL is sn order: the runtime queues
                # each step's writes before anything else can run, so escrow releases of
                # concurrent steps cannot interleave their commits.
                assert [(sn, said) for _, sn, said in stored] == expected
                for said, signature in seen.signatures.items():
                    assert receipts.get(said) == signature, f"stored receipt of {said} differs"

                # And a second restart rebuilds the whole KEL from that store.
                await victim.start(victim.listen)
                assert await kel_at(client, victim.prefix, dave.prefix) == expected


def read_store(data_dir: Path, witness: str) -> tuple[list[tuple[str, int, str]], dict[str, bytes]]:
    """A stopped node's store: its events (prefix, sn, SAID) in first-seen order, and
    SAID -> `witness`'s own receipt signature."""
    events: list[tuple[str, int, str]] = []
    receipts: dict[str, bytes] = {}
    with Store.open(data_dir / FILENAME) as store:
        stream = store.replay()
    for frame in parse_stream(stream):
        assert isinstance(frame, Message), frame
        event = frame.event
        if event.ilk is not Ilk.RCT:
            events.append((event.prefix, event.sn, event.said))
            continue
        for prefix, signature in frame.attachments.couples:
            if prefix == witness:
                receipts[event.said] = signature
    return events, receipts

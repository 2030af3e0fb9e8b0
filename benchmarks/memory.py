"""Memory under junk: a witness and a watcher flooded with hostile but well-formed traffic.

    python benchmarks/memory.py [--gigabytes 1.0] [--attackers 6] [--workers 1]
                                [--max-seconds 1800] [--rss-limit-mb 300] [--abort-rss-mb 4000]
                                [--store-quota SIZE] [--unwitnessed-quota SIZE] [--dir DIR]

One witness and one watcher run as `dkms-node run` processes on 127.0.0.1 (the watcher with a
governance prefix that never sends a roster). Attacker workers (this script again, in
subprocesses, so that making junk does not slow the legitimate controller's own loop) each
run `--attackers` libp2p hosts with random keys, and send `--gigabytes` of junk in all,
made as it is sent (a worker holds one payload per sending task). The kinds, by share of
the bytes:

    ooo_submit  out-of-order and oversized events (validly framed, signed by fresh keys) to
    ooo_gossip  the witness's submit surface, and on the KEL gossip topics: interactions of
                identifiers never incepted, up to 1 MB of anchors (long strings, or CBOR
                empty maps, one byte each on the wire and some 70 decoded), and KELs with sn
                gaps whose inception names a made-up witness and hundreds of made-up others
                (each gap makes a node ask the KEL's witnesses for the missing events)
    icp_gossip  free inceptions (valid, no witnesses, bt 0), gossiped so that a watcher
                stores them: many small ones, and single ones of up to 1 MB
    icp_submit  inceptions naming the witness (bt 1), submitted to it: it receipts, stores
                and gossips them
    rct_gossip  bogus receipts (`rct` with non-transferable receipt couples): valid
    rct_submit  signatures by made-up witness keys over real events (the legitimate
                controller's, the attacker's own inceptions), and random signatures for
                made-up events, on gossip and on the witness's receipts surface

Requests answered RATE_LIMITED are counted and the sending task backs off a little (the
nodes' per-peer limit, `peer_rate`, applies to each attacker host alone). Meanwhile a
legitimate controller (this process, its own host) incepts `LEGIT_IDS` identifiers with the
witness (bt 1) before the attack, then keeps rotating them and asking both nodes for their
key state, timing each. (It incepts nothing during the attack: the witness cannot tell a new
identifier of its from the attackers' inceptions naming the witness, and once those fill the
store quota it takes no new identifier from anyone, by design.)

The controller runs alone for 10 s first (its "baseline" latencies), then through the attack,
then 5 s after it. Every 0.5 s each node's resident memory (VmRSS in /proc/PID/status) and
its store's size (`store.sqlite3` plus its `-wal`) are sampled. After the junk, the watcher
must catch up on every legitimate identifier within 60 s. Output: one JSON object on stdout
(bytes sent per kind and the answers, peak and final RSS and store size per node, the
legitimate operations with latency percentiles per phase, whether the nodes stayed up);
progress on stderr. Exit status 1 when a node's RSS reached `--rss-limit-mb`, a node died,
or a legitimate operation failed.

`--store-quota SIZE` and `--unwitnessed-quota SIZE` (bytes, or like `64MiB`) are passed to
both nodes when `dkms-node run` has those flags (checked with `--help`; a node without them
runs without, and the report says so); the report gives each store's peak against its quota.
The run stops sending after `--max-seconds`, or when a node dies or its RSS reaches
`--abort-rss-mb` (the report says which), whatever was sent by then.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import cbor2
import trio

from dkms.node.client.controller import ControllerClient, WitnessingFailed
from dkms.node.p2p import HostConfig, P2PError, P2PHost, open_host, parse_introduction
from dkms.node.p2p.transport import P2PTransport
from dkms.node.roles.codes import Code
from dkms.node.roles.controller import Controller, RetryPolicy
from dkms.node.roles.effects import Surface
from dkms.node.roles.topics import kel_topic
from dkms.node.runtime.transport import TransportError
from dkms.node.testing.cluster import BIN, Cluster, NodeProcess
from dkms.node.testing.keys import node_signer
from dkms.protocol import cesr
from dkms.protocol.attachments import Attachments
from dkms.protocol.cesr import Codes
from dkms.protocol.crypto import Signer, digest, next_key_digest
from dkms.protocol.events import Kind, parse_event, receipt, saidify
from dkms.protocol.thresholds import threshold_value

KINDS: Final = {  # share of the bytes sent
    "ooo_submit": 0.20,
    "ooo_gossip": 0.20,
    "icp_gossip": 0.20,
    "icp_submit": 0.15,
    "rct_gossip": 0.15,
    "rct_submit": 0.10,
}
MAX_PAYLOAD: Final = 1_000_000  # under both the request limit and the gossip payload limit
SENDERS_PER_HOST: Final = 2  # payloads in flight from one attacker host
RATE_BACKOFF: Final = 0.25  # seconds a sending task waits after a RATE_LIMITED answer
REQUEST_TIMEOUT: Final = 60.0
SAMPLE_EVERY: Final = 0.5  # seconds between RSS and store samples
PROGRESS_EVERY: Final = 10.0  # seconds between progress lines
LEGIT_IDS: Final = 10  # identifiers the legitimate controller incepts before the attack
LEGIT_PACE: Final = 0.5  # seconds between rounds of the legitimate controller
BASELINE: Final = 10.0  # seconds of the legitimate controller alone before the attack
AFTER: Final = 5.0  # seconds it goes on after the attack, before the catch-up check
LEGIT_TIMEOUT: Final = 60.0  # seconds an operation may take before it counts as failed
CATCH_UP: Final = 60.0  # seconds for the watcher to hold every legitimate identifier after
GOVERNANCE: Final = node_signer(45).verfer  # no roster ever comes; the watcher still follows


def say(text: str) -> None:
    print(f"[memory] {text}", file=sys.stderr, flush=True)


# ============================================================================ junk


def _made_up_prefix() -> str:
    """A non-transferable prefix nobody holds the key of (random bytes as a public key)."""
    return cesr.encode(Codes.ED25519N, os.urandom(32))


def _sign(raw: bytes, key: Signer, wigs: Sequence[Signer] = ()) -> bytes:
    """`raw` with the controller's signature and, indexed into its witness list, `wigs`'."""
    attachments = Attachments(
        sigs=(key.sign_indexed(raw, 0),),
        wigs=tuple(w.sign_indexed(raw, i) for i, w in enumerate(wigs)),
    )
    return raw + attachments.qb64().encode("ascii")


def inception(
    key: Signer, witnesses: Sequence[str] = (), toad: int = 0, anchors: Sequence[Any] = ()
) -> tuple[str, str, bytes]:
    """(prefix, said, body) of an inception by `key`, built without decoding it again (the
    anchors may be a million empty maps: cheap as references to one map, costly decoded)."""
    ked: dict[str, Any] = {
        "v": "",
        "t": "icp",
        "d": "",
        "i": "",
        "s": "0",
        "kt": threshold_value(1),
        "k": [key.verfer],
        "nt": threshold_value(1),
        "n": [next_key_digest(Signer(os.urandom(32)).verfer)],
        "bt": threshold_value(toad),
        "b": list(witnesses),
        "c": [],
        "a": list(anchors),
    }
    raw = saidify(ked, Kind.CBOR, ("d", "i"))
    return ked["i"], ked["d"], raw


def interaction(prefix: str, sn: int, prior: str, anchors: Sequence[Any] = ()) -> tuple[str, bytes]:
    ked: dict[str, Any] = {
        "v": "",
        "t": "ixn",
        "d": "",
        "i": prefix,
        "s": f"{sn:x}",
        "p": prior,
        "a": list(anchors),
    }
    raw = saidify(ked, Kind.CBOR, ("d",))
    return ked["d"], raw


def heavy_anchors(rng: random.Random, size: int) -> list[Any]:
    """About `size` bytes of anchors: long strings, or empty maps (one byte each in CBOR)."""
    if rng.random() < 0.5:
        return [{}] * size
    return [{"d": "x" * size}]


@dataclass
class Known:
    """Events whose bodies the attacker holds, to receipt with made-up witness keys."""

    events: deque[tuple[str, int, str, bytes]] = field(default_factory=lambda: deque(maxlen=512))

    def add(self, raw: bytes) -> None:
        if len(raw) > 4096:
            return  # receipts of small events do as well, and the worker stays small
        event = parse_event(raw)
        self.events.append((event.prefix, event.sn, event.said, raw))


class Junk:
    """Makes each kind's payloads, one at a time: (payload, gossip topic or None)."""

    def __init__(self, witness: str, rng: random.Random) -> None:
        self.witness = witness  # the witness's prefix
        self.rng = rng
        self.known = Known()
        self.fake_saids = [digest(os.urandom(32)) for _ in range(64)]
        self.fake_prefixes = [digest(os.urandom(32)) for _ in range(64)]

    def size(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def make(self, kind: str) -> tuple[bytes, str | None]:
        family, surface = kind.split("_")
        payload, prefix = {"ooo": self.ooo, "icp": self.icp, "rct": self.rct}[family](
            surface == "submit"
        )
        return payload, (None if surface == "submit" else kel_topic(prefix))

    def ooo(self, submit: bool) -> tuple[bytes, str]:
        """Events nobody can place: an interaction of an identifier never incepted (up to
        1 MB of anchors), or a KEL with a gap after its inception."""
        rng = self.rng
        key = Signer(os.urandom(32))
        if rng.random() < 0.55:
            prefix, said, _ = inception(key)
            sn = rng.randint(2, 50)
            anchors = heavy_anchors(rng, self.size(65_000, 950_000))
            _, raw = interaction(prefix, sn, digest(os.urandom(32)), anchors)
            return _sign(raw, key), prefix
        made_up = Signer(os.urandom(32), transferable=False)
        others = [_made_up_prefix() for _ in range(self.size(100, 1000))]
        prefix, said, icp = inception(key, [made_up.verfer, *others], toad=1)
        parts = [_sign(icp, key, [made_up])]
        target = self.size(64_000, 256_000)
        total, sn, prior = len(parts[0]), 1, said
        while total < target:
            said, raw = interaction(prefix, sn, prior, [{"n": sn}])
            prior = said
            if sn > 1:  # sn 1 is never sent: everything after it waits for it
                parts.append(_sign(raw, key))
                total += len(parts[-1])
            sn += 1
        return b"".join(parts), prefix

    def icp(self, submit: bool) -> tuple[bytes, str]:
        """Inceptions: free ones (no witnesses), or naming the witness (`submit`)."""
        rng = self.rng
        witnesses, toad = ([self.witness], 1) if submit else ([], 0)
        if rng.random() < 0.35:  # one large inception
            key = Signer(os.urandom(32))
            anchors = heavy_anchors(rng, self.size(65_000, 950_000))
            prefix, _, raw = inception(key, witnesses, toad, anchors)
            return _sign(raw, key), prefix
        parts: list[bytes] = []
        target, total, first = self.size(64_000, 256_000), 0, ""
        while total < target:
            key = Signer(os.urandom(32))
            anchors = [{"n": os.urandom(8).hex()}] * rng.randint(0, 4)
            prefix, _, raw = inception(key, witnesses, toad, anchors)
            first = first or prefix
            self.known.add(raw)
            parts.append(_sign(raw, key))
            total += len(parts[-1])
        return b"".join(parts), first

    def rct(self, submit: bool) -> tuple[bytes, str]:
        """Receipts by made-up witnesses: validly signed for events we hold the body of,
        randomly signed for made-up events (a few SAIDs, over and over)."""
        rng = self.rng
        parts: list[bytes] = []
        target, total, first = self.size(32_000, 256_000), 0, ""
        known = self.known.events
        while total < target:
            if known and rng.random() < 0.5:
                prefix, sn, said, raw = known[rng.randrange(len(known))]
                signers = [
                    Signer(os.urandom(32), transferable=False) for _ in range(rng.randint(1, 4))
                ]
                couples = tuple((s.verfer, s.sign_raw(raw)) for s in signers)
            else:
                prefix = self.fake_prefixes[rng.randrange(len(self.fake_prefixes))]
                said = self.fake_saids[rng.randrange(len(self.fake_saids))]
                sn = rng.randint(0, 20)
                couples = tuple(
                    (_made_up_prefix(), os.urandom(64)) for _ in range(rng.randint(1, 4))
                )
            body = receipt(prefix, sn, said).raw
            first = first or prefix
            parts.append(body + Attachments(couples=couples).qb64().encode("ascii"))
            total += len(parts[-1])
        return b"".join(parts), first


# ============================================================================ attacker worker


@dataclass
class Tally:
    """What a worker sent, and what came back."""

    sent: Counter[str] = field(default_factory=Counter)  # bytes per kind
    payloads: Counter[str] = field(default_factory=Counter)
    answers: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    making: float = 0.0  # seconds spent making junk

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": dict(self.sent),
            "payloads": dict(self.payloads),
            "answers": {k: dict(v) for k, v in self.answers.items()},
            "making": round(self.making, 1),
        }


async def _lines(stream: trio.abc.ReceiveStream) -> Any:
    """Lines of a byte stream (an async generator), without their newline."""
    buffer = b""
    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            if buffer:
                yield buffer
            return
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line


async def _join(host: P2PHost, witness: str, watcher: str) -> None:
    """Connect to both nodes, then wait (30 s at most) until our pubsub has heard that the
    watcher is on the KEL topics (the witness is only on those of identifiers it witnesses),
    so that what we publish goes to it."""
    await host.connect([witness, watcher])
    peer = parse_introduction(watcher).peer_id
    topic = kel_topic("E" * 44)
    with trio.move_on_after(30):
        while peer not in host.pubsub.peer_topics.get(topic, ()):
            await trio.sleep(0.1)


async def worker_main(config: dict[str, Any]) -> None:
    """Send `config["bytes"]` of junk from `config["attackers"]` hosts; print a JSON line of
    what was sent every second, and a last one when done."""
    witness, watcher = config["witness"], config["watcher"]
    budget = {kind: share * config["bytes"] for kind, share in KINDS.items()}
    until = time.monotonic() + config["seconds"]
    tally = Tally()
    junk = Junk(parse_introduction(witness).prefix, random.Random(os.urandom(16)))
    stdin = trio.lowlevel.FdStream(os.dup(0))

    def report(last: bool = False) -> None:
        print(json.dumps({**tally.to_json(), "last": last}), flush=True)

    def pick() -> str | None:
        if time.monotonic() > until:
            return None
        open_kinds = [k for k in KINDS if tally.sent[k] < budget[k]]
        if not open_kinds:
            return None
        return min(open_kinds, key=lambda k: tally.sent[k] / budget[k])

    async def real_events() -> None:  # the legitimate controller's events, as they come
        async for line in _lines(stdin):
            if line.strip():
                junk.known.add(base64.b64decode(json.loads(line)["raw"]))

    async def send(host: P2PHost) -> None:
        while (kind := pick()) is not None:
            began = time.process_time()
            payload, topic = junk.make(kind)
            tally.making += time.process_time() - began
            tally.sent[kind] += len(payload)  # counted before it goes: the budget holds
            tally.payloads[kind] += 1
            answers = tally.answers[kind]
            if topic is not None:
                try:
                    await host.publish(topic, payload)
                    answers["published"] += 1
                except P2PError as err:
                    answers[type(err).__name__] += 1
                continue
            surface = Surface.RECEIPTS if kind == "rct_submit" else Surface.SUBMIT
            try:
                answer = await host.request(witness, surface.value, payload, REQUEST_TIMEOUT)
            except P2PError as err:
                answers[type(err).__name__] += 1
                continue
            answers[answer.code.name] += 1
            if answer.code is Code.RATE_LIMITED:
                await trio.sleep(RATE_BACKOFF)

    config_host = HostConfig(min_peers=0, target_peers=0, request_timeout=REQUEST_TIMEOUT)
    async with AsyncExitStack() as stack:
        hosts = [
            await stack.enter_async_context(open_host(os.urandom(32), config=config_host))
            for _ in range(config["attackers"])
        ]
        async with trio.open_nursery() as joining:
            for host in hosts:
                joining.start_soon(_join, host, witness, watcher)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(real_events)

            async def tell() -> None:
                while True:
                    await trio.sleep(1.0)
                    report()

            nursery.start_soon(tell)
            async with trio.open_nursery() as senders:
                for host in hosts:
                    for _ in range(SENDERS_PER_HOST):
                        senders.start_soon(send, host)
            report(last=True)
            nursery.cancel_scope.cancel()


# ============================================================================ the nodes


@dataclass
class Watch:
    """Samples of one node process: RSS and store size."""

    node: NodeProcess
    name: str
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds, bytes), thinned
    peak_rss: int = 0
    first_rss: int = 0
    last_rss: int = 0
    store: int = 0
    peak_store: int = 0
    died_at: float | None = None

    def sample(self, at: float) -> None:
        if not self.node.alive():
            if self.died_at is None:
                self.died_at = at
            return
        rss = vm_rss(self.node.process.pid)
        if rss is not None:
            self.first_rss = self.first_rss or rss
            self.last_rss = rss
            self.peak_rss = max(self.peak_rss, rss)
            if not self.rss or at - self.rss[-1][0] >= 5.0:
                self.rss.append((at, rss))
        self.store = store_size(self.node.data_dir)
        self.peak_store = max(self.peak_store, self.store)


UNITS: Final = {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def size_bytes(text: str) -> int:
    """`64MiB`, `4 GiB` or `1000000`: in bytes (the nodes' own notation, node/config.py)."""
    text = text.strip()
    number = text.rstrip("KMGTiB ")
    return int(float(number) * UNITS[text[len(number) :].strip()])


def vm_rss(pid: int) -> int | None:
    """Resident memory of `pid` in bytes (VmRSS), or None if it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def store_size(data_dir: Path) -> int:
    total = 0
    for name in ("store.sqlite3", "store.sqlite3-wal"):
        with suppress(OSError):
            total += (data_dir / name).stat().st_size
    return total


def node_flags() -> str:
    """`dkms-node run --help`: which flags this node has."""
    done = subprocess.run(
        [str(BIN / "dkms-node"), "run", "--help"], capture_output=True, timeout=60, check=False
    )
    return done.stdout.decode(errors="replace")


# ============================================================================ the controller


@dataclass
class Legit:
    """A legitimate controller's operations: timed, and counted as ok or failed."""

    client: ControllerClient
    witness: str  # prefixes
    watcher: str
    announce: Callable[[bytes], None]
    phase: str = "baseline"  # then "attack" while junk is sent, then "after"
    # (phase, operation) -> seconds each operation that succeeded took
    latency: defaultdict[tuple[str, str], list[float]] = field(
        default_factory=lambda: defaultdict(list)
    )
    failed: Counter[tuple[str, str]] = field(default_factory=Counter)
    reasons: list[str] = field(default_factory=list)
    stale: int = 0  # watcher answers behind the witness (the gossip had not arrived yet)
    names: list[str] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)  # identifiers whose event failed

    def fail(self, op: str, reason: str) -> None:
        self.failed[self.phase, op] += 1
        if len(self.reasons) < 20:
            self.reasons.append(f"{self.phase} {op}: {reason}")

    async def witnessed(self, op: str, name: str, make: Callable[[float], list[Any]]) -> None:
        ctl = self.client.controller
        start = time.monotonic()
        try:
            with trio.fail_after(LEGIT_TIMEOUT):
                effects = make(self.client.runtime.now())
                said = ctl.identity(name).last_said
                await self.client.witnessed(effects, said)
        except (WitnessingFailed, trio.TooSlowError) as err:
            self.fail(op, f"{name}: {type(err).__name__} {err}")
            self.broken.add(name)
            return
        self.latency[self.phase, op].append(time.monotonic() - start)
        record = ctl.validator.record(said)
        if record is not None:
            self.announce(record.event.raw)

    async def state(self, op: str, node: str, prefix: str, want: int) -> int | None:
        """Ask `node` for the key state of `prefix`; its sn, or None (counted as failed)."""
        ask = cbor2.dumps({"t": "state", "i": prefix})
        start = time.monotonic()
        try:
            answer = await self.client.runtime.transport.request(
                node, Surface.QUERY.value, ask, LEGIT_TIMEOUT
            )
        except TransportError as err:
            self.fail(op, f"{prefix[:12]}: {err}")
            return None
        self.latency[self.phase, op].append(time.monotonic() - start)
        watcher = op == "state_watcher"
        if watcher and answer.code is Code.UNKNOWN:  # its gossip has not arrived yet
            self.stale += 1
            return None
        if not answer.code.ok:
            self.fail(op, f"{prefix[:12]}: {answer.code.name} {answer.reason}")
            return None
        sn = cbor2.loads(answer.payload).get("sn")
        if watcher and sn is None:
            self.stale += 1
            return None
        if not isinstance(sn, int):
            self.fail(op, f"{prefix[:12]}: no sn in {answer.payload[:200]!r}")
            return None
        if op == "state_witness" and sn != want:
            self.fail(op, f"{prefix[:12]}: sn {sn}, not {want}")
        elif sn < want:
            self.stale += 1
        return sn

    async def incept(self) -> None:
        name = f"id{len(self.names)}"
        self.names.append(name)
        ctl = self.client.controller

        def make(now: float) -> list[Any]:
            seeds = [os.urandom(32)], [os.urandom(32)]
            return ctl.incept(name, *seeds, witnesses=[self.witness], toad=1, now=now)

        await self.witnessed("incept", name, make)

    async def round(self) -> None:
        ctl = self.client.controller
        for name in [n for n in self.names if n not in self.broken]:

            def make(now: float, name: str = name) -> list[Any]:
                return ctl.rotate(name, [os.urandom(32)], now=now)

            await self.witnessed("rotate", name, make)
            if name in self.broken:
                continue
            ident = ctl.identity(name)
            await self.state("state_witness", self.witness, ident.prefix, ident.sn)
            await self.state("state_watcher", self.watcher, ident.prefix, ident.sn)

    async def run(self, stop: trio.Event) -> None:
        # All incepted before the attack: a witness cannot tell a legitimate controller's
        # new identifier from the attackers' inceptions naming it, so once those fill its
        # store_quota it takes no new identifier from anyone (by design); what it holds, it
        # keeps serving, and that is what is measured.
        for _ in range(LEGIT_IDS):
            await self.incept()
        while not stop.is_set():
            await self.round()
            await trio.sleep(LEGIT_PACE)

    async def caught_up(self, within: float) -> list[str]:
        """The identifiers the watcher does not hold at their last sn after `within` s."""
        ctl = self.client.controller
        behind = [n for n in self.names if n not in self.broken]
        deadline = time.monotonic() + within
        while behind and time.monotonic() < deadline:
            still = []
            for name in behind:
                ident = ctl.identity(name)
                ask = cbor2.dumps({"t": "state", "i": ident.prefix})
                try:
                    answer = await self.client.runtime.transport.request(
                        self.watcher, Surface.QUERY.value, ask, 10
                    )
                    sn = cbor2.loads(answer.payload).get("sn") if answer.code.ok else None
                except (TransportError, ValueError):
                    sn = None
                if sn != ident.sn:
                    still.append(name)
            behind = still
            if behind:
                await trio.sleep(1.0)
        return behind

    def to_json(self) -> dict[str, Any]:
        phases: dict[str, dict[str, Any]] = {}
        for phase in ("baseline", "attack", "after"):
            ops = phases[phase] = {}
            for op in ("incept", "rotate", "state_witness", "state_watcher"):
                times = sorted(self.latency[phase, op])
                failed = self.failed[phase, op]
                if times or failed:
                    ops[op] = {"ok": len(times), "failed": failed, **percentiles(times)}
        return {
            "identifiers": len(self.names),
            "ops_by_phase": phases,
            "ok": sum(len(t) for t in self.latency.values()),
            "failed": sum(self.failed.values()),
            "watcher_answers_behind": self.stale,
            "failures": self.reasons,
        }


def percentiles(times: list[float]) -> dict[str, float | None]:
    def at(q: float) -> float | None:
        if not times:
            return None
        return round(1000 * times[min(len(times) - 1, math.ceil(q * len(times)) - 1)], 1)

    return {"p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99), "max_ms": at(1.0)}


# ============================================================================ the run


def mb(n: float) -> float:
    return round(n / 1e6, 1)


async def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    flags = node_flags()
    extra: list[str] = []
    notes: list[str] = []
    quotas: dict[str, int] = {}
    for flag, value in (
        ("--store-quota", args.store_quota),
        ("--unwitnessed-quota", args.unwitnessed_quota),
    ):
        if value is None:
            continue
        if flag in flags:
            extra += [flag, value]
            quotas[flag.strip("-")] = size_bytes(value)
        else:
            notes.append(f"dkms-node run has no {flag} flag: the nodes ran without it")
            say(notes[-1])
    total = int(args.gigabytes * 1e9)
    with Cluster(root) as cluster:
        witness = await trio.to_thread.run_sync(cluster.start, "witness", *extra)
        watcher = await trio.to_thread.run_sync(
            cluster.start, "watcher", "--governance", GOVERNANCE, *extra
        )
        watches = [Watch(witness, "witness"), Watch(watcher, "watcher")]
        say(f"witness and watcher up; {mb(total)} MB of junk from {args.workers} worker(s)")
        started = time.monotonic()
        tallies: list[dict[str, Any]] = [{} for _ in range(args.workers)]
        lines_out: list[bytes] = []  # the legitimate events, for the workers to receipt

        def announce(raw: bytes) -> None:
            line = json.dumps({"raw": base64.b64encode(raw).decode()}).encode() + b"\n"
            lines_out.append(line)

        def sample() -> None:
            for watch in watches:
                watch.sample(time.monotonic() - started)

        async with open_host(os.urandom(32)) as host:
            transport = P2PTransport(host)
            transport.learn(witness.intro)
            transport.learn(watcher.intro)
            retry = RetryPolicy(first=0.2, cap=2.0, attempts=20)
            client = ControllerClient(Controller(retry=retry), transport)
            legit = Legit(client, witness.prefix, watcher.prefix, announce)
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                await nursery.start(client.run)

                async def sampler() -> None:
                    while True:
                        sample()
                        await trio.sleep(SAMPLE_EVERY)

                nursery.start_soon(sampler)
                nursery.start_soon(legit.run, stop)

                async def worker(i: int) -> None:
                    config = {
                        "witness": witness.intro,
                        "watcher": watcher.intro,
                        "bytes": total // args.workers,
                        "attackers": args.attackers,
                        "seconds": args.max_seconds,
                    }
                    command = [sys.executable, __file__, "--worker", json.dumps(config)]
                    with (root / f"attacker{i}.log").open("wb") as log:  # libp2p's chatter
                        process = await trio.lowlevel.open_process(
                            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log
                        )
                    stdin, stdout = process.stdin, process.stdout
                    assert stdin is not None and stdout is not None

                    async def feed() -> None:
                        sent = 0
                        while True:
                            while sent < len(lines_out):
                                await stdin.send_all(lines_out[sent])
                                sent += 1
                            await trio.sleep(0.5)

                    try:
                        async with trio.open_nursery() as inner:
                            inner.start_soon(feed)
                            async for line in _lines(stdout):
                                try:
                                    tallies[i] = json.loads(line)
                                except ValueError:
                                    say(f"worker {i}: {line[:200]!r}")
                            inner.cancel_scope.cancel()
                        with trio.move_on_after(30):  # it closes its hosts, then exits
                            await process.wait()
                    finally:
                        with trio.CancelScope(shield=True):
                            if process.returncode is None:
                                process.kill()
                            await process.wait()

                async def progress() -> None:
                    while True:
                        await trio.sleep(PROGRESS_EVERY)
                        sent = sum(sum(t.get("sent", {}).values()) for t in tallies)
                        nodes = ", ".join(
                            f"{w.name} {mb(w.last_rss)} MB (peak {mb(w.peak_rss)}), "
                            f"store {mb(w.store)} MB" + ("" if w.died_at is None else " DEAD")
                            for w in watches
                        )
                        legit_ok = sum(len(v) for v in legit.latency.values())
                        say(
                            f"{time.monotonic() - started:.0f} s: sent {mb(sent)}/{mb(total)} MB;"
                            f" {nodes}; legit ok {legit_ok} failed {sum(legit.failed.values())}"
                        )

                nursery.start_soon(progress)
                await trio.sleep(BASELINE)  # the controller alone first, to compare with
                say("baseline taken; the attack begins")
                legit.phase = "attack"
                aborted: list[str] = []
                attack_start = time.monotonic()
                async with trio.open_nursery() as attack:

                    async def guard() -> None:  # a dead node, or one too large, ends it
                        limit = args.abort_rss_mb * 1e6
                        while all(w.node.alive() and w.peak_rss < limit for w in watches):
                            await trio.sleep(SAMPLE_EVERY)
                        aborted.append(
                            "a node died"
                            if not all(w.node.alive() for w in watches)
                            else f"a node reached {args.abort_rss_mb:g} MB"
                        )
                        say(f"{aborted[0]}: stopping the attack")
                        attack.cancel_scope.cancel()

                    attack.start_soon(guard)
                    async with trio.open_nursery() as senders:
                        for i in range(args.workers):
                            senders.start_soon(worker, i)
                    attack.cancel_scope.cancel()
                attack_seconds = time.monotonic() - attack_start
                say(f"junk sent in {attack_seconds:.0f} s; the controller goes on a little")
                legit.phase = "after"
                await trio.sleep(AFTER)
                stop.set()
                behind = await legit.caught_up(CATCH_UP)
                for name in behind:
                    legit.fail("watcher_caught_up", f"{name}: the watcher is behind")
                sample()
                alive = {w.name: w.died_at is None and w.node.alive() for w in watches}
                metrics = {
                    w.name: await trio.to_thread.run_sync(node_metrics, w.node) for w in watches
                }
                nursery.cancel_scope.cancel()
    sent: Counter[str] = Counter()
    payloads: Counter[str] = Counter()
    answers: defaultdict[str, Counter[str]] = defaultdict(Counter)
    making = 0.0
    for tally in tallies:
        sent.update(tally.get("sent", {}))
        payloads.update(tally.get("payloads", {}))
        for kind, counts in tally.get("answers", {}).items():
            answers[kind].update(counts)
        making += tally.get("making", 0.0)
    sent_total = sum(sent.values())
    nodes = {
        w.name: {
            "alive": alive[w.name],
            "died_at_s": None if w.died_at is None else round(w.died_at, 1),
            "rss_start_mb": mb(w.first_rss),
            "rss_peak_mb": mb(w.peak_rss),
            "rss_final_mb": mb(w.last_rss),
            "store_final_mb": mb(w.store),
            "store_peak_mb": mb(w.peak_store),
            "store_peak_vs_quota": (
                round(w.peak_store / quotas["store-quota"], 3) if "store-quota" in quotas else None
            ),
            "rss_mb_every_5s": [mb(r) for _, r in w.rss],
            "metrics": metrics[w.name],
            "log": log_summary(w.node.log()),
        }
        for w in watches
    }
    report = {
        "gigabytes_asked": args.gigabytes,
        "bytes_sent": sent_total,
        "bytes_sent_per_kind": dict(sent),
        "payloads_per_kind": dict(payloads),
        "answers_per_kind": {k: dict(v) for k, v in answers.items()},
        "rate_limited": sum(c.get("RATE_LIMITED", 0) for c in answers.values()),
        "attack_seconds": round(attack_seconds, 1),
        "attack_stopped_early": aborted[0] if aborted else None,
        "attack_mb_per_s": round(sent_total / 1e6 / attack_seconds, 2) if attack_seconds else 0,
        "attacker_seconds_making_junk": round(making, 1),
        "attackers": args.attackers * args.workers,
        "quotas": quotas,
        "quota_notes": notes,
        "rss_limit_mb": args.rss_limit_mb,
        "nodes": nodes,
        "legit": legit.to_json(),
    }
    return report


METRICS: Final = ("requests", "rate_limited", "blames", "refusals", "store_events", "escrow")


def node_metrics(node: NodeProcess) -> dict[str, float]:
    """The node's counters of interest (`METRICS`), each summed over its labels."""
    url = f"http://127.0.0.1:{node.metrics_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    out: defaultdict[str, float] = defaultdict(float)
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        base = name.split("{", 1)[0]
        if any(word in base for word in METRICS):
            with suppress(ValueError):
                out[base] += float(value)
    return dict(out)


def log_summary(log: str) -> dict[str, Any]:
    """What a node's log says of trouble: tracebacks, and gossip it dropped (a full queue)."""
    lines = log.splitlines()
    dropped = [line for line in lines if "dropped" in line and "WARNING" in line.upper()]
    return {
        "lines": len(lines),
        "tracebacks": sum("Traceback" in line for line in lines),
        "drop_warnings": len(dropped),
        "last_drop_warning": dropped[-1][-200:] if dropped else None,
    }


def verdict(report: dict[str, Any]) -> list[str]:
    bad = []
    for name, node in report["nodes"].items():
        if node["rss_peak_mb"] >= report["rss_limit_mb"]:
            bad.append(f"{name}: peak RSS {node['rss_peak_mb']} MB")
        if not node["alive"]:
            bad.append(f"{name} died")
    if report["legit"]["failed"]:
        bad.append(f"{report['legit']['failed']} legitimate operations failed")
    return bad


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        trio.run(worker_main, json.loads(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=1.0, help="junk to send, in GB")
    parser.add_argument("--attackers", type=int, default=6, help="attacker hosts per worker")
    parser.add_argument("--workers", type=int, default=1, help="attacker processes")
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="stop sending after")
    parser.add_argument(
        "--store-quota", default=None, help="passed to both nodes, e.g. 64MiB (if they have it)"
    )
    parser.add_argument(
        "--unwitnessed-quota", default=None, help="passed to both nodes (if they have it)"
    )
    parser.add_argument(
        "--abort-rss-mb",
        type=float,
        default=4000.0,
        help="stop the attack when a node's RSS reaches this (protects the machine)",
    )
    parser.add_argument("--rss-limit-mb", type=float, default=300.0)
    parser.add_argument("--dir", type=Path, default=None, help="keep data and logs here")
    args = parser.parse_args()
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        report = trio.run(run, args, args.dir)
    else:
        with tempfile.TemporaryDirectory(prefix="dkms-memory-") as tmp:
            report = trio.run(run, args, Path(tmp))
    report["failures"] = verdict(report)
    print(json.dumps(report, indent=2))
    sys.exit(1 if report["failures"] else 0)


if __name__ == "__main__":
    main()

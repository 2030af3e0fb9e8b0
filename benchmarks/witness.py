"""Events/s one witness receipts end to end, next to the raw request/response rate.

One `dkms-node run` witness in its own process (its own core), a durable SQLite store in a
temporary directory, and this process as the controller side, over loopback. Measured in the
same run, each with `--in-flight` requests kept in flight at once:

    raw         py-libp2p request/response to an echo responder in its own process
                (`benchmarks/reqresp.py --serve`), with a payload the size of one submission:
                the floor under the witness, as `benchmarks/reqresp.py` measures it
    floor       the same responder, answering only after the least any durable witness does
                per event: one Ed25519 verify, one sign, one row made durable in SQLite the
                way the node's store does it (WAL, synchronous=FULL, a commit per request on
                a worker thread), `reqresp.py`'s `Floor`; `of_raw` as for submit, and submit
                rows get `of_floor`
    submit      pre-signed interaction events sent to the witness's `/dkms/1/submit`; an
                event counts once its reply carries the witness's receipt, i.e. after the
                witness validated it, made it durable (group commit) and signed the receipt.
                N in flight = N identifiers, each submitting its own KEL in order. With
                `--batch B` each request carries B consecutive events of one identifier
    controller  the same through the node's own `ControllerClient` and `Controller` role
                (sign, push, take receipts, witness agreement), toad 1: what a user's
                controller gets

Receipts are checked (one per event, signature valid) after the clock stops. For every row:
events/s, latency percentiles per request, CPU per event on each side (the witness's from
/proc), and `of_raw`, the ratio to the raw rate at the same number in flight. The issue's
targets: >= 1,000 receipted events/s per witness, and >= half the raw rate.

    python benchmarks/witness.py [--events 1500] [--in-flight 1,8,32] [--batch 1,10]
                                 [--modes raw,floor,submit,controller] [--anchor-bytes 64]
                                 [--dir DIR] [--profile cprofile|py-spy] [--top 25]
                                 [--profile-out FILE]

`--profile` runs the witness under cProfile (event loop thread only) or `py-spy record`
(every thread, native frames off; needs `py-spy` beside the interpreter or on PATH) and
prints where its time went.
Output: one JSON object per line on stdout; the profile on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from dkms.node.client.controller import ControllerClient
from dkms.node.p2p import P2PHost, open_host
from dkms.node.p2p.transport import P2PTransport
from dkms.node.roles.controller import Controller, RetryPolicy
from dkms.node.roles.effects import Surface
from dkms.protocol import cesr, crypto
from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.events import Ilk, incept, interact
from dkms.protocol.stream import Attachments, Message, messagize, parse_stream

ECHO = "/dkms/bench/echo"  # what benchmarks/reqresp.py's responder serves
FLOOR = "/dkms/bench/floor"  # and this with --floor-db
SUBMIT = Surface.SUBMIT.value
TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- the other process


class Peer:
    """A process that prints one line (its introduction) once it listens."""

    def __init__(self, command: list[str], log: Path) -> None:
        self.command = command
        self.log = log
        self.process: subprocess.Popen[str] | None = None
        self.introduction = ""

    def __enter__(self) -> Peer:
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
            )
        assert self.process.stdout is not None
        # The witness prints "witness PREFIX@ADDR", the echo responder just PREFIX@ADDR; a
        # profiler may print its own lines first.
        for line in self.process.stdout:
            words = line.split()
            if words and "@/" in words[-1]:
                self.introduction = words[-1]
                return self
        self.__exit__()
        raise SystemExit(f"{' '.join(self.command)} did not start; see {self.log}")

    @property
    def pid(self) -> int:
        """The node's pid: the process we started, or its child when that is a profiler."""
        assert self.process is not None
        pid = self.process.pid
        if Path(self.command[0]).name == "py-spy":
            for task in Path(f"/proc/{pid}/task").iterdir():
                children = (task / "children").read_text().split()
                if children:
                    return int(children[0])
        return pid

    def cpu(self) -> float:
        """Seconds of CPU the node (all its threads) has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def __exit__(self, *_: object) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)  # the witness's cue (py-spy then writes)
            assert self.process.stdin is not None
            self.process.stdin.close()  # the echo responder's cue
            try:
                self.process.wait(timeout=20)  # a profiler may take a while to write
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def witness_command(data_dir: Path, profile: str | None, out: Path) -> list[str]:
    node = ["-m", "dkms.node.cli.node", "run", "--data-dir", str(data_dir)]
    node += ["--listen", "/ip4/127.0.0.1/tcp/0", "--log-level", "warning"]
    if profile == "cprofile":
        return [sys.executable, "-m", "cProfile", "-o", str(out), *node]
    if profile == "py-spy":
        beside = Path(sys.executable).with_name("py-spy")
        spy = beside if beside.exists() else Path(shutil.which("py-spy") or beside)
        record = ["record", "--gil", "--format", "raw", "-o", str(out), "--rate", "500", "--"]
        return [str(spy), *record, sys.executable, *node]
    return [sys.executable, *node]


# ---------------------------------------------------------------- workloads


@dataclass
class Chain:
    """One identifier's KEL, signed in advance: its inception, then interactions in order."""

    prefix: str
    inception: bytes
    messages: list[bytes]
    raws: list[bytes]
    saids: list[str]


def make_chain(witness: str, count: int, anchor_bytes: int) -> Chain:
    signer, nxt = Signer(os.urandom(32)), Signer(os.urandom(32))
    icp = incept(
        [signer.verfer], next_digests=[next_key_digest(nxt.verfer)], witnesses=[witness], toad=1
    )
    prior, messages, raws, saids = icp.said, [], [], []
    for sn in range(1, count + 1):
        anchor = {"i": icp.prefix, "s": f"{sn:x}", "d": prior, "x": "x" * anchor_bytes}
        event = interact(icp.prefix, prior=prior, sn=sn, anchors=[anchor])
        messages.append(messagize(event, Attachments(sigs=(signer.sign_indexed(event.raw, 0),))))
        raws.append(event.raw)
        saids.append(event.said)
        prior = event.said
    inception = messagize(icp, Attachments(sigs=(signer.sign_indexed(icp.raw, 0),)))
    return Chain(icp.prefix, inception, messages, raws, saids)


def check_receipts(witness: str, chains: list[Chain], replies: list[bytes]) -> None:
    """Exactly one valid receipt by `witness` for every event of `chains`."""
    raw_of = {said: raw for c in chains for said, raw in zip(c.saids, c.raws, strict=True)}
    key = cesr.decode_key(witness)
    got: Counter[str] = Counter()
    for reply in replies:
        for frame in parse_stream(reply):
            if not isinstance(frame, Message) or frame.event.ilk is not Ilk.RCT:
                continue
            for prefix, sig in frame.attachments.couples:
                said = frame.event.said
                if prefix == witness and said in raw_of and crypto.verify(key, sig, raw_of[said]):
                    got[said] += 1
    missing = [s for s in raw_of if got[s] != 1]
    if missing:
        raise SystemExit(f"{len(missing)} events without exactly one valid receipt")


# ---------------------------------------------------------------- measurements


@dataclass
class Timing:
    events: int
    wall: float
    cpu: float  # this process
    peer_cpu: float  # the other process
    latencies: list[float]

    def row(self, **what: Any) -> dict[str, Any]:
        """A result line; for `raw` rows an "event" is one round trip."""
        self.latencies.sort()
        lat = self.latencies
        return {
            **what,
            "events": self.events,
            "per_s": round(self.events / self.wall, 1),
            "p50_ms": round(lat[len(lat) // 2] * 1000, 2),
            "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 2),
            "cpu_ms_per_event_here": round(self.cpu / self.events * 1000, 3),
            "cpu_ms_per_event_peer": round(self.peer_cpu / self.events * 1000, 3),
        }


async def timed(peer: Peer, events: int, work: Any) -> Timing:
    latencies: list[float] = []
    wall, cpu, peer_cpu = time.perf_counter(), time.process_time(), peer.cpu()
    await work(latencies)
    return Timing(
        events,
        time.perf_counter() - wall,
        time.process_time() - cpu,
        peer.cpu() - peer_cpu,
        latencies,
    )


async def request(host: P2PHost, to: str, protocol: str, payload: bytes) -> bytes:
    code, answer, reason = await host.request(to, protocol, payload, 30)
    if not code.ok:
        raise SystemExit(f"{protocol} refused: {reason}")
    return answer


async def measure_raw(
    host: P2PHost, echo: Peer, size: int, count: int, width: int, protocol: str = ECHO
) -> Timing:
    payload = bytes(size)
    await request(host, echo.introduction, protocol, payload)  # connect, warm up
    left = [count]

    async def worker(latencies: list[float]) -> None:
        while left[0] > 0:
            left[0] -= 1
            start = time.perf_counter()
            await request(host, echo.introduction, protocol, payload)
            latencies.append(time.perf_counter() - start)

    async def work(latencies: list[float]) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(width):
                nursery.start_soon(worker, latencies)

    return await timed(echo, count, work)


async def measure_submit(
    host: P2PHost, witness: Peer, chains: list[Chain], batch: int, replies: list[bytes]
) -> Timing:
    target = witness.introduction
    for chain in chains:  # untimed: the witness learns the identifiers
        replies.append(await request(host, target, SUBMIT, chain.inception))

    async def submit_chain(chain: Chain, latencies: list[float]) -> None:
        for at in range(0, len(chain.messages), batch):
            payload = b"".join(chain.messages[at : at + batch])
            start = time.perf_counter()
            replies.append(await request(host, target, SUBMIT, payload))
            latencies.append(time.perf_counter() - start)

    async def work(latencies: list[float]) -> None:
        async with trio.open_nursery() as nursery:
            for chain in chains:
                nursery.start_soon(submit_chain, chain, latencies)

    return await timed(witness, sum(len(c.messages) for c in chains), work)


async def measure_controller(
    host: P2PHost, witness: Peer, prefix: str, count: int, width: int
) -> Timing:
    transport = P2PTransport(host)
    transport.learn(witness.introduction)
    client = ControllerClient(Controller(retry=RetryPolicy(attempts=1)), transport)
    names = [f"id{i}" for i in range(width)]
    per_name = count // width
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        ctl = client.controller
        for name in names:  # untimed
            effects = ctl.incept(
                name,
                [os.urandom(32)],
                [os.urandom(32)],
                witnesses=[prefix],
                toad=1,
                now=client.runtime.now(),
            )
            await client.witnessed(effects, ctl.identity(name).last_said)

        async def stream(name: str, latencies: list[float]) -> None:
            for n in range(per_name):
                start = time.perf_counter()
                effects = ctl.interact(name, [{"n": n}], now=client.runtime.now())
                await client.witnessed(effects, ctl.identity(name).last_said)
                latencies.append(time.perf_counter() - start)

        async def work(latencies: list[float]) -> None:
            async with trio.open_nursery() as inner:
                for name in names:
                    inner.start_soon(stream, name, latencies)

        timing = await timed(witness, per_name * width, work)
        nursery.cancel_scope.cancel()
    return timing


async def run(args: argparse.Namespace, witness: Peer, echo: Peer | None) -> None:
    prefix = witness.introduction.split("@", 1)[0]
    async with open_host(os.urandom(32)) as host:
        size = len(make_chain(prefix, 1, args.anchor_bytes).messages[0])
        raw_rate: dict[tuple[int, int], float] = {}
        floor_rate: dict[tuple[int, int], float] = {}
        for width in args.in_flight:
            for batch in args.batch:
                if echo is not None:
                    timing = await measure_raw(host, echo, size * batch, args.events, width)
                    row = timing.row(what="raw", request_bytes=size * batch, in_flight=width)
                    raw_rate[width, batch] = row["per_s"]
                    emit(row)
                if echo is not None and "floor" in args.modes:
                    timing = await measure_raw(
                        host, echo, size * batch, args.events, width, protocol=FLOOR
                    )
                    row = timing.row(what="floor", request_bytes=size * batch, in_flight=width)
                    floor_rate[width, batch] = row["per_s"]
                    row["of_raw"] = round(row["per_s"] / raw_rate[width, batch], 3)
                    emit(row)
                if "submit" in args.modes:
                    per_chain = max(batch, args.events // width // batch * batch)
                    chains = [
                        make_chain(prefix, per_chain, args.anchor_bytes) for _ in range(width)
                    ]
                    replies: list[bytes] = []
                    timing = await measure_submit(host, witness, chains, batch, replies)
                    check_receipts(prefix, chains, replies)
                    row = timing.row(
                        what="submit",
                        request_bytes=size * batch,
                        in_flight=width,
                        events_per_request=batch,
                    )
                    requests_per_s = row["per_s"] / batch
                    if (width, batch) in raw_rate:
                        row["of_raw"] = round(requests_per_s / raw_rate[width, batch], 3)
                    if (width, batch) in floor_rate:
                        row["of_floor"] = round(requests_per_s / floor_rate[width, batch], 3)
                    emit(row)
            if "controller" in args.modes:
                timing = await measure_controller(host, witness, prefix, args.events, width)
                row = timing.row(what="controller", in_flight=width, events_per_request=1)
                if (width, 1) in raw_rate:
                    row["of_raw"] = round(row["per_s"] / raw_rate[width, 1], 3)
                emit(row)


def emit(row: dict[str, Any]) -> None:
    print(json.dumps(row), flush=True)


# ---------------------------------------------------------------- profiles


def show_profile(kind: str, out: Path, top: int) -> None:
    if not out.exists():
        print(f"no profile written to {out}", file=sys.stderr)
        return
    if kind == "cprofile":
        stats = pstats.Stats(str(out), stream=sys.stderr)
        stats.strip_dirs().sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        return
    # py-spy raw: one "frame;frame;...;leaf count" line per distinct stack.
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[_short(frames[-1])] += n
        for frame in {_short(f) for f in frames}:
            inclusive[frame] += n
    print(f"py-spy: {total} samples", file=sys.stderr)
    for title, table in (("own time", own), ("inclusive", inclusive)):
        print(f"--- {title} ---", file=sys.stderr)
        for frame, n in table.most_common(top):
            print(f"{100 * n / total:6.1f}%  {frame}", file=sys.stderr)


def _short(frame: str) -> str:
    """`fn (path/to/module.py:123)` -> `fn (module.py:123)`."""
    name, _, where = frame.partition(" (")
    return f"{name} ({Path(where.rstrip(')')).name})" if where else name


# ---------------------------------------------------------------- command line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1500, help="events per measurement")
    parser.add_argument("--in-flight", type=_ints, default=[1, 8, 32])
    parser.add_argument("--batch", type=_ints, default=[1], help="events per submit request")
    parser.add_argument("--modes", type=_words, default=["raw", "floor", "submit", "controller"])
    parser.add_argument("--anchor-bytes", type=int, default=64, help="padding in each anchor")
    parser.add_argument("--dir", default=None, help="where the witness keeps its store")
    parser.add_argument("--profile", choices=["cprofile", "py-spy"], default=None)
    parser.add_argument("--top", type=int, default=25, help="profile lines to print")
    parser.add_argument("--profile-out", type=Path, default=None, help="keep the raw profile")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="dkms-witness-bench-", dir=args.dir))
    profile_out = directory / ("witness.prof" if args.profile == "cprofile" else "witness.spy")
    emit({"machine": machine(), "store_dir": str(directory)})
    try:
        command = witness_command(directory / "witness", args.profile, profile_out)
        with Peer(command, directory / "witness.log") as witness:
            if "raw" in args.modes or "floor" in args.modes:
                reqresp = Path(__file__).with_name("reqresp.py")
                echo_cmd = [sys.executable, str(reqresp), "--serve", "yamux"]
                echo_cmd += ["--floor-db", str(directory / "floor.sqlite")]
                with Peer(echo_cmd, directory / "echo.log") as echo:
                    trio.run(run, args, witness, echo)
            else:
                trio.run(run, args, witness, None)
        if args.profile:
            show_profile(args.profile, profile_out, args.top)
            if args.profile_out is not None and profile_out.exists():
                shutil.copy(profile_out, args.profile_out)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": model, "python": sys.version.split()[0]}


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def _words(text: str) -> list[str]:
    return [part.strip() for part in text.split(",")]


if __name__ == "__main__":
    main()

"""A KEL of N events (100,000 by default) through the real commands, as a user runs them.

Five `dkms-node run` witnesses in their own processes on loopback (each bootstrapped to
those started before it), and the `dkms` command line in subprocesses, with its home in a
temporary directory. Timed, each step on its own:

    create      `dkms id create bench` with witnesses w0-w3, bt 3 (the inception)
    make        N-1 interactions signed with the identifier's key into a KEL file (this
                script, with the keystore's seed: "a KEL made elsewhere"; not a command)
    submit      `dkms kel submit FILE --to w0 w1 w2 w3`: in request-sized pieces, in order,
                then the receipt exchange
    keystate    `dkms keystate PREFIX --from w1 --json`: the state, then the KEL page by
                page, validated (witness receipts included)
    export      `dkms kel export PREFIX --from w0 > HOME/kels/bench.cesr`: page by page; the
                home then holds the whole fully witnessed KEL (what the rotation builds on)
    rotate      `dkms id rotate bench --add-witness w4` (bt 4 of 5): w4 gets the KEL's first
                page with the rotation and fills the rest from its co-witnesses
    gap-fill    from the start of `rotate` until w4's store holds all N+1 events (its
                Prometheus `dkms_store_events`, polled every 0.2 s)
    export-new  `dkms kel export PREFIX --from w4 > FILE`: the KEL as the new witness serves it
    keystate-new  `dkms keystate PREFIX --from w4 --json`: verified, at sn N

    python benchmarks/longkel.py [--events 100000] [--dir DIR]

Output: one JSON object on stdout (seconds per step, sizes); progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from dkms.node.client.keystore import Keystore
from dkms.protocol.crypto import Signer
from dkms.protocol.events import interact
from dkms.protocol.stream import Attachments, Message, messagize, parse_stream

BIN = Path(sys.executable).parent
PASS = "benchmark passphrase"
LOOPBACK = "/ip4/127.0.0.1/tcp/0"


def say(text: str) -> None:
    print(f"longkel: {text}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Witness:
    """One `dkms-node run` process."""

    def __init__(self, data_dir: Path, bootstrap: list[str], log: Path, level: str) -> None:
        self.metrics = free_port()
        command = [str(BIN / "dkms-node"), "run", "--data-dir", str(data_dir)]
        command += ["--listen", LOOPBACK, "--log-level", level]
        command += ["--metrics-port", str(self.metrics)]
        for intro in bootstrap:
            command += ["--bootstrap", intro]
        self.log = log.open("wb")
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        if not line:
            raise SystemExit(f"the witness in {data_dir} did not start (see {log})")
        self.intro = line.split()[1]
        self.prefix = self.intro.split("@", 1)[0]

    def events(self) -> int:
        """Events in the node's store (-1 while it is too busy to say)."""
        url = f"http://127.0.0.1:{self.metrics}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=30) as answer:
                text = answer.read().decode()
        except OSError:
            return -1
        for line in text.splitlines():
            if line.startswith("dkms_store_events "):
                return int(float(line.split()[1]))
        return -1

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def dkms(home: Path, *args: str, out: Path | None = None) -> tuple[float, str]:
    """Run `dkms --home HOME ARGS...`; its time and its stdout (or write stdout to `out`)."""
    command = [str(BIN / "dkms"), "--home", str(home), *args]
    env = os.environ | {"DKMS_PASSPHRASE": PASS}
    start = time.perf_counter()
    if out is not None:
        with out.open("wb") as sink:
            done = subprocess.run(command, stdout=sink, env=env, check=False)
        text = ""
    else:
        done = subprocess.run(command, stdout=subprocess.PIPE, env=env, check=False)
        text = done.stdout.decode()
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"`dkms {' '.join(args)}` failed with status {done.returncode}")
    return elapsed, text


def make_kel(home: Path, count: int) -> tuple[str, bytes]:
    """The home's inception followed by `count - 1` interactions signed with its key."""
    keystore = Keystore.open(home, PASS)
    record = keystore.load("bench")
    signer = Signer(record["current"][0])
    icp = (home / "kels" / "bench.cesr").read_bytes()
    (first,) = [f for f in parse_stream(icp) if isinstance(f, Message)]
    prefix, prior = first.event.prefix, first.event.said
    parts = [icp]
    for sn in range(1, count):
        event = interact(prefix, prior=prior, sn=sn, anchors=[{"n": sn}])
        parts.append(messagize(event, Attachments(sigs=(signer.sign_indexed(event.raw, 0),))))
        prior = event.said
    return prefix, b"".join(parts)


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    n = args.events
    home = tmp / "home"
    times: dict[str, float] = {}
    witnesses: list[Witness] = []
    try:
        for i in range(5):
            boot = [w.intro for w in witnesses]
            witnesses.append(Witness(tmp / f"w{i}", boot, tmp / f"w{i}.log", args.log_level))
        w = witnesses
        say("5 witnesses up")
        intros = [x.intro for x in w[:4]]
        create = ["id", "create", "bench", "--toad", "3"]
        for intro in intros:
            create += ["--witness", intro]
        times["create"], _ = dkms(home, *create)

        start = time.perf_counter()
        prefix, kel = make_kel(home, n)
        times["make"] = time.perf_counter() - start
        kel_file = tmp / "bench.cesr"
        kel_file.write_bytes(kel)
        say(f"{n:,} events made ({len(kel):,} bytes); submitting")

        times["submit"], _ = dkms(home, "kel", "submit", str(kel_file), "--to", *intros)
        say(f"submitted in {times['submit']:.1f} s")

        times["keystate"], text = dkms(home, "keystate", prefix, "--from", w[1].intro, "--json")
        state = json.loads(text)
        assert state["verified"] and state["sn"] == n - 1, state.get("sn")
        say(f"keystate in {times['keystate']:.1f} s")

        stored = home / "kels" / "bench.cesr"
        times["export"], _ = dkms(home, "kel", "export", prefix, "--from", w[0].intro, out=stored)
        say(f"exported in {times['export']:.1f} s ({stored.stat().st_size:,} bytes)")

        start = time.perf_counter()
        times["rotate"], _ = dkms(home, "id", "rotate", "bench", "--add-witness", w[4].intro)
        say(f"rotated in {times['rotate']:.1f} s; waiting for w4 to fill the gap")
        while (held := w[4].events()) < n + 1:
            if time.perf_counter() - start > args.patience:
                raise SystemExit(f"w4 holds {held} of {n + 1} events after {args.patience} s")
            time.sleep(0.2)
        times["gap_fill"] = time.perf_counter() - start
        say(f"w4 holds all {n + 1:,} events {times['gap_fill']:.1f} s after the rotation began")

        out = tmp / "from-w4.cesr"
        times["export_new"], _ = dkms(home, "kel", "export", prefix, "--from", w[4].intro, out=out)
        times["keystate_new"], text = dkms(home, "keystate", prefix, "--from", w[4].intro, "--json")
        state = json.loads(text)
        assert state["verified"] and state["sn"] == n, state.get("sn")
        return {
            "events": n,
            "kel_bytes": len(kel),
            "exported_bytes": out.stat().st_size,
            "seconds": {k: round(v, 2) for k, v in times.items()},
        }
    finally:
        for witness in witnesses:
            witness.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--patience", type=float, default=3600.0, help="seconds for the gap fill")
    parser.add_argument("--dir", type=Path, help="work here (kept) instead of a temporary dir")
    parser.add_argument(
        "--log-level", default="warning", help="of the witnesses (their DIR/wN.log)"
    )
    args = parser.parse_args()
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        result = run(args, args.dir)
    else:
        with tempfile.TemporaryDirectory(prefix="dkms-longkel-") as tmp:
            result = run(args, Path(tmp))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

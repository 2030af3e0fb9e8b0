"""`dkms kel verify` on files of repeated messages: is its time linear in the file's length?

Builds a KEL of `--kel-events` events with real Ed25519 signatures (an inception, then
interactions with a rotation every 4 events), and for each N of `--sizes` writes files of N
messages made of repeated copies:

    kel       the whole KEL concatenated again and again (cut at N messages)
    event     the inception, then one interaction repeated N-1 times
    distinct  (baseline, not repeats) a KEL of N distinct events (a rotation every 100),
              each signature checked

and runs the real command, `dkms kel verify --json FILE` (`--text`: the table), in a
subprocess on each, with stdout to a file. Reported per file: seconds (wall clock, whole
process, best of `--repeat`), microseconds per message, the same net of the process's fixed
cost (start-up and imports: the command on a file of the inception alone), and the child's
CPU time (user + system) per message net of that fixed cost; for each shape, the ratio of the
net per-message time at the largest N to that at the smallest, by wall clock and by CPU time
(linear means about 1). The JSON output of each run is read back to check every message's
label: the first copy of each event `accepted`, every later copy `known`.

    python benchmarks/kelverify_repeats.py [--sizes 10000 40000 160000] [--kel-events 10]
        [--repeat 1] [--no-distinct] [--text]

Output: one JSON object on stdout; progress on stderr. On a machine shared with other work
the wall-clock figures are upper bounds (the load average at the start is reported); the CPU
times are less disturbed by it, and are what the ratios should be read from there.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.events import incept, interact, rotate
from dkms.protocol.stream import Attachments, messagize

DKMS = Path(sys.executable).parent / "dkms"


def say(text: str) -> None:
    print(f"kelverify_repeats: {text}", file=sys.stderr, flush=True)


def build_kel(count: int, rotate_every: int) -> list[bytes]:
    """The messages of a KEL of `count` events, each signed by the keys in force."""
    keys = iter(Signer(i.to_bytes(4, "big") * 8) for i in range(1, count + 2))
    current, nxt = next(keys), next(keys)
    event = incept([current.verfer], next_digests=[next_key_digest(nxt.verfer)])
    prefix = event.prefix
    messages = []
    for sn in range(count):
        if sn and sn % rotate_every == 0:
            current, nxt = nxt, next(keys)
            event = rotate(
                prefix,
                [current.verfer],
                prior=event.said,
                sn=sn,
                next_digests=[next_key_digest(nxt.verfer)],
            )
        elif sn:
            event = interact(prefix, prior=event.said, sn=sn, anchors=[{"n": sn}])
        messages.append(messagize(event, Attachments(sigs=(current.sign_indexed(event.raw, 0),))))
    return messages


def repeated(messages: list[bytes], n: int) -> list[bytes]:
    """`n` messages: `messages` again and again."""
    return [messages[i % len(messages)] for i in range(n)]


def run_verify(path: Path, text: bool, repeat: int) -> tuple[float, float, Path]:
    """The best wall-clock and CPU (user + system) seconds of `dkms kel verify` on `path`,
    and where its output is."""
    out = path.with_suffix(".out")
    command = [str(DKMS), "kel", "verify", *([] if text else ["--json"]), str(path)]
    best = best_cpu = float("inf")
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        with out.open("wb") as sink:
            done = subprocess.run(command, stdout=sink, check=False)
        best = min(best, time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        best_cpu = min(best_cpu, cpu)
        if done.returncode != 0:
            raise SystemExit(f"`{' '.join(command)}` exited with {done.returncode}")
    return best, best_cpu, out


def labels(out: Path, distinct: int) -> dict[str, int]:
    """Count the statuses in a `--json` report, and check that the repeats are `known`."""
    (report,) = [json.loads(line) for line in out.read_text().splitlines()]
    statuses = [m["status"] for m in report["messages"]]
    counts = collections.Counter(statuses)
    expected = {"accepted": distinct, "known": len(statuses) - distinct}
    if {k: v for k, v in counts.items() if v} != {k: v for k, v in expected.items() if v}:
        raise SystemExit(f"{out}: labels {dict(counts)}, expected {expected}")
    if report["duplicity"]:
        raise SystemExit(f"{out}: repeats were reported as duplicity")
    return dict(counts)


def measure(
    tmp: Path,
    shape: str,
    messages: list[bytes],
    distinct: int,
    args: argparse.Namespace,
    fixed: tuple[float, float] = (0.0, 0.0),
) -> dict[str, Any]:
    """Time the command on a file of `messages`; `fixed`: (wall, CPU) seconds of start-up."""
    path = tmp / f"{shape}-{len(messages)}.cesr"
    path.write_bytes(b"".join(messages))
    seconds, cpu, out = run_verify(path, args.text, args.repeat)
    n = len(messages)
    row: dict[str, Any] = {
        "shape": shape,
        "messages": n,
        "bytes": path.stat().st_size,
        "seconds": round(seconds, 3),
        "us_per_message": round(seconds / n * 1e6, 2),
        "us_per_message_net": round((seconds - fixed[0]) / n * 1e6, 2),
        "cpu_seconds": round(cpu, 3),
        "cpu_us_per_message_net": round((cpu - fixed[1]) / n * 1e6, 2),
    }
    if not args.text:
        row["labels"] = labels(out, distinct)
    path.unlink()
    out.unlink()
    say(
        f"{shape:8} {n:>8,} messages: {seconds:7.2f} s, {row['us_per_message']:8.2f} us/message"
        f" ({row['us_per_message_net']:.2f} net; CPU {row['cpu_us_per_message_net']:.2f} net)"
    )
    return row


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    sizes = sorted(args.sizes)
    load = [round(x, 2) for x in os.getloadavg()]
    start = time.perf_counter()
    kel = build_kel(args.kel_events, 4)
    say(f"a KEL of {len(kel)} events built in {time.perf_counter() - start:.1f} s")
    one = measure(tmp, "one", kel[:1], 1, args)
    fixed = (one["seconds"], one["cpu_seconds"])
    rows = []
    for n in sizes:
        rows.append(measure(tmp, "kel", repeated(kel, n), min(n, len(kel)), args, fixed))
        events = [kel[0], *repeated(kel[1:2], n - 1)]
        rows.append(measure(tmp, "event", events, 2, args, fixed))
    if args.distinct:
        start = time.perf_counter()
        long = build_kel(sizes[-1], 100)
        say(f"a KEL of {len(long):,} events built in {time.perf_counter() - start:.1f} s")
        for n in sizes:
            rows.append(measure(tmp, "distinct", long[:n], n, args, fixed))
    ratios: dict[str, dict[str, float]] = {"wall": {}, "cpu": {}}
    for shape in ("kel", "event", "distinct"):
        for clock, key in (("wall", "us_per_message_net"), ("cpu", "cpu_us_per_message_net")):
            per = {r["messages"]: r[key] for r in rows if r["shape"] == shape}
            if len(per) > 1:
                ratios[clock][shape] = round(per[sizes[-1]] / per[sizes[0]], 2)
    return {
        "command": "dkms kel verify" + ("" if args.text else " --json"),
        "kel_events": len(kel),
        "cpus": os.cpu_count(),
        "load_average_at_start": load,
        "fixed_seconds": {"wall": fixed[0], "cpu": fixed[1]},
        "runs": rows,
        f"per_message_ratio_{sizes[-1]}_vs_{sizes[0]}": ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 40_000, 160_000])
    parser.add_argument("--kel-events", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=1, help="runs per file; the best counts")
    parser.add_argument("--no-distinct", dest="distinct", action="store_false")
    parser.add_argument("--text", action="store_true", help="time the table, not --json")
    args = parser.parse_args()
    if min(args.sizes) < 2 or args.kel_events < 2:
        parser.error("sizes and --kel-events must be at least 2")
    with tempfile.TemporaryDirectory(prefix="dkms-kelverify-") as tmp:
        print(json.dumps(run(args, Path(tmp))))


if __name__ == "__main__":
    main()

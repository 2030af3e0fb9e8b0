"""`dkms kel verify` of a long KEL, as a user runs it, next to raw PyNaCl verify in the same run.

Builds a KEL of `--events` distinct events once (an inception, then interactions with a
rotation every 100 events, each signed: `benchmarks/validate.py`'s KEL), writes it to a file,
and alternates, `--repeat` times:

    raw      bare PyNaCl verifies of the same events' signatures, in this process:
             `bindings.crypto_sign_open(sig + msg, key)`, as `benchmarks/validate.py` times
             it (the ratio's baseline)
    lean     the same through `dkms.protocol.crypto.verify`, which calls libsodium's
             `crypto_sign_open` with no output buffer (PyNaCl's wrapper allocates and copies
             one): what the command's verifies cost, reported beside, for the ratio to it
    command  `dkms kel verify FILE` (the table; `--json` with `--json`) in a subprocess,
             stdout to a file
    startup  the same command on a file of the inception alone: start-up, imports, one event

Reported: the best of each, events/s of raw verify and of the command net of its start-up
(`events / (command - startup)`, by wall clock and by the child's CPU time), and the ratio
command/raw for both clocks (raw's CPU time is this process's). On a loaded machine the CPU
ratio is the one to read. Where the machine's speed drifts between runs (a shared host: the
same command's CPU time has varied by a third from one minute to the next), the bests may
come from different moments; `ratio_cpu_each_run` pairs each run's raw and command (and
start-up) instead, and `ratio_cpu_median_of_runs` is their median. The command's output is
read back: every message `accepted`.

    python benchmarks/kelverify.py [--events 40000] [--repeat 3] [--json] [--profile FILE]
                                   [--baseline DIR]

`--profile FILE`: also run the command once under cProfile (`python -m cProfile -o FILE`).
`--baseline DIR`: also time the command (and its start-up) with `PYTHONPATH=DIR`, alternating
with the others: DIR holds another build of the package (say an older commit's wheel,
unpacked), which then runs instead of the installed one; reported under `baseline`, so a
change is measured before and after in the same sitting.
Output: one JSON object on stdout; progress on stderr. The machine's two cores are shared
with other work, so the best of several alternating runs is what the ratio is taken from.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nacl import bindings
from validate import build_kel

from dkms.protocol.crypto import verify
from dkms.protocol.events import Kind
from dkms.protocol.stream import parse_stream

DKMS = Path(sys.executable).parent / "dkms"


def say(text: str) -> None:
    print(f"kelverify: {text}", file=sys.stderr, flush=True)


def raw_verify(checks: list[tuple[bytes, bytes, bytes]]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of bare PyNaCl verifies of `checks` (`validate.py`'s)."""
    open_ = bindings.crypto_sign_open
    start, cpu = time.perf_counter(), time.process_time()
    for key, sig, msg in checks:
        open_(sig + msg, key)
    return time.perf_counter() - start, time.process_time() - cpu


def lean_verify(checks: list[tuple[bytes, bytes, bytes]]) -> tuple[float, float]:
    """The same through `crypto.verify` (each must verify)."""
    start, cpu = time.perf_counter(), time.process_time()
    for key, sig, msg in checks:
        if not verify(key, sig, msg):
            raise SystemExit("a signature of the KEL does not verify")
    return time.perf_counter() - start, time.process_time() - cpu


def run_command(
    command: list[str], out: Path, env: dict[str, str] | None = None
) -> tuple[float, float]:
    """Wall-clock and CPU (user + system) seconds of `command` in a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with out.open("wb") as sink:
        done = subprocess.run(command, stdout=sink, check=False, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"`{' '.join(command)}` exited with {done.returncode}")
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def check_output(out: Path, events: int, as_json: bool) -> None:
    """Every message of the file accepted, in the command's own output."""
    text = out.read_text()
    if as_json:
        (report,) = [json.loads(line) for line in text.splitlines()]
        statuses = [m["status"] for m in report["messages"]]
    else:
        lines = text.splitlines()
        start = next(n for n, line in enumerate(lines) if line.split()[:1] == ["OFFSET"])
        statuses = [line.split()[4] for line in lines[start + 1 :] if line.strip()]
    if len(statuses) != events or set(statuses) != {"accepted"}:
        raise SystemExit(f"{out}: {len(statuses)} messages, statuses {set(statuses)}")


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    load = [round(x, 2) for x in os.getloadavg()]
    start = time.perf_counter()
    stream, checks = build_kel(args.events, Kind.CBOR)
    two, _ = build_kel(2, Kind.CBOR)
    one_stream = two[: parse_stream(two)[0].length]  # its inception alone
    say(f"a KEL of {args.events:,} events built in {time.perf_counter() - start:.1f} s")
    kel, one, out = tmp / "kel.cesr", tmp / "one.cesr", tmp / "out"
    kel.write_bytes(stream)
    one.write_bytes(one_stream)
    flags = ["--json"] if args.json else []
    command = [str(DKMS), "kel", "verify", *flags]
    runs: list[tuple[str, Path | None]] = [
        ("raw", None),
        ("lean", None),
        ("startup", one),
        ("command", kel),
    ]
    baseline_env = None
    if args.baseline:
        baseline_env = {**os.environ, "PYTHONPATH": args.baseline}
        runs += [("baseline_startup", one), ("baseline", kel)]
    best = {name: (float("inf"), float("inf")) for name, _ in runs}
    pairs: list[float] = []  # each attempt's own CPU ratio: raw / (command - start-up)
    for attempt in range(args.repeat):  # alternate, so each sees the same machine conditions
        this: dict[str, float] = {}
        for name, path in runs:
            if path is None:
                wall, cpu = (raw_verify if name == "raw" else lean_verify)(checks)
            else:
                env = baseline_env if name.startswith("baseline") else None
                wall, cpu = run_command([*command, str(path)], out, env)
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
            this[name] = cpu
            if name in ("command", "baseline") and attempt == 0:
                check_output(out, args.events, args.json)
        pairs.append(this["raw"] / (this["command"] - this["startup"]))
        say(
            f"run {attempt + 1}: raw {best['raw'][0]:.2f} s; command {best['command'][0]:.2f} s, "
            f"start-up {best['startup'][0]:.2f} s (best so far)"
        )
    if args.profile:
        profile = [sys.executable, "-m", "cProfile", "-o", args.profile, str(DKMS)]
        run_command([*profile, "kel", "verify", *flags, str(kel)], out)
        say(f"profile in {args.profile}")
    raw_wall, raw_cpu = args.events / best["raw"][0], args.events / best["raw"][1]
    wall_rate = args.events / (best["command"][0] - best["startup"][0])
    cpu_rate = args.events / (best["command"][1] - best["startup"][1])
    lean_wall, lean_cpu = args.events / best["lean"][0], args.events / best["lean"][1]
    report: dict[str, Any] = {
        "command": " ".join(["dkms kel verify", *flags]),
        "events": args.events,
        "file_bytes": len(stream),
        "cpus": os.cpu_count(),
        "load_average_at_start": load,
        "repeat": args.repeat,
        "raw_verify_per_s": round(raw_wall),
        "raw_verify_per_cpu_s": round(raw_cpu),
        **_net(args.events, best["command"], best["startup"], raw_wall, raw_cpu),
        "lean_verify_per_s": round(lean_wall),
        "lean_verify_per_cpu_s": round(lean_cpu),
        "ratio_to_lean": round(wall_rate / lean_wall, 3),
        "ratio_cpu_to_lean": round(cpu_rate / lean_cpu, 3),
        "ratio_cpu_each_run": [round(r, 3) for r in pairs],
        "ratio_cpu_median_of_runs": round(statistics.median(pairs), 3),
        "target_ratio": 0.85,
    }
    if args.baseline:
        report["baseline"] = {
            "pythonpath": args.baseline,
            **_net(args.events, best["baseline"], best["baseline_startup"], raw_wall, raw_cpu),
        }
    return report


def _net(
    events: int,
    command: tuple[float, float],
    startup: tuple[float, float],
    raw_wall: float,
    raw_cpu: float,
) -> dict[str, Any]:
    """One build's command, (wall, CPU) seconds, with its start-up subtracted, against raw."""
    wall_rate = events / (command[0] - startup[0])
    cpu_rate = events / (command[1] - startup[1])
    return {
        "command_seconds": round(command[0], 3),
        "startup_seconds": round(startup[0], 3),
        "command_cpu_seconds": round(command[1], 3),
        "startup_cpu_seconds": round(startup[1], 3),
        "command_events_per_s_net": round(wall_rate),
        "command_events_per_s_net_cpu": round(cpu_rate),
        "ratio": round(wall_rate / raw_wall, 3),
        "ratio_cpu": round(cpu_rate / raw_cpu, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs; best counts")
    parser.add_argument("--json", action="store_true", help="time --json, not the table")
    parser.add_argument("--profile", metavar="FILE", help="also profile the command once")
    parser.add_argument(
        "--baseline", metavar="DIR", help="also time the command with PYTHONPATH=DIR"
    )
    args = parser.parse_args()
    if args.events < 2:
        parser.error("--events must be at least 2")
    with tempfile.TemporaryDirectory(prefix="dkms-kelverify-") as tmp:
        print(json.dumps(run(args, Path(tmp))))


if __name__ == "__main__":
    main()

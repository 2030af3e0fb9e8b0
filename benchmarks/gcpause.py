"""How long a full garbage collection stalls a node, with and without `gc.freeze()` at start.

A node process holds the libp2p stack and, once restored, every KEL it keeps. CPython's
full collections walk all of it, and the event loop (gossip, requests) waits meanwhile.
`dkms-node` therefore freezes its heap after restoring its state (daemon.serve,
`freeze_heap`). This measures the pause both ways in one process:

    python benchmarks/gcpause.py [--events 50000]

1. import the node stack and validate a KEL of `--events` events (the restored state);
2. time full collections (`gc.collect()`, median of 5): the pause without freezing;
3. `gc.collect(); gc.freeze()`, then validate 2,000 more events (state made after the
   start), and time full collections again: the pause a frozen node sees.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time

from validate import build_kel

# The node's own imports (trio, libp2p and the rest) are part of the heap a node collects.
import dkms.node.daemon
import dkms.node.p2p.transport  # noqa: F401
from dkms.protocol.events import Kind
from dkms.protocol.stream import Message, parse_stream
from dkms.protocol.validator import Validator

LATER = 2_000


def pause_ms() -> float:
    times = []
    for _ in range(5):
        start = time.perf_counter()
        gc.collect()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args()
    stream, _ = build_kel(args.events + LATER, Kind.CBOR)
    messages = [m for m in parse_stream(stream) if isinstance(m, Message)]
    later = messages[args.events :]
    validator = Validator()
    for message in messages[: args.events]:
        validator.process(message, 0.0)
    prefix = messages[0].event.prefix
    del stream, messages  # only what the validator keeps stays alive
    tracked = len(gc.get_objects())
    before = pause_ms()
    gc.collect()
    gc.freeze()
    for message in later:
        validator.process(message, 0.0)
    del later
    after = pause_ms()
    state = validator.state(prefix)
    assert state is not None and state.sn == args.events + LATER - 1
    print(
        json.dumps(
            {
                "events_held": args.events,
                "objects_tracked": tracked,
                "full_collection_ms": round(before, 2),
                "frozen": gc.get_freeze_count(),
                "full_collection_after_freeze_ms": round(after, 2),
                "events_after_freeze": LATER,
            }
        )
    )


if __name__ == "__main__":
    main()

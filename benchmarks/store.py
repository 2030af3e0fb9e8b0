"""Durable store throughput: events/s `Store.apply` sustains with group commits of 1, 10, 100.

Each event is a ~500-byte message plus a `PersistReceipts` with `--receipts` couples, as a
witness persists them. Every `apply` is one fsynced transaction, so with batches of 1 the rate
is bounded by the disk's fsync rate, measured in the same run for comparison (bare
`write + fsync` of 500 bytes to a file in the same directory). Also reports replay speed.

    python benchmarks/store.py [--seconds 2] [--dir DIR] [--receipts 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from dkms.node.roles.effects import PersistEvent, PersistReceipts
from dkms.node.runtime.store import FILENAME, Persist, Store
from dkms.protocol.crypto import Signer
from dkms.protocol.events import interact
from dkms.protocol.stream import Attachments, messagize


def template(size: int = 500) -> bytes:
    """A signed interaction message of about `size` bytes (the store only reads its kind)."""
    signer = Signer(b"\x01" * 32)
    prefix = "E" + "p" * 43
    event = interact(prefix, prior="E" + "q" * 43, sn=1, anchors=[{"d": "x"}])
    pad = size - len(messagize(event, Attachments(sigs=(signer.sign_indexed(event.raw, 0),))))
    event = interact(prefix, prior="E" + "q" * 43, sn=1, anchors=[{"d": "x" * (1 + pad)}])
    return messagize(event, Attachments(sigs=(signer.sign_indexed(event.raw, 0),)))


MESSAGE = template()


def batch(start: int, size: int, receipts: int) -> list[Persist]:
    """`size` events (distinct SAIDs, the same message bytes) and their receipts."""
    out: list[Persist] = []
    for n in range(start, start + size):
        said = f"E{n:043d}"
        out.append(PersistEvent("E" + "p" * 43, n, said, MESSAGE))
        couples = tuple((f"B{w:043d}", os.urandom(64)) for w in range(receipts))
        out.append(PersistReceipts("E" + "p" * 43, n, said, couples))
    return out


def apply_rate(path: Path, size: int, seconds: float, receipts: int) -> tuple[float, int]:
    """Events/s over `seconds` spent inside `apply` (building the batches is not counted)."""
    done = 0
    spent = 0.0
    with Store.open(path) as store:
        while spent < seconds:
            effects = batch(done, size, receipts)
            start = time.perf_counter()
            store.apply(effects)
            spent += time.perf_counter() - start
            done += size
    return done / spent, done


def fsync_rate(directory: Path, seconds: float) -> float:
    fd = os.open(directory / "fsync.probe", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    count = 0
    start = time.perf_counter()
    try:
        while (elapsed := time.perf_counter() - start) < seconds:
            os.write(fd, b"x" * 500)
            os.fsync(fd)
            count += 1
    finally:
        os.close(fd)
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--dir", default=None, help="where to put the database (default: tmp)")
    parser.add_argument("--receipts", type=int, default=3)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="dkms-store-bench-", dir=args.dir))
    try:
        result: dict[str, object] = {
            "message_bytes": len(MESSAGE),
            "receipts_per_event": args.receipts,
            "fsync_per_s": round(fsync_rate(directory, args.seconds)),
        }
        for size in (1, 10, 100):
            path = directory / f"b{size}" / FILENAME
            rate, count = apply_rate(path, size, args.seconds, args.receipts)
            result[f"events_per_s_batch_{size}"] = round(rate)
            with Store.open(path) as store:
                start = time.perf_counter()
                replayed = sum(len(chunk) for chunk in store.replay_chunks())
                result[f"replay_events_per_s_batch_{size}_store"] = round(
                    count / (time.perf_counter() - start)
                )
                result[f"db_bytes_per_event_batch_{size}_store"] = round(
                    store.stats().bytes / count
                )
                assert replayed > 0
        print(json.dumps(result))
    finally:
        shutil.rmtree(directory)


if __name__ == "__main__":
    main()

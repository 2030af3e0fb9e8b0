"""Validation throughput against the raw Ed25519 verify rate, measured in the same run.

Builds a KEL of N events (an inception, then interactions with a rotation every 100 events),
frames and validates it from bytes with a fresh `Validator`, and compares events/s with how
many bare PyNaCl signature checks of the same events' signatures the same core manages.

    python benchmarks/validate.py [--events 20000] [--repeat 5] [--kind CBOR|JSON]

Each figure is the best of `--repeat` runs (the least disturbed by other load on the machine).
"""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import time

from nacl import bindings

from dkms.protocol import validator as validator_module
from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.events import Kind, incept, interact, rotate
from dkms.protocol.stream import Attachments, Message, StreamReader, messagize
from dkms.protocol.validator import Validator


def build_kel(count: int, kind: Kind) -> tuple[bytes, list[tuple[bytes, bytes, bytes]]]:
    """A KEL stream of `count` events and (key, signature, message) of each signature."""
    signers = [Signer(bytes([i % 251 + 1]) * 31 + bytes([i // 251])) for i in range(count)]
    current, nxt = signers[0], signers[1]
    used = 2
    event = incept([current.verfer], next_digests=[next_key_digest(nxt.verfer)], kind=kind)
    prefix = event.prefix
    parts: list[bytes] = []
    checks: list[tuple[bytes, bytes, bytes]] = []
    for sn in range(count):
        if sn:
            if sn % 100 == 0:
                current, nxt = nxt, signers[used]
                used += 1
                event = rotate(
                    prefix,
                    [current.verfer],
                    prior=event.said,
                    sn=sn,
                    next_digests=[next_key_digest(nxt.verfer)],
                    kind=kind,
                )
            else:
                event = interact(prefix, prior=event.said, sn=sn, kind=kind)
        sig = current.sign_indexed(event.raw, 0)
        parts.append(messagize(event, Attachments(sigs=(sig,))))
        checks.append((current.public, sig.raw, event.raw))
    return b"".join(parts), checks


def raw_verify_rate(checks: list[tuple[bytes, bytes, bytes]]) -> float:
    open_ = bindings.crypto_sign_open
    start = time.perf_counter()
    for key, sig, msg in checks:
        open_(sig + msg, key)
    return len(checks) / (time.perf_counter() - start)


def validate_rate(stream: bytes, count: int) -> float:
    """Events/s for framing and validating `stream` fed in 64 KiB chunks, as a node reads."""
    start = time.perf_counter()
    validator = Validator()
    reader = StreamReader()
    accepted = 0
    for at in range(0, len(stream), 1 << 16):
        for frame in reader.feed(stream[at : at + (1 << 16)]):
            if isinstance(frame, Message):
                accepted += validator.process(frame, 0.0)[0].status == "accepted"
    for frame in reader.close():
        if isinstance(frame, Message):
            accepted += validator.process(frame, 0.0)[0].status == "accepted"
    elapsed = time.perf_counter() - start
    if accepted != count:
        raise SystemExit(f"only {accepted} of {count} events were accepted")
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--kind", choices=["CBOR", "JSON"], default="CBOR")
    args = parser.parse_args()
    stream, checks = build_kel(args.events, Kind(args.kind))
    raw, val = 0.0, 0.0
    for _ in range(args.repeat):  # interleave so both see the same machine conditions
        raw = max(raw, raw_verify_rate(checks))
        val = max(val, validate_rate(stream, args.events))
    print(
        json.dumps(
            {
                "events": args.events,
                "kind": args.kind,
                "stream_bytes": len(stream),
                "raw_verify_per_s": round(raw),
                "validated_events_per_s": round(val),
                "ratio": round(val / raw, 3),
                "target_ratio": 0.8,
                # mypyc-compiled protocol modules (the default install) or the pure sources
                "compiled": str(validator_module.__file__).endswith(
                    tuple(importlib.machinery.EXTENSION_SUFFIXES)
                ),
            }
        )
    )


if __name__ == "__main__":
    main()

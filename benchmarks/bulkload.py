"""Bulk load through the commands: N identifiers x M events submitted at once (issue 11).

    python benchmarks/bulkload.py [--identifiers 32] [--events 500] [--patience 600]

4 witnesses (bt=3) and 2 watchers as `dkms-node` processes on 127.0.0.1, each identifier's KEL
submitted by its own `dkms kel submit` process at the same moment (node/testing/bulk.py).
Prints a JSON report: submit time, events/s, time until both watchers held every KEL, failed
submits, dead nodes, identifiers missing at a watcher. Exit status 1 if any of the last three.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from dkms.node.testing.bulk import bulk_load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identifiers", type=int, default=32)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument(
        "--patience", type=float, default=600.0, help="seconds to wait for watchers"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dkms-bulk-") as tmp:
        report = bulk_load(
            Path(tmp),
            args.identifiers,
            args.events,
            args.patience,
            say=lambda text: print(f"[bulkload] {text}", file=sys.stderr, flush=True),
        )
    print(json.dumps(report.to_json(), indent=2))
    sys.exit(1 if report.failed_submits or report.dead or report.missing else 0)


if __name__ == "__main__":
    main()

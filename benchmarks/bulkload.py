"""Bulk load through the commands: N identifiers x M events submitted at once (issue 11).

    python benchmarks/bulkload.py [--identifiers 32] [--events 500] [--patience 600]
                                  [--late-watcher SECONDS] [--keep DIR]

4 witnesses (bt=3) and 2 watchers as `dkms-node` processes on 127.0.0.1, each identifier's KEL
submitted by its own `dkms kel submit` process at the same moment (node/testing/bulk.py).
Once both watchers held every KEL, a third watcher is started (`--late-watcher SECONDS`: its
`--reconcile-every`, default 30; 0: none) and must hold every KEL by reconciling with its
bootstrap peers (issue 15): the gossip went by before it listened.
Prints a JSON report: submit time, events/s submitted and held by both watchers, time until
both watchers held every KEL, how long the late watcher took (from its process's launch) and
how many KELs its reconciliations found, failed submits, dead nodes, identifiers missing at a
watcher (the late one included), and, if any watcher was short, the task dumps every node
wrote (read them with `--keep DIR`: the run's nodes, logs and dumps are left in DIR). Exit
status 1 if any of the failed submits, dead nodes or missing identifiers.
"""

from __future__ import annotations

import argparse
import contextlib
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
    parser.add_argument(
        "--late-watcher",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="reconcile period of a watcher started after the load (0: none)",
    )
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="run in DIR (made, must be new) and leave it"
    )
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.keep is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dkms-bulk-")))
        else:
            try:
                args.keep.mkdir(parents=True)
            except OSError as err:
                parser.error(f"--keep {args.keep}: {err.strerror}")
            root = args.keep
        report = bulk_load(
            root,
            args.identifiers,
            args.events,
            args.patience,
            say=lambda text: print(f"[bulkload] {text}", file=sys.stderr, flush=True),
            late=args.late_watcher or None,
        )
    print(json.dumps(report.to_json(), indent=2))
    sys.exit(1 if report.failed_submits or report.dead or report.missing else 0)


if __name__ == "__main__":
    main()

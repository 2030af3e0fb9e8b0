"""`dkms-node`: run a node, or show who it is.

    dkms-node run --role witness --data-dir DIR --listen MULTIADDR [--bootstrap INTRO]...
                  [--config FILE.toml] [--log-level LEVEL]
    dkms-node run --role watcher --governance PREFIX [--watch PREFIX]... (same options)
    dkms-node info --data-dir DIR [--json]
    dkms-node status --data-dir DIR [--json]
    dkms-node backup --data-dir DIR --to FILE
    dkms-node restore --data-dir DIR --from FILE [--accept-older]
    dkms-node recover --data-dir DIR --from PREFIX@MULTIADDR... [--prefix PREFIX]...

`run` prints the node's introduction (`PREFIX@MULTIADDR`, what controllers name as a witness)
once it listens, and stops cleanly on SIGINT/SIGTERM. `backup` copies the store (node running
or not), `restore` puts a backup back (node stopped; an older backup only with
`--accept-older`), `recover` rebuilds a lost or damaged store from co-witnesses
(`node/recovery.py`). `main(argv) -> int` is a plain function.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from dkms.node.cli.interrupt import INTERRUPTED, interruptible, said
from dkms.node.config import ConfigError, NodeConfig, load

# py-libp2p takes most of a second to import: the modules that load it are imported once the
# flags have been checked (a mistake is said at once), and within `main`'s Ctrl-C handling.
# ruff: noqa: PLC0415


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other mistake (`argparse` prints the usage too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"dkms-node: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dkms-node", description="Run a DKMS node.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a node until SIGINT/SIGTERM")
    run.add_argument("--role", default=None, help="witness (default) or watcher")
    run.add_argument(
        "--governance",
        default=None,
        metavar="PREFIX",
        help="watcher: the governance identifier whose roster appoints watchers and jurors",
    )
    run.add_argument(
        "--watch",
        action="append",
        default=[],
        metavar="PREFIX",
        help="watcher: watch only this identifier (repeatable; default: all)",
    )
    run.add_argument("--data-dir", type=Path, default=None, help="where the node keeps its state")
    run.add_argument("--listen", default=None, help="multiaddr, e.g. /ip4/0.0.0.0/tcp/4001")
    run.add_argument(
        "--bootstrap",
        action="append",
        default=[],
        metavar="PREFIX@MULTIADDR",
        help="a peer to join through: PREFIX@MULTIADDR or MULTIADDR/p2p/PEER_ID (repeatable)",
    )
    run.add_argument("--config", type=Path, default=None, help="TOML file; flags override it")
    run.add_argument("--log-level", default=None, help="debug, info (default), warning or error")
    run.add_argument(
        "--announce",
        action="append",
        default=[],
        metavar="MULTIADDR",
        help="an address others reach this node at, e.g. /ip4/203.0.113.7/tcp/4001 (repeatable;"
        " default: the listen addresses, each interface's for 0.0.0.0 or ::)",
    )
    run.add_argument(
        "--http-port",
        "--metrics-port",
        dest="http_port",
        default=None,
        metavar="PORT",
        help="serve /metrics (Prometheus) and /health on 127.0.0.1:PORT",
    )
    run.add_argument(
        "--http-listen",
        default=None,
        metavar="HOST:PORT",
        help="serve the HTTP API (key state, evidence, KEL checks) on HOST:PORT, e.g."
        " 127.0.0.1:8080 (default: off)",
    )
    run.add_argument(
        "--store-quota",
        default=None,
        metavar="SIZE",
        help="bytes of events and receipts stored, e.g. 4GiB (default); at it, no new"
        " identifiers are taken",
    )
    run.add_argument(
        "--unwitnessed-quota",
        default=None,
        metavar="SIZE",
        help="bytes held for identifiers without witnesses, e.g. 64MiB (default); the least"
        " recently extended are evicted beyond it",
    )
    run.add_argument(
        "--reconcile-every",
        default=None,
        metavar="SECONDS",
        help="watcher: seconds between reconciliations with its peers, which fetch any KEL"
        " gossip missed (default 30; 0: never)",
    )
    run.add_argument(
        "--escrow-bytes",
        default=None,
        metavar="SIZE",
        help="events waiting in escrows (out of order, unreceipted, ...), e.g. 16MiB (default);"
        " early receipts may hold a quarter more",
    )
    info = commands.add_parser("info", help="show the node's prefix, peer id and introduction")
    info.add_argument("--data-dir", type=Path, required=True)
    info.add_argument("--json", action="store_true")
    status = commands.add_parser("status", help="ask the running node how it is (peers, health)")
    status.add_argument("--data-dir", type=Path, required=True)
    status.add_argument("--json", action="store_true")
    backup = commands.add_parser("backup", help="copy the store to a new file (node may run)")
    backup.add_argument("--data-dir", type=Path, required=True)
    backup.add_argument("--to", type=Path, required=True, metavar="FILE")
    restore = commands.add_parser("restore", help="put a backup in place (node stopped)")
    restore.add_argument("--data-dir", type=Path, required=True)
    restore.add_argument("--from", dest="source", type=Path, required=True, metavar="FILE")
    restore.add_argument(
        "--accept-older",
        action="store_true",
        help="restore a backup older than the node's history (a witness may then receipt"
        " two versions of an event: prefer recover)",
    )
    recover = commands.add_parser(
        "recover", help="rebuild a lost or damaged store from co-witnesses (node stopped)"
    )
    recover.add_argument("--data-dir", type=Path, required=True)
    recover.add_argument(
        "--from",
        dest="peers",
        nargs="+",
        required=True,
        metavar="PREFIX@MULTIADDR",
        help="co-witnesses (or watchers) to rebuild from; every one must answer",
    )
    recover.add_argument(
        "--prefix",
        action="append",
        default=[],
        metavar="PREFIX",
        help="an identifier this witness served (repeatable; added to what the peers list)",
    )
    recover.add_argument("--role", choices=["witness", "watcher"], default=None)
    recover.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `dkms-node` with `argv` (default: the process arguments); return the exit status:
    0 done, 1 the node cannot start or go on, 2 a usage or configuration mistake, 130 Ctrl-C
    (one line each on stderr)."""
    return interruptible("dkms-node", functools.partial(_main, argv))


def _main(argv: Sequence[str] | None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), said already
        return exc.code if isinstance(exc.code, int) else 2
    try:
        config = _config(args) if args.command == "run" else None
    except ConfigError as err:
        print(f"dkms-node: {err}", file=sys.stderr)
        return 2
    import trio

    from dkms.node import backups, recovery
    from dkms.node.cli import nodestatus
    from dkms.node.daemon import NodeError, serve
    from dkms.node.p2p.logs import set_log_level
    from dkms.node.runtime.control import ControlError
    from dkms.node.runtime.loop import StorageFailure
    from dkms.protocol.errors import ProtocolError

    try:
        if args.command == "info":
            return _info(args.data_dir, args.json)
        if args.command == "status":
            return nodestatus.status_command(args.data_dir, args.json)
        if args.command in ("backup", "restore", "recover"):
            return _store_command(args)
        assert config is not None  # `run`
        logging.basicConfig(
            level=config.log_level.upper(),
            format="%(asctime)s %(levelname)s %(message)s",
            stream=sys.stderr,
        )
        set_log_level(config.log_level)
        trio.run(
            functools.partial(
                serve,
                config,
                announce=_announce,
                handle_signals=True,
                freeze_heap=True,
                config_file=args.config,
            )
        )
    except (
        NodeError,
        backups.BackupError,
        recovery.RecoveryError,
        ControlError,
    ) as err:
        print(f"dkms-node: {err}", file=sys.stderr)
        return 1
    except StorageFailure as err:
        print(
            f"dkms-node: storage failure: {err}; restart to recover from the store", file=sys.stderr
        )
        return 1
    except ProtocolError as err:  # a stored message that no longer reads
        print(f"dkms-node: stored data is unreadable: {err}", file=sys.stderr)
        return 1
    return 0


def _config(args: argparse.Namespace) -> NodeConfig:
    return load(
        args.config,
        role=args.role,
        data_dir=args.data_dir,
        listen=args.listen,
        bootstrap=tuple(args.bootstrap),
        log_level=args.log_level,
        http_port=args.http_port,
        http_listen=args.http_listen,
        announce=tuple(args.announce),
        governance=args.governance,
        watch=tuple(args.watch),
        store_quota=args.store_quota,
        unwitnessed_quota=args.unwitnessed_quota,
        escrow_bytes=args.escrow_bytes,
        reconcile_every=args.reconcile_every,
    )


def _announce(line: str) -> None:
    print(line, flush=True)


def _info(data_dir: Path, as_json: bool) -> int:
    from dkms.node.cli import nodestatus
    from dkms.node.daemon import node_info
    from dkms.node.runtime.control import ControlError

    info = node_info(data_dir)
    unsure = ""
    try:  # a running node says where it is now; node.json only where it last was
        info["introductions"] = nodestatus.ask(data_dir, timeout=2.0)["introductions"]
        info["running"] = True
    except nodestatus.NotRunning:
        info["running"] = False
    except ControlError as err:  # busy, or a socket path too long: not known
        info["running"], unsure = None, str(err)
    if as_json:
        print(json.dumps(info))
    else:
        print(f"prefix:   {info['prefix']}")
        print(f"peer id:  {info['peer_id']}")
        for intro in info["introductions"] or ["(not listening yet: run the node)"]:
            print(f"address:  {intro}")
        if info["introductions"] and info["running"] is False:
            print("          (last seen when it ran; not running now)")
        elif info["introductions"] and info["running"] is None:
            print(f"          (last seen when it ran; {unsure})")
    return 0


def _store_command(args: argparse.Namespace) -> int:
    import trio

    from dkms.node import backups, recovery

    if args.command == "backup":
        mark = backups.back_up(args.data_dir, args.to)
        print(f"backed up {mark.events} events of store {mark.store} to {args.to}")
        return 0
    if args.command == "restore":
        mark = backups.restore(
            args.data_dir, args.source, accept_older=args.accept_older, warn=_warn
        )
        print(f"restored {mark.events} events of store {mark.store} into {args.data_dir}")
        return 0
    done = trio.run(
        functools.partial(
            recovery.over_libp2p,
            args.data_dir,
            list(args.peers),
            prefixes=list(args.prefix),
            role=args.role,
            timeout=args.timeout,
            say=_warn,
        )
    )
    print(
        f"recovered {done.events} events of {done.identifiers} identifiers into"
        f" {args.data_dir}; receipt floors for {len(done.floors)} identifiers"
    )
    if done.aside is not None:
        print(f"the old store is kept in {done.aside}")
    return 0


def _warn(line: str) -> None:
    print(f"dkms-node: {line}", file=sys.stderr)


def entry() -> None:
    try:
        status = main()
    except KeyboardInterrupt as exc:  # outside `main`'s own handling (between two lines)
        said("dkms-node", exc)
        status = INTERRUPTED
    if status == INTERRUPTED:  # a second Ctrl-C while the interpreter exits: no traceback
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(status)


if __name__ == "__main__":
    entry()

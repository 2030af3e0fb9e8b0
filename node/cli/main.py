"""The `dkms` command line: argument parsing and dispatch; commands live in their own modules.

`main(argv)` is a plain function returning the exit status, so tests call it directly; only
`entry` (the console script) touches `sys.exit`. Commands that talk to nodes are async and run
under `trio.run` in `main`; `amain(argv)` runs them in a trio run of the caller's (tests). Exit
statuses: 0 done, 1 some input unreadable or a problem the user can fix (one line on stderr:
a bad name or address, a wrong passphrase, a witness that failed), 2 usage error, 70 an
internal error (a bug: please report it); `kel check` also exits 3 and 4 (`cli/kelcheck.py`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from dkms.node.cli import kel as kelcmd
from dkms.node.cli import kelinspect
from dkms.node.cli.interrupt import INTERRUPTED, said
from dkms.node.client.home import CommandError, Home, Options, default_home
from dkms.node.secretfiles import SecretError
from dkms.protocol import cesr
from dkms.protocol.errors import ProtocolError

Command = Callable[[argparse.Namespace, Options], int]
AsyncCommand = Callable[[argparse.Namespace, Options], Awaitable[int]]
WAIT = 30.0  # default --timeout, seconds
BOOTSTRAP_HELP = "a node to ask where nodes named by bare prefix (B...) listen"
OOBI_HELP = "or the witness's OOBI URL, http://HOST:PORT/oobi/PREFIX/controller"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dkms", description="KERI identifiers and key event logs: manage, verify, inspect."
    )
    parser.add_argument(
        "--home", metavar="DIR", help="where identifiers are kept (default: $DKMS_HOME or ~/.dkms)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    parser.add_argument(
        "--bootstrap",
        metavar="PREFIX@MULTIADDR",
        default=os.environ.get("DKMS_BOOTSTRAP") or None,
        help=f"{BOOTSTRAP_HELP} (default: $DKMS_BOOTSTRAP)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    secret = argparse.ArgumentParser(add_help=False)
    secret.add_argument(
        "--passphrase-file", metavar="FILE", help="else $DKMS_PASSPHRASE, else a prompt"
    )
    wait = argparse.ArgumentParser(add_help=False)
    for parent in (secret, wait):
        parent.add_argument(
            "--timeout", type=float, default=WAIT, metavar="SECONDS", help="wait for nodes"
        )
        parent.add_argument(  # here too, so it may follow the command; unset, the global one
            "--bootstrap",
            metavar="PREFIX@MULTIADDR",
            default=argparse.SUPPRESS,
            help=BOOTSTRAP_HELP,
        )

    kel = commands.add_parser("kel", help="key event log files (CESR streams)")
    kel_commands = kel.add_subparsers(dest="kel_command", metavar="COMMAND", required=True)
    verify = kel_commands.add_parser(
        "verify", help="validate each file: key state of every identifier, fate of every message"
    )
    verify.add_argument("--json", action="store_true", help="one JSON object per file per line")
    verify.add_argument("files", nargs="+", metavar="FILE", help="CESR file, or - for stdin")
    verify.set_defaults(run=lambda a, o: kelcmd.verify(a.files, as_json=a.json))
    inspect = kel_commands.add_parser("inspect", help="show each message of a file, unjudged")
    inspect.add_argument("file", metavar="FILE", help="CESR file, or - for stdin")
    inspect.set_defaults(run=lambda a, o: kelinspect.inspect(a.file))
    export = kel_commands.add_parser(
        "export",
        parents=[wait],
        help="write NAME's KEL (binary CESR) to stdout; with --from, PREFIX's as a node serves it",
    )
    export.add_argument("name", metavar="NAME|PREFIX")
    export.add_argument(
        "--from", dest="node", metavar="PREFIX@MULTIADDR", help="read it from this node, by pages"
    )
    export.set_defaults(arun=_export)
    submit = kel_commands.add_parser(
        "submit", parents=[wait], help="push a KEL file to witnesses and show their receipts"
    )
    submit.add_argument(
        "file", metavar="FILE", help="the KEL's CESR stream, or - to read standard input"
    )
    submit.add_argument(
        "--to", action="extend", nargs="+", required=True, metavar="PREFIX@MULTIADDR"
    )
    submit.add_argument("--json", action="store_true", help="one JSON object per witness")
    submit.set_defaults(arun=_submit)
    check = kel_commands.add_parser(
        "check",
        parents=[wait],
        help="ask watchers whether the KEL in a file is the one they hold",
        description="Validate the KEL in FILE, then hand it to each watcher, which compares it "
        "with its own copy: consistent, behind (the watcher holds later events), ahead (the "
        "watcher lacked some of the file's events, and takes them), duplicitous (the file holds "
        "a validly signed version of an event the watcher holds another of: the evidence "
        "comes back, verified here, and the watcher keeps and publishes it) or invalid. "
        "Exit status: 0 every watcher consistent; 3 any watcher duplicitous; 1 an error (FILE "
        "does not validate, a watcher did not answer, or found it invalid); 4 otherwise, when "
        "a watcher was behind or ahead (no conflict, but not the same KEL: fetch it again, or "
        "ask why the watchers had not seen it).",
    )
    check.add_argument(
        "file", metavar="FILE", help="the KEL's CESR stream with its receipts, or - for stdin"
    )
    check.add_argument(
        "--with",
        dest="watchers",
        action="extend",
        nargs="+",
        required=True,
        metavar="PREFIX@MULTIADDR",
        help="the watchers to ask",
    )
    check.add_argument(
        "--prefix", metavar="PREFIX", help="the identifier to check, if FILE holds several"
    )
    check.add_argument("--json", action="store_true", help="one JSON object per watcher")
    check.set_defaults(arun=_kel_check)

    ident = commands.add_parser("id", help="identifiers kept in --home")
    id_commands = ident.add_subparsers(dest="id_command", metavar="COMMAND", required=True)
    create = id_commands.add_parser("create", parents=[secret], help="incept a new identifier")
    create.add_argument("name", metavar="NAME")
    create.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="PREFIX@MULTIADDR",
        help=f"repeatable; {OOBI_HELP}",
    )
    create.add_argument("--toad", type=int, help="witness threshold (default: all witnesses)")
    create.add_argument("--keys", type=int, default=1, help="number of signing keys")
    create.add_argument("--threshold", type=int, help="signing threshold (default: majority)")
    create.set_defaults(arun=_create)
    rotate = id_commands.add_parser(
        "rotate", parents=[secret], help="rotate to the next keys, changing witnesses if asked"
    )
    rotate.add_argument("name", metavar="NAME")
    rotate.add_argument(
        "--add-witness", action="append", default=[], metavar="PREFIX@MULTIADDR", help=OOBI_HELP
    )
    rotate.add_argument("--cut-witness", action="append", default=[], metavar="PREFIX")
    rotate.add_argument(
        "--toad", type=int, help="witness threshold (default: as many may fail as before)"
    )
    rotate.set_defaults(arun=_rotate)
    interact = id_commands.add_parser("interact", parents=[secret], help="anchor data")
    interact.add_argument("name", metavar="NAME")
    interact.add_argument("--data", required=True, metavar="JSON", help="an object or a list")
    interact.set_defaults(arun=_interact)
    abandon = id_commands.add_parser(
        "abandon",
        help="give up an inception no witness accepted, freeing its name",
        description="Give up NAME's unfinished inception, so that `dkms id create NAME` "
        "makes a new one. Refused once a witness accepted it; if a witness may hold it (it "
        "never answered), only with --yes, and its sealed keys are then kept aside.",
    )
    abandon.add_argument("name", metavar="NAME")
    abandon.add_argument(
        "--yes", action="store_true", help="even if a witness may hold it (it never answered)"
    )
    abandon.add_argument(
        "--passphrase-file", metavar="FILE", help="else $DKMS_PASSPHRASE, else a prompt"
    )
    abandon.set_defaults(arun=_abandon)
    show = id_commands.add_parser("show", help="key state of NAME from its stored KEL")
    show.add_argument("name", metavar="NAME")
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=_show)
    listing = id_commands.add_parser("list", help="the identifiers kept in --home")
    listing.set_defaults(run=_list)

    keystate = commands.add_parser(
        "keystate", parents=[wait], help="ask a node for identifiers' key states"
    )
    keystate.add_argument("prefixes", nargs="+", metavar="PREFIX")
    keystate.add_argument("--from", dest="node", required=True, metavar="PREFIX@MULTIADDR")
    keystate.add_argument("--json", action="store_true")
    keystate.set_defaults(arun=_keystate)

    oobi = commands.add_parser("oobi", help="OOBI URLs: how keripy finds identifiers")
    oobi_commands = oobi.add_subparsers(dest="oobi_command", metavar="COMMAND", required=True)
    oobi_show = oobi_commands.add_parser(
        "show",
        help="one OOBI URL per witness of NAME (http://WITNESS/oobi/AID/witness/W)",
        description="Print the OOBI URLs of an identifier of --home, one per witness whose "
        "HTTP address is known (it was named by its OOBI URL); the others are named on "
        "stderr. Exit status 1 when no URL can be given.",
    )
    oobi_show.add_argument("name", metavar="NAME|PREFIX")
    oobi_show.add_argument("--json", action="store_true", help="one JSON object")
    oobi_show.set_defaults(run=_oobi_show)

    _governance_commands(commands, secret, wait)
    _evidence_commands(commands, wait)

    demo = commands.add_parser("demo", help="run a small witness network and use it")
    demo.set_defaults(run=lambda a, o: kelcmd.demo())
    return parser


def _governance_commands(
    commands: Any, secret: argparse.ArgumentParser, wait: argparse.ArgumentParser
) -> None:
    gov = commands.add_parser("governance", help="governance rosters: who watches, who judges")
    gov_commands = gov.add_subparsers(dest="gov_command", metavar="COMMAND", required=True)
    roster = gov_commands.add_parser("roster", help="the roster of watchers, jurors and judges")
    roster_commands = roster.add_subparsers(dest="roster_command", metavar="COMMAND", required=True)
    create = roster_commands.add_parser(
        "create",
        parents=[secret],
        help="sign a roster with GOVNAME and hand it to nodes",
        description="Sign a roster with GOVNAME's current keys. Put GOVNAME first: --watcher, "
        "--juror, --judge and --publish-to take every word that follows them.",
    )
    create.add_argument("name", metavar="GOVNAME", help="the governance identifier (`dkms id`)")
    nodes = {"action": "extend", "nargs": "+", "type": _node_prefix, "metavar": "PREFIX"}
    create.add_argument("--watcher", required=True, **nodes)
    create.add_argument("--juror", default=[], **nodes)
    create.add_argument("--judge", default=[], **nodes)
    create.add_argument(
        "--epoch",
        type=int,
        metavar="N",
        help="default: one more than the last roster of GOVNAME made here",
    )
    create.add_argument(
        "--publish-to", action="extend", nargs="+", default=[], metavar="PREFIX@MULTIADDR"
    )
    create.add_argument("--out", metavar="FILE", help="also write the roster bundle (CBOR)")
    create.set_defaults(arun=_roster_create)
    show = roster_commands.add_parser(
        "show", parents=[wait], help="the roster a node holds, verified"
    )
    show.add_argument("--from", dest="node", required=True, metavar="PREFIX@MULTIADDR")
    show.add_argument("--governance", metavar="PREFIX", help="the governance it must be of")
    show.add_argument("--json", action="store_true")
    show.set_defaults(arun=_roster_show)


def _evidence_commands(commands: Any, wait: argparse.ArgumentParser) -> None:
    evidence = commands.add_parser("evidence", help="duplicity evidence and judges' rulings")
    ev_commands = evidence.add_subparsers(dest="ev_command", metavar="COMMAND", required=True)
    listing = ev_commands.add_parser(
        "list", parents=[wait], help="the evidence and rulings a watcher holds, explained"
    )
    listing.add_argument("--from", dest="node", required=True, metavar="PREFIX@MULTIADDR")
    listing.add_argument("--prefix", metavar="PREFIX", help="only what concerns this identifier")
    listing.add_argument("--json", action="store_true", help="one JSON object")
    listing.set_defaults(arun=_evidence_list)
    verify = ev_commands.add_parser("verify", help="check evidence or rulings offline")
    verify.add_argument(
        "file", metavar="FILE", help="evidence or envelope CBOR, `evidence list --json`, or -"
    )
    verify.set_defaults(run=_evidence_verify)


def _node_prefix(text: str) -> str:
    """A node's prefix: non-transferable Ed25519 (`B...`, 44 characters)."""
    try:
        if len(text) == 44:
            cesr.decode(text, expect=cesr.Codes.ED25519N)
            return text
    except ProtocolError:
        pass
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a node prefix (a non-transferable B... prefix of 44 characters)"
    )


# ---------------------------------------------------------------- dispatch
# The network commands load libp2p, which takes a while: only when they run.
# ruff: noqa: PLC0415


def _home(args: argparse.Namespace) -> Home:
    return Home(args.home or default_home())


def _show(a: argparse.Namespace, o: Options) -> int:
    from dkms.node.cli import ids as idcmd

    return idcmd.show(_home(a), a.name, as_json=a.json)


def _oobi_show(a: argparse.Namespace, o: Options) -> int:
    from dkms.node.cli import oobi as oobicmd

    return oobicmd.show(_home(a), a.name, as_json=a.json)


def _list(a: argparse.Namespace, o: Options) -> int:
    from dkms.node.cli import ids as idcmd

    return idcmd.listing(_home(a))


async def _export(a: argparse.Namespace, o: Options) -> int:
    from dkms.node.cli import net as netcmd

    if a.node is None:
        return netcmd.export(_home(a), a.name)
    return await netcmd.export_from(a.name, a.node, timeout=a.timeout, options=o)


async def _create(a: argparse.Namespace, o: Options) -> int:
    from dkms.node.cli import ids as idcmd

    return await idcmd.create(
        _home(a),
        a.name,
        witnesses=a.witness,
        toad=a.toad,
        keys=a.keys,
        threshold=a.threshold,
        passphrase_file=a.passphrase_file,
        timeout=a.timeout,
        options=o,
    )


async def _rotate(a: argparse.Namespace, o: Options) -> int:
    from dkms.node.cli import ids as idcmd

    return await idcmd.rotate(
        _home(a),
        a.name,
        adds=a.add_witness,
        cuts=a.cut_witness,
        toad=a.toad,
        passphrase_file=a.passphrase_file,
        timeout=a.timeout,
        options=o,
    )


async def _interact(a: argparse.Namespace, o: Options) -> int:
    from dkms.node.cli import ids as idcmd

    return await idcmd.interact(
        _home(a),
        a.name,
        data=a.data,
        passphrase_file=a.passphrase_file,
        timeout=a.timeout,
        options=o,
    )


async def _abandon(a: argparse.Namespace, o: Options) -> int:
    from dkms.node.cli import ids as idcmd

    return await idcmd.abandon(
        _home(a), a.name, sure=a.yes, passphrase_file=a.passphrase_file, options=o
    )


async def _submit(a: argparse.Namespace, o: Options) -> int:
    from dkms.node.cli import net as netcmd

    return await netcmd.submit(a.file, a.to, as_json=a.json, timeout=a.timeout, options=o)


async def _kel_check(a: argparse.Namespace, o: Options) -> int:
    from dkms.node.cli import kelcheck

    return await kelcheck.check(
        a.file, a.watchers, prefix=a.prefix, as_json=a.json, timeout=a.timeout, options=o
    )


async def _keystate(a: argparse.Namespace, o: Options) -> int:
    from dkms.node.cli import net as netcmd

    return await netcmd.keystate(a.prefixes, a.node, as_json=a.json, timeout=a.timeout, options=o)


async def _roster_create(a: argparse.Namespace, o: Options) -> int:
    from dkms.node.cli import governance as govcmd

    if not a.publish_to and a.out is None:
        print(
            "dkms: roster create needs --publish-to PREFIX@MULTIADDR, --out FILE, or both",
            file=sys.stderr,
        )
        return 2
    return await govcmd.create(
        _home(a),
        a.name,
        watchers=a.watcher,
        jurors=a.juror,
        judges=a.judge,
        epoch=a.epoch,
        publish_to=a.publish_to,
        out=a.out,
        passphrase_file=a.passphrase_file,
        timeout=a.timeout,
        options=o,
    )


async def _roster_show(a: argparse.Namespace, o: Options) -> int:
    from dkms.node.cli import governance as govcmd

    return await govcmd.show(
        a.node, governance=a.governance, as_json=a.json, timeout=a.timeout, options=o
    )


async def _evidence_list(a: argparse.Namespace, o: Options) -> int:
    from dkms.node.cli import net as netcmd

    return await netcmd.evidence(a.node, a.prefix, as_json=a.json, timeout=a.timeout, options=o)


def _evidence_verify(a: argparse.Namespace, o: Options) -> int:
    from dkms.node.cli import evidence as evidencecmd

    return evidencecmd.verify(a.file)


def _parse(argv: list[str] | None) -> argparse.Namespace | int:
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else 2


def _options(args: argparse.Namespace, options: Options | None) -> Options:
    """`options` (default ones) with the bootstrap node the command line or environment names."""
    opts = options or Options()
    return dataclasses.replace(opts, bootstrap=args.bootstrap) if args.bootstrap else opts


def _failed(err: Exception) -> int:
    print(f"dkms: {err}", file=sys.stderr)
    return 1


@contextlib.contextmanager
def _logging(verbose: bool) -> Iterator[None]:
    """Progress to stderr with -v; else only the command's own one-line errors."""
    loggers = [logging.getLogger(n) for n in ("dkms", "libp2p", "multiaddr")]
    levels = [lg.level for lg in loggers]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("dkms: %(message)s"))
    for lg in loggers:  # py-libp2p logs routine events (a peer that went away) as errors
        lg.setLevel(logging.CRITICAL)
    if verbose:
        loggers[0].setLevel(logging.INFO)
        loggers[0].addHandler(handler)
    try:
        yield
    finally:
        loggers[0].removeHandler(handler)
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def main(argv: list[str] | None = None, options: Options | None = None) -> int:
    """Run `dkms` with `argv` (default: the process arguments); return the exit status."""
    args = _parse(argv)
    if isinstance(args, int):
        return args
    opts = _options(args, options)
    if hasattr(args, "arun"):
        from dkms.node.cli import net as netcmd  # noqa: F401 - libp2p sets up its loggers on import: before _logging
    with _logging(args.verbose):
        try:
            if hasattr(args, "arun"):
                import trio

                status: int = trio.run(args.arun, args, opts)
                return status
            run: Command = args.run
            return run(args, opts)
        except (CommandError, SecretError) as err:
            return _failed(err)
        except BaseException as exc:  # Ctrl-C, maybe in trio's exception groups
            if said("dkms", exc):
                return INTERRUPTED
            raise


async def amain(argv: list[str], options: Options | None = None) -> int:
    """`main` for a caller already inside `trio.run` (tests)."""
    args = _parse(argv)
    if isinstance(args, int):
        return args
    opts = _options(args, options)
    if hasattr(args, "arun"):
        from dkms.node.cli import net as netcmd  # noqa: F401 - libp2p sets up its loggers on import: before _logging
    with _logging(args.verbose):
        try:
            if hasattr(args, "arun"):
                arun: AsyncCommand = args.arun
                return await arun(args, opts)
            run: Command = args.run
            return run(args, opts)
        except (CommandError, SecretError) as err:
            return _failed(err)


def entry() -> None:
    """Console-script entry point."""
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`dkms ... | head`): not an error worth a traceback. Point
        # stdout at devnull so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 1
    except KeyboardInterrupt as exc:  # outside `main`'s own handling (between two lines)
        said("dkms", exc)
        status = INTERRUPTED
    except Exception as exc:
        # Bad input must never show a user a traceback; if the library still trips over some
        # input, say so in one line. Tests call `main`, so they see such bugs in full.
        if os.environ.get("DKMS_DEBUG"):
            raise
        print(
            f"dkms: internal error ({type(exc).__name__}: {exc}); this is a bug, please "
            "report it (DKMS_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        status = 70
    if status == INTERRUPTED:  # a second Ctrl-C while the interpreter exits: no traceback
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(status)

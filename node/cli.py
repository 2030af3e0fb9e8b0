"""The `dkms` command line: argument parsing and dispatch; commands live in their own modules.

`main(argv)` is a plain function returning the exit status, so tests call it directly; only
`entry` (the console script) touches `sys.exit`. Exit statuses: 0 all input read, 1 some input
unreadable or unframeable, 2 usage error, 70 an internal error (a bug: please report it).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from . import kelcmd, kelinspect

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dkms", description="KERI key event logs: verify, inspect, and (later) manage them."
    )
    # Accepted now so scripts written today keep working once identifiers are stored there.
    parser.add_argument("--home", metavar="DIR", help="data directory (not used yet)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    kel = commands.add_parser("kel", help="read key event log files (CESR streams)")
    kel_commands = kel.add_subparsers(dest="kel_command", metavar="COMMAND", required=True)

    verify = kel_commands.add_parser(
        "verify", help="validate each file: key state of every identifier, fate of every message"
    )
    verify.add_argument("--json", action="store_true", help="one JSON object per file per line")
    verify.add_argument("files", nargs="+", metavar="FILE", help="CESR file, or - for stdin")
    verify.set_defaults(run=_verify)

    inspect = kel_commands.add_parser("inspect", help="show each message of a file, unjudged")
    inspect.add_argument("file", metavar="FILE", help="CESR file, or - for stdin")
    inspect.set_defaults(run=_inspect)

    demo = commands.add_parser("demo", help="verify the sample KEL shipped with dkms")
    demo.set_defaults(run=_demo)
    return parser


def _verify(args: argparse.Namespace) -> int:
    return kelcmd.verify(args.files, as_json=args.json)


def _inspect(args: argparse.Namespace) -> int:
    return kelinspect.inspect(args.file)


def _demo(args: argparse.Namespace) -> int:
    return kelcmd.demo()


def main(argv: list[str] | None = None) -> int:
    """Run `dkms` with `argv` (default: the process arguments); return the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else 2
    run: Command = args.run
    return run(args)


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
    except KeyboardInterrupt:
        status = 130
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
    sys.exit(status)


if __name__ == "__main__":  # `python -m dkms.node.cli`, as run.py does
    entry()

"""`dkms kel check FILE --with WATCHER...`: is the KEL I was shown the one the watchers hold?

The file is validated here first (`client.kelcheck.prepare`), then every watcher is handed
it, piece by piece, and compares it with its own copy (`roles/checking.py`). One line per
watcher (`--json`: one JSON object per watcher, whose evidence `dkms evidence verify` reads).
The exit status is for scripts (`client.kelcheck.Exit`):

    0   consistent: every watcher holds exactly these events
    3   duplicitous: a watcher sent evidence, verified here, that the identifier signed two
        versions of an event (it now holds it, and its juror duty publishes it)
    1   an error: the file does not validate, a watcher did not answer or refused, or a
        watcher found what is new to it invalid (and none proved duplicity)
    4   behind or ahead, and nothing worse: a watcher holds later events than the file
        (fetch the KEL again: the keys may have rotated), or lacked some of the file's (it
        takes them now; an identifier no watcher knew is one no one else has seen)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Final

from dkms.node.cli.cesrfile import STDIN, read_upto
from dkms.node.cli.textout import safe
from dkms.node.client.home import CommandError, Options
from dkms.node.client.kelcheck import Checked, check_kel, prepare, status
from dkms.node.client.locating import node_ref
from dkms.node.client.witnessing import session

MAX_FILE: Final = 256 << 20  # bytes of FILE read at most


async def check(
    path: str,
    watchers: Sequence[str],
    *,
    prefix: str | None,
    as_json: bool,
    timeout: float,
    options: Options,
) -> int:
    """Check the KEL in `path` (`-`: standard input) with each watcher; the exit status."""
    name = "standard input" if path == STDIN else path
    try:
        shown = prepare(_read(path), prefix, budget=options.chunk)
    except CommandError as err:
        raise CommandError(f"{name}: {err}") from None
    intros = [await node_ref(w, options) for w in watchers]
    async with session(intros, options) as transport:
        results = await check_kel(transport, [i.prefix for i in intros], shown, timeout=timeout)
    for result in results:
        if as_json:
            print(json.dumps({"i": shown.prefix, "events": shown.events} | result.to_json()))
        else:
            print(line(result))
    return int(status(results))


def line(result: Checked) -> str:
    """One watcher's answer in a line."""
    held = "" if result.sn is None else f" (it holds to sn {result.sn})"
    text = f"{result.watcher}: {result.verdict}{held}: {safe(result.reason)}"
    proven = result.proven
    if proven:
        accused = sorted({f"{a.kind} {a.accused}" for a in proven})
        text += f"; {len(proven)} piece(s) of evidence verify, against {', '.join(accused)}"
    bad = len(result.evidence) - len(proven)
    if bad:
        text += f"; {bad} piece(s) of evidence do NOT verify"
    return text


def _read(path: str) -> bytes:
    try:
        data = read_upto(path, MAX_FILE)
    except OSError as err:
        raise CommandError(f"cannot read {path}: {err.strerror or err}") from None
    if len(data) > MAX_FILE:
        raise CommandError(f"{path} is over {MAX_FILE >> 20} MiB")
    return data

"""`dkms id ...`: identifiers kept in a home directory, their events pushed to their witnesses.

The commands check what they are asked, then make each event through the identifier's
`client.session.Session` (which holds its lock and its pending event, and gets the event
witnessed), and report the outcome. A command that finds the identifier held by another
waits its turn, saying so once on stderr; Ctrl-C while it waits ends it with one line and
status 130, nothing changed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any, Final

from dkms.node.cli.interrupt import Said
from dkms.node.cli.textout import safe, table, threshold
from dkms.node.client.home import CommandError, Home, Options, read_kel
from dkms.node.client.keystore import Keystore
from dkms.node.client.locating import NodeRef, node_ref
from dkms.node.client.session import Session, Wanted, state_of
from dkms.node.client.witnessing import findable
from dkms.node.p2p import Introduction
from dkms.node.roles.controller import Controller
from dkms.protocol.keystate import KeyState
from dkms.protocol.thresholds import default_threshold

_DONE: Final = {"icp": "created", "rot": "rotated", "ixn": "anchored data in"}


# ---------------------------------------------------------------- commands


async def create(
    home: Home,
    name: str,
    *,
    witnesses: Sequence[str],
    toad: int | None,
    keys: int,
    threshold: int | None,
    passphrase_file: str | None,
    timeout: float,
    options: Options,
) -> int:
    """Incept NAME with fresh keys; local-only when it has no witnesses."""
    home.check_name(name)
    named = [await node_ref(w, options) for w in witnesses]
    prefixes = [n.prefix for n in named]
    if len(set(prefixes)) != len(prefixes):
        raise CommandError("a witness is named twice")
    toad = len(prefixes) if toad is None else toad
    if not 0 <= toad <= len(prefixes):
        raise CommandError(
            f"--toad must be between 0 and the number of witnesses ({len(prefixes)})"
        )
    if keys < 1:
        raise CommandError("--keys must be at least 1")
    kt = default_threshold(keys, 1) if threshold is None else threshold
    if not 1 <= kt <= keys:
        raise CommandError(f"--threshold must be between 1 and --keys ({keys})")
    if home.kel_path(name).exists():  # asked again under the lock: this spares a passphrase
        raise CommandError(f"an identifier named {name!r} exists already in {home.root}")
    await findable(named, options)
    keystore = home.keystore(passphrase_file, options)
    async with hold_identifier(home, name, keystore) as held:
        ctl = await held.incept(
            witnesses=prefixes,
            toad=toad,
            keys=keys,
            kt=kt,
            timeout=timeout,
            options=options,
            intros=[n.intro for n in named if n.intro is not None],
        )
    home.learn_urls({n.prefix: n.http for n in named if n.http is not None})
    _report(ctl, name, _DONE["icp"])
    return 0


async def rotate(
    home: Home,
    name: str,
    *,
    adds: Sequence[str],
    cuts: Sequence[str],
    toad: int | None,
    passphrase_file: str | None,
    timeout: float,
    options: Options,
) -> int:
    """Rotate NAME's keys to the committed next ones, changing witnesses if asked."""
    added = [await node_ref(a, options) for a in adds]
    intros = [n.intro for n in added if n.intro is not None]
    await findable(added, options)

    def wanted(state: KeyState) -> dict[str, Any]:
        return _rotation(name, state, added, list(cuts), toad)

    done = await _change(home, name, wanted, intros, passphrase_file, timeout, options)
    home.learn_urls({n.prefix: n.http for n in added if n.http is not None})
    return done


async def interact(
    home: Home,
    name: str,
    *,
    data: str,
    passphrase_file: str | None,
    timeout: float,
    options: Options,
) -> int:
    """Anchor `data` (a JSON object, or a list of anchors) in NAME's KEL."""
    try:
        value = json.loads(data)
    except ValueError as err:
        raise CommandError(f"--data is not JSON: {err}") from None
    if isinstance(value, dict):
        anchors = [value]
    elif isinstance(value, list):
        anchors = value
    else:
        raise CommandError("--data must be a JSON object or a list of anchors")
    home.check_kel(name)
    keystore = home.keystore(passphrase_file, options)
    async with hold_identifier(home, name, keystore) as held:
        ctl = await held.interact(anchors, timeout=timeout, options=options)
    _report(ctl, name, _DONE["ixn"])
    return 0


async def abandon(
    home: Home, name: str, *, sure: bool, passphrase_file: str | None, options: Options
) -> int:
    """Give up NAME's inception, which no witness accepted, so that the name is free again."""
    if home.kel_path(home.known(name)).exists():  # asked again under the lock
        raise CommandError(
            f"{name} has a fully witnessed inception: an identifier that exists cannot be abandoned"
        )
    keystore = home.keystore(passphrase_file, options)
    async with hold_identifier(home, name, keystore) as held:
        kept = held.abandon(sure=sure)
    where = f"; its sealed keys are kept in {kept}" if kept is not None else ""
    print(f"abandoned the inception of {name}: the name is free{where}")
    return 0


def show(home: Home, name: str, *, as_json: bool) -> int:
    """NAME's key state from its stored KEL, checked again from the bytes."""
    kel = home.require_kel(name)
    validator = read_kel(kel, str(home.kel_path(name)))
    prefixes = [p for p in validator.prefixes if validator.state(p) is not None]
    if len(prefixes) != 1:
        raise CommandError(f"{home.kel_path(name)} does not hold exactly one identifier's KEL")
    prefix = prefixes[0]
    state, log = validator.state(prefix), validator.kel(prefix)
    assert state is not None and log is not None
    book = home.book()
    out: dict[str, Any] = {"name": name, "prefix": prefix, **state.to_json()}
    out["fel"] = [[n, r.event.said] for n, r in enumerate(log.first_seen)]
    out["introductions"] = {w: book.get(w) for w in state.witnesses}
    if as_json:
        print(json.dumps(out))
        return 0
    print(f"{name}  {prefix}")
    print(f"  sn {state.sn} ({state.ilk.value})  latest {state.said}")
    print(f"  keys (kt {threshold(state.kt)}): {', '.join(state.keys)}")
    print(f"  next (nt {threshold(state.nt)}): {', '.join(out['n']) or '-'}")
    print(f"  witnesses (bt {state.toad}):" + ("" if state.witnesses else " none, local only"))
    for witness in state.witnesses:
        print(f"    {safe(book.get(witness) or witness + ' (address unknown)')}")
    return 0


def listing(home: Home) -> int:
    """The identifiers of this home, one a line."""
    rows = []
    for name in home.names():
        kel = home.kel(name)
        if kel is None:
            rows.append((name, "-", "-", "-", "inception not fully witnessed yet"))
            continue
        validator = read_kel(kel, str(home.kel_path(name)))
        for prefix in validator.prefixes:
            state = validator.state(prefix)
            if state is not None:
                b = f"{len(state.witnesses)} (bt {state.toad})"
                rows.append((name, prefix, str(state.sn), b, ""))
    if rows:
        print("\n".join(table(("NAME", "PREFIX", "SN", "WITNESSES", ""), rows, indent="")))
    else:
        print(f"no identifiers in {home.root} yet: `dkms id create NAME` makes one")
    return 0


# ---------------------------------------------------------------- the steps


async def _change(
    home: Home,
    name: str,
    wanted: Wanted,
    intros: list[Introduction],
    passphrase_file: str | None,
    timeout: float,
    options: Options,
) -> int:
    """Rotate or interact NAME through its session, and say what was made."""
    home.check_kel(name)
    keystore = home.keystore(passphrase_file, options)
    async with hold_identifier(home, name, keystore) as held:
        ctl, made = await held.change(wanted, intros, timeout, options)
    _report(ctl, name, _DONE[made])
    return 0


@asynccontextmanager
async def hold_identifier(
    home: Home,
    name: str,
    keystore: Keystore,
    interrupted: str = "an event it made is kept, and running the same command again finishes it",
) -> AsyncIterator[Session]:
    """NAME's session, waiting for another command that holds it (once said on stderr).
    Ctrl-C, while it waits or while it works, ends the command with one line (saying
    `interrupted` when it was working)."""

    def waiting(holder: str) -> None:
        who = "another process" if holder == "unknown" else f"process {holder}"
        print(f"dkms: waiting for {who}, which is changing {name} ...", file=sys.stderr)

    async with AsyncExitStack() as stack:
        with _interrupts(f"while waiting for {name}: nothing changed"):
            held = await stack.enter_async_context(
                Session.held(home, name, keystore, say=print, waiting=waiting)
            )
        with _interrupts(f"while working on {name}: {interrupted}"):
            yield held


@contextmanager
def _interrupts(what: str) -> Iterator[None]:
    """Ctrl-C: say `interrupted WHAT` and raise a bare KeyboardInterrupt (`entry`: status 130),
    also out of the exception group a trio nursery wraps it in."""
    try:
        yield
    except KeyboardInterrupt:
        print(f"dkms: interrupted {what}", file=sys.stderr)
        raise Said from None
    except BaseExceptionGroup as group:
        _, rest = group.split(KeyboardInterrupt)
        if rest is not None:
            raise
        print(f"dkms: interrupted {what}", file=sys.stderr)
        raise Said from None


def _rotation(
    name: str, state: KeyState, adds: list[NodeRef], cuts: list[str], toad: int | None
) -> dict[str, Any]:
    """The rotation asked for, checked against the witnesses in force."""
    before = list(state.witnesses)
    added = [i.prefix for i in adds]
    if len(set(added)) != len(added) or len(set(cuts)) != len(cuts):
        raise CommandError("a witness is named twice")
    for prefix in cuts:
        if prefix not in before:
            raise CommandError(f"{prefix} is not a witness of {name}")
    for prefix in added:
        if prefix in before:
            raise CommandError(f"{prefix} is a witness of {name} already")
    after = [w for w in before if w not in cuts] + added
    if toad is None:  # keep the number of witnesses that may fail
        margin = len(before) - state.toad
        toad = min(len(after), max(1 if after else 0, len(after) - margin))
    if not 0 <= toad <= len(after):
        raise CommandError(f"--toad must be between 0 and the number of witnesses ({len(after)})")
    nt = state.nt  # the new signing keys are the committed next keys: keep their threshold
    return {"op": "rot", "adds": added, "cuts": cuts, "toad": toad, "kt": nt, "nt": nt}


def _report(ctl: Controller, name: str, verb: str) -> None:
    ident = ctl.identity(name)
    state = state_of(ctl, ident.prefix)
    record = ctl.validator.record(ident.last_said)
    receipts = len(record.receipts) if record is not None else 0
    print(f"{verb} {name}  {ident.prefix}")
    print(f"  sn {ident.sn} ({state.ilk.value})  {ident.last_said}")
    print(f"  witnesses {len(state.witnesses)}, bt {state.toad}, receipts {receipts}")
    for witness in state.witnesses:
        print(f"    {safe(witness)}")

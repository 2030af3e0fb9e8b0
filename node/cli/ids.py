"""`dkms id ...`: identifiers kept in a home directory, their events pushed to their witnesses.

Theory of operation. Every event goes through the same four steps (`_carry_out`):

    make      the Controller, restored from the keystore and the stored KEL, makes the event
    keep      the keystore record gets the event as `pending` with any new seeds (home.py)
    push      the event goes to its witnesses until fully witnessed (netcmd.push)
    settle    the KEL is stored, then the record moves on (a rotation's seeds shift, the
              retired ones go to `history`) and `pending` is cleared

A failure after `keep` leaves `pending` in the record. The next command on that identifier
first finishes it, remaking exactly the same event; if the new command asks for the same
thing (the user simply ran it again) that is all it does. A crash between storing the KEL and
clearing `pending` is noticed by finding the pending event already in the KEL.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any, Final

import trio

from dkms.node.cli.net import push
from dkms.node.cli.textout import safe, table, threshold
from dkms.node.client.home import CommandError, Home, Options, introduction, read_kel
from dkms.node.client.keystore import Keystore
from dkms.node.p2p import Introduction
from dkms.node.roles.controller import Controller
from dkms.node.roles.effects import Effect
from dkms.protocol.errors import ProtocolError
from dkms.protocol.keystate import KeyState
from dkms.protocol.thresholds import default_threshold

SEED_SIZE: Final = 32
_WHAT: Final = {"icp": "inception", "rot": "rotation", "ixn": "interaction"}
_DONE: Final = {"icp": "created", "rot": "rotated", "ixn": "anchored data in"}
_NOT_PARAMS: Final = frozenset({"said", "sn", "next"})  # what a retry may not compare


def _seeds(count: int) -> list[bytes]:
    return [os.urandom(SEED_SIZE) for _ in range(count)]


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
    intros = [introduction(w) for w in witnesses]
    prefixes = [i.prefix for i in intros]
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
    if home.kel(name) is not None:
        raise CommandError(f"an identifier named {name!r} exists already in {home.root}")
    unfinished = name in home.names()  # keys kept, inception never fully witnessed
    keystore = home.keystore(passphrase_file, options)
    home.learn(intros)
    ctl = Controller(retry=options.retry)
    if unfinished:
        record = keystore.load(name)
        op = record.get("pending")
        if not isinstance(op, dict) or op.get("op") != "icp":
            raise CommandError(f"an identifier named {name!r} exists already in {home.root}")
        print(f"finishing the inception of {name} made earlier")
        await _carry_out(home, keystore, ctl, name, record, op, timeout, options, again=True)
    else:
        record = {"prefix": "", "current": _seeds(keys), "next": _seeds(keys), "history": []}
        op = {"op": "icp", "witnesses": prefixes, "toad": toad, "kt": kt, "nt": kt}
        await _carry_out(home, keystore, ctl, name, record, op, timeout, options)
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
    intros = [introduction(a) for a in adds]

    def wanted(state: KeyState) -> dict[str, Any]:
        return _rotation(name, state, intros, list(cuts), toad)

    return await _change(home, name, wanted, intros, passphrase_file, timeout, options)


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
    op = {"op": "ixn", "anchors": anchors}
    return await _change(home, name, lambda _: op, [], passphrase_file, timeout, options)


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
    wanted: Callable[[KeyState], dict[str, Any]],  # the event asked for, given the key state
    intros: list[Introduction],
    passphrase_file: str | None,
    timeout: float,
    options: Options,
) -> int:
    """Rotate or interact: take NAME back, finish what is pending, then do what is asked."""
    kel = home.require_kel(name)
    keystore = home.keystore(passphrase_file, options)
    record = keystore.load(name)
    home.learn(intros)
    pending = record.get("pending")
    if isinstance(pending, dict) and read_kel(kel, name).record(pending["said"]) is not None:
        _settle(record)  # it reached the KEL, but the record was not updated: do it now
        keystore.save(name, record)
        pending = None
    ctl = Controller(retry=options.retry)
    try:
        ident = ctl.restore(name, _secrets(record), kel, trio.current_time())
    except ProtocolError as err:
        raise CommandError(str(err)) from None
    if isinstance(pending, dict):
        try:
            same = _params(wanted(_state(ctl, ident.prefix))) == _params(pending)
        except CommandError:  # meant for the state after the pending event
            same = False
        what = _WHAT.get(pending["op"], pending["op"])
        print(f"finishing the {what} of {name} made earlier")
        await _carry_out(home, keystore, ctl, name, record, pending, timeout, options, again=True)
        if same:
            _report(ctl, name, _DONE[pending["op"]])
            return 0
    op = wanted(_state(ctl, ident.prefix))
    if op["op"] == "rot":
        op["next"] = _seeds(len(record["next"]))
    await _carry_out(home, keystore, ctl, name, record, op, timeout, options)
    _report(ctl, name, _DONE[op["op"]])
    return 0


async def _carry_out(
    home: Home,
    keystore: Keystore,
    ctl: Controller,
    name: str,
    record: dict[str, Any],
    op: dict[str, Any],
    timeout: float,
    options: Options,
    *,
    again: bool = False,
) -> None:
    """Make, keep, push and settle one event (`again`: remake the pending one)."""
    effects = _make(ctl, name, record, op, trio.current_time())
    ident = ctl.identity(name)
    if again:
        if ident.last_said != op["said"]:
            raise CommandError(
                f"cannot remake the pending {_WHAT[op['op']]} of {name} exactly"
                f" ({ident.last_said} instead of {op['said']})"
            )
    else:
        record["prefix"] = ident.prefix
        record["pending"] = {**op, "said": ident.last_said, "sn": ident.sn}
        keystore.save(name, record)  # before anything leaves this machine
    what = f"the {_WHAT[op['op']]} of {name} (sn {ident.sn})"
    await push(ctl, effects, ident.last_said, home, what=what, timeout=timeout, options=options)
    home.save_kel(name, ctl.export(name))
    _settle(record)
    keystore.save(name, record)


def _make(
    ctl: Controller, name: str, record: dict[str, Any], op: dict[str, Any], now: float
) -> list[Effect]:
    try:
        if op["op"] == "icp":
            return ctl.incept(
                name,
                record["current"],
                record["next"],
                witnesses=op["witnesses"],
                toad=op["toad"],
                kt=op["kt"],
                nt=op["nt"],
                now=now,
            )
        if op["op"] == "rot":
            return ctl.rotate(
                name,
                op["next"],
                adds=op["adds"],
                cuts=op["cuts"],
                toad=op["toad"],
                kt=op["kt"],
                nt=op["nt"],
                now=now,
            )
        if op["op"] == "ixn":
            return ctl.interact(name, op["anchors"], now=now)
    except ProtocolError as err:
        raise CommandError(f"cannot make the event: {err}") from None
    raise CommandError(f"the keystore record of {name} holds an unknown event kind {op['op']!r}")


def _settle(record: dict[str, Any]) -> None:
    """The pending event is fully witnessed and stored: move the record on."""
    op = record.pop("pending")
    if op["op"] == "rot":
        record.setdefault("history", []).append({"sn": op["sn"], "current": record["current"]})
        record["current"], record["next"] = record["next"], op["next"]
    record["pending"] = None


def _rotation(
    name: str, state: KeyState, adds: list[Introduction], cuts: list[str], toad: int | None
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


def _params(op: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in op.items() if k not in _NOT_PARAMS}


def _secrets(record: dict[str, Any]) -> dict[str, list[bytes]]:
    return {"current": list(record["current"]), "next": list(record["next"])}


def _state(ctl: Controller, prefix: str) -> KeyState:
    state = ctl.validator.state(prefix)
    if state is None:
        raise CommandError(f"no key state for {prefix}")
    return state


def _report(ctl: Controller, name: str, verb: str) -> None:
    ident = ctl.identity(name)
    state = _state(ctl, ident.prefix)
    record = ctl.validator.record(ident.last_said)
    receipts = len(record.receipts) if record is not None else 0
    print(f"{verb} {name}  {ident.prefix}")
    print(f"  sn {ident.sn} ({state.ilk.value})  {ident.last_said}")
    print(f"  witnesses {len(state.witnesses)}, bt {state.toad}, receipts {receipts}")
    for witness in state.witnesses:
        print(f"    {safe(witness)}")

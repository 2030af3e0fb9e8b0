"""One identifier of a home, held by one process at a time: its keys, its pending event, its
witnesses. Every `dkms id` command, and any program, makes events through a `Session`.

Theory of operation. Opening a session takes the identifier's lock (`keys/NAME.lock`): two
commands on one identifier at once could each sign a different event at the same sequence
number, which is duplicity, so the second is refused at once. Every event then goes through
the same four steps (`_carry_out`):

    make      the Controller, restored from the keystore and the stored KEL, makes the event
    keep      the keystore record gets the event as `pending` with any new seeds
    push      the event goes to its witnesses until fully witnessed (`witnessing.push`)
    settle    the KEL is stored, then the record moves on (a rotation's seeds shift, the
              retired ones go to `history`) and `pending` is cleared

A failure after `keep` leaves `pending` in the record. The next session on that identifier
first finishes it, remaking exactly the same event; if what is asked now is the same thing
(the user simply ran the command again) that is all it does. A crash between storing the KEL
and clearing `pending` is noticed by finding the pending event already in the KEL.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

import trio

from dkms.node import lockfile
from dkms.node.client.home import CommandError, Home, Options, read_kel
from dkms.node.client.keystore import KEYS, Keystore
from dkms.node.client.witnessing import push
from dkms.node.p2p import Introduction
from dkms.node.roles.controller import Controller
from dkms.node.roles.effects import Effect
from dkms.node.secretfiles import private_dir
from dkms.protocol.errors import ProtocolError
from dkms.protocol.keystate import KeyState

SEED_SIZE: Final = 32
WHAT: Final = {"icp": "inception", "rot": "rotation", "ixn": "interaction"}
_NOT_PARAMS: Final = frozenset({"said", "sn", "next"})  # what a retry may not compare

Wanted = Callable[[KeyState], dict[str, Any]]  # the event asked for, given the key state


def fresh_seeds(count: int) -> list[bytes]:
    return [os.urandom(SEED_SIZE) for _ in range(count)]


class Session:
    """An identifier held exclusively; `say` hears what is worth telling a user."""

    def __init__(
        self, home: Home, keystore: Keystore, name: str, say: Callable[[str], None]
    ) -> None:
        self.home = home
        self.keystore = keystore
        self.name = name
        self.say = say

    @classmethod
    @contextmanager
    def held(
        cls,
        home: Home,
        name: str,
        keystore: Keystore,
        *,
        say: Callable[[str], None] = lambda _: None,
    ) -> Iterator[Session]:
        """The session of `name`, holding its lock until the block ends."""
        home.check_name(name)
        folder = home.root / KEYS
        try:
            private_dir(folder)
            fd = lockfile.exclusive(folder / f"{name}.lock")
        except lockfile.LockHeld as held:
            raise CommandError(
                f"{name} is in use by another command (process {held.holder}): wait for it"
                " to finish, then run this one again"
            ) from None
        except OSError as err:
            raise CommandError(f"cannot lock {name} in {folder}: {err.strerror}") from None
        try:
            yield cls(home, keystore, name, say)
        finally:
            os.close(fd)

    # ---------------------------------------------------------------- events

    async def incept(
        self,
        *,
        witnesses: list[str],
        toad: int,
        keys: int,
        kt: int,
        timeout: float,
        options: Options,
    ) -> Controller:
        """Incept the identifier with fresh keys (or finish an inception made earlier)."""
        name, home = self.name, self.home
        if home.kel(name) is not None:
            raise CommandError(f"an identifier named {name!r} exists already in {home.root}")
        ctl = Controller(retry=options.retry)
        if name in home.names():  # keys kept, inception never fully witnessed
            record = self.keystore.load(name)
            op = record.get("pending")
            if not isinstance(op, dict) or op.get("op") != "icp":
                raise CommandError(f"an identifier named {name!r} exists already in {home.root}")
            self.say(f"finishing the inception of {name} made earlier")
            await self._carry_out(ctl, record, op, timeout, options, again=True)
        else:
            record = {
                "prefix": "",
                "current": fresh_seeds(keys),
                "next": fresh_seeds(keys),
                "history": [],
            }
            op = {"op": "icp", "witnesses": witnesses, "toad": toad, "kt": kt, "nt": kt}
            await self._carry_out(ctl, record, op, timeout, options)
        return ctl

    async def change(
        self, wanted: Wanted, intros: list[Introduction], timeout: float, options: Options
    ) -> tuple[Controller, str]:
        """Rotate or interact: finish what is pending, then make what `wanted` asks for.
        Returns the controller and the kind of the event made (`icp`, `rot` or `ixn`)."""
        name, home = self.name, self.home
        kel = home.require_kel(name)
        record = self.keystore.load(name)
        home.learn(intros)
        pending = record.get("pending")
        if isinstance(pending, dict) and read_kel(kel, name).record(pending["said"]) is not None:
            _settle(record)  # it reached the KEL, but the record was not updated: do it now
            self.keystore.save(name, record)
            pending = None
        ctl = Controller(retry=options.retry)
        try:
            ident = ctl.restore(name, _secrets(record), kel, trio.current_time())
        except ProtocolError as err:
            raise CommandError(str(err)) from None
        if isinstance(pending, dict):
            try:
                same = _params(wanted(state_of(ctl, ident.prefix))) == _params(pending)
            except CommandError:  # meant for the state after the pending event
                same = False
            what = WHAT.get(pending["op"], pending["op"])
            self.say(f"finishing the {what} of {name} made earlier")
            await self._carry_out(ctl, record, pending, timeout, options, again=True)
            if same:
                return ctl, str(pending["op"])
        op = wanted(state_of(ctl, ident.prefix))
        if op["op"] == "rot":
            op["next"] = fresh_seeds(len(record["next"]))
        await self._carry_out(ctl, record, op, timeout, options)
        return ctl, str(op["op"])

    async def interact(
        self, anchors: list[Any], *, timeout: float, options: Options
    ) -> Controller:
        """Anchor `anchors` (seals or other data) in the KEL; the controller after it."""
        ctl, _ = await self.change(
            lambda _: {"op": "ixn", "anchors": list(anchors)}, [], timeout, options
        )
        return ctl

    # ---------------------------------------------------------------- the steps

    async def _carry_out(
        self,
        ctl: Controller,
        record: dict[str, Any],
        op: dict[str, Any],
        timeout: float,
        options: Options,
        *,
        again: bool = False,
    ) -> None:
        """Make, keep, push and settle one event (`again`: remake the pending one)."""
        name = self.name
        effects = _make(ctl, name, record, op, trio.current_time())
        ident = ctl.identity(name)
        if again:
            if ident.last_said != op["said"]:
                raise CommandError(
                    f"cannot remake the pending {WHAT[op['op']]} of {name} exactly"
                    f" ({ident.last_said} instead of {op['said']})"
                )
        else:
            record["prefix"] = ident.prefix
            record["pending"] = {**op, "said": ident.last_said, "sn": ident.sn}
            self.keystore.save(name, record)  # before anything leaves this machine
        what = f"the {WHAT[op['op']]} of {name} (sn {ident.sn})"
        await push(
            ctl, effects, ident.last_said, self.home, what=what, timeout=timeout, options=options
        )
        self.home.save_kel(name, ctl.export(name))
        _settle(record)
        self.keystore.save(name, record)


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


def _params(op: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in op.items() if k not in _NOT_PARAMS}


def _secrets(record: dict[str, Any]) -> dict[str, list[bytes]]:
    return {"current": list(record["current"]), "next": list(record["next"])}


def state_of(ctl: Controller, prefix: str) -> KeyState:
    """The key state the controller holds for `prefix` (a CommandError if none)."""
    state = ctl.validator.state(prefix)
    if state is None:
        raise CommandError(f"no key state for {prefix}")
    return state

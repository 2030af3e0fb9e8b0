"""One identifier of a home, held by one process at a time: its keys, its pending event, its
witnesses. Every `dkms id` command, and any program, makes events through a `Session`.

Theory of operation. Opening a session takes the identifier's lock (`keys/NAME.lock`), waiting
for a command that holds it to finish: two commands on one identifier at once could each sign
a different event at the same sequence number, which is duplicity. Everything from reading the
KEL and the keystore record to storing the result happens under the lock, so commands run at
once make consecutive events. Every event goes through the same four steps (`_carry_out`):

    make      the Controller, restored from the keystore and the stored KEL, makes the event
    keep      the keystore record gets the event as `pending` with any new seeds, marked
              `pushing` (what the witnesses hold is unknown until the push ends)
    push      the event goes to its witnesses until fully witnessed (`witnessing.push`), at
              the addresses given to this command, else those of the address book
    settle    the KEL is stored, then the record moves on (a rotation's seeds shift, the
              retired ones go to `history`) and `pending` is cleared; the addresses that
              proved right go to the address book (`Home.learn`)

A failed push leaves `pending` in the record, with what each witness may hold of it (`fates`,
`witnessing.Fate` by name); a crash during a push leaves it marked `pushing`. Nothing can be
made while an event is pending: a command asking for that same event (the same parameters:
the user ran the command again) remakes it byte for byte and pushes it again; one asking for
anything else is refused, naming the parameters that differ, since finishing the old event
would do what was not asked and signing another at its sequence number may be duplicity. An
inception no witness can hold may instead be given up (`abandon`): its prefix is the digest
of its own keys, so a new inception is another identifier, never a rival. A crash between
storing the KEL and clearing `pending` is noticed by finding the pending event in the KEL.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import trio

from dkms.node import lockfile
from dkms.node.client.home import CommandError, Home, Options, read_kel
from dkms.node.client.keystore import KEYS, SUFFIX, Keystore
from dkms.node.client.witnessing import Fate, NotWitnessed, Outcome, push
from dkms.node.p2p import Introduction
from dkms.node.roles.controller import Controller
from dkms.node.roles.effects import Effect
from dkms.node.secretfiles import private_dir
from dkms.protocol.errors import ProtocolError
from dkms.protocol.keystate import KeyState

SEED_SIZE: Final = 32
WHAT: Final = {"icp": "inception", "rot": "rotation", "ixn": "interaction"}
COMMAND: Final = {"icp": "create", "rot": "rotate", "ixn": "interact"}
# What a retry must ask again to be the same event, by kind, and the flag that sets each.
PARAMS: Final = {
    "icp": ("witnesses", "toad", "keys", "kt", "nt"),
    "rot": ("adds", "cuts", "toad", "kt", "nt"),  # (the thresholds follow the key state)
    "ixn": ("anchors",),
}
FLAGS: Final = {
    "witnesses": "--witness",
    "toad": "--toad",
    "keys": "--keys",
    "kt": "--threshold",
    "nt": "next threshold",
    "adds": "--add-witness",
    "cuts": "--cut-witness",
    "anchors": "--data",
}
_FLAGGED: Final = {  # those the command line sets
    "icp": ("witnesses", "toad", "keys", "kt"),
    "rot": ("adds", "cuts", "toad"),
    "ixn": ("anchors",),
}
_SHOWN: Final = 100  # characters of one parameter's value in a message

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
    @asynccontextmanager
    async def held(
        cls,
        home: Home,
        name: str,
        keystore: Keystore,
        *,
        say: Callable[[str], None] = lambda _: None,
        waiting: Callable[[str], None] | None = None,
    ) -> AsyncIterator[Session]:
        """The session of `name`, holding its lock until the block ends. If another process
        holds it, `waiting(pid)` is called once (default: `say` a line), then this waits."""
        home.check_name(name)
        folder = home.root / KEYS

        def wait(holder: str) -> None:
            if waiting is not None:
                waiting(holder)
            else:
                say(f"waiting for process {holder}, which is changing {name} ...")

        try:
            private_dir(folder)
            fd = await lockfile.waited(folder / f"{name}.lock", wait)
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
        intros: Sequence[Introduction] = (),
    ) -> Controller:
        """Incept the identifier with fresh keys (or finish the same inception made earlier).
        `intros`: where witnesses listen, for this push (else the address book's)."""
        name, home = self.name, self.home
        if home.kel(name) is not None:
            raise CommandError(f"an identifier named {name!r} exists already in {home.root}")
        ctl = Controller(retry=options.retry)
        op = {"op": "icp", "witnesses": witnesses, "toad": toad, "keys": keys, "kt": kt, "nt": kt}
        if name in home.names():  # keys kept, inception never fully witnessed
            record = self.keystore.load(name)
            pending = record.get("pending")
            if not isinstance(pending, dict) or pending.get("op") != "icp":
                raise CommandError(f"an identifier named {name!r} exists already in {home.root}")
            self._same(record, pending, op)
            self.say(f"finishing the inception of {name} made earlier")
            await self._carry_out(ctl, record, pending, timeout, options, intros, again=True)
        else:
            record = {
                "prefix": "",
                "current": fresh_seeds(keys),
                "next": fresh_seeds(keys),
                "history": [],
            }
            await self._carry_out(ctl, record, op, timeout, options, intros)
        return ctl

    async def change(
        self, wanted: Wanted, intros: list[Introduction], timeout: float, options: Options
    ) -> tuple[Controller, str]:
        """Rotate or interact (or finish that same event, made earlier); `intros`: where
        witnesses listen, for this push. Returns the controller and the kind of the event."""
        name, home = self.name, self.home
        kel = home.require_kel(name)
        record = self.keystore.load(name)
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
        state = state_of(ctl, ident.prefix)
        if isinstance(pending, dict):
            try:
                op = wanted(state)
            except CommandError:  # meant for the state after the pending event
                op = {"op": None}
            self._same(record, pending, op)
            self.say(f"finishing the {WHAT[pending['op']]} of {name} made earlier")
            await self._carry_out(ctl, record, pending, timeout, options, intros, again=True)
            return ctl, str(pending["op"])
        op = wanted(state)
        if op["op"] == "rot":
            op["next"] = fresh_seeds(len(record["next"]))
        await self._carry_out(ctl, record, op, timeout, options, intros)
        return ctl, str(op["op"])

    async def interact(self, anchors: list[Any], *, timeout: float, options: Options) -> Controller:
        """Anchor `anchors` (seals or other data) in the KEL; the controller after it."""
        ctl, _ = await self.change(
            lambda _: {"op": "ixn", "anchors": list(anchors)}, [], timeout, options
        )
        return ctl

    def abandon(self, *, sure: bool) -> Path | None:
        """Give up an inception that no witness accepted, freeing the name. If a witness may
        hold it (no answer came), only when `sure`, and its key file is then moved to
        `abandoned/` rather than deleted. Returns where the key file went, if kept."""
        name, home = self.name, self.home
        if home.kel(home.known(name)) is not None:
            raise CommandError(
                f"{name} has a fully witnessed inception: an identifier that exists cannot be"
                " abandoned"
            )
        record = self.keystore.load(name)
        pending = record.get("pending")
        if not isinstance(pending, dict) or pending.get("op") != "icp":
            raise CommandError(f"{name} has no unfinished inception to abandon")
        prefix = str(record.get("prefix") or pending.get("said", ""))
        fates = _fates(pending)
        accepted = [w for w, f in fates.items() if f is Fate.ACCEPTED]
        if accepted:
            raise CommandError(
                f"{_some(accepted, 'accepted', 'accepted')} the inception of {name} ({prefix}),"
                " so it exists on the network and its keys must not be lost: finish it with"
                f" `dkms id create {name}` and the flags it was made with"
            )
        unsure = [w for w, f in fates.items() if f is Fate.MAYBE]
        if unsure and not sure:
            raise CommandError(
                f"the inception of {name} ({prefix}) may have reached"
                f" {_some(unsure, '(it never answered)', '(they never answered)')}: if a"
                " witness accepted it, abandoning it leaves an identifier nobody controls."
                f" `dkms keystate {prefix} --from PREFIX@MULTIADDR` asks a witness; `dkms id"
                f" abandon {name} --yes` gives it up anyway (its sealed keys are then kept aside)"
            )
        return home.drop_keys(name, keep_as=f"{name}.{prefix}{SUFFIX}" if unsure else None)

    # ---------------------------------------------------------------- the steps

    async def _carry_out(
        self,
        ctl: Controller,
        record: dict[str, Any],
        op: dict[str, Any],
        timeout: float,
        options: Options,
        intros: Iterable[Introduction],
        *,
        again: bool = False,
    ) -> None:
        """Make, keep, push and settle one event (`again`: remake the pending one)."""
        name, home = self.name, self.home
        intros = list(intros)
        effects = _make(ctl, name, record, op, trio.current_time())
        ident = ctl.identity(name)
        if again:
            if ident.last_said != op["said"]:
                raise CommandError(
                    f"cannot remake the pending {WHAT[op['op']]} of {name} exactly"
                    f" ({ident.last_said} instead of {op['said']})"
                )
            pending = op
        else:
            record["prefix"] = ident.prefix
            pending = record["pending"] = {**op, "said": ident.last_said, "sn": ident.sn}
        pending["pushing"] = True
        self.keystore.save(name, record)  # before anything leaves this machine
        what = f"the {WHAT[op['op']]} of {name} (sn {ident.sn})"
        toad = int(op["toad"]) if "toad" in op else state_of(ctl, ident.prefix).toad
        try:
            outcome = await push(
                ctl,
                effects,
                ident.last_said,
                home,
                intros=intros,
                toad=toad,
                what=what,
                timeout=timeout,
                options=options,
            )
        except NotWitnessed as failed:
            _noted(pending, failed.outcome)
            self.keystore.save(name, record)
            home.learn(i for i in intros if i.prefix in failed.outcome.answered)
            raise CommandError(_failure(what, op["op"], name, ident.prefix, failed)) from None
        home.save_kel(name, ctl.export(name))
        _settle(record)
        self.keystore.save(name, record)
        # The event is witnessed: an address that answered is right, and a witness the book
        # did not know yet is now one of this KEL's (the address given is the best there is).
        home.learn(i for i in intros if i.prefix in outcome.answered)
        home.learn(intros, replace=False)

    def _same(self, record: dict[str, Any], pending: dict[str, Any], op: dict[str, Any]) -> None:
        """Refuse, saying how, if `op` is not the pending event asked again."""
        kind = str(pending["op"])
        earlier = _asked(record, pending)
        if op["op"] == kind and all(op.get(k) == earlier[k] for k in PARAMS[kind]):
            return
        name = self.name
        head = f"{name} has an unfinished {WHAT[kind]} (sn {pending['sn']}) made earlier"
        if op["op"] == kind:
            keys = [k for k in PARAMS[kind] if op.get(k) != earlier[k]]
            if "kt" in keys and "nt" in keys:  # the next threshold follows --threshold
                keys.remove("nt")
            differ = [
                f"{FLAGS[k]} {_shown(earlier[k])} then, {_shown(op.get(k))} now" for k in keys
            ]
            head += f" with other parameters ({'; '.join(differ)})"
        else:
            asked = ", ".join(f"{FLAGS[k]} {_shown(earlier[k])}" for k in _FLAGGED[kind])
            head += f" ({asked})"
        conflicts = [w for w, c in (pending.get("refusals") or {}).items() if c == "CONFLICT"]
        if conflicts:  # remaking it cannot help: say so rather than suggest it
            raise CommandError(
                f"{head}, and {_some(conflicts, 'holds', 'hold')} another version of it"
                " (refused as a conflict): no event can be made on top of it here, since this"
                f" home's copy of {name} is behind what its witnesses hold (`dkms keystate"
                f" {record.get('prefix')} --from PREFIX@MULTIADDR` shows what they hold)"
            )
        then = f", or give it up with `dkms id abandon {name}`" if kind == "icp" else ""
        raise CommandError(
            f"{head}: finish it first by running `dkms id {COMMAND[kind]} {name}` again with"
            f" the flags it was made with{then}"
        )


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


def _asked(record: dict[str, Any], pending: dict[str, Any]) -> dict[str, Any]:
    """The parameters the pending event was asked with (older records lack `keys`)."""
    asked = {k: pending.get(k) for k in PARAMS[pending["op"]]}
    if pending["op"] == "icp" and asked["keys"] is None:
        asked["keys"] = len(record["current"])
    return asked


def _fates(pending: dict[str, Any]) -> dict[str, Fate]:
    """What each witness of a pending inception may hold of it, from the record."""
    noted = pending.get("fates") or {}
    fates = {}
    for witness in pending.get("witnesses") or []:
        try:
            fate = Fate[noted[witness]]
        except (KeyError, TypeError):
            fate = Fate.MAYBE  # never noted: the push did not end (a crash, Ctrl-C)
        if pending.get("pushing"):  # the last push did not end: it may have got further
            fate = max(fate, Fate.MAYBE)
        fates[witness] = fate
    return fates


def _noted(pending: dict[str, Any], outcome: Outcome) -> None:
    """Add what a failed push learnt to the pending record: a witness keeps its worst case."""
    fates = dict(pending.get("fates") or {})
    for witness, fate in outcome.fates.items():
        before = Fate[fates[witness]] if fates.get(witness) in Fate.__members__ else fate
        fates[witness] = max(before, fate).name
    pending["fates"] = fates
    pending["refusals"] = {w: c.name for w, c in sorted(outcome.codes.items())}
    pending["pushing"] = False


def _failure(what: str, kind: str, name: str, prefix: str, failed: NotWitnessed) -> str:
    """The one line that says why `what` failed and whether running it again can help."""
    if failed.conflicts:
        return (
            f"{what} {failed.problem}: {_some(failed.conflicts, 'holds', 'hold')} another"
            " version of it"
            f" (refused as a conflict), so running the same command again cannot help"
            f" ({failed.failed}); `dkms keystate {prefix} --from PREFIX@MULTIADDR` shows what"
            " a witness holds"
        )
    give_up = f", or `dkms id abandon {name}` to give it up" if kind == "icp" else ""
    if failed.hopeless:
        return (
            f"{what} {failed.problem} ({failed.failed}); running the same command again"
            f" cannot help: too few of its witnesses can receipt it{give_up}"
        )
    return (
        f"{what} {failed.problem} ({failed.failed}); its keys are kept: run the same"
        f" command again to retry{give_up}"
    )


def _some(witnesses: list[str], one: str, many: str) -> str:
    """`witness W does` or `witnesses W, V do`."""
    if len(witnesses) == 1:
        return f"witness {witnesses[0]} {one}"
    return f"witnesses {', '.join(witnesses)} {many}"


def _shown(value: Any) -> str:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        text = "[" + " ".join(value) + "]"
    else:
        text = json.dumps(value, separators=(",", ":"), default=repr)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _secrets(record: dict[str, Any]) -> dict[str, list[bytes]]:
    return {"current": list(record["current"]), "next": list(record["next"])}


def state_of(ctl: Controller, prefix: str) -> KeyState:
    """The key state the controller holds for `prefix` (a CommandError if none)."""
    state = ctl.validator.state(prefix)
    if state is None:
        raise CommandError(f"no key state for {prefix}")
    return state

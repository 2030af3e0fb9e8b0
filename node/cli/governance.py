"""Governance rosters from the command line: sign one with a governance identifier, hand it
to nodes, and read the one a node holds.

    dkms governance roster create GOVNAME --watcher P... [--juror P...] [--judge P...]
                                  [--epoch N] [--publish-to PREFIX@MULTIADDR...] [--out FILE]
    dkms governance roster show --from PREFIX@MULTIADDR [--governance PREFIX] [--json]

GOVNAME is an identifier of the home (`dkms id create`). The highest epoch created for it is
kept in HOME/governance/GOVNAME.json (its prefix and that epoch, no secrets), so the next
roster defaults to the epoch after it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import trio

from dkms.node.cli.ids import hold_identifier
from dkms.node.cli.net import query
from dkms.node.cli.textout import safe
from dkms.node.client.home import CommandError, Home, Options, read_kel
from dkms.node.client.keystore import Keystore
from dkms.node.client.locating import NodeRef, node_ref
from dkms.node.client.witnessing import session
from dkms.node.roles.controller import Controller
from dkms.node.roles.effects import Surface
from dkms.node.roles.governance import Governance, read_bundle, roster_bundle
from dkms.node.runtime.transport import TransportError
from dkms.node.secretfiles import atomic_write, private_dir
from dkms.protocol.errors import ProtocolError
from dkms.protocol.roster import Roster

EPOCHS: Final = "governance"  # HOME/governance/NAME.json: {"prefix": P, "epoch": N}


# ---------------------------------------------------------------- roster create


async def create(
    home: Home,
    name: str,
    *,
    watchers: Sequence[str],
    jurors: Sequence[str],
    judges: Sequence[str],
    epoch: int | None,
    publish_to: Sequence[str],
    out: str | None,
    passphrase_file: str | None,
    timeout: float,
    options: Options,
) -> int:
    """Sign a roster with NAME's current keys; write it to `out` and/or hand it to nodes."""
    intros = [await node_ref(p, options) for p in publish_to]
    if epoch is not None and epoch < 0:
        raise CommandError("--epoch must be 0 or more")
    home.check_kel(name)
    keystore = home.keystore(passphrase_file, options)
    # Under NAME's lock, as every command that signs with its keys: they must not move meanwhile.
    async with hold_identifier(home, name, keystore, "the roster may have reached some nodes"):
        return await _create(
            home, name, keystore, intros, watchers, jurors, judges, epoch, out, timeout, options
        )


async def _create(
    home: Home,
    name: str,
    keystore: Keystore,
    intros: Sequence[NodeRef],
    watchers: Sequence[str],
    jurors: Sequence[str],
    judges: Sequence[str],
    epoch: int | None,
    out: str | None,
    timeout: float,
    options: Options,
) -> int:
    """`create`, under NAME's lock."""
    kel = home.require_kel(name)
    ctl = _restore(keystore, name, kel)
    prefix = ctl.identity(name).prefix
    last = _last_epoch(home, name, prefix)
    if epoch is None:
        epoch = 1 if last is None else last + 1
    roster = Roster(prefix, epoch, _unique(watchers), _unique(jurors), _unique(judges))
    try:
        bundle = roster_bundle(ctl, name, roster)
    except (ProtocolError, ValueError) as err:
        raise CommandError(f"cannot sign the roster with {name}: {err}") from None
    print(
        f"roster epoch {epoch} of governance {name} ({prefix}): {len(roster.watchers)} "
        f"watcher(s), {len(roster.jurors)} juror(s), {len(roster.judges)} judge(s)"
    )
    written = False
    if out is not None:
        try:
            Path(out).write_bytes(bundle)
        except OSError as err:
            raise CommandError(f"cannot write {out}: {err.strerror}") from None
        print(f"written to {out}")
        written = True
    accepted = 0
    if intros:
        results = await _hand_over(intros, bundle, roster, timeout, options)
        for intro in intros:
            verdict, reason = results[intro.prefix]
            print(f"{intro.prefix}: {verdict} ({reason})")
            accepted += verdict == "accepted"
    if written or accepted:
        _keep_epoch(home, name, prefix, epoch if last is None else max(epoch, last))
    if intros and not accepted:
        print(f"dkms: none of the {len(intros)} node(s) accepted the roster", file=sys.stderr)
        return 1
    return 0


async def _hand_over(
    intros: Sequence[NodeRef], bundle: bytes, roster: Roster, timeout: float, options: Options
) -> dict[str, tuple[str, str]]:
    """Give each node the bundle, then ask it which roster it holds: node -> (verdict, why).
    A node says yes also to a roster that is not newer than its own (its reason does not
    travel with a yes), so "accepted" means the node holds this roster now."""
    results: dict[str, tuple[str, str]] = {}
    async with session(intros, options) as transport:

        async def hand(intro: NodeRef) -> None:
            try:
                code, _, reason = await transport.request(
                    intro.prefix, Surface.GOVERNANCE.value, bundle, timeout
                )
            except TransportError as err:
                results[intro.prefix] = ("refused", f"no answer: {err}")
                return
            if not code.ok:
                results[intro.prefix] = ("refused", safe(reason) or "no reason given")
                return
            try:
                ask = {"t": "roster", "g": roster.governance}
                _, held = read_bundle(await query(transport, intro, ask, timeout))
            except (CommandError, ProtocolError) as err:
                results[intro.prefix] = (
                    "accepted",
                    f"but cannot tell which roster it holds: {err}",
                )
                return
            if held.roster == roster:
                results[intro.prefix] = ("accepted", f"in force there: epoch {roster.epoch}")
            else:
                results[intro.prefix] = (
                    "ignored",
                    f"it keeps epoch {held.roster.epoch} of governance "
                    f"{safe(held.roster.governance)} in force",
                )

        async with trio.open_nursery() as nursery:
            for intro in intros:
                nursery.start_soon(hand, intro)
    return results


def _restore(keystore: Keystore, name: str, kel: bytes) -> Controller:
    """NAME's controller, from the keystore and its stored KEL, ready to sign."""
    record = keystore.load(name)
    current, following = record["current"], record["next"]
    pending = record.get("pending")
    if isinstance(pending, dict) and pending.get("op") == "rot":
        if read_kel(kel, name).record(pending.get("said", "")) is None:
            raise CommandError(
                f"{name} has an unfinished rotation (sn {pending.get('sn')}): finish it with "
                f"`dkms id rotate {name}` before signing a roster with it"
            )
        current, following = following, pending["next"]  # done; the record not moved on yet
    ctl = Controller()
    try:
        ctl.restore(name, {"current": current, "next": following}, kel, trio.current_time())
    except ProtocolError as err:
        raise CommandError(str(err)) from None
    return ctl


def _unique(prefixes: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(prefixes))


def _epoch_path(home: Home, name: str) -> Path:
    return home.root / EPOCHS / (home.check_name(name) + ".json")


def _last_epoch(home: Home, name: str, prefix: str) -> int | None:
    """The highest epoch created for NAME here (None: none yet, or NAME is another prefix)."""
    path = _epoch_path(home, name)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise CommandError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict) or data.get("prefix") != prefix:
        return None
    epoch = data.get("epoch")
    return epoch if isinstance(epoch, int) and epoch >= 0 else None


def _keep_epoch(home: Home, name: str, prefix: str, epoch: int) -> None:
    path = _epoch_path(home, name)
    try:
        private_dir(path.parent)
        atomic_write(path, json.dumps({"prefix": prefix, "epoch": epoch}).encode() + b"\n")
    except OSError as err:
        raise CommandError(f"cannot write {path}: {err.strerror}") from None


# ---------------------------------------------------------------- roster show


async def show(
    node: str, *, governance: str | None, as_json: bool, timeout: float, options: Options
) -> int:
    """The roster a node holds, verified here against the governance KEL it came with."""
    intro = await node_ref(node, options)
    async with session([intro], options) as transport:
        ask = {"t": "roster"} if governance is None else {"t": "roster", "g": governance}
        hint = " (a witness may hold several: name one with --governance)"
        bundle = await query(transport, intro, ask, timeout, hint=hint)
    try:
        _, signed = read_bundle(bundle)
    except ProtocolError as err:
        raise CommandError(f"{intro.prefix} answered with an unreadable roster: {err}") from None
    roster = signed.roster
    gov = Governance(roster.governance)
    try:
        gov.offer(bundle, 0.0)
    except ProtocolError as err:
        raise CommandError(f"the roster {intro.prefix} holds does NOT verify: {err}") from None
    kel = gov.validator.kel(roster.governance)
    assert kel is not None  # offer verified the roster against it
    if governance is not None and governance != roster.governance:
        raise CommandError(
            f"{intro.prefix} holds a roster of governance {roster.governance}, not {governance}"
        )
    out: dict[str, Any] = {
        "governance": roster.governance,
        "governance_sn": kel.sn,
        "epoch": roster.epoch,
        "watchers": list(roster.watchers),
        "jurors": list(roster.jurors),
        "judges": list(roster.judges),
        "verified": True,
    }
    if as_json:
        print(json.dumps(out))
        return 0
    print(f"roster held by {intro}")
    print(f"  governance {safe(roster.governance)} (its KEL to sn {kel.sn})")
    print(f"  epoch      {roster.epoch}")
    for role, members in (
        ("watchers", roster.watchers),
        ("jurors", roster.jurors),
        ("judges", roster.judges),
    ):
        print(f"  {role:10} {', '.join(safe(m) for m in members) or '-'}")
    print(
        "  verified: signed by the keys in force at the end of the governance KEL it came with"
        + ("" if governance else " (use --governance PREFIX to also check whose roster it is)")
    )
    return 0

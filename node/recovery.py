"""`dkms-node recover`: rebuild a witness's store from its co-witnesses, safely.

Theory of operation. A witness whose store is lost or damaged refuses to start
(`storecheck.py`): with an empty store it would receipt other versions of events it had
receipted. Recovery gives it back what the network holds, and a floor under what it may sign:

    1  which identifiers   every peer named with --from is asked which identifiers name this
                           witness (`{"t": "witnessed", "w": ME}`, `roles/listing.py`, page by
                           page); to those are added the --prefix identifiers and those the
                           damaged store still lists (read as far as it reads). A peer that
                           does not answer stops the recovery (its identifiers would be
                           missed); a peer too old to list is reported, and then either
                           another peer listed or --prefix names the identifiers
    2  their KELs          from every peer: the key state (`{"t": "state"}`: its sn) and the
                           KEL (`{"t": "kel", "s": sn}`, asked again from the sn after the last
                           event received while that is short of the state's sn: paged or
                           not). Delegators' KELs are fetched too. Everything goes through one
                           validator in this witness's mode, so only validly signed events, in
                           the first version received, are kept, with every receipt the peers
                           hold (this witness's own among them, where a peer had it)
    3  floors              per identifier, the highest sn any peer reported or sent, or the
                           damaged store still holds: at or below it the rebuilt witness signs
                           no new receipt (`roles/floors.py`)
    4  the swap            the new store is built beside the old one, which then moves aside
                           (`storefiles.py`, never deleted); the history record is rewritten
                           for the new store, and the new store is renamed into place

What it cannot know: an event this witness receipted that no peer (and no surviving part of
its store) holds, above every floor. Name as many co-witnesses (or watchers, which keep every
KEL they hear) as possible.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import cbor2
import trio

from dkms.node import storefiles
from dkms.node.roles.codes import Code
from dkms.node.roles.effects import PersistEvent, Surface
from dkms.node.roles.follower import Follower
from dkms.node.roles.listing import QUERY
from dkms.node.runtime.history import History, HistoryError
from dkms.node.runtime.store import FILENAME, Mark, Persist, Store, StoreError
from dkms.node.runtime.transport import Answer, TransportError
from dkms.node.storefiles import StoreFilesError
from dkms.protocol.errors import ProtocolError
from dkms.protocol.events import Ilk
from dkms.protocol.outcomes import Status
from dkms.protocol.stream import Message, parse_stream
from dkms.protocol.validator import Validator

MAX_LIST_PAGES: Final = 10_000  # listing pages asked of one peer (a peer cannot loop us)
MAX_KEL_ASKS: Final = 100_000  # KEL pages asked of one peer per identifier
BATCH: Final = 1000  # events per transaction while building the store


class RecoveryError(Exception):
    """Recovery cannot go on; nothing was changed. The message says what to do."""


class Asker(Protocol):
    """What recovery needs of a network: a request to a peer by prefix."""

    async def request(self, to: str, surface: str, payload: bytes, timeout: float) -> Answer: ...


@dataclass
class Gathered:
    """What the peers gave: a validator holding the KELs, the order events were accepted in,
    the floors, and what each peer could not do (for the report)."""

    validator: Validator
    order: list[str] = field(default_factory=list)  # SAIDs, in acceptance order
    floors: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Recovered:
    """The outcome, for the operator."""

    identifiers: int
    events: int
    floors: dict[str, int]
    mark: Mark
    aside: Path | None
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Salvage:
    """What a damaged store still says (as far as it reads): its role and its identifiers."""

    role: str | None
    prefixes: dict[str, int]


def salvage(path: Path) -> Salvage:
    """Read what can be read of a damaged store, read-only; nothing if nothing reads."""
    if not path.is_file() or path.stat().st_size == 0:
        return Salvage(None, {})
    role: str | None = None
    prefixes: dict[str, int] = {}
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            try:
                row = db.execute("SELECT value FROM meta WHERE key = 'role'").fetchone()
                role = bytes(row[0]).decode(errors="replace") if row else None
            except sqlite3.Error:
                pass
            try:
                rows = db.execute("SELECT prefix, max(sn) FROM events GROUP BY prefix")
                prefixes = {str(p): int(sn) for p, sn in rows}
            except sqlite3.Error:
                pass
    except sqlite3.Error:
        pass
    return Salvage(role, prefixes)


async def gather(
    ask: Asker,
    me: str,
    peers: list[str],
    *,
    prefixes: Iterable[str] = (),
    known: dict[str, int] | None = None,
    timeout: float = 10.0,
) -> Gathered:
    """Ask `peers` for every identifier that names witness `me` and for their KELs."""
    known = dict(known or {})
    gathered = Gathered(Validator(witness=me))
    wanted = set(prefixes) | set(known)
    listed = False
    for peer in peers:
        found = await _list(ask, peer, me, timeout)
        if found is None:
            gathered.notes.append(f"{peer} cannot list the identifiers that name a witness")
            continue
        listed = True
        wanted |= found
    if not listed and not wanted:
        raise RecoveryError(
            "no peer could list the identifiers that name this witness (they may run an older"
            " dkms-node) and none were given: name them with --prefix"
        )
    done: set[str] = set()
    while wanted - done:
        prefix = min(wanted - done)
        done.add(prefix)
        floor = known.get(prefix, -1)
        for peer in peers:
            sn, delegator = await _state(ask, peer, prefix, timeout)
            floor = max(floor, sn)
            if delegator:
                wanted.add(delegator)
            if sn >= 0:
                floor = max(floor, await _kel(ask, peer, prefix, sn, gathered, timeout))
        if floor >= 0:
            gathered.floors[prefix] = floor
    return gathered


async def recover(
    data_dir: Path,
    peers: list[str],
    ask: Asker,
    *,
    prefixes: Iterable[str] = (),
    role: str | None = None,
    timeout: float = 10.0,
    say: Callable[[str], None] = lambda _: None,
) -> Recovered:
    """Rebuild the store of the (stopped) node in `data_dir` from `peers`."""
    try:
        node = storefiles.node_of(data_dir)
        with storefiles.stopped(data_dir):
            left = salvage(data_dir / FILENAME)
            if left.prefixes:
                say(f"the old store still lists {len(left.prefixes)} identifiers")
            gathered = await gather(
                ask, node, peers, prefixes=prefixes, known=left.prefixes, timeout=timeout
            )
            for note in gathered.notes:
                say(note)
            built = storefiles.temporary(data_dir, "recovering")
            try:
                mark = _build(built, node, role or left.role or "witness", gathered)
                aside = storefiles.move_aside(data_dir, "damaged")
                History.write(data_dir, node, mark)
                storefiles.install(built, data_dir)
            finally:
                storefiles.temporary(data_dir, "recovering")
    except (StoreFilesError, StoreError, HistoryError) as err:
        raise RecoveryError(str(err)) from None
    return Recovered(
        identifiers=len(gathered.validator.prefixes),
        events=mark.events,
        floors=gathered.floors,
        mark=mark,
        aside=aside,
        notes=tuple(gathered.notes),
    )


def _build(path: Path, node: str, role: str, gathered: Gathered) -> Mark:
    """The new store at `path`: the events in acceptance order with their receipts, the
    role, and the floors."""
    with Store.open(path) as store:
        store.bind_node(node)
        store.claim("role", role)
        effects: list[Persist] = []
        for said in gathered.order:
            record = gathered.validator.record(said)
            if record is None:
                continue
            event = record.event
            message = Follower.stored_message(record)
            effects.append(PersistEvent(event.prefix, event.sn, event.said, message))
            effects.append(Follower.persist_receipts(record))
            if len(effects) >= 2 * BATCH:
                store.apply(effects)
                effects = []
        store.apply(effects)
        store.put_floors(gathered.floors)
        return store.mark()


async def _list(ask: Asker, peer: str, me: str, timeout: float) -> set[str] | None:
    """The identifiers `peer` says name `me`; None if it cannot list them."""
    found: set[str] = set()
    after = ""
    for _ in range(MAX_LIST_PAGES):
        answer = await _ask(ask, peer, {"t": QUERY, "w": me, "a": after}, timeout)
        if not answer.ok:
            if answer.code in (Code.BAD_QUERY, Code.NOT_SERVED, Code.UNKNOWN):
                return None
            raise RecoveryError(f"{peer} refused to list identifiers: {answer.reason}")
        page = _map(answer.payload, peer)
        names = page.get("i")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise RecoveryError(f"{peer} answered with a malformed identifier list")
        found.update(names)
        if not page.get("more") or not names or names[-1] <= after:
            return found
        after = names[-1]
    raise RecoveryError(f"{peer} listed more than {MAX_LIST_PAGES} pages of identifiers")


async def _state(ask: Asker, peer: str, prefix: str, timeout: float) -> tuple[int, str]:
    """(sn, delegator) of `prefix` at `peer`; sn -1 if it does not hold the identifier."""
    answer = await _ask(ask, peer, {"t": "state", "i": prefix}, timeout)
    if not answer.ok:
        if answer.code is Code.UNKNOWN:
            return -1, ""
        raise RecoveryError(f"{peer} refused the key state of {prefix}: {answer.reason}")
    state = _map(answer.payload, peer)
    sn, delegator = state.get("sn"), state.get("di") or ""
    if not isinstance(sn, int) or sn < 0 or not isinstance(delegator, str):
        raise RecoveryError(f"{peer} answered with a malformed key state of {prefix}")
    return sn, delegator


async def _kel(
    ask: Asker, peer: str, prefix: str, upto: int, gathered: Gathered, timeout: float
) -> int:
    """Fetch `prefix`'s KEL from `peer` up to sn `upto` (page by page, whether or not the
    peer pages) into the validator; the highest sn it sent."""
    start, highest = 0, -1
    for _ in range(MAX_KEL_ASKS):
        answer = await _ask(ask, peer, {"t": "kel", "i": prefix, "s": start}, timeout)
        if not answer.payload:
            break
        try:
            frames = parse_stream(answer.payload)
        except ProtocolError as err:
            raise RecoveryError(f"{peer} sent an unreadable KEL of {prefix}: {err}") from None
        top = highest
        for frame in frames:
            if not isinstance(frame, Message) or frame.event.prefix != prefix:
                continue
            top = max(top, frame.event.sn)
            for outcome in gathered.validator.process(frame, 0.0):
                if outcome.status is Status.ACCEPTED and outcome.ilk != Ilk.RCT:
                    gathered.order.append(outcome.said)
        if top <= highest:
            break  # no progress
        highest = top
        if highest >= upto:
            break
        start = highest + 1
    return highest


async def _ask(ask: Asker, peer: str, query: dict[str, Any], timeout: float) -> Answer:
    try:
        return await ask.request(peer, Surface.QUERY.value, cbor2.dumps(query), timeout)
    except TransportError as err:
        raise RecoveryError(
            f"{peer} did not answer ({err}): every peer named must answer, or leave it out"
        ) from None


def _map(payload: bytes, peer: str) -> dict[Any, Any]:
    try:
        value = cbor2.loads(payload)
    except Exception:  # cbor2 raises many types on hostile input
        raise RecoveryError(f"{peer} answered with something that is not CBOR") from None
    if not isinstance(value, dict):
        raise RecoveryError(f"{peer} answered with a malformed map")
    return value


async def over_libp2p(
    data_dir: Path,
    intros: list[str],
    *,
    prefixes: Iterable[str] = (),
    role: str | None = None,
    timeout: float = 10.0,
    listen: str = "/ip4/127.0.0.1/tcp/0",
    say: Callable[[str], None] = lambda _: None,
) -> Recovered:
    """`recover` with a fresh libp2p host (a random identity: the node's own key stays off
    the network until the node runs again)."""
    from dkms.node.p2p import P2PError, open_host, parse_introduction  # noqa: PLC0415
    from dkms.node.p2p.transport import P2PTransport  # noqa: PLC0415

    try:
        parsed = [parse_introduction(i) for i in intros]
    except ValueError as err:
        raise RecoveryError(f"bad peer introduction: {err}") from None
    try:
        async with open_host(os.urandom(32), listen) as host:
            transport = P2PTransport(host, parsed)
            with trio.fail_after(max(60.0, timeout * 20)):
                return await recover(
                    data_dir,
                    [i.prefix for i in parsed],
                    transport,
                    prefixes=prefixes,
                    role=role,
                    timeout=timeout,
                    say=say,
                )
    except (P2PError, OSError) as err:
        raise RecoveryError(f"network: {err}") from None
    except trio.TooSlowError:
        raise RecoveryError("the peers took too long: nothing was changed") from None

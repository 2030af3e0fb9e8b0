"""Commands that talk to nodes: `kel submit`, `keystate`, `evidence list`, the pushes of `dkms id`.

Each command opens an ephemeral libp2p host (a random identity, listening on loopback) for
its own duration: a controller only ever dials witnesses, and nothing should link one run to
the next (`client.witnessing.session`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, BinaryIO, Final

import cbor2
import trio

from dkms.node.cli import evidence as evidencecmd
from dkms.node.cli.cesrfile import read_upto
from dkms.node.cli.progress import Progress
from dkms.node.cli.submitted import Plan, Submitted
from dkms.node.cli.textout import safe, short, table
from dkms.node.client.evidencejson import dumps, standing_json
from dkms.node.client.home import CommandError, Home, Options
from dkms.node.client.locating import NodeRef, node_ref
from dkms.node.client.paging import kel_pages
from dkms.node.client.witnessing import session
from dkms.node.p2p.transport import P2PTransport
from dkms.node.roles.codes import Code
from dkms.node.roles.effects import Surface
from dkms.node.runtime.transport import TransportError
from dkms.protocol import cesr, crypto
from dkms.protocol.errors import ProtocolError
from dkms.protocol.events import Event, receipt
from dkms.protocol.stream import Attachments, Message, messagize, parse_stream
from dkms.protocol.validator import Validator

SHOWN_EVENTS: Final = 50  # a longer submitted KEL is summed up per witness
ATTEMPTS: Final = 6  # tries of one piece while a witness is busy or does not answer
FIRST_WAIT: Final = 1.0  # seconds before the second try, doubling after each
# What a busy or briefly unreachable witness answers: worth asking again (a piece resent is
# answered ALREADY, with the receipts it had).
TRANSIENT: Final = frozenset({Code.BUSY, Code.RATE_LIMITED, Code.UNREACHABLE})


async def request_patiently(
    transport: P2PTransport, witness: str, surface: Surface, payload: bytes, timeout: float
) -> tuple[Code, bytes, str]:
    """`transport.request`, tried again (up to `ATTEMPTS` times, waiting `FIRST_WAIT` s and
    doubling) while the witness is busy, rate limits us, or does not answer: under a bulk
    load a witness may be too slow to read a whole piece in time, and one such moment must
    not end a submission of thousands of events."""

    async def ask() -> tuple[Code, bytes, str]:
        try:
            code, answer, reason = await transport.request(witness, surface.value, payload, timeout)
        except TransportError as err:
            return Code.UNREACHABLE, b"", f"no answer: {err}"
        return code, answer, reason

    wait = FIRST_WAIT
    for _ in range(ATTEMPTS - 1):
        answer = await ask()
        if answer[0] not in TRANSIENT:
            return answer
        await trio.sleep(wait)
        wait *= 2
    return await ask()


SHOWN_RECEIPTS: Final = 5  # receipt lines printed (older nodes send every event's)

# ---------------------------------------------------------------- kel submit


async def submit(
    path: str, to: Sequence[str], *, as_json: bool, timeout: float, options: Options
) -> int:
    """Push a ready-made KEL (`-`: standard input) to witnesses, in order and in pieces that
    fit a request (`client.paging.chunks`); print what each made of each event
    (`cli.submitted`). Long work shows its progress."""
    try:
        data = read_upto(path)
        frames = parse_stream(data)
    except OSError as err:
        raise CommandError(f"cannot read {path}: {err.strerror or err}") from None
    except ProtocolError as err:
        raise CommandError(f"{path} is not a CESR stream: {err}") from None
    plan = Plan(data, frames, options.chunk)
    events = [m.event for m in plan.events]
    if not events:
        raise CommandError(f"{path} holds no key events")
    intros = [await node_ref(t, options) for t in to]
    results = {i.prefix: Submitted(i.prefix) for i in intros}
    by_said = {e.said: e for e in events}
    done = dict.fromkeys(results, 0)
    progress = Progress(f"events submitted to {len(results)} witness(es)", len(events))
    async with session(intros, options) as transport:

        async def ask(result: Submitted) -> None:
            for number, piece in enumerate(plan.pieces):
                code, payload, reason = await request_patiently(
                    transport, result.witness, Surface.SUBMIT, piece.data, timeout
                )
                result.receipts.update(_receipts(payload, result.witness, by_said))
                result.answered(number, code, reason, last=number == plan.last)
                if not code.ok and code is not Code.NOT_WITNESS:
                    return  # later events would only wait behind the refused one
                done[result.witness] += piece.count
                progress.update(min(done.values()))

        async with trio.open_nursery() as nursery:
            for result in results.values():
                nursery.start_soon(ask, result)
        progress.finish()
        await _share(transport, list(results.values()), by_said, timeout, options.chunk)
    _print_submitted(list(results.values()), plan, as_json)
    failed = [r for r in results.values() if not r.ok]
    if failed:
        print(
            f"dkms: {len(failed)} of {len(results)} witnesses refused or did not answer",
            file=sys.stderr,
        )
        return 1
    return 0


def _receipts(payload: bytes, witness: str, by_said: dict[str, Event]) -> dict[str, bytes]:
    """The receipts signed by `witness` in a reply, each checked against its event."""
    try:
        frames = parse_stream(payload)
        key = cesr.decode_key(witness)
    except ProtocolError:
        return {}
    found: dict[str, bytes] = {}
    for frame in frames:
        if not isinstance(frame, Message) or frame.event.said not in by_said:
            continue
        raw = by_said[frame.event.said].raw
        for prefix, sig in frame.attachments.couples:
            if prefix == witness and crypto.verify(key, sig, raw):
                found[frame.event.said] = sig
    return found


async def _share(
    transport: P2PTransport,
    results: list[Submitted],
    by_said: dict[str, Event],
    timeout: float,
    chunk: int,
) -> None:
    """Give each witness the receipts the others signed (witness agreement), in pieces."""
    couples: dict[str, list[tuple[str, bytes]]] = {}
    for result in results:
        for said, sig in result.receipts.items():
            couples.setdefault(said, []).append((result.witness, sig))

    async def give(result: Submitted, messages: list[bytes]) -> None:
        pieces: list[bytes] = []
        piece: list[bytes] = []
        size = 0
        for message in messages:
            if piece and size + len(message) > chunk:
                pieces.append(b"".join(piece))
                piece, size = [], 0
            piece.append(message)
            size += len(message)
        pieces.append(b"".join(piece))
        result.shared = "ok"
        for payload in pieces:
            code, _, reason = await request_patiently(
                transport, result.witness, Surface.RECEIPTS, payload, timeout
            )
            if not code.ok:
                result.shared = reason
                return

    async with trio.open_nursery() as nursery:
        for result in results:
            messages = [
                messagize(
                    receipt(by_said[s].prefix, by_said[s].sn, s, kind=by_said[s].kind),
                    Attachments(couples=tuple(c for c in couples[s] if c[0] != result.witness)),
                )
                for s in result.receipts
                if len(couples[s]) > 1
            ]
            if messages:
                nursery.start_soon(give, result, messages)


def _print_submitted(results: list[Submitted], plan: Plan, as_json: bool) -> None:
    if as_json:
        for result in results:
            print(json.dumps(result.to_json(plan)))
        return
    if len(plan.events) > SHOWN_EVENTS:
        _print_summary(results, plan)
        return
    rows = []
    for r in results:
        for message, verdict in zip(plan.events, plan.verdicts(r), strict=True):
            e = message.event
            row = (short(r.witness), str(e.sn), e.ilk.value, short(e.said), safe(verdict.text()))
            rows.append(row)
    print("\n".join(table(("WITNESS", "SN", "ILK", "EVENT", "RESULT"), rows, indent="")))
    _print_shared(results)


def _print_summary(results: list[Submitted], plan: Plan) -> None:
    """A long KEL: one line per witness rather than one per event and witness."""
    count = f"{len(plan.events):,}"
    rows = [
        (short(r.witness), count, f"{len(r.receipts):,}", safe(plan.summary(r))) for r in results
    ]
    print("\n".join(table(("WITNESS", "EVENTS", "RECEIPTED", "RESULT"), rows, indent="")))
    _print_shared(results)


def _print_shared(results: list[Submitted]) -> None:
    for r in results:
        if r.shared is not None:
            print(f"receipts of the other witnesses given to {short(r.witness)}: {safe(r.shared)}")


# ---------------------------------------------------------------- keystate


async def keystate(
    prefixes: Sequence[str], node: str, *, as_json: bool, timeout: float, options: Options
) -> int:
    """Ask a node for identifiers' key states (one session, one identifier after another),
    and check each against the KEL it serves. A watcher's answer also gives the identifier's
    standing and the evidence behind it. With `as_json`, one JSON object per line."""
    intro = await node_ref(node, options)
    async with session([intro], options) as transport:
        for n, prefix in enumerate(prefixes):
            answer = _map(
                await query(transport, intro, {"t": "state", "i": prefix}, timeout),
                intro,
                "key state",
            )
            validator = None  # a watcher has no key state of a prefix it does not know
            if "d" in answer or "standing" not in answer:
                validator = await _read_kel(transport, intro, prefix, answer.get("sn"), timeout)
            if n and not as_json:
                print()
            _print_state(prefix, intro, answer, validator, as_json)
    return 0


def _print_state(
    prefix: str, intro: NodeRef, answer: dict[str, Any], validator: Validator | None, as_json: bool
) -> None:
    watcher = "standing" in answer
    if validator is None:
        if as_json:
            print(dumps(standing_json(answer) | {"verified": False}))
            return
        print(f"{safe(prefix)} according to {intro}: it holds no key state of it")
        evidencecmd.print_standing(answer)
        return
    state, log = validator.state(prefix), validator.kel(prefix)
    verified = state.to_json() if state is not None else None
    out = dict(answer)
    out["fel"] = [[n, r.event.said] for n, r in enumerate(log.first_seen)] if log else []
    out["verified"] = verified is not None and all(answer.get(k) == v for k, v in verified.items())
    if as_json:
        print(dumps(standing_json(out) if watcher else out))
        return
    print(f"{safe(prefix)} according to {intro}")
    for key in ("sn", "d", "et", "kt", "k", "nt", "n", "bt", "b", "c", "di"):
        print(f"  {key:3} {safe(out.get(key))}")
    print(f"  fully witnessed: {'yes' if out.get('fully_witnessed') else 'no'}")
    receipts = out.get("receipts")
    if isinstance(receipts, dict):  # the latest event's (all events' from older nodes)
        for said, signers in list(receipts.items())[-SHOWN_RECEIPTS:]:
            count = len(signers) if isinstance(signers, list) else 0
            print(f"  receipts of {short(safe(said))}: {count}")
    if out["verified"]:
        print("  verified: the KEL it serves validates to this state")
    else:
        upto = f"only to sn {state.sn}" if state is not None else "to nothing"
        print(f"  NOT verified: the KEL it serves validates {upto}")
    if watcher:
        evidencecmd.print_standing(out)
        _print_agreement(out.get("agreement"))


def _print_agreement(found: object) -> None:
    """How many of the roster's watchers hold the state the watcher answered, as it knows."""
    if not isinstance(found, dict):
        return  # a watcher that does not say
    roster, agree, unknown = found.get("roster"), found.get("agree"), found.get("unknown")
    if not roster:
        print("  agreement: unknown (this watcher holds no roster)")
        return
    print(
        f"  agreement: {safe(agree)} of {safe(roster)} watcher(s) of the roster hold this state, "
        f"as far as this watcher knows ({safe(unknown)} not heard from)"
    )
    views = found.get("views")
    for view in views if isinstance(views, list) else []:
        if isinstance(view, dict) and view.get("view") != "agree":
            who, what, sn = (safe(view.get(k)) for k in ("watcher", "view", "sn"))
            print(f"    {who}: {what} (its sn {sn})")


async def _read_kel(
    transport: P2PTransport, intro: NodeRef, prefix: str, sn: object, timeout: float
) -> Validator:
    """A validator that has read `prefix`'s KEL as `intro` serves it, page by page."""
    total = sn + 1 if isinstance(sn, int) and not isinstance(sn, bool) else None
    progress = Progress(f"events of the KEL read from {short(intro.prefix)}", total)
    validator, count = Validator(), 0
    async for _, messages in kel_pages(transport, intro.prefix, prefix, timeout):
        for message in messages:
            validator.process(message, 0.0)
        count += len(messages)
        progress.update(count)
    progress.finish()
    return validator


# ---------------------------------------------------------------- evidence list


async def evidence(
    node: str, prefix: str | None, *, as_json: bool, timeout: float, options: Options
) -> int:
    """The evidence and rulings a watcher holds (about `prefix`, or all), checked here."""
    intro = await node_ref(node, options)
    ask: dict[str, Any] = {"t": "evidence"} if prefix is None else {"t": "evidence", "i": prefix}
    async with session([intro], options) as transport:
        payload = await query(transport, intro, ask, timeout, hint=" (only watchers hold evidence)")
    answer = _map(payload, intro, "evidence list")
    evidencecmd.print_held(intro.prefix, answer, as_json=as_json)
    return 0


def _map(payload: bytes, intro: NodeRef, what: str) -> dict[str, Any]:
    try:
        answer = cbor2.loads(payload)
    except Exception:  # cbor2 raises many types on hostile input
        raise CommandError(f"{intro.prefix} answered with a {what} that is not CBOR") from None
    if not isinstance(answer, dict):
        raise CommandError(f"{intro.prefix} answered with a malformed {what}")
    return answer


async def query(
    transport: P2PTransport,
    intro: NodeRef,
    ask: dict[str, Any],
    timeout: float,
    *,
    hint: str = "",
) -> bytes:
    """Ask a node on its query surface; its answer, or a CommandError naming it (and
    ending with `hint` when the node refused)."""
    try:
        code, payload, reason = await transport.request(
            intro.prefix, Surface.QUERY.value, cbor2.dumps(ask), timeout
        )
    except TransportError as err:  # its message names the node
        raise CommandError(str(err)) from None
    if not code.ok:
        raise CommandError(f"{intro.prefix} refused the query: {safe(reason)}{hint}")
    return payload


# ---------------------------------------------------------------- kel export


def export(home: Home, name: str) -> int:
    """Write NAME's stored KEL (CESR, binary) to stdout."""
    kel = home.require_kel(name)
    out = _binary_stdout()
    out.write(kel)
    out.flush()
    return 0


async def export_from(prefix: str, node: str, *, timeout: float, options: Options) -> int:
    """Write `prefix`'s KEL as `node` serves it (CESR, binary) to stdout, page by page."""
    out = _binary_stdout()
    intro = await node_ref(node, options)
    progress = Progress(f"events of the KEL written from {short(intro.prefix)}")
    count = 0
    async with session([intro], options) as transport:
        async for payload, messages in kel_pages(transport, intro.prefix, prefix, timeout):
            out.write(payload)
            count += len(messages)
            progress.update(count)
    out.flush()
    progress.finish()
    return 0


def _binary_stdout() -> BinaryIO:
    out = sys.stdout.buffer
    if out.isatty():
        raise CommandError("a KEL is binary: redirect it to a file (`> FILE.cesr`)")
    return out

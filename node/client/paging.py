"""A KEL of any length between a client and a node: read by pages, sent in chunks.

Requests and answers are capped (1 MiB by default, `max_message`), and a KEL of a few
thousand events is larger than that. So:

    pages     a KEL is read with `{"t": "kel", "i": prefix, "s": sn, "n": limit}` asks, one
              page per answer (`roles/pages.py`): code PARTIAL says more follows, from the sn
              after the page's last event; OK ends it. Every page must go on from where the
              last one stopped (a node that answers otherwise is refused, never looped on);
              a node that knows no pages answers OK with what it holds
    chunks    a KEL file is submitted in pieces cut between messages, each under a budget
              (`Options.chunk`, 256 KiB) and sent after the one before it was answered (a
              witness takes events in order); a message larger than that goes alone
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import cbor2

from dkms.node.client.home import CommandError
from dkms.node.roles.codes import Code
from dkms.node.roles.effects import Surface
from dkms.node.roles.pages import PAGE_EVENTS
from dkms.node.runtime.transport import Transport, TransportError
from dkms.protocol.errors import ProtocolError
from dkms.protocol.events import Ilk
from dkms.protocol.stream import Frame, Message, parse_stream


async def kel_pages(
    transport: Transport,
    node: str,
    prefix: str,
    timeout: float,
    *,
    start: int = 0,
    limit: int = PAGE_EVENTS,
) -> AsyncIterator[tuple[bytes, list[Message]]]:
    """Each page of `prefix`'s KEL that `node` serves from `start` on: its bytes and its
    messages. A CommandError when the node refuses, does not answer, or pages wrongly."""
    while True:
        ask = cbor2.dumps({"t": "kel", "i": prefix, "s": start, "n": limit})
        try:
            code, payload, reason = await transport.request(node, Surface.QUERY.value, ask, timeout)
        except TransportError as err:  # its message names the node
            raise CommandError(str(err)) from None
        if not code.ok:
            raise CommandError(f"{node} refused the query: {reason}")
        try:
            frames = parse_stream(payload)
        except ProtocolError as err:
            raise CommandError(f"{node} sent a KEL page that does not read: {err}") from None
        messages = [f for f in frames if isinstance(f, Message)]
        sns = [m.event.sn for m in messages if m.event.ilk is not Ilk.RCT]
        if sns and (sns[0] != start or sns != list(range(start, start + len(sns)))):
            raise CommandError(f"{node} sent a KEL page that does not go on from sn {start}")
        yield payload, messages
        if code is not Code.PARTIAL:
            return
        if not sns:
            raise CommandError(f"{node} said more follows sn {start} but sent no event")
        start = sns[-1] + 1


def chunks(data: bytes, frames: Sequence[Frame], budget: int) -> list[tuple[bytes, int]]:
    """`data` (a whole stream, framed as `frames`) cut between messages into pieces of at
    most `budget` bytes, in order, each with the number of key events in it; a message
    larger than `budget` is a piece of its own."""
    pieces: list[tuple[bytes, int]] = []
    begin = end = events = 0
    for frame in frames:
        stop = frame.offset + frame.length
        if end > begin and stop - begin > budget:
            pieces.append((data[begin:end], events))
            begin, events = end, 0
        end = stop
        events += isinstance(frame, Message) and frame.event.ilk is not Ilk.RCT
    if end > begin:
        pieces.append((data[begin:end], events))
    return pieces

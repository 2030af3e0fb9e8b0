"""Nodes named by their OOBI URL: `http://HOST:PORT/oobi/W/controller` resolved to `W@MULTIADDR`.

Theory of operation. keripy names a witness by an OOBI URL; our nodes serve keripy's OOBI
routes (`node/http/oobis.py`), so a command may name a node that way wherever it takes
`PREFIX@MULTIADDR` (`locating.node_ref`). Resolving one takes two GETs, each bounded in time
(`OOBI_TIMEOUT` for the whole) and size (`MAX_ANSWER`), any failure one CommandError line:

    GET URL               the node's own KEL, `application/json+cesr`: one non-transferable
                          `icp` (its prefix W is its key, its signature verifies), then its
                          signed replies. W must be the prefix the URL names (`/oobi/W`,
                          `/oobi/W/controller`; `/oobi` names none), and among the replies a
                          `/loc/scheme` signed by W: the HTTP URL W says it is reached at,
                          kept (`NodeRef.http`) for `dkms oobi show`
    GET BASE/dkms/location  W's own signed location record, `application/cbor`
                          (`node/http/location.py`), checked as a bootstrap's answer is
                          (`locating.record_addresses`): its addresses, in its order

and the reference is W at the first address this client can dial. Nothing the HTTP hop says
is taken on trust: the KEL and replies are W's signatures, the record too, and Noise proves
W's key again on connection. `read_answer` is the first check, on bytes alone (no I/O).
The HTTP client is h11 on a trio stream, one connection per GET (`http_get`): no redirects
followed, no proxy, no compression, a body read no further than the bound.
"""

from __future__ import annotations

import datetime
import json
import ssl
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import h11
import trio

from dkms.node.client.home import CommandError
from dkms.node.client.locating import NodeRef, is_node_prefix, record_addresses
from dkms.node.p2p import Introduction
from dkms.protocol.errors import ProtocolError
from dkms.protocol.events import Ilk, sniff
from dkms.protocol.replies import LocScheme, read_reply, verify_reply
from dkms.protocol.stream import BadFrame, Message, parse_stream
from dkms.protocol.validator import Validator

OOBI_TIMEOUT: Final = 10.0  # seconds for both GETs of one URL
MAX_ANSWER: Final = 64 * 1024  # bytes of one answer (a node's own OOBI is about 1.2 KiB)
OOBI_TYPE: Final = "application/json+cesr"
LOCATION_TYPE: Final = "application/cbor"
LOCATION_PATH: Final = "/dkms/location"
_SHAPE: Final = "http://HOST:PORT/oobi/PREFIX/controller"


@dataclass(frozen=True, slots=True)
class OobiUrl:
    """A node's OOBI URL, read: `base` (scheme, host, port and any path before `/oobi`) and
    the node prefix it names, if any."""

    text: str
    base: str
    prefix: str | None


@dataclass(frozen=True, slots=True)
class NodeOobi:
    """What a node's own OOBI answer proves: its prefix, and the URL it signed (and when)."""

    prefix: str
    url: str
    dt: str


def shown(text: str, limit: int = 200) -> str:
    """`text` as it may go in one line of an error."""
    text = text[:limit]
    return text if text.isascii() and text.isprintable() else repr(text)


def parse_url(text: str) -> OobiUrl:
    """A node's OOBI URL (`/oobi`, `/oobi/W`, `/oobi/W/controller`), or a CommandError."""
    bad = f"bad OOBI URL {shown(text)}"
    try:
        parts = urlsplit(text)
        port = parts.port  # a port that is not a number raises here
    except ValueError as err:
        raise CommandError(f"{bad}: {err}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise CommandError(f"{bad}: expected {_SHAPE}")
    if not text.isascii() or not text.isprintable() or port == 0:
        raise CommandError(f"{bad}: expected {_SHAPE}")
    segments = parts.path.split("/")
    if "oobi" not in segments:
        raise CommandError(f"{bad}: no /oobi in its path (expected {_SHAPE})")
    at = len(segments) - 1 - segments[::-1].index("oobi")
    rest = segments[at + 1 :]
    if rest and rest[-1] == "":
        rest.pop()  # a trailing slash
    if len(rest) > 2 or (len(rest) == 2 and rest[1] != "controller"):
        raise CommandError(
            f"{bad}: not a node's own OOBI (an identifier's, through its witness?): name the"
            f" node by {_SHAPE}"
        )
    prefix = rest[0] if rest else None
    if prefix is not None and not is_node_prefix(prefix):
        raise CommandError(f"{bad}: {shown(prefix, 60)} is not a node prefix (B..., 44 characters)")
    path = "/".join(segments[:at])
    return OobiUrl(text, f"{parts.scheme}://{parts.netloc}{path}", prefix)


def read_answer(data: bytes, source: str, expect: str | None = None) -> NodeOobi:
    """Check a node's own OOBI answer `data` (from `source`, in words) and say what it
    proves; `expect`, the prefix the URL names. Anything else is a CommandError."""
    try:
        frames = parse_stream(data)
    except ProtocolError as err:
        raise CommandError(f"{source} answered with no CESR stream: {err}") from None
    first = frames[0] if frames else None
    if isinstance(first, BadFrame):
        raise CommandError(
            f"{source} answered with a first message that does not read: {first.error}"
        )
    if not isinstance(first, Message) or first.event.ilk is not Ilk.ICP:
        raise CommandError(f"{source} answered with no node's inception event first")
    prefix = first.event.prefix
    if not is_node_prefix(prefix):
        raise CommandError(
            f"{source} answered with the KEL of {shown(prefix, 60)}, not of a node"
            " (a non-transferable B... prefix)"
        )
    if expect is not None and prefix != expect:
        raise CommandError(f"{source} answered for {prefix}, not for {expect} as its URL says")
    validator = Validator()
    validator.process(first, 0.0)
    state = validator.state(prefix)
    if state is None or list(state.keys) != [prefix] or state.witnesses:
        raise CommandError(
            f"{source} answered with an inception of {prefix} that does not verify"
            " (a node's is signed by its one key, which is its prefix)"
        )
    found: list[tuple[datetime.datetime, NodeOobi]] = []
    for frame in frames[1:]:
        if isinstance(frame, Message):
            raise CommandError(
                f"{source} answered with more than a node's inception"
                f" ({frame.event.ilk} of {frame.event.prefix})"
            )
        raw = data[frame.offset : frame.offset + frame.length]
        try:
            size = sniff(raw)[1]
            reply = read_reply(raw[:size], raw[size:])
        except ProtocolError as err:
            raise CommandError(
                f"{source} answered with a message that does not read: {err}"
            ) from None
        says = reply.says
        if not isinstance(says, LocScheme) or says.scheme not in ("http", "https"):
            continue  # a role, another scheme: not what we ask
        if says.eid != prefix:
            raise CommandError(f"{source} answered with the location of another node ({says.eid})")
        endorsed = verify_reply(reply)
        if not endorsed.ok:
            raise CommandError(f"{source} answered with a /loc/scheme reply: {endorsed.reason}")
        signed = urlsplit(says.url)
        if signed.scheme.lower() not in ("http", "https") or not signed.netloc:
            raise CommandError(f"{source}: {prefix} signed a URL no HTTP client can use")
        when = datetime.datetime.fromisoformat(reply.message.dt)  # checked by read_reply
        found.append((when, NodeOobi(prefix, says.url, reply.message.dt)))
    if not found:
        raise CommandError(f"{source} answered with no /loc/scheme reply signed by {prefix}")
    return max(found, key=lambda pair: pair[0])[1]


async def resolve(text: str, timeout: float | None = None) -> NodeRef:
    """The node `text` (its OOBI URL) names, at the first address its location record
    gives that this client can dial, with the HTTP URL it signed; or a CommandError.
    `timeout` bounds both GETs (default `OOBI_TIMEOUT`)."""
    timeout = OOBI_TIMEOUT if timeout is None else timeout
    url = parse_url(text)
    source = f"OOBI {shown(text)}"
    with trio.move_on_after(timeout) as scope:
        answer = await _get(url.text, OOBI_TYPE, source, url.prefix)
        node = read_answer(answer, source, url.prefix)
        where = url.base + LOCATION_PATH
        record = await _get(where, LOCATION_TYPE, where, node.prefix)
    if scope.cancelled_caught:
        raise CommandError(f"{source}: no answer within {timeout:g} s")
    addrs = record_addresses(record, node.prefix, shown(where))
    return NodeRef(node.prefix, Introduction(node.prefix, addrs[0]), http=node.url)


async def _get(url: str, content_type: str, source: str, aid: str | None) -> bytes:
    """The body of a 200 answer of `content_type` to GET `url`, at most `MAX_ANSWER` bytes."""
    try:
        answer = await http_get(url, content_type, MAX_ANSWER)
    except HttpFailure as err:
        raise CommandError(f"{source}: {err}") from None
    if answer.status != 200:
        why = _error_line(answer.body or b"")
        raise CommandError(f"{source} answered {answer.status}{why}")
    got = answer.headers.get("content-type", "").partition(";")[0].strip().lower()
    if got != content_type:
        raise CommandError(
            f"{source} answered {shown(got or 'no content type', 60)}, not {content_type}"
        )
    said = answer.headers.get("keri-aid")
    if aid is not None and said is not None and said != aid:
        raise CommandError(f"{source} answered for {shown(said, 60)}, not for {aid}")
    if answer.body is None:
        raise CommandError(f"{source} answered with over {MAX_ANSWER} bytes")
    return answer.body


def _error_line(body: bytes) -> str:
    """`: ` and the one line a refusal said (our nodes' `{"error": ...}`), if it says one."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return ""
    return f": {shown(error)}" if isinstance(error, str) else ""


# ---------------------------------------------------------------- HTTP/1.1, minimal


class HttpFailure(Exception):
    """No HTTP answer: what went wrong, in words."""


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header's last value
    body: bytes | None  # None: over the limit (the rest was not read)


async def http_get(url: str, accept: str, limit: int) -> HttpAnswer:
    """GET `url` (http, or https with the system's trust roots) on a connection of its own,
    reading at most `limit` bytes of body; `HttpFailure` when there is no answer. The
    caller bounds the time (`trio.move_on_after`)."""
    parts = urlsplit(url)
    host, https = parts.hostname or "", parts.scheme.lower() == "https"
    try:
        port = parts.port or (443 if https else 80)
        if https:
            context = ssl.create_default_context()
            stream: trio.abc.Stream = await trio.open_ssl_over_tcp_stream(
                host, port, ssl_context=context
            )
        else:
            stream = await trio.open_tcp_stream(host, port)
    except (OSError, ValueError) as err:
        raise HttpFailure(f"cannot connect ({_reason(err)})") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = [
        ("Host", parts.netloc.rpartition("@")[2]),
        ("Accept", accept),
        ("Accept-Encoding", "identity"),  # the bytes as sent: the limit is on them
        ("Connection", "close"),
        ("User-Agent", "dkms"),
    ]
    connection = h11.Connection(h11.CLIENT)
    try:
        async with stream:
            request = connection.send(h11.Request(method="GET", target=target, headers=headers))
            await stream.send_all((request or b"") + (connection.send(h11.EndOfMessage()) or b""))
            return await _answer(connection, stream, limit)
    except h11.ProtocolError as err:
        raise HttpFailure(f"answered with no HTTP/1.1 this client reads ({_reason(err)})") from None
    except (OSError, trio.BrokenResourceError) as err:
        raise HttpFailure(f"connection lost ({_reason(err)})") from None


async def _answer(connection: h11.Connection, stream: trio.abc.Stream, limit: int) -> HttpAnswer:
    status, headers, body = 0, {}, bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(await stream.receive_some(16384))
        elif isinstance(event, h11.Response):
            status = event.status_code
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > limit:
                return HttpAnswer(status, headers, None)
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return HttpAnswer(status, headers, bytes(body))


def _reason(err: BaseException) -> str:
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return shown(text, 120)

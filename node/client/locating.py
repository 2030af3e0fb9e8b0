"""Nodes named by prefix alone, found through a bootstrap node's location records.

A command names a node as `PREFIX@MULTIADDR`, by its OOBI URL (`http://HOST:PORT/oobi/W/
controller`, asked over HTTP before anything else: `oobis.py`), or by its bare prefix (`B...`)
when a bootstrap node is given (`dkms --bootstrap PREFIX@MULTIADDR`, or `DKMS_BOOTSTRAP`).
Every node keeps the signed location records it hears (`roles/locations.py`) and answers
`{"t": "loc", "i": PREFIX}` with one; the record is checked here against the prefix asked for
(decoded strictly, its signature by that prefix's key: `record_addresses`, which checks a
record a node hands over by HTTP too), and its addresses are dialled in the order it lists
them. Noise then proves on connection that the node holds the prefix's key, so a bootstrap
can withhold a record but never send us to an impostor.

`LocatingTransport` is the commands' transport: a request to a node with no known address is
preceded by asking the bootstrap where it is, and a request to a node whose known address does
not answer (an address book gone stale) asks the bootstrap once and tries again there. Each
prefix is looked up at most once per command; what the bootstrap said is remembered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import cbor2
import trio
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr

from dkms.node.client.home import CommandError, Options, introduction
from dkms.node.p2p import (
    Introduction,
    P2PError,
    P2PHost,
    PeerUnreachable,
    parse_dial_addr,
    parse_introduction,
    peer_id_from_prefix,
)
from dkms.node.p2p.transport import P2PTransport
from dkms.node.roles.codes import Code
from dkms.node.roles.effects import Surface
from dkms.node.roles.locations import QUERY
from dkms.node.runtime.transport import Answer, TransportError
from dkms.protocol import cesr
from dkms.protocol.errors import ProtocolError
from dkms.protocol.location import read_record

BOOTSTRAP_ENV: Final = "DKMS_BOOTSTRAP"
LOCATE_TIMEOUT: Final = 10.0  # seconds to ask the bootstrap where a node is
_HOW: Final = "add --bootstrap PREFIX@MULTIADDR (or set DKMS_BOOTSTRAP) to find it by prefix"


@dataclass(frozen=True, slots=True)
class NodeRef:
    """A node named on the command line: with its address (`intro`), or by prefix alone;
    `http`, the HTTP URL it signed, when it was named by its OOBI URL."""

    prefix: str
    intro: Introduction | None = None
    http: str | None = None

    def __str__(self) -> str:
        return str(self.intro) if self.intro is not None else self.prefix


def is_node_prefix(text: str) -> bool:
    """A non-transferable Ed25519 prefix (`B...`, 44 characters): how nodes are named."""
    try:
        cesr.decode(text, expect=cesr.Codes.ED25519N)
    except ProtocolError:
        return False
    return len(text) == 44


async def node_ref(text: str, options: Options) -> NodeRef:
    """`PREFIX@MULTIADDR`, a node's OOBI URL (asked now), or a bare node prefix when
    `options` names a bootstrap; else a CommandError saying which is wrong."""
    if text[:8].lower().startswith(("http://", "https://")):
        from dkms.node.client.oobis import resolve  # noqa: PLC0415 - it imports this module

        return await resolve(text)
    if "@" in text:
        intro = introduction(text)
        return NodeRef(intro.prefix, intro)
    if not is_node_prefix(text):
        raise CommandError(
            f"bad node {text[:100]!r}: expected PREFIX@MULTIADDR, or a node prefix"
            " (B..., 44 characters) with --bootstrap, or a node's OOBI URL"
            " (http://HOST:PORT/oobi/PREFIX/controller)"
        )
    if options.bootstrap is None:
        raise CommandError(f"{text} is a bare prefix and no bootstrap node is given: {_HOW}")
    return NodeRef(text)


def bootstrap_of(options: Options) -> Introduction | None:
    """The bootstrap node `options` names (`--bootstrap` or `DKMS_BOOTSTRAP`), checked."""
    if options.bootstrap is None:
        return None
    try:
        return parse_introduction(options.bootstrap)
    except ValueError as err:
        raise CommandError(f"bad --bootstrap (or {BOOTSTRAP_ENV}): {err}") from None


def _unreachable(message: str) -> TransportError:
    """A TransportError that reads as a failed dial (`witnessing.Tracked` tells them apart)."""
    err = TransportError(message)
    err.__context__ = PeerUnreachable(message)
    return err


class LocatingTransport(P2PTransport):
    """`P2PTransport` that asks `bootstrap` where nodes of unknown (or stale) address are."""

    def __init__(
        self, host: P2PHost, bootstrap: Introduction | None, timeout: float = LOCATE_TIMEOUT
    ) -> None:
        super().__init__(host)
        self.bootstrap = bootstrap
        self.timeout = timeout
        self.located: dict[str, PeerInfo] = {}  # prefix -> its record's addresses, in order
        self.unlocated: dict[str, str] = {}  # prefix -> why the bootstrap could not say
        self._asking: dict[str, trio.Event] = {}
        if bootstrap is not None:
            self.learn(bootstrap)

    async def locate(self, prefix: str) -> str | None:
        """Ask the bootstrap where `prefix` listens (once per prefix): None when found, else
        why not, in words."""
        if prefix in self.located or (self.bootstrap and prefix == self.bootstrap.prefix):
            return None
        if prefix in self.unlocated:
            return self.unlocated[prefix]
        if self.bootstrap is None:
            return f"no address known for {prefix}, and no bootstrap node is given: {_HOW}"
        asking = self._asking.get(prefix)
        if asking is not None:
            await asking.wait()
            return self.unlocated.get(prefix)
        self._asking[prefix] = done = trio.Event()
        try:
            addrs = await self._ask(self.bootstrap, prefix)
        except CommandError as err:
            self.unlocated[prefix] = str(err)
            return str(err)
        else:
            self.located[prefix] = PeerInfo(peer_id_from_prefix(prefix), addrs)
            self.book.pop(prefix, None)  # an address known before did not answer, or none was
            return None
        finally:
            del self._asking[prefix]
            done.set()

    async def request(self, to: str, surface: str, payload: bytes, timeout: float) -> Answer:
        boot = self.bootstrap
        unknown = to not in self.book and to not in self.located
        if boot is not None and to != boot.prefix and unknown and not self._connected(to):
            why = await self.locate(to)
            if why is not None:
                raise _unreachable(why)
        try:
            return await self._send(to, surface, payload, timeout)
        except TransportError as err:
            stale = isinstance(err.__context__, PeerUnreachable) and to in self.book
            if boot is None or to == boot.prefix or not stale:
                raise
            why = await self.locate(to)  # the address we had did not answer: ask where now
            if why is not None:
                raise _unreachable(f"{err}; {why}") from None
        return await self._send(to, surface, payload, timeout)

    async def _send(self, to: str, surface: str, payload: bytes, timeout: float) -> Answer:
        target = self.located.get(to)
        if target is None:
            return await super().request(to, surface, payload, timeout)
        try:  # the dialler tries the record's addresses in its order
            response = await self.host.request(target, surface, payload, timeout)
        except (P2PError, ValueError) as err:
            raise TransportError(str(err)) from None
        return Answer(response.code, response.payload, response.reason)

    def _connected(self, prefix: str) -> bool:
        return prefix in self.host.connected_peers()

    async def _ask(self, boot: Introduction, prefix: str) -> list[Multiaddr]:
        """The addresses `boot` holds a record of for `prefix`, checked; or CommandError."""
        ask = cbor2.dumps({"t": QUERY, "i": prefix})
        try:
            code, payload, reason = await super().request(
                boot.prefix, Surface.QUERY.value, ask, self.timeout
            )
        except TransportError as err:
            raise CommandError(f"cannot ask the bootstrap node where {prefix} is: {err}") from None
        if code is Code.UNKNOWN:
            raise CommandError(f"the bootstrap node {boot.prefix} knows no address of {prefix}")
        if not code.ok:
            older = " (a node from before location records?)" if code is Code.BAD_QUERY else ""
            raise CommandError(
                f"the bootstrap node {boot.prefix} would not say where {prefix} is:"
                f" {reason[:200]}{older}"
            )
        return record_addresses(payload, prefix, f"the bootstrap node {boot.prefix}")


def record_addresses(payload: bytes, prefix: str, source: str) -> list[Multiaddr]:
    """The addresses this client can dial, in order, of the location record `payload` that
    `source` (in words) handed over for node `prefix`: decoded strictly, signed by the
    prefix's key, of that prefix; else a CommandError saying which."""
    try:
        record = read_record(payload)
    except ProtocolError as err:
        raise CommandError(
            f"{source} answered for {prefix} with a location record that does not verify: {err}"
        ) from None
    if record.prefix != prefix:
        raise CommandError(
            f"{source} answered for {prefix} with the location record of another node"
            f" ({record.prefix})"
        )
    addrs = []
    for text in record.addresses:
        try:
            addrs.append(parse_dial_addr(text))
        except ValueError:
            continue  # an address this client cannot dial: the next may do
    if not addrs:
        raise CommandError(
            f"the location record of {prefix} names no address this client can dial"
            f" ({', '.join(record.addresses) or 'none'})"
        )
    return addrs

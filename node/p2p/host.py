"""A running libp2p host with our surfaces: request/response, gossip, neighbours.

`open_host(seed, listen)` builds and starts everything in the order py-libp2p needs, yields a
`P2PHost`, and tears it all down when the block exits:

1. the libp2p host (TCP, Noise only, Yamux or Mplex), pubsub and its GossipSub router;
2. the pubsub services, then subscriptions to `topics`, *before* listening: a peer whose
   pubsub stream is still registering when we subscribe may never learn of it (py-libp2p);
3. listening, then our tasks (subscription drains, neighbour upkeep);
4. on exit: our tasks, then every connection at once, then the swarm and its listeners
   (see `P2PHost._close` for what py-libp2p's own exit path misses), then pubsub.

The libp2p host itself, and why it departs from py-libp2p's defaults, is in `stack.py`.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import multiaddr
import trio
from libp2p.abc import INetConn, INetStream
from libp2p.custom_types import TProtocol
from libp2p.host.basic_host import BasicHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.tools.anyio_service import background_trio_service

from .config import HostConfig
from .dialer import Dialer
from .errors import MessageTooLarge, PeerUnreachable, Refused, RequestTimeout
from .framing import Response
from .gossip import GossipLayer, Subscription, Validator, build_pubsub, build_router
from .guards import FaultLog
from .identity import (
    Introduction,
    NodeIdentity,
    parse_dial_addr,
    parse_introduction,
    peer_id_from_prefix,
    peer_name,
)
from .interfaces import local_addresses
from .neighbours import PEERS_PROTOCOL, ConnectReport, Neighbours
from .reqresp import Handler, Limits, Responder, exchange
from .session import SESSION_PROTOCOL, Session, SessionEnded, SessionServer
from .sessionframes import MAX_SESSION_REQUEST
from .stack import build_libp2p_host, check_port_free, listening_addrs, parse_listen_addr

logger = logging.getLogger(__name__)

_UNSPECIFIED = frozenset({"0.0.0.0", "::"})  # a listen address nobody else can dial
MAX_PEERS_WITHOUT_SESSIONS = 1024  # remembered, so we do not try to open sessions each time

Target = Introduction | PeerInfo | ID | str
"""Whom to ask: an introduction (object or `PREFIX@MULTIADDR`), a peer info, a peer id, or
a bare prefix of a peer we are connected to or have an address for."""


class P2PHost:
    """What the node runtime sees of libp2p. Make one with `open_host`."""

    def __init__(
        self, identity: NodeIdentity, config: HostConfig, host: BasicHost, faults: FaultLog
    ) -> None:
        self.identity = identity
        self.faults = faults  # what peers broke, by protocol (guards.py)
        self.config = config
        self.libp2p = host
        self.router = build_router(config.gossip)
        self.pubsub = build_pubsub(host, self.router, config.gossip, self.faults)
        self.gossip = GossipLayer(self.pubsub, config.gossip)
        self._dialer = Dialer(host, config.dial_timeout)
        self._responder = Responder(
            Limits(config.max_message_size, config.read_timeout, config.handler_timeout),
            config.max_inbound_requests,
            config.max_inbound_bytes,
        )
        # Sessions (session.py): every request to a peer on one long-lived stream. Yamux only:
        # py-libp2p's Mplex cannot read and write one stream at once.
        self._use_sessions = config.sessions and config.muxer == "yamux"
        self._session_server = SessionServer(self._responder, faults)
        self._sessions: dict[ID, Session] = {}
        self._session_opening: dict[ID, trio.Lock] = {}
        self._without_sessions: dict[ID, None] = {}  # peers that serve none, oldest first
        self._nursery: trio.Nursery | None = None
        if config.muxer == "yamux":  # served either way: `sessions` is about asking
            host.set_stream_handler(TProtocol(SESSION_PROTOCOL), self._session_server.serve)
        self.neighbours = Neighbours(self._dialer, self._request_peer, self.introductions, config)
        host.get_network().register_notifee(self.neighbours.notifee())
        self.handle(PEERS_PROTOCOL, self.neighbours.serve)

    # ----------------------------------------------------------------- who we are

    @property
    def peer_id(self) -> ID:
        return self.identity.peer_id

    @property
    def prefix(self) -> str:
        """Our KERI witness prefix, `B...`."""
        return self.identity.prefix

    @property
    def listen_addrs(self) -> list[multiaddr.Multiaddr]:
        """Where we actually listen (a `/tcp/0` request shows here with its real port)."""
        return list(self.libp2p.get_transport_addrs())

    def introductions(self) -> list[Introduction]:
        """How others can reach us: `HostConfig.announce`, else our listen addresses, with
        each interface's address for one on 0.0.0.0 or :: (`interfaces.py`)."""
        if self.config.announce:
            return [Introduction(self.prefix, parse_dial_addr(a)) for a in self.config.announce]
        intros: list[Introduction] = []
        for addr in self.listen_addrs:
            family = addr.protocols()[0].name
            host = addr.value_for_protocol(family)
            if host not in _UNSPECIFIED:
                intros.append(Introduction(self.prefix, addr))
                continue
            port = addr.value_for_protocol("tcp")
            kind = socket.AF_INET if family == "ip4" else socket.AF_INET6
            for ip in local_addresses(kind):
                concrete = parse_dial_addr(f"/{family}/{ip}/tcp/{port}")
                intros.append(Introduction(self.prefix, concrete))
        return intros

    @property
    def introduction(self) -> str:
        """`PREFIX@MULTIADDR`: what to hand to other nodes (the first of `introductions`)."""
        return str(self.introductions()[0])

    def connected_peers(self) -> list[str]:
        return sorted(peer_name(pid) for pid in self._dialer.connected_peers())

    async def wait_for_peers(self, count: int) -> None:
        """Wait (unbounded: wrap it in a timeout) until `count` peers are connected."""
        await self.neighbours.wait_for_peers(count)

    # ----------------------------------------------------------------- request/response

    def handle(self, protocol: str, handler: Handler) -> None:
        """Serve `protocol`: `await handler(peer_prefix, payload) -> (ok, payload, reason)`."""
        self.libp2p.set_stream_handler(
            TProtocol(protocol), self._responder.stream_handler(protocol, handler)
        )
        self._session_server.add(protocol, handler)

    async def request(
        self, target: Target, protocol: str, payload: bytes, timeout: float | None = None
    ) -> Response:
        """Ask `target`; dials it first if needed. Returns `(ok, payload, reason)`.

        Raises `PeerUnreachable`, `RequestTimeout`, `Refused` (protocol not served, stream
        reset), `RemoteP2PError` (malformed answer), `MessageTooLarge` (ours, nothing sent).
        """
        if len(payload) > self.config.max_message_size:
            raise MessageTooLarge(
                f"request of {len(payload)} bytes exceeds {self.config.max_message_size}"
            )
        peer = _resolve(target)
        wait = self.config.request_timeout if timeout is None else timeout
        deadline = trio.current_time() + wait
        try:
            if (
                self._use_sessions
                and len(payload) <= MAX_SESSION_REQUEST
                and protocol not in self.config.stream_protocols
            ):
                answer = await self._request_in_session(peer, protocol, payload, deadline)
                if answer is not None:
                    return answer
            with trio.fail_at(deadline):
                await self._dialer.ensure(peer)
                try:
                    stream = await self._open(peer.peer_id, protocol)
                except PeerUnreachable:  # the connection died under us: dial once more
                    await self._dialer.ensure(peer)
                    stream = await self._open(peer.peer_id, protocol)
            return await exchange(stream, payload, self.config.max_message_size, deadline)
        except trio.TooSlowError:
            raise RequestTimeout(
                f"{protocol} to {peer_name(peer.peer_id)}: no answer in {wait} s"
            ) from None

    async def _request_in_session(
        self, peer: PeerInfo, protocol: str, payload: bytes, deadline: float
    ) -> Response | None:
        """Ask on the peer's session; None when it serves none (ask on a stream of its own)."""
        for attempt in (1, 2):
            with trio.fail_at(deadline):
                session = await self._session(peer)
            if session is None:
                return None
            try:
                return await session.request(protocol, payload, deadline)
            except SessionEnded:
                if attempt == 2:
                    raise Refused(f"sessions to {session.peer} keep ending") from None
            except Refused:
                if not self._dialer.is_connected(peer.peer_id):
                    raise PeerUnreachable(f"lost the connection to {session.peer}") from None
                raise
        raise AssertionError("unreachable")

    async def _session(self, peer: PeerInfo) -> Session | None:
        pid = peer.peer_id
        session = self._sessions.get(pid)
        if session is not None and session.ended is None:
            return session
        if pid in self._without_sessions:
            return None
        lock = self._session_opening.setdefault(pid, trio.Lock())
        try:
            async with lock:
                session = self._sessions.get(pid)
                if session is not None and session.ended is None:
                    return session
                await self._dialer.ensure(peer)
                try:
                    stream = await self._open(pid, SESSION_PROTOCOL)
                except PeerUnreachable:
                    await self._dialer.ensure(peer)
                    stream = await self._open(pid, SESSION_PROTOCOL)
                except Refused as exc:
                    if "does not serve" not in str(exc):
                        raise
                    self._without_sessions[pid] = None
                    while len(self._without_sessions) > MAX_PEERS_WITHOUT_SESSIONS:
                        del self._without_sessions[next(iter(self._without_sessions))]
                    return None
                session = Session(stream, self.config.max_message_size)
                self._sessions[pid] = session
                assert self._nursery is not None, "requests start once the host runs"
                self._nursery.start_soon(self._run_session, pid, session)
                return session
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._session_opening.pop(pid, None)

    async def _run_session(self, pid: ID, session: Session) -> None:
        try:
            await session.run()
        finally:
            if self._sessions.get(pid) is session:
                del self._sessions[pid]

    async def _request_peer(self, peer_id: ID, protocol: str, payload: bytes) -> Response:
        return await self.request(peer_id, protocol, payload)

    async def _open(self, peer_id: ID, protocol: str) -> INetStream:
        try:
            return await self.libp2p.new_stream(peer_id, [TProtocol(protocol)])
        except Exception as exc:  # StreamFailure (negotiation) or SwarmException (no conn)
            name = peer_name(peer_id)
            if not self._dialer.is_connected(peer_id):
                raise PeerUnreachable(f"lost the connection to {name}: {exc}") from None
            if "not supported" in str(exc.__cause__):
                raise Refused(f"{name} does not serve {protocol}") from None
            raise Refused(f"{name} would not open a {protocol} stream: {exc}") from None

    # ----------------------------------------------------------------- gossip

    async def subscribe(self, topic: str) -> Subscription:
        """Messages of `topic` as `(from_peer, payload)`; subscribing twice gives the same one."""
        return await self.gossip.subscribe(topic)

    async def publish(self, topic: str, payload: bytes) -> None:
        await self.gossip.publish(topic, payload)

    def set_validator(self, topic: str, fn: Validator) -> None:
        """`fn(payload) -> bool` decides what is delivered and forwarded on `topic`."""
        self.gossip.set_validator(topic, fn)

    def mesh_peers(self, topic: str) -> list[str]:
        return self.gossip.mesh_peers(topic)

    # ----------------------------------------------------------------- neighbours

    async def connect(self, introductions: Iterable[Introduction | str]) -> ConnectReport:
        """Dial all at once, then reach `target_peers` through peer exchange."""
        intros = [
            i if isinstance(i, Introduction) else parse_introduction(i) for i in introductions
        ]
        return await self.neighbours.connect(intros)

    async def _close(self) -> None:
        """Close every connection at once, then the swarm (its listeners above all).

        py-libp2p's own exit path closes connections one by one with a 100 ms pause each,
        and, running cancelled, never reaches its listeners: the port stayed bound and
        accepting until the whole trio run ended.
        """
        network = self.libp2p.get_network()
        conns = [c for cs in list(network.connections.values()) for c in cs]

        async def close(conn: INetConn) -> None:
            try:
                await conn.close()
            except Exception:
                logger.debug("closing a connection failed", exc_info=True)

        with trio.move_on_after(self.config.shutdown_timeout):
            async with trio.open_nursery() as nursery:
                for conn in conns:
                    nursery.start_soon(close, conn)
            await network.close()
        # A graceful close that a checkpoint cancelled (or a peer never acknowledged) leaves
        # py-libp2p's TCP socket open until garbage collection: close what is left now.
        for conn in conns + [c for cs in list(network.connections.values()) for c in cs]:
            _close_socket(conn)


@asynccontextmanager
async def open_host(
    seed: bytes,
    listen: str = "/ip4/127.0.0.1/tcp/0",
    config: HostConfig | None = None,
    *,
    topics: Iterable[str] = (),
) -> AsyncIterator[P2PHost]:
    """Start a host with identity `seed` listening on `listen`; stop it on exit.

    An exception from the body comes out as itself, not wrapped in the exception groups of
    the nurseries (ours and py-libp2p's) it passes through.
    """
    config = config or HostConfig()
    identity = NodeIdentity(seed)
    listen_addr = parse_listen_addr(listen)
    check_port_free(listen_addr)
    faults = FaultLog()
    host = P2PHost(
        identity, config, build_libp2p_host(identity, config, listen_addr, faults), faults
    )
    body_error: BaseException | None = None
    try:
        async with background_trio_service(host.pubsub), background_trio_service(host.router):
            await host.pubsub.wait_until_ready()
            for topic in topics:
                await host.subscribe(topic)
            async with host.libp2p.run([listen_addr]):
                listening_addrs(host.libp2p, listen_addr)
                try:
                    async with trio.open_nursery() as nursery:
                        host._nursery = nursery
                        host.gossip.start(nursery)
                        nursery.start_soon(host.neighbours.maintain)
                        try:
                            yield host
                        except BaseException as exc:
                            body_error = exc
                            raise
                        finally:
                            nursery.cancel_scope.cancel()
                finally:
                    with trio.CancelScope(shield=True):
                        await host._close()
    except BaseExceptionGroup as group:
        if body_error is not None and _sole_leaf(group) is body_error:
            raise body_error from None
        raise


def _close_socket(conn: object) -> None:
    """Close the TCP socket under a libp2p connection (swarm conn -> muxer -> security ->
    raw connection -> trio stream), synchronously: safe when cancelled, idempotent."""
    layer: object | None = conn
    for _ in range(8):
        if isinstance(layer, trio.SocketStream):
            layer.socket.close()
            return
        layer = next(
            (
                getattr(layer, attr)
                for attr in ("muxed_conn", "secured_conn", "conn", "stream")
                if hasattr(layer, attr)
            ),
            None,
        )
        if layer is None:
            return


def _sole_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    leaves: list[BaseException] = []
    todo: list[BaseException] = [group]
    while todo:
        exc = todo.pop()
        if isinstance(exc, BaseExceptionGroup):
            todo.extend(exc.exceptions)
        else:
            leaves.append(exc)
    return leaves[0] if len(leaves) == 1 else None


def _resolve(target: Target) -> PeerInfo:
    if isinstance(target, PeerInfo):
        return target
    if isinstance(target, Introduction):
        return target.peer_info()
    if isinstance(target, ID):
        return PeerInfo(target, [])
    if "@" in target:
        return parse_introduction(target).peer_info()
    return PeerInfo(peer_id_from_prefix(target), [])

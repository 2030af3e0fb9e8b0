"""Keeping enough neighbours: bootstrap dials, peer exchange, and a maintenance loop.

GossipSub in py-libp2p 0.8.1 sends a node's own messages only to its mesh, and its PRUNE
carries no peer exchange: a node that only knows one bootstrap peer can end up meshless and
its messages vanish. So every node keeps at least `min_peers` (D_low) connections, aiming for
`target_peers` (D), wherever the network has that many.

Peer exchange is one request/response protocol, `/dkms/1/peers`: the requester sends its own
introductions, the responder answers with introductions of peers it knows (those it dialed,
and those who introduced themselves to it). A self-introduction is kept only when its prefix
is the authenticated peer on the stream: a peer can say where it is, never who someone else is.
An address can still be false; the dial then fails Noise's identity check and costs a dial.
Whom to remember, dial and list is `peering.PeerBook`'s policy (pure, and seeded by the
random generator handed in); this module does the dialling and the asking.

Upkeep (`maintain`): whenever the node has fewer than `min_peers`, it dials its bootstrap peers
again (each with its own short, capped back-off: a bootstrap peer that was down at start is
joined within seconds of coming up) and asks its peers whom they know. A node with no
neighbours at all is isolated: that is a WARNING line once a minute, naming why the bootstrap
peers failed, until it ends; peers coming and going are INFO lines.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import trio
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from dkms.node.roles.codes import Code

from .config import HostConfig
from .dialer import Dialer
from .errors import P2PError
from .framing import Response
from .identity import Introduction, parse_introduction, peer_id_from_prefix, peer_name
from .peering import PeerBook, Shuffler

logger = logging.getLogger(__name__)

PEERS_PROTOCOL = "/dkms/1/peers"
SETTLE = 1.0  # seconds after a disconnect before acting: the peer may be shutting down
ISOLATION_WARNING = 60.0  # seconds between warnings while the node has no neighbours

Requester = Callable[[ID, str, bytes], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class ConnectReport:
    """Outcome of `connect`: who we are connected to, and why each failed one failed."""

    connected: tuple[str, ...]
    failed: dict[str, str]


class _ConnectionNotifee(INotifee):
    """Tells `Neighbours` when a connection comes or goes."""

    def __init__(self, on_connect: Callable[[], None], on_disconnect: Callable[[], None]) -> None:
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._on_connect()

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._on_disconnect()

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        pass


class Neighbours:
    """Bootstrap, peer exchange and upkeep of a host's connections."""

    def __init__(
        self,
        dialer: Dialer,
        request: Requester,
        own: Callable[[], list[Introduction]],
        config: HostConfig,
        rng: Shuffler | None = None,
    ) -> None:
        """`rng` shuffles whom to dial and whom to list (a seeded one repeats the choices);
        by default a generator seeded by the operating system."""
        self._dialer = dialer
        self._request = request
        self._own = own
        self._config = config
        self.book: PeerBook[ID, Introduction] = PeerBook(rng or random.Random())
        self._wake = trio.Event()  # a connection went away
        self._changed = trio.Event()  # a connection came
        self._warned_at: float | None = None  # when isolation was last warned of

    @property
    def known(self) -> dict[ID, Introduction]:
        return self.book.known

    def notifee(self) -> INotifee:
        return _ConnectionNotifee(self._connected, self._disconnected)

    def _connected(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
        if self._warned_at is not None:
            self._wake.set()  # end the isolation warning at once

    def _disconnected(self) -> None:
        self._wake.set()
        self._connected()

    async def wait_for_peers(self, count: int) -> None:
        """Return once at least `count` peers are connected (no timeout: the caller bounds it)."""
        while len(self._dialer.connected_peers()) < count:
            await self._changed.wait()

    async def connect(self, introductions: Iterable[Introduction]) -> ConnectReport:
        """Dial `introductions` at once; then fill up to `target_peers` from what they know."""
        intros = {intro.peer_id: intro for intro in introductions}
        self.book.set_bootstrap(intros)
        failures = await self._dial(list(intros.items()), self.book.bootstrap_failed)
        if failures:
            self._wake.set()  # upkeep takes the failed ones over, on their back-off
        if len(self._dialer.connected_peers()) < self._config.target_peers:
            await self.exchange()
        connected = {self._name(pid) for pid in self._dialer.connected_peers()}
        return ConnectReport(
            connected=tuple(sorted(connected)),
            failed={str(intros[pid]): why for pid, why in failures.items()},
        )

    async def exchange(self) -> None:
        """Ask every connected peer whom it knows; dial enough of them to reach the target."""
        candidates: dict[ID, Introduction] = {}

        async def ask(pid: ID) -> None:
            for intro in await self._ask(pid):
                candidates.setdefault(intro.peer_id, intro)

        async with trio.open_nursery() as nursery:
            for pid in self._dialer.connected_peers():
                nursery.start_soon(ask, pid)
        connected = set(self._dialer.connected_peers())
        wanted = self._config.target_peers - len(connected)
        chosen = self.book.to_dial(
            candidates, connected, self._dialer.self_id, wanted, trio.current_time()
        )
        if chosen:
            await self._dial(chosen, lambda pid, now, _: self.book.failed(pid, now))

    async def _dial(
        self, chosen: list[tuple[ID, Introduction]], failed: Callable[[ID, float, str], None]
    ) -> dict[ID, str]:
        """Dial `chosen` at once; the book learns who answered, `failed` who did not (and
        why). Returns the failures."""
        failures = await self._dialer.ensure_all(intro.peer_info() for _, intro in chosen)
        now = trio.current_time()
        for pid, intro in chosen:
            if pid in failures:
                failed(pid, now, failures[pid])
            else:
                self.book.dialled(pid, intro)
        return failures

    async def maintain(self) -> None:
        """Runs as a task: after a disconnect, every interval, or when a bootstrap peer may be
        dialled again, top up if below `min_peers`; warn while isolated."""
        while True:
            with trio.move_on_after(self._pause()):
                await self._wake.wait()
                await trio.sleep(SETTLE)
            self._wake = trio.Event()
            if len(self._dialer.connected_peers()) < self._config.min_peers:
                try:
                    await self.redial_bootstrap()
                    await self.exchange()
                except Exception:  # a bad peer must not end upkeep for good
                    logger.exception("neighbour upkeep failed; will try again")
            self._watch_isolation()

    def _pause(self) -> float:
        """Seconds until upkeep should look again: the interval, or sooner while short of
        neighbours and a bootstrap peer's back-off ends earlier."""
        pause = self._config.maintenance_interval
        connected = set(self._dialer.connected_peers())
        if len(connected) < self._config.min_peers:
            due = self.book.next_bootstrap(connected)
            if due is not None:
                pause = min(pause, max(due - trio.current_time(), 0.05))
        if not connected:
            pause = min(pause, ISOLATION_WARNING)
        return pause

    async def redial_bootstrap(self) -> None:
        """Dial the bootstrap peers not connected whose back-off is over."""
        due = self.book.bootstrap_due(set(self._dialer.connected_peers()), trio.current_time())
        if due:
            failures = await self._dial(due, self.book.bootstrap_failed)
            for pid, intro in due:
                if pid not in failures:
                    logger.info("joined bootstrap peer %s", intro)

    def _watch_isolation(self) -> None:
        now = trio.current_time()
        peers = len(self._dialer.connected_peers())
        if peers:
            if self._warned_at is not None:
                logger.info("no longer isolated: %d neighbours", peers)
            self._warned_at = None
            return
        if self._warned_at is not None and now - self._warned_at < ISOLATION_WARNING:
            return
        self._warned_at = now
        logger.warning("isolated: no neighbours; %s", self.isolation_reason())

    def isolation_reason(self) -> str:
        """Why we have no neighbours, as far as we know (for the warning and for status)."""
        if not self.book.bootstrap:
            return "no bootstrap peers configured, and no node has connected to us"
        failures = [
            f"{intro}: {self.book.boot_errors.get(pid, 'not dialled yet')}"
            for pid, intro in self.book.bootstrap.items()
        ]
        return "retrying bootstrap peers (" + "; ".join(failures) + ")"

    async def serve(self, peer: str, payload: bytes) -> tuple[Code, bytes, str]:
        """The `/dkms/1/peers` handler: learn the requester's address, list whom we know."""
        for line in payload.decode("utf-8", errors="replace").splitlines()[:4]:
            try:
                intro = parse_introduction(line)
            except ValueError:
                continue
            if intro.prefix == peer:
                self.book.remember(intro.peer_id, intro)
        try:
            asker: ID | None = peer_id_from_prefix(peer)
        except ValueError:  # not one of our nodes: it is simply not left out of the list
            asker = None
        live = self._dialer.connected_peers()
        listed = self.book.listing(asker, live, self._config.peer_exchange_limit)
        return Code.OK, "\n".join(str(i) for i in listed).encode(), ""

    async def _ask(self, pid: ID) -> list[Introduction]:
        mine = "\n".join(str(i) for i in self._own()).encode()
        try:
            code, payload, reason = await self._request(pid, PEERS_PROTOCOL, mine)
        except P2PError as exc:
            logger.info("peer exchange with %s failed: %s", self._name(pid), exc)
            return []
        if not code.ok:
            logger.info("peer exchange refused by %s: %s", self._name(pid), reason)
            return []
        found = []
        for line in payload.decode("utf-8", errors="replace").splitlines():
            try:
                found.append(parse_introduction(line))
            except ValueError:
                logger.info("peer %s listed a bad introduction %r", self._name(pid), line)
            if len(found) >= self._config.peer_exchange_limit:
                break
        return found

    def _name(self, pid: ID) -> str:
        return peer_name(pid)

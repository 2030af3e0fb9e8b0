"""What a running host can say of its peers, for `dkms-node status` and the operator's log.

py-libp2p keeps, per connection, the direction (whether we dialled or accepted it) and the
transport addresses actually used, and its GossipSub scorer a score per peer. `peer_views`
reads them without changing anything; `mesh_sizes` counts the gossip mesh of each topic we
subscribe to. `PeerLog` is a connection notifee that writes one INFO line when a peer's first
connection opens and one when its last closes (a peer may hold several connections).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from .identity import peer_name

if TYPE_CHECKING:
    from .host import P2PHost

logger = logging.getLogger("dkms.node.peers")


@dataclass(frozen=True, slots=True)
class PeerView:
    """One connected peer: its name (`B...` prefix), the address of its connection, who
    dialled ("in": it did, "out": we did, "unknown"), and its gossip score when scored."""

    prefix: str
    address: str
    direction: str
    score: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "address": self.address,
            "direction": self.direction,
            "score": self.score,
        }


def peer_views(host: P2PHost, limit: int) -> tuple[list[PeerView], int]:
    """At most `limit` connected peers (sorted by name), and how many there are."""
    connections = host.libp2p.get_network().connections
    live = {pid: [c for c in conns if not c.is_closed] for pid, conns in list(connections.items())}
    live = {pid: conns for pid, conns in live.items() if conns}
    scorer = getattr(host.router, "scorer", None)
    topics = list(host.pubsub.topic_ids)
    views = []
    for pid, conns in live.items():
        score = None
        if scorer is not None:
            try:
                score = round(float(scorer.score(pid, topics)), 3)
            except Exception:  # a scorer that does not know the peer yet: no score to show
                score = None
        views.append(PeerView(peer_name(pid), _address(conns[0]), _direction(conns[0]), score))
    views.sort(key=lambda v: v.prefix)
    return views[:limit], len(views)


def mesh_sizes(host: P2PHost) -> dict[str, int]:
    """How many peers are in our gossip mesh of each topic we subscribe to."""
    mesh: dict[str, set[ID]] = getattr(host.pubsub.router, "mesh", {})
    return {topic: len(mesh.get(topic, ())) for topic in sorted(host.pubsub.topic_ids)}


def _direction(conn: INetConn) -> str:
    direction = str(getattr(conn, "direction", "unknown"))  # libp2p's Direction: "inbound"...
    return {"inbound": "in", "outbound": "out"}.get(direction, "unknown")


def _address(conn: INetConn) -> str:
    """The remote end of the connection as a multiaddr (what we dialled, or where it came
    from: an inbound peer's source port is not where it listens)."""
    try:
        addrs: list[Multiaddr] = conn.get_transport_addresses()
    except Exception:  # a connection being torn down
        return ""
    return str(addrs[0]) if addrs else ""


class PeerLog(INotifee):
    """INFO lines as peers join and leave: `peer joined: PREFIX at ADDR (in)`."""

    def __init__(self, connected: Callable[[ID], int]) -> None:
        """`connected(peer_id)` counts that peer's open connections."""
        self._connected = connected
        self._peers: set[ID] = set()

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        pid = conn.muxed_conn.peer_id
        if pid in self._peers:
            return
        self._peers.add(pid)
        logger.info(
            "peer joined: %s at %s (%s)", peer_name(pid), _address(conn) or "?", _direction(conn)
        )

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        pid = conn.muxed_conn.peer_id
        if pid not in self._peers or self._connected(pid) > 0:
            return
        self._peers.discard(pid)
        logger.info("peer left: %s", peer_name(pid))

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        pass


def log_peers(host: P2PHost) -> None:
    """Have `host` log peers joining and leaving (for the life of the host)."""
    network = host.libp2p.get_network()

    def open_connections(pid: ID) -> int:
        return sum(not c.is_closed for c in network.connections.get(pid, []))

    network.register_notifee(PeerLog(open_connections))

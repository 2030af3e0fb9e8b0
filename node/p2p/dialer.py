"""Dialing: one connection per peer, dials deduplicated, many peers dialed at once.

`BasicHost.connect` in py-libp2p 0.8.1 spends at least 250 ms per dial (a happy-eyeballs
head start it waits out even with a single address), retries three times with back-off, and
then refuses to dial the peer again for 60 s (a negative cache). We call the swarm's
`dial_addr` instead: one attempt per address, bounded by our own timeout (~6 ms on loopback
instead of 250 ms), and the caller decides when to retry. Noise still checks that the peer
holds the key its peer id names.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr

from .errors import PeerUnreachable
from .identity import peer_name

logger = logging.getLogger(__name__)

ADDR_TTL = 3600  # seconds an address that worked stays in the peerstore


class Dialer:
    """Ensures connections; concurrent `ensure` calls for one peer share a single dial."""

    def __init__(self, host: IHost, timeout: float) -> None:
        self._host = host
        self._timeout = timeout
        self._dialing: dict[ID, trio.Event] = {}

    @property
    def self_id(self) -> ID:
        return self._host.get_id()

    def is_connected(self, peer_id: ID) -> bool:
        conns = self._host.get_network().connections.get(peer_id, [])
        return any(not conn.is_closed for conn in conns)

    def connected_peers(self) -> list[ID]:
        return [pid for pid in list(self._host.get_network().connections) if self.is_connected(pid)]

    async def ensure(self, peer: PeerInfo) -> None:
        """Connect to `peer` unless already connected; `PeerUnreachable` when no address works."""
        if peer.peer_id == self._host.get_id():
            raise PeerUnreachable("refusing to dial ourselves")
        if self.is_connected(peer.peer_id):
            return
        pending = self._dialing.get(peer.peer_id)
        if pending is not None:
            await pending.wait()
            if self.is_connected(peer.peer_id):
                return
            raise PeerUnreachable(f"dial to {peer_name(peer.peer_id)} failed")
        done = trio.Event()
        self._dialing[peer.peer_id] = done
        try:
            await self._dial(peer)
        finally:
            del self._dialing[peer.peer_id]
            done.set()

    async def ensure_all(self, peers: Iterable[PeerInfo]) -> dict[ID, str]:
        """Dial concurrently; map each peer that stayed unreachable to the reason."""
        failures: dict[ID, str] = {}

        async def one(peer: PeerInfo) -> None:
            try:
                await self.ensure(peer)
            except PeerUnreachable as exc:
                failures[peer.peer_id] = str(exc)

        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(one, peer)
        return failures

    async def _dial(self, peer: PeerInfo) -> None:
        """Dial the addresses given, else those the peerstore knows; remember what worked."""
        addrs = list(peer.addrs) or self._known_addrs(peer.peer_id)
        if not addrs:
            raise PeerUnreachable(f"no known address for {peer_name(peer.peer_id)}")
        network = self._host.get_network()
        reasons: list[str] = []
        for addr in addrs:
            try:
                with trio.fail_after(self._timeout):
                    await network.dial_addr(addr, peer.peer_id)
            except trio.TooSlowError:
                reasons.append(f"{addr}: no connection within {self._timeout} s")
            except Exception as exc:  # SwarmException and whatever the transport raised
                reasons.append(f"{addr}: {_cause(exc)}")
            else:
                self._host.get_peerstore().add_addrs(peer.peer_id, [addr], ADDR_TTL)
                return
        raise PeerUnreachable(f"cannot reach {peer_name(peer.peer_id)}: " + "; ".join(reasons))

    def _known_addrs(self, peer_id: ID) -> list[Multiaddr]:
        try:
            return list(self._host.get_peerstore().addrs(peer_id))
        except Exception:  # PeerStoreError: unknown or expired
            return []


def _cause(exc: BaseException) -> str:
    """The innermost cause's message: the swarm wraps the useful one in two layers."""
    parts = [str(exc) or type(exc).__name__]
    seen = {id(exc)}
    inner = exc.__cause__ or exc.__context__
    while inner is not None and id(inner) not in seen:
        seen.add(id(inner))
        parts.append(str(inner) or type(inner).__name__)
        inner = inner.__cause__ or inner.__context__
    return parts[-1] if len(parts) > 1 else parts[0]

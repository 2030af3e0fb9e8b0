"""Settings of a p2p host, with the defaults the measurements in LIBP2P-NOTES.md argue for.

Where a default departs from py-libp2p's own, the comment says why: several of py-libp2p
0.8.1's defaults lose messages or time on a network like ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from .framing import DEFAULT_MAX_MESSAGE
from .identity import parse_dial_addr

# Room left in libp2p's 1 MiB pubsub RPC for the envelope around one payload (signed peer
# record, topic, from, seqno, key, signature): measured 0.4 KiB, kept generous.
GOSSIP_ENVELOPE_ROOM: Final = 16 * 1024


@dataclass(frozen=True, slots=True)
class GossipConfig:
    """GossipSub parameters; the spec's values, not py-libp2p's (heartbeat 120 s there)."""

    degree: int = 6  # D
    degree_low: int = 4  # D_low
    degree_high: int = 12  # D_high
    heartbeat_interval: int = 1  # seconds; py-libp2p types it as int
    # Heartbeats a message stays in the cache that answers IWANT (each held whole): the
    # gossip window (3), not the spec's 5: under a flood that cache held some 15 MB.
    gossip_history: int = 3
    # Sign and verify every gossip message with the node key (see gossip.py for why).
    strict_signing: bool = True
    # py-libp2p drops anything above 10 msg/s per neighbour and topic when this is on.
    spam_protection: bool = False
    # Our own queue behind each subscription; libp2p's holds 32 and drops when full.
    subscription_buffer: int = 4096
    # ... and all those queues together at most this many payload bytes: a node that reads
    # slower than peers send (a flood) drops gossip rather than queue 64 topics x 4096 x 1 MiB
    subscription_bytes: int = 8 << 20
    # `publish` waits while a neighbour's outbound queue (32 RPCs, drop on full) holds this many.
    queue_high_water: int = 24
    publish_wait: float = 5.0  # seconds at most; then it publishes anyway
    max_payload: int = DEFAULT_MAX_MESSAGE - GOSSIP_ENVELOPE_ROOM
    # Peer scoring counts only what our validators reject (garbage): each invalid message
    # costs `invalid_penalty` (decaying by `invalid_decay` per heartbeat), and a peer whose
    # score falls below `graylist_threshold` is ignored. py-libp2p weighs nothing by default.
    invalid_penalty: float = 10.0
    invalid_decay: float = 0.99
    graylist_threshold: float = -100.0

    def __post_init__(self) -> None:
        if not 0 < self.degree_low <= self.degree <= self.degree_high:
            raise ValueError("need 0 < degree_low <= degree <= degree_high")
        if self.heartbeat_interval < 1:
            raise ValueError("heartbeat_interval is a whole number of seconds >= 1")
        if self.gossip_history < 3:
            raise ValueError("gossip_history must cover the gossip window (3 heartbeats)")
        if self.subscription_bytes < self.max_payload:
            raise ValueError("subscription_bytes must hold at least one largest payload")
        if self.subscription_buffer < 1 or not 0 < self.queue_high_water <= 32:
            raise ValueError("subscription_buffer >= 1 and 0 < queue_high_water <= 32")


@dataclass(frozen=True, slots=True)
class HostConfig:
    """Transport, request/response and neighbour settings of one host."""

    # Yamux: measured slower than Mplex for small exchanges but 2-5x faster from 64 KiB up,
    # with flow control and no head-of-line stall (measurements in stack.py).
    muxer: Literal["yamux", "mplex"] = "yamux"
    max_message_size: int = DEFAULT_MAX_MESSAGE  # request and response payloads
    # Ask every peer on one long-lived stream (session.py; Yamux only). Off: a stream per
    # request, as peers that serve no sessions are asked anyway. Sessions are served either way.
    sessions: bool = True
    # ... except these, whose answers can be large (KEL pages of up to 1 MiB): on a session
    # they would hold up every answer queued behind them, so each goes on a stream of its own
    # (Yamux interleaves streams). Submissions and receipts, the busy path, use the session.
    stream_protocols: frozenset[str] = frozenset({"/dkms/1/query", "/dkms/1/governance"})
    request_timeout: float = 10.0  # default for `request`
    dial_timeout: float = 5.0
    read_timeout: float = 10.0  # for a requester to deliver its whole request
    handler_timeout: float = 30.0  # for our handler to answer
    max_inbound_requests: int = 256  # in progress at once; more get BUSY
    # ... holding at most this many payload bytes together (256 x 1 MiB would be 256 MiB)
    max_inbound_bytes: int = 8 << 20
    # Neighbours kept: at least D_low (mesh needs them), aiming for D.
    min_peers: int = 4
    target_peers: int = 6
    peer_exchange_limit: int = 32  # introductions handed out per peer-exchange answer
    maintenance_interval: float = 10.0  # seconds between neighbour checks
    shutdown_timeout: float = 3.0
    # Addresses to introduce ourselves with instead of the listen addresses (a node listening
    # on 0.0.0.0, or behind a port mapping, must say where others can reach it).
    announce: tuple[str, ...] = ()
    gossip: GossipConfig = field(default_factory=GossipConfig)

    def __post_init__(self) -> None:
        if self.muxer not in ("yamux", "mplex"):
            raise ValueError(f"unknown muxer {self.muxer!r}: use 'yamux' or 'mplex'")
        if self.max_message_size < 1:
            raise ValueError("max_message_size must be positive")
        if not 0 <= self.min_peers <= self.target_peers:
            raise ValueError("need 0 <= min_peers <= target_peers")
        for addr in self.announce:
            parse_dial_addr(addr)  # a bad announce address fails at start, not at a peer

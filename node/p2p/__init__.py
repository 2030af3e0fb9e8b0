"""The node's thin adapter over py-libp2p 0.8.1: identity, host, request/response, gossip.

Everything the runtime needs is importable from here; see `host.open_host` to start.
"""

from __future__ import annotations

from .config import GossipConfig, HostConfig
from .errors import (
    ListenError,
    MessageTooLarge,
    P2PError,
    PeerUnreachable,
    PublishRejected,
    Refused,
    RemoteP2PError,
    RequestTimeout,
)
from .framing import Response
from .gossip import Gossip, Subscription
from .host import P2PHost, Target, open_host
from .identity import (
    Introduction,
    NodeIdentity,
    format_introduction,
    parse_dial_addr,
    parse_introduction,
    peer_id_from_prefix,
    peer_name,
    prefix_from_peer_id,
)
from .neighbours import PEERS_PROTOCOL, ConnectReport
from .reqresp import Handler

__all__ = [
    "PEERS_PROTOCOL",
    "ConnectReport",
    "Gossip",
    "GossipConfig",
    "Handler",
    "HostConfig",
    "Introduction",
    "ListenError",
    "MessageTooLarge",
    "NodeIdentity",
    "P2PError",
    "P2PHost",
    "PeerUnreachable",
    "PublishRejected",
    "Refused",
    "RemoteP2PError",
    "RequestTimeout",
    "Response",
    "Subscription",
    "Target",
    "format_introduction",
    "open_host",
    "parse_dial_addr",
    "parse_introduction",
    "peer_id_from_prefix",
    "peer_name",
    "prefix_from_peer_id",
]

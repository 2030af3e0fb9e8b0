"""Node identity: one Ed25519 key is both the libp2p peer id and the KERI witness prefix.

A libp2p peer id of an Ed25519 key is the *identity* multihash of the key's protobuf
serialisation (`00 24 08 01 12 20 || key`), so the key can be read back out of the id. A KERI
non-transferable prefix is `B` + the same 32 bytes in CESR. Each therefore names the other,
and a controller that lists witness `B...` in its KEL can dial that witness with no directory.

An *introduction* is `PREFIX@MULTIADDR` (`B...@/ip4/127.0.0.1/tcp/4001`): who to expect and
where to find it. Noise checks on dial that the peer really holds the prefix's key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import multiaddr
from libp2p.crypto.ed25519 import Ed25519PublicKey, create_new_key_pair
from libp2p.crypto.keys import KeyPair, KeyType
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from dkms.protocol import cesr
from dkms.protocol.cesr import Codes
from dkms.protocol.crypto import Signer
from dkms.protocol.errors import ProtocolError

SEED_SIZE: Final = 32
# Transports this adapter dials; an introduction must name one of them.
_DIALABLE: Final = frozenset({"tcp"})
_HOSTS: Final = frozenset({"ip4", "ip6", "dns", "dns4", "dns6"})


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """A node's key pair, made from a 32-byte Ed25519 seed, and the names it goes by."""

    seed: bytes = field(repr=False)
    key_pair: KeyPair = field(init=False, repr=False, compare=False)
    peer_id: ID = field(init=False)
    prefix: str = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.seed, bytes) or len(self.seed) != SEED_SIZE:
            raise ValueError(f"an Ed25519 seed is {SEED_SIZE} bytes")
        key_pair = create_new_key_pair(self.seed)
        object.__setattr__(self, "key_pair", key_pair)
        object.__setattr__(self, "peer_id", ID.from_pubkey(key_pair.public_key))
        object.__setattr__(self, "prefix", Signer(self.seed, transferable=False).verfer)


def peer_id_from_prefix(prefix: str) -> ID:
    """The libp2p peer id of a `B` (non-transferable) or `D` (transferable) Ed25519 prefix."""
    try:
        raw = cesr.decode_key(prefix)
    except ProtocolError as exc:
        raise ValueError(f"not an Ed25519 prefix (B... or D...): {prefix!r}: {exc}") from None
    return ID.from_pubkey(Ed25519PublicKey.from_bytes(raw))


def prefix_from_peer_id(peer_id: ID) -> str:
    """The `B...` prefix of a peer id that inlines an Ed25519 key; ValueError otherwise."""
    key = peer_id.extract_public_key()
    if key is None or key.get_type() != KeyType.Ed25519:
        raise ValueError(f"peer id {peer_id} does not carry an Ed25519 key")
    return cesr.encode(Codes.ED25519N, key.to_bytes())


def peer_name(peer_id: ID) -> str:
    """How the adapter names a peer to its callers: its `B...` prefix, else base58 peer id."""
    try:
        return prefix_from_peer_id(peer_id)
    except ValueError:
        return peer_id.to_base58()


@dataclass(frozen=True, slots=True)
class Introduction:
    """Who a peer is (`prefix`) and where to dial it (`addr`, without a `/p2p/` part)."""

    prefix: str
    addr: multiaddr.Multiaddr

    @property
    def peer_id(self) -> ID:
        return peer_id_from_prefix(self.prefix)

    def peer_info(self) -> PeerInfo:
        return PeerInfo(self.peer_id, [self.addr])

    def __str__(self) -> str:
        return f"{self.prefix}@{self.addr}"


def parse_introduction(text: str) -> Introduction:
    """Parse `PREFIX@MULTIADDR`; a trailing `/p2p/<id>` must name the same peer as PREFIX."""
    if not isinstance(text, str):
        raise ValueError(f"an introduction is text, got {type(text).__name__}")
    prefix, at, addr_text = text.strip().partition("@")
    if not at:
        raise ValueError(f"introduction {text!r} has no '@': expected PREFIX@MULTIADDR")
    peer_id = peer_id_from_prefix(prefix)
    addr = parse_dial_addr(addr_text)
    p2p = _p2p_component(addr)
    if p2p is not None:
        if ID.from_base58(p2p) != peer_id:
            raise ValueError(
                f"introduction {text!r}: /p2p/{p2p} is not the peer of prefix {prefix}"
            )
        addr = addr.decapsulate(multiaddr.Multiaddr(f"/p2p/{p2p}"))
    return Introduction(prefix, addr)


def format_introduction(prefix: str, addr: multiaddr.Multiaddr | str) -> str:
    """`PREFIX@MULTIADDR`, checking both halves the way `parse_introduction` does."""
    return str(parse_introduction(f"{prefix}@{addr}"))


def parse_dial_addr(text: str) -> multiaddr.Multiaddr:
    """A multiaddr this adapter can dial: a host part and a TCP port; ValueError otherwise."""
    if not text:
        raise ValueError("empty multiaddr: expected e.g. /ip4/127.0.0.1/tcp/4001")
    try:
        addr = multiaddr.Multiaddr(text)
    except Exception as exc:  # the multiaddr package raises several unrelated types
        raise ValueError(f"bad multiaddr {text!r}: {exc}") from None
    names = [p.name for p in addr.protocols()]
    if not names or names[0] not in _HOSTS:
        raise ValueError(f"multiaddr {text!r} must start with /ip4, /ip6 or /dns*")
    if not _DIALABLE.intersection(names):
        raise ValueError(f"multiaddr {text!r} names no TCP port")
    if addr.value_for_protocol("tcp") == "0":
        raise ValueError(f"multiaddr {text!r}: port 0 cannot be dialed")
    return addr


def _p2p_component(addr: multiaddr.Multiaddr) -> str | None:
    if "p2p" not in (p.name for p in addr.protocols()):
        return None
    value: str = addr.value_for_protocol("p2p")
    return value

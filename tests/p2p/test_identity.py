"""Node identity: seed -> libp2p key pair, peer id and KERI prefix, and introductions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.secp256k1 import create_new_key_pair as secp256k1_key_pair
from libp2p.peer.id import ID

from dkms.node.p2p import (
    NodeIdentity,
    format_introduction,
    parse_dial_addr,
    parse_introduction,
    peer_id_from_prefix,
    peer_name,
    prefix_from_peer_id,
)
from dkms.protocol.crypto import Signer

SEED = bytes(range(32))
ADDR = "/ip4/127.0.0.1/tcp/4001"


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_seed_prefix_peer_id_round_trip(seed: bytes) -> None:
    node = NodeIdentity(seed)
    libp2p_id = ID.from_pubkey(create_new_key_pair(seed).public_key)
    assert node.peer_id == libp2p_id  # what libp2p itself derives for this key
    assert node.prefix == Signer(seed, transferable=False).verfer
    assert peer_id_from_prefix(node.prefix) == libp2p_id
    assert prefix_from_peer_id(libp2p_id) == node.prefix
    # The transferable form of the same key names the same peer.
    assert peer_id_from_prefix(Signer(seed).verfer) == libp2p_id


def test_peer_id_is_the_identity_multihash_of_the_key() -> None:
    node = NodeIdentity(SEED)
    key = Signer(SEED).public
    # identity multihash (0x00, 36 bytes) of protobuf {Type: Ed25519, Data: key}
    assert node.peer_id.to_bytes() == bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20]) + key
    assert str(node.peer_id).startswith("12D3KooW")


def test_seed_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        NodeIdentity(b"\x01" * 31)


def test_non_ed25519_peer_has_no_prefix() -> None:
    other = ID.from_pubkey(secp256k1_key_pair().public_key)
    with pytest.raises(ValueError, match="Ed25519"):
        prefix_from_peer_id(other)
    assert peer_name(other) == other.to_base58()
    assert peer_name(NodeIdentity(SEED).peer_id) == NodeIdentity(SEED).prefix


@pytest.mark.parametrize(
    "prefix",
    [
        "",
        "B",
        "Bshort",
        "E" + "A" * 43,  # a digest, not a key
        "BAOhB7_zzhC-HXDdGOdLwJln5NYwm6UNXx3chmQSVTG!",  # not base64url
        "ABC",
    ],
)
def test_bad_prefix_is_a_value_error(prefix: str) -> None:
    with pytest.raises(ValueError, match="not an Ed25519 prefix"):
        peer_id_from_prefix(prefix)


def test_introduction_round_trip() -> None:
    node = NodeIdentity(SEED)
    text = f"{node.prefix}@{ADDR}"
    intro = parse_introduction(text)
    assert intro.prefix == node.prefix
    assert str(intro.addr) == ADDR
    assert intro.peer_id == node.peer_id
    assert str(intro) == text == format_introduction(node.prefix, ADDR)
    assert intro.peer_info().addrs == [intro.addr]


def test_introduction_drops_a_matching_p2p_suffix() -> None:
    node = NodeIdentity(SEED)
    intro = parse_introduction(f"{node.prefix}@{ADDR}/p2p/{node.peer_id}")
    assert str(intro) == f"{node.prefix}@{ADDR}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (ADDR, "no '@'"),
        ("B" + "A" * 43, "no '@'"),
        ("Bnope@" + ADDR, "not an Ed25519 prefix"),
        ("{p}@", "empty multiaddr"),
        ("{p}@/ip4/300.1.1.1/tcp/1", "bad multiaddr"),
        ("{p}@not-a-multiaddr", "bad multiaddr"),
        ("{p}@/ip4/127.0.0.1/udp/4001", "no TCP port"),
        ("{p}@/tcp/4001", "must start with"),
        ("{p}@/ip4/127.0.0.1/tcp/0", "port 0"),
        ("{p}@" + ADDR + "/p2p/{other}", "is not the peer of prefix"),
    ],
)
def test_bad_introduction_says_what_is_wrong(text: str, message: str) -> None:
    node, other = NodeIdentity(SEED), NodeIdentity(b"\x07" * 32)
    with pytest.raises(ValueError, match=message):
        parse_introduction(text.format(p=node.prefix, other=other.peer_id))


def test_dial_addr_accepts_ip6_and_dns() -> None:
    assert str(parse_dial_addr("/ip6/::1/tcp/4001")) == "/ip6/::1/tcp/4001"
    assert (
        str(parse_dial_addr("/dns4/witness.example/tcp/4001")) == "/dns4/witness.example/tcp/4001"
    )

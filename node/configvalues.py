"""What a good value of one setting looks like: listen and dial multiaddrs, bootstrap peers,
identifier prefixes, log levels, host names.

`config.py` turns a file and flags into a `NodeConfig`; the checks of single values live here
so that every one says the same three things: what is wrong, and what a good value looks
like (`BadValue.expected`). They read text only (no network, no libp2p: a bad flag is refused
before py-libp2p is even imported), but accept only what the stack can use: py-libp2p 0.8.1's
TCP transport listens on an IP address and dials IP addresses and DNS names (`/dns`, `/dns4`,
`/dns6`, resolved when dialled); the node speaks no other transport (no UDP, QUIC or
WebSockets), and Noise checks a peer's key, so a peer is named by its `B...` prefix
(`PREFIX@MULTIADDR`) or by a libp2p peer id that inlines its Ed25519 key
(`MULTIADDR/p2p/12D3KooW...`).
"""

from __future__ import annotations

import ipaddress
from typing import Final

import base58
import multiaddr

from dkms.protocol import cesr
from dkms.protocol.cesr import Codes
from dkms.protocol.errors import ProtocolError
from dkms.protocol.location import MAX_ADDRESS, MAX_ADDRESSES

LOG_LEVELS: Final = ("debug", "info", "warning", "error")
MAX_ANNOUNCE: Final = MAX_ADDRESSES  # addresses a node announces: what its location record carries
LISTEN_EXAMPLE: Final = "/ip4/0.0.0.0/tcp/4001"
DIAL_EXAMPLE: Final = "/ip4/203.0.113.7/tcp/4001 or /dns4/node.example.org/tcp/4001"
BOOTSTRAP_EXAMPLE: Final = "PREFIX@/ip4/203.0.113.7/tcp/4001, or MULTIADDR/p2p/PEER_ID"
_HOSTS: Final = ("ip4", "ip6", "dns", "dns4", "dns6")
# A libp2p peer id of an Ed25519 key: the identity multihash (0x00, length 36) of the key's
# protobuf (field 1 KeyType = 1 Ed25519, field 2 the 32 bytes).
_ED25519_PEER_ID: Final = bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])


class BadValue(ValueError):
    """`problem` says what is wrong with a value, `expected` what a good one looks like."""

    def __init__(self, problem: str, expected: str) -> None:
        super().__init__(f"{problem} (expected {expected})")
        self.problem, self.expected = problem, expected


def listen_addr(text: str) -> str:
    """An address to listen on: /ip4 or /ip6, then /tcp/PORT (0: any free port)."""
    host, _port, rest = _split(text, LISTEN_EXAMPLE)
    if host[0] not in ("ip4", "ip6"):
        raise BadValue(
            "a DNS name cannot be listened on: listen on an IP address (0.0.0.0 for all"
            " interfaces) and --announce the name",
            LISTEN_EXAMPLE,
        )
    if rest:
        raise BadValue(f"a listen address ends at the port, not /{'/'.join(rest)}", LISTEN_EXAMPLE)
    return text


def dial_addr(text: str, *, expected: str = DIAL_EXAMPLE) -> str:
    """An address others can dial: a concrete IP address or DNS name, and a TCP port."""
    if len(text) > MAX_ADDRESS:
        raise BadValue(f"longer than {MAX_ADDRESS} characters", expected)
    host, port, rest = _split(text, expected)
    if rest:
        raise BadValue(f"an address ends at the port, not /{'/'.join(rest)}", expected)
    _dialable(host, port, expected)
    return text


def bootstrap_introduction(text: str) -> str:
    """A bootstrap peer as `PREFIX@MULTIADDR` (no `/p2p/` part): from that form, or from a
    libp2p multiaddr ending in `/p2p/PEER_ID` (the prefix read off the peer id)."""
    prefix, at, addr = text.partition("@")
    if not at:
        prefix, addr = "", text
    elif not prefix:
        raise BadValue("nothing before '@': the node's prefix goes there", BOOTSTRAP_EXAMPLE)
    host, port, rest = _split(addr, BOOTSTRAP_EXAMPLE)
    peer = ""
    if rest[:1] == ["p2p"] and len(rest) == 2:
        peer = rest[1]
    elif rest:
        raise BadValue(f"an address ends at the port, not /{'/'.join(rest)}", BOOTSTRAP_EXAMPLE)
    _dialable(host, port, BOOTSTRAP_EXAMPLE)
    if peer:
        named = _prefix_of_peer_id(peer)
        if prefix and named != prefix:
            raise BadValue(f"/p2p/{peer} is not the peer of prefix {prefix}", BOOTSTRAP_EXAMPLE)
        prefix = named
    elif not prefix:
        raise BadValue(
            "names no node: say whose address it is, by prefix or peer id", BOOTSTRAP_EXAMPLE
        )
    node_prefix(prefix, expected=BOOTSTRAP_EXAMPLE)
    return f"{prefix}@/{host[0]}/{host[1]}/tcp/{port}"


def node_prefix(text: str, *, expected: str = "a B... prefix of 44 characters") -> str:
    """A node's prefix: non-transferable Ed25519, `B` and 43 more characters."""
    try:
        cesr.decode(text, expect=Codes.ED25519N)
    except ProtocolError:
        raise BadValue(f"{text!r} is not a node prefix", expected) from None
    return text


def identifier_prefix(text: str) -> str:
    """An identifier's prefix: 44 characters of CESR, `E` (self-addressing), `D` or `B`."""
    try:
        cesr.decode(text, expect=(Codes.BLAKE3_256, Codes.ED25519, Codes.ED25519N))
    except ProtocolError:
        raise BadValue(
            "not an identifier prefix",
            "44 characters beginning E, D or B, as dkms id show prints",
        ) from None
    return text


def log_level(text: str) -> str:
    if text not in LOG_LEVELS:
        raise BadValue("not a log level", f"{', '.join(LOG_LEVELS[:-1])} or {LOG_LEVELS[-1]}")
    return text


def http_host(text: str) -> str:
    """Where /metrics and /health listen: an IP address, or localhost."""
    if text != "localhost":
        try:
            ipaddress.ip_address(text)
        except ValueError:
            raise BadValue("not an IP address", "127.0.0.1, ::1 or 0.0.0.0") from None
    return text


HTTP_LISTEN_EXAMPLE: Final = "127.0.0.1:8080, [::1]:8080 or 0.0.0.0:8080"


def http_listen(text: str) -> str:
    """Where the HTTP API listens: `HOST:PORT`, an IP address (IPv6 in brackets) or
    localhost, and a TCP port (0: any free port)."""
    http_listen_parts(text)
    return text


def http_listen_parts(text: str) -> tuple[str, int]:
    """(host, port) of a `HOST:PORT`; `BadValue` saying what is wrong."""
    host, colon, port = text.rpartition(":")
    if not colon or not host:
        raise BadValue("not HOST:PORT", HTTP_LISTEN_EXAMPLE)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            raise BadValue(f"{host!r} in brackets is not an IPv6 address", HTTP_LISTEN_EXAMPLE)
    elif ":" in host:
        raise BadValue("an IPv6 address goes in brackets", HTTP_LISTEN_EXAMPLE)
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise BadValue(f"{host!r} is not an IP address", HTTP_LISTEN_EXAMPLE) from None
    if not port.isdigit() or not port.isascii():
        raise BadValue(f"port {port!r} is not a number", HTTP_LISTEN_EXAMPLE)
    if int(port) > 65535:
        raise BadValue(f"port {int(port)} is above 65535", HTTP_LISTEN_EXAMPLE)
    return host, int(port)


def _split(text: str, expected: str) -> tuple[tuple[str, str], int, list[str]]:
    """((protocol, host), port, what follows the port), every part checked."""
    if not text:
        raise BadValue("empty", expected)
    if text.endswith("/"):
        raise BadValue("ends with '/'", expected)
    parts = text.split("/")
    if parts[0] != "" or len(parts) < 3 or parts[1] not in _HOSTS:
        raise BadValue("not a multiaddr starting /ip4/, /ip6/ or /dns4/", expected)
    proto, host = parts[1], parts[2]
    _host(proto, host, expected)
    if len(parts) < 5 or parts[3] != "tcp":
        if len(parts) > 3 and parts[3]:
            raise BadValue(
                f"transport {parts[3]} is not supported: this node speaks TCP only", expected
            )
        raise BadValue("no TCP port", expected)
    if not parts[4].isdigit() or not parts[4].isascii():
        raise BadValue(f"TCP port {parts[4]!r} is not a number", expected)
    port = int(parts[4])
    if port > 65535:
        raise BadValue(f"TCP port {port} is above 65535", expected)
    rest = parts[5:]
    if rest and rest[0] != "p2p":
        raise BadValue(f"transport {rest[0]} is not supported: this node speaks TCP only", expected)
    try:  # what follows the port (`/p2p/ID`) is the caller's to check, saying more
        multiaddr.Multiaddr("/".join(parts[:5]))
    except Exception as exc:  # the package raises several unrelated types; its own words
        raise BadValue(f"not a multiaddr: {exc}", expected) from None
    return (proto, host), port, rest


def _host(proto: str, host: str, expected: str) -> None:
    if proto in ("ip4", "ip6"):
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is None or address.version != int(proto[2]):
            raise BadValue(f"{host!r} is not an IPv{proto[2]} address", expected)
    elif not host or len(host) > 253:
        raise BadValue(f"{host!r} is not a DNS name", expected)


def _dialable(host: tuple[str, str], port: int, expected: str) -> None:
    if host[0] in ("ip4", "ip6") and ipaddress.ip_address(host[1]).is_unspecified:
        raise BadValue(
            f"{host[1]} means every interface here and cannot be dialled: name one", expected
        )
    if port == 0:
        raise BadValue("port 0 cannot be dialled", expected)


def _prefix_of_peer_id(peer: str) -> str:
    try:
        raw = base58.b58decode(peer)
    except ValueError:
        raw = b""
    if len(raw) != len(_ED25519_PEER_ID) + 32 or not raw.startswith(_ED25519_PEER_ID):
        raise BadValue(
            f"/p2p/{peer} is not the id of a dkms node (an Ed25519 peer id, 12D3KooW...)",
            BOOTSTRAP_EXAMPLE,
        )
    return cesr.encode(Codes.ED25519N, raw[len(_ED25519_PEER_ID) :])

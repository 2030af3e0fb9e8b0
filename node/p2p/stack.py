"""Building the py-libp2p 0.8.1 host: TCP, Noise, one muxer choice, no automatic dialing.

Departures from `libp2p.new_host()`, each for a measured or read reason:

- Security is Noise alone; `new_host` also offers TLS, SECIO and *plaintext*.
- Dials make one attempt (`RetryConfig(max_retries=0)`): the default retries three times with
  back-off, and the caller (request, neighbour upkeep) knows better when to try again.
- The swarm's auto-connector is replaced by one that does nothing: after any disconnect it
  dials up to 150 entries of the peerstore, which is `Neighbours`' decision in this node.
- Listening is checked. py-libp2p binds with SO_REUSEPORT, so a second node on a port already
  used by a node silently shares it (the kernel then splits incoming connections between the
  two); and when the bind fails it only logs, leaving a host that listens nowhere.

Muxer (`benchmarks/reqresp.py`, 2-core machine, responder in its own process, one stream per
request over Noise): for 300 B-1 KB payloads Mplex does ~600 round trips/s one at a time and
~1,070/s with 8 in flight, Yamux ~530 and ~750. But Mplex cuts every write into 4 KiB frames:
at 64 KiB it does 200-320/s to Yamux's 420-620, at 1 MB 19-28/s to 107-147. Mplex has no
flow control (a reader that lags stalls the whole connection for up to 5 s, then its stream
is reset), and py-libp2p's Mplex stream cannot be read and written at once (a pending read
locks writers out). Batched gossip and KEL queries carry large payloads and a witness must not
stall on one slow peer, so Yamux is the default; Mplex stays offered second, and
`HostConfig(muxer="mplex")` puts it first.
"""

from __future__ import annotations

import socket

import multiaddr
import trio
from libp2p import create_mplex_muxer_option, create_yamux_muxer_option, new_swarm
from libp2p.crypto.x25519 import create_new_key_pair as new_noise_key
from libp2p.host.basic_host import BasicHost
from libp2p.network.auto_connector import AutoConnector
from libp2p.network.config import ConnectionConfig, RetryConfig
from libp2p.network.swarm import Swarm
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

from . import hotpaths
from .config import HostConfig
from .errors import ListenError
from .guards import FaultLog, guard_stream_handler
from .identity import NodeIdentity
from .yamuxguard import YamuxGuard, cap_window


class _NoAutoConnect(AutoConnector):
    """An auto-connector that never dials: `Neighbours` decides whom we connect to."""

    async def maybe_connect(self) -> None:
        return

    async def run_background_task(self, nursery: trio.Nursery) -> None:
        return


def build_libp2p_host(
    identity: NodeIdentity, config: HostConfig, listen: multiaddr.Multiaddr, faults: FaultLog
) -> BasicHost:
    """A not-yet-running host; `listen` picks the transport (TCP) it will listen with, and
    `faults` counts what peers' streams broke (`guards.guard_stream_handler`)."""
    noise = NoiseTransport(identity.key_pair, noise_privkey=new_noise_key().private_key)
    muxers = create_yamux_muxer_option() if config.muxer == "yamux" else create_mplex_muxer_option()
    cap_window()
    swarm = new_swarm(
        key_pair=identity.key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt=muxers,
        listen_addrs=[listen],
        retry_config=RetryConfig(max_retries=0),  # one attempt per dial; callers retry
        connection_config=ConnectionConfig(dial_timeout=config.dial_timeout),
    )
    assert isinstance(swarm, Swarm)  # what new_swarm builds; its type says only INetworkService
    swarm.auto_connector = _NoAutoConnect(swarm)
    host = BasicHost(swarm)
    guard_stream_handler(swarm, faults)  # after BasicHost installed its own handler
    YamuxGuard(faults).install(swarm)
    hotpaths.install()
    return host


def check_port_free(addr: multiaddr.Multiaddr) -> None:
    """`ListenError` if another socket listens on `addr`'s port (port 0 is always free).

    A plain bind (SO_REUSEADDR, so a restart's TIME_WAIT does not count) fails where a
    listener already is, SO_REUSEPORT or not. Another process could still take the port in
    between: `listening_addrs` checks again once we listen.
    """
    names = [p.name for p in addr.protocols()]
    port = int(addr.value_for_protocol("tcp"))
    if port == 0 or names[0] not in ("ip4", "ip6"):
        return
    family = socket.AF_INET if names[0] == "ip4" else socket.AF_INET6
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((addr.value_for_protocol(names[0]), port))
        except OSError as exc:
            raise ListenError(f"cannot listen on {addr}: {exc.strerror or exc}") from None


def listening_addrs(host: BasicHost, wanted: multiaddr.Multiaddr) -> list[multiaddr.Multiaddr]:
    """Where `host` listens; `ListenError` if nowhere (py-libp2p only logs a failed bind)."""
    addrs = list(host.get_transport_addrs())
    if not addrs:
        raise ListenError(f"cannot listen on {wanted} (see the libp2p log for why)")
    return addrs


def parse_listen_addr(text: str) -> multiaddr.Multiaddr:
    """A TCP multiaddr to listen on; port 0 asks the system for a free one."""
    try:
        addr = multiaddr.Multiaddr(text)
    except Exception as exc:
        raise ValueError(f"bad listen multiaddr {text!r}: {exc}") from None
    if "tcp" not in [p.name for p in addr.protocols()]:
        raise ValueError(f"listen multiaddr {text!r} names no TCP port")
    return addr

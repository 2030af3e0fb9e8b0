"""The machine's own IP addresses: what a node listening on 0.0.0.0 or :: can be reached at.

A listener on the unspecified address accepts on every interface, but nobody can dial
"0.0.0.0"; a node that is not told what to announce (`HostConfig.announce`) names each
interface's address instead, routable ones first and loopback last (loopback is only of use
to nodes on the same machine). IPv4 addresses come from the `SIOCGIFADDR` ioctl per interface
(Linux), else from resolving the host name; IPv6 ones from `/proc/net/if_inet6` (Linux),
link-local ones left out (they need a zone to dial).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import socket
import struct
from pathlib import Path
from typing import Final

_SIOCGIFADDR: Final = 0x8915
_IF_INET6: Final = Path("/proc/net/if_inet6")


def local_addresses(family: int) -> list[str]:
    """The machine's addresses of `family` (AF_INET or AF_INET6), loopback last, no duplicates."""
    found = _ipv4() if family == socket.AF_INET else _ipv6()
    unique = list(dict.fromkeys(found))
    loopback = "127.0.0.1" if family == socket.AF_INET else "::1"
    routable = [a for a in unique if not ipaddress.ip_address(a).is_loopback]
    return [*routable, loopback]


def _ipv4() -> list[str]:
    found: list[str] = []
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
            except OSError:  # no IPv4 address on this interface
                continue
            found.append(socket.inet_ntoa(answer[20:24]))
    if not found:
        with contextlib.suppress(OSError):
            infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
            found = [str(info[4][0]) for info in infos]
    return found


def _ipv6() -> list[str]:
    found: list[str] = []
    with contextlib.suppress(OSError):
        for line in _IF_INET6.read_text().splitlines():
            fields = line.split()
            if not fields or len(fields[0]) != 32:
                continue
            with contextlib.suppress(ValueError):
                addr = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
                if not addr.is_link_local:
                    found.append(str(addr))
    return found

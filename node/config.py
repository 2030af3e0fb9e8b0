"""One frozen configuration for a node, from a TOML file and command-line flags (flags win).

Like ddht's boot_info: everything the node needs to start is checked here, once, and bad input
is a `ConfigError` with one line saying what to fix.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Final

ROLES: Final = ("witness", "watcher")
UNITS: Final = {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
_SIZE: Final = re.compile(r"\s*(\d+)\s*([A-Za-z]*)\s*")
SIZES: Final = (
    "store_quota",
    "unwitnessed_quota",
    "escrow_bytes",
)  # settings in bytes, units allowed


class ConfigError(Exception):
    """The configuration cannot be used; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    role: str = "witness"
    data_dir: Path = Path("dkms-node")
    listen: str = "/ip4/127.0.0.1/tcp/0"
    announce: tuple[str, ...] = ()  # addresses told to others (default: the listen addresses)
    bootstrap: tuple[str, ...] = ()
    http_port: int | None = None  # serve /metrics and /health on this port (off when unset)
    http_host: str = "127.0.0.1"
    log_level: str = "info"
    request_timeout: float = 5.0  # seconds a peer has to answer a request
    max_message: int = 1 << 20  # bytes; libp2p gossip drops larger messages anyway
    kel_page: int = 256 * 1024  # bytes at most in one page of a KEL answer (roles/pages.py)
    escrow_entries: int = 10_000
    escrow_age: float = 3600.0  # seconds an escrowed event may wait
    escrow_bytes: int = 16 << 20  # events waiting in escrows (and a quarter more for receipts)
    peer_rate: float = 1000.0  # requests per second one peer may make (bursts of twice that)
    store_quota: int = 4 << 30  # bytes of events and receipts stored (roles/storage.py)
    unwitnessed_quota: int = 64 << 20  # bytes held for identifiers without witnesses
    governance: str = ""  # watcher: the governance identifier's prefix (required)
    watch: tuple[str, ...] = ()  # watcher: only these identifiers (all when empty)
    anomaly_after: float = 30.0  # watcher: seconds before a missing receipt is an anomaly

    def check(self) -> NodeConfig:
        if self.role not in ROLES:
            raise ConfigError(f"role must be one of {', '.join(ROLES)}, not {self.role!r}")
        if not self.listen.startswith("/ip4/") and not self.listen.startswith("/ip6/"):
            raise ConfigError(
                f"listen must be a multiaddr like /ip4/0.0.0.0/tcp/4001, not {self.listen!r}"
            )
        if self.http_port is not None and not 0 < self.http_port < 65536:
            raise ConfigError(f"http_port must be a TCP port, not {self.http_port}")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError("log_level must be debug, info, warning or error")
        if self.role == "watcher" and not self.governance:
            raise ConfigError(
                "a watcher needs --governance PREFIX: the identifier whose roster appoints it"
            )
        if self.role != "watcher" and (self.governance or self.watch):
            raise ConfigError("governance and watch are watcher settings (--role watcher)")
        for name in ("request_timeout", "escrow_age", "peer_rate", "anomaly_after"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        for name in ("max_message", "escrow_entries", "kel_page", *SIZES):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.kel_page > self.max_message // 2:
            raise ConfigError("kel_page must be at most half of max_message")
        return self


_RENAMED: Final = {"metrics_port": "http_port", "metrics_host": "http_host"}

_TYPES: Final[dict[str, type]] = {
    "role": str,
    "data_dir": str,
    "listen": str,
    "announce": list,
    "bootstrap": list,
    "http_port": int,
    "http_host": str,
    "log_level": str,
    "request_timeout": float,
    "max_message": int,
    "kel_page": int,
    "escrow_entries": int,
    "escrow_age": float,
    "escrow_bytes": int,
    "peer_rate": float,
    "store_quota": int,
    "unwitnessed_quota": int,
    "governance": str,
    "watch": list,
    "anomaly_after": float,
}


def load(path: Path | None = None, **flags: Any) -> NodeConfig:
    """Defaults, then the TOML file at `path`, then the flags that are not None."""
    values: dict[str, Any] = {}
    if path is not None:
        values.update(_read_toml(path))
    values.update({k: v for k, v in flags.items() if v is not None and v != ()})
    for old, new in _RENAMED.items():  # older names still read
        if old in values:
            values.setdefault(new, values.pop(old))
    unknown = set(values) - {f.name for f in fields(NodeConfig)}
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    config = NodeConfig()
    converted = {k: _convert(k, v) for k, v in values.items()}
    return replace(config, **converted).check()


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    node = data.get("node", data)  # settings may sit at the top level or under [node]
    if not isinstance(node, dict):
        raise ConfigError(f"config file {path}: [node] must be a table")
    return {k.replace("-", "_"): v for k, v in node.items()}


def size(name: str, value: Any) -> int:
    """A number of bytes: an integer, or a string with a binary unit ("64 MiB", "4GiB")."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is None or match.group(2) not in UNITS:
        raise ConfigError(
            f"{name} must be a number of bytes, optionally with a unit (KiB, MiB, GiB, TiB),"
            f" like 64MiB, not {value!r}"
        )
    return int(match.group(1)) * UNITS[match.group(2)]


def _convert(name: str, value: Any) -> Any:
    if name in SIZES:
        return size(name, value)
    expected = _TYPES.get(name)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if expected is list and isinstance(value, tuple):
        value = list(value)
    if name == "data_dir" and isinstance(value, Path):
        value = str(value)
    if expected is not None and (not isinstance(value, expected) or isinstance(value, bool)):
        raise ConfigError(f"{name} must be a {expected.__name__}, not {value!r}")
    if name == "data_dir":
        return Path(value).expanduser()
    if name == "bootstrap":
        if not all(isinstance(v, str) for v in value):
            raise ConfigError("bootstrap must be a list of multiaddrs or PREFIX@MULTIADDR")
        return tuple(value)
    if name == "announce":
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(
                "announce must be a list of multiaddrs like /ip4/203.0.113.7/tcp/4001"
            )
        return tuple(value)
    if name == "watch":
        if not all(isinstance(v, str) for v in value):
            raise ConfigError("watch must be a list of identifier prefixes")
        return tuple(value)
    return value


def file_log_level(path: Path) -> str | None:
    """The `log_level` the config file at `path` sets now (what SIGHUP re-reads), or None."""
    value = _read_toml(path).get("log_level")
    if value is None:
        return None
    if value not in ("debug", "info", "warning", "error"):
        raise ConfigError(
            f"config file {path}: log_level must be debug, info, warning or error, not {value!r}"
        )
    return str(value)

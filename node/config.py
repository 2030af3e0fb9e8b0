"""One frozen configuration for a node, from a TOML file and command-line flags (flags win).

Theory of operation: `load(path, **flags)` starts from the defaults, lays the file's settings
over them and then the flags, converts each value to its type (a flag is text; a file's value
has a TOML type) and checks it (`NodeConfig.check`, also for a config built in code). All of
this happens before anything starts: nothing is created, listened on or dialled. Every
mistake is one `ConfigError` line: where the value came from (`--listen`, or
`node.toml: listen`), the value, what is wrong with it, and what a good one looks like
(`configvalues.py` holds the checks of single values). A file holds its settings at the top
level or in a `[node]` table, not both; any other key or table, at any level, is an error (a
misspelt setting must not be dropped silently).
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from dkms.node import configvalues as values
from dkms.node.configvalues import BadValue

ROLES: Final = ("witness", "watcher")
UNITS: Final = {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
_SIZE: Final = re.compile(r"\s*(\d+)\s*([A-Za-z]*)\s*")
SIZES: Final = (
    "max_message",
    "kel_page",
    "store_quota",
    "unwitnessed_quota",
    "escrow_bytes",
)  # settings in bytes, units allowed
_SIZE_EXAMPLE: Final = (
    "a whole number of bytes, optionally with a unit KiB, MiB, GiB or TiB, like 64MiB"
)


class ConfigError(Exception):
    """The configuration cannot be used; the message (one line) says what to fix."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    role: str = "witness"
    data_dir: Path = Path("dkms-node")
    listen: str = "/ip4/127.0.0.1/tcp/0"
    announce: tuple[str, ...] = ()  # addresses told to others (default: the listen addresses)
    bootstrap: tuple[str, ...] = ()
    http_port: int | None = None  # serve /metrics and /health on this port (off when unset)
    http_host: str = "127.0.0.1"
    http_listen: str | None = None  # HOST:PORT of the HTTP API (node/http/; off when unset)
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
    reconcile_every: float = 30.0  # watcher: seconds between reconciliations (0: never)

    def check(self, labels: Mapping[str, str] | None = None) -> NodeConfig:
        """This config, if every setting is usable; else `ConfigError`. `labels` name where
        each setting came from (`--listen`, `node.toml: listen`), for the message."""
        where = dict(labels or {})

        def bad(name: str, value: Any, problem: str, expected: str) -> ConfigError:
            return ConfigError(
                f"{where.get(name, name)} {_show(value)}: {problem} (expected {expected})"
            )

        for name, check in _VALUE_CHECKS.items():
            items = getattr(self, name)
            if items is None:  # a setting that is off (http_listen)
                continue
            for item in items if isinstance(items, tuple) else (items,):
                try:
                    check(item)
                except BadValue as err:
                    raise bad(name, item, err.problem, err.expected) from None
        if len(self.announce) > values.MAX_ANNOUNCE:
            raise ConfigError(
                f"{where.get('announce', 'announce')}: {len(self.announce)} addresses, too many"
                f" (expected at most {values.MAX_ANNOUNCE}: a location record carries"
                f" {values.MAX_ANNOUNCE})"
            )
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise bad(
                "data_dir",
                str(self.data_dir),
                "not a directory",
                "a directory, or a path where one can be made",
            )
        if self.http_port is not None and not 0 < self.http_port < 65536:
            raise bad("http_port", self.http_port, "not a TCP port", "1-65535")
        for name in ("request_timeout", "escrow_age", "anomaly_after"):
            number = getattr(self, name)
            if not (number > 0 and math.isfinite(number)):
                raise bad(name, number, "not a positive number", "a number of seconds, like 30")
        if not (self.reconcile_every >= 0 and math.isfinite(self.reconcile_every)):
            raise bad(
                "reconcile_every",
                self.reconcile_every,
                "not a number of seconds",
                "0 for never, or a number of seconds, like 30",
            )
        if not (self.peer_rate > 0 and math.isfinite(self.peer_rate)):
            raise bad(
                "peer_rate",
                self.peer_rate,
                "not a positive number",
                "requests per second, like 1000",
            )
        if self.escrow_entries < 1:
            raise bad(
                "escrow_entries", self.escrow_entries, "must be at least 1", "a count, like 10000"
            )
        for name in SIZES:
            if getattr(self, name) < 1:
                raise bad(name, getattr(self, name), "must be at least 1 byte", _SIZE_EXAMPLE)
        if self.kel_page > self.max_message // 2:
            raise bad(
                "kel_page",
                self.kel_page,
                f"more than half of max_message, {self.max_message}",
                f"at most {self.max_message // 2}",
            )
        if self.role == "watcher" and not self.governance:
            raise ConfigError(
                "a watcher needs --governance PREFIX (config: governance): the identifier"
                " whose roster appoints it"
            )
        if self.role != "watcher":
            for name in ("governance", "watch"):
                if getattr(self, name):
                    raise bad(name, getattr(self, name), "is a watcher setting", "--role watcher")
        return self


def _role(text: str) -> str:
    if text not in ROLES:
        raise BadValue("not a role", " or ".join(ROLES))
    return text


def _governance(text: str) -> str:
    return values.identifier_prefix(text) if text else text


_VALUE_CHECKS: Final[dict[str, Callable[[str], str]]] = {
    "role": _role,
    "listen": values.listen_addr,
    "announce": values.dial_addr,
    "bootstrap": values.bootstrap_introduction,
    "http_host": values.http_host,
    "http_listen": values.http_listen,
    "log_level": values.log_level,
    "governance": _governance,
    "watch": values.identifier_prefix,
}

_RENAMED: Final = {"metrics_port": "http_port", "metrics_host": "http_host"}

# Each setting's kind: how a value of it is read (`_convert`), and its example for messages.
_KINDS: Final[dict[str, str]] = {
    "role": "text",
    "data_dir": "path",
    "listen": "text",
    "announce": "list",
    "bootstrap": "list",
    "http_port": "int",
    "http_host": "text",
    "http_listen": "text",
    "log_level": "text",
    "request_timeout": "float",
    "max_message": "size",
    "kel_page": "size",
    "escrow_entries": "int",
    "escrow_age": "float",
    "escrow_bytes": "size",
    "peer_rate": "float",
    "store_quota": "size",
    "unwitnessed_quota": "size",
    "governance": "text",
    "watch": "list",
    "anomaly_after": "float",
    "reconcile_every": "float",
}
_LIST_EXAMPLES: Final = {
    "announce": f'a list of multiaddrs, like ["{values.DIAL_EXAMPLE.split()[0]}"]',
    "bootstrap": '["PREFIX@/ip4/203.0.113.7/tcp/4001"]',
    "watch": '["E..."], identifier prefixes',
}


def flag_name(name: str) -> str:
    """The `dkms-node run` flag of a setting (`--http-port` for http_port)."""
    return "--" + name.replace("_", "-")


def load(path: Path | None = None, **flags: Any) -> NodeConfig:
    """Defaults, then the TOML file at `path`, then the flags that are not None."""
    settings: dict[str, Any] = {}
    labels: dict[str, str] = {}
    texts: set[str] = set()  # settings given as text on the command line
    if path is not None:
        settings, labels = _settings(path)
    for given, value in flags.items():
        if value is None or value == ():
            continue
        name = _RENAMED.get(given, given)
        if name not in _KINDS:
            raise ConfigError(f"unknown setting {name!r}")
        settings[name], labels[name] = value, flag_name(name)
        texts.add(name)
    converted = {k: _convert(k, v, labels[k], k in texts) for k, v in settings.items()}
    return replace(NodeConfig(), **converted).check(labels)


def _read_toml(path: Path) -> dict[str, Any]:
    """The settings the file at `path` holds (names with `_`), checked for unknown keys."""
    return _settings(path)[0]


def _settings(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The file's settings (names with `_`, old names renamed), and where each was written."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"--config {str(path)!r}: no such file (expected a TOML file)") from None
    except IsADirectoryError:
        raise ConfigError(f"--config {str(path)!r}: a directory (expected a TOML file)") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    except OSError as err:
        raise ConfigError(f"--config {str(path)!r}: cannot be read: {err.strerror}") from None
    node: Any = data
    if "node" in data:
        node = data["node"]
        if not isinstance(node, dict):
            raise ConfigError(f"{path}: node {_show(node)}: not a table (expected a [node] table)")
        beside = sorted(k for k in data if k != "node")
        if beside:
            raise ConfigError(
                f"{path}: {beside[0]!r} is outside the [node] table (expected every setting"
                " in [node], or no [node] table)"
            )
    settings: dict[str, Any] = {}
    labels: dict[str, str] = {}
    for key, value in node.items():
        name = key.replace("-", "_")
        name = _RENAMED.get(name, name)
        if name not in _KINDS:
            raise ConfigError(f"{path}: {_unknown(key, value, 'node' in data)}")
        if name in settings:
            first = labels[name].removeprefix(f"{path}: ")
            raise ConfigError(f"{path}: {first!r} and {key!r} both set {name} (expected one)")
        settings[name], labels[name] = value, f"{path}: {key}"
    return settings, labels


def _unknown(key: str, value: Any, in_node: bool) -> str:
    what = (
        f"table [{'node.' if in_node else ''}{key}]"
        if isinstance(value, dict)
        else f"setting {key!r}"
    )
    close = difflib.get_close_matches(key.replace("-", "_"), [*_KINDS, *_RENAMED], n=1)
    hint = (
        f"did you mean {close[0]!r}?" if close else "the settings are listed in README.md, Using it"
    )
    return f"unknown {what} ({hint})"


def size(name: str, value: Any) -> int:
    """A number of bytes: an integer, or a string with a binary unit ("64 MiB", "4GiB")."""
    try:
        return _size(value)
    except BadValue as err:
        raise ConfigError(f"{name} {_show(value)}: {err}") from None


def _size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is None or match.group(2) not in UNITS:
        raise BadValue("not a number of bytes", _SIZE_EXAMPLE)
    return int(match.group(1)) * UNITS[match.group(2)]


def _convert(name: str, value: Any, label: str, text: bool) -> Any:
    """`value` as the setting's type; `text`: it came from the command line, as text."""
    kind = _KINDS[name]
    try:
        if kind == "size":
            return _size(value)
        if kind == "path":
            if isinstance(value, Path):
                value = str(value)
            if not isinstance(value, str) or not value:
                raise BadValue("not a directory name", "a path, like ~/witness")
            return Path(value).expanduser()
        if kind == "text":
            if not isinstance(value, str):
                raise BadValue("not text", 'a string, like "..."')
            return value
        if kind == "list":
            if isinstance(value, tuple):
                value = list(value)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise BadValue("not a list of strings", _LIST_EXAMPLES[name])
            return tuple(value)
        return _number(kind, value, text)
    except BadValue as err:
        raise ConfigError(f"{label} {_show(value)}: {err}") from None


def _number(kind: str, value: Any, text: bool) -> int | float:
    if isinstance(value, str) and text:
        try:
            return int(value) if kind == "int" else float(value)
        except ValueError:
            pass
    elif kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind == "int":
        raise BadValue("not a whole number", "digits, like 4001")
    raise BadValue("not a number", "a number, like 30 or 0.5")


def _show(value: Any) -> str:
    """A value as a message shows it: text quoted, numbers plain, long ones cut."""
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, float):
        return f"{value:g}"
    shown = repr(value) if not isinstance(value, int) or isinstance(value, bool) else str(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


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

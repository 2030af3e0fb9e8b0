"""How much py-libp2p says in our logs."""

from __future__ import annotations

import logging
from typing import Final

LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def quiet_libp2p(level: int = logging.CRITICAL) -> None:
    """py-libp2p logs routine events (a peer going away, a protocol a peer does not serve)
    at ERROR; our own log says what matters, so libp2p's speaks only when asked (debug)."""
    logging.getLogger("libp2p").setLevel(level)
    logging.getLogger("multiaddr").setLevel(level)


class _LibraryRootRecords(logging.Filter):
    """Drops what py-libp2p logs on the root logger (its `swarm_connection` calls
    `logging.warning` directly: "Error while closing muxed connection", routine when a peer
    goes away), unless the node logs at debug."""

    def __init__(self) -> None:
        super().__init__()
        self.debug = False

    def filter(self, record: logging.LogRecord) -> bool:
        return self.debug or "/libp2p/" not in record.pathname.replace("\\", "/")


_ROOT_FILTER: Final = _LibraryRootRecords()


def set_log_level(level: str) -> None:
    """The node's log level: `debug` lets libp2p's own logs through (not the multiaddr
    parser's, a dozen lines per address parsed), any other level keeps them out."""
    root = logging.getLogger()
    root.setLevel(LEVELS[level])
    if _ROOT_FILTER not in root.filters:
        root.addFilter(_ROOT_FILTER)
    _ROOT_FILTER.debug = level == "debug"
    quiet_libp2p(logging.NOTSET if level == "debug" else logging.CRITICAL)
    if level == "debug":
        logging.getLogger("multiaddr").setLevel(logging.WARNING)

"""How much py-libp2p says in our logs."""

from __future__ import annotations

import logging


def quiet_libp2p(level: int = logging.CRITICAL) -> None:
    """py-libp2p logs routine events (a peer going away, a protocol a peer does not serve)
    at ERROR; our own log says what matters, so libp2p's speaks only when asked (debug)."""
    logging.getLogger("libp2p").setLevel(level)
    logging.getLogger("multiaddr").setLevel(level)

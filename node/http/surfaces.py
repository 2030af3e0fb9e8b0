"""Which routes a node serves over HTTP: the JSON API for applications (`api.py`); keripy's
OOBIs (`oobis.py`), reads (`kelreads.py`: `/ksn`, `/log`, `/query`) and, on witnesses, its
witness surface (`witnessing.py`: `POST /`, `/receipts`, the mailbox)."""

from __future__ import annotations

from collections.abc import Callable

from dkms.protocol.crypto import Signer

from .api import JsonApi
from .app import HttpApp, HttpLimits, Node
from .kelreads import KelReads
from .location import OwnLocation
from .oobis import Oobis
from .witnessing import KeriWitness


def node_app(
    node: Node,
    prefix: str,
    *,
    watcher: bool,
    limits: HttpLimits,
    timeout: float,
    oobi: tuple[Signer, Callable[[], str], str] | None = None,
) -> HttpApp:
    """The HTTP app of the node `prefix` (a watcher, or a witness); `timeout` bounds each
    request it hands the role (as `request_timeout` does for libp2p's). `oobi`: the node's
    key, its HTTP URL and start time, for the OOBI routes (`oobis.py`) and its location
    record (`location.py`)."""
    routes = JsonApi(node, prefix, watcher=watcher, timeout=timeout).routes()
    if oobi is not None:
        routes += Oobis(node, *oobi, timeout=timeout).routes()
        routes += KelReads(node, oobi[0], timeout=timeout).routes()  # keripy's /ksn /log /query
        routes += OwnLocation(node, prefix, timeout=timeout).routes()  # its libp2p addresses
    if not watcher:  # keripy's witness endpoints (`witnessing.py`)
        routes += KeriWitness(node, prefix, timeout=timeout).routes()
    return HttpApp(node, routes, limits)

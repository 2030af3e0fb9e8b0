"""Which routes a node serves over HTTP: the JSON API for applications (`api.py`) today;
keripy's witness surface (`POST /`, `/receipts`, `/oobi/...`) joins here as more routes."""

from __future__ import annotations

from .api import JsonApi
from .app import HttpApp, HttpLimits, Node


def node_app(
    node: Node, prefix: str, *, watcher: bool, limits: HttpLimits, timeout: float
) -> HttpApp:
    """The HTTP app of the node `prefix` (a watcher, or a witness); `timeout` bounds each
    request it hands the role (as `request_timeout` does for libp2p's)."""
    routes = JsonApi(node, prefix, watcher=watcher, timeout=timeout).routes()
    return HttpApp(node, routes, limits)

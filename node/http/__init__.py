"""The node's HTTP adapter: an ASGI app (`app.py`) served by hypercorn on trio (`server.py`).

Like `node/p2p/`, it holds no protocol logic: a request becomes the same role request a
libp2p one does (`Runtime.answer`), as the client's pseudo-peer. `api.py` is the JSON API for
applications; other surfaces join it as more routes (`routing.py`).
"""

from __future__ import annotations

from .api import JsonApi
from .app import HttpApp, HttpLimits, Node, pseudo_peer
from .routing import HttpError, HttpRequest, HttpResponse, Route, Router
from .server import Listening, listen_http, serve_http, serve_listening
from .surfaces import node_app

__all__ = [
    "HttpApp",
    "HttpError",
    "HttpLimits",
    "HttpRequest",
    "HttpResponse",
    "JsonApi",
    "Listening",
    "Node",
    "Route",
    "Router",
    "listen_http",
    "node_app",
    "pseudo_peer",
    "serve_http",
    "serve_listening",
]

"""Errors of the p2p adapter: one root, `P2PError`.

A request either gets an answer (`Response`, whose `ok` may be False: the peer refused) or
raises one of these because no answer came: the peer could not be reached, did not answer in
time, would not take the protocol, or broke the wire format. Parse errors of introductions and
multiaddrs are plain `ValueError`s: they are the caller's input, not the network's.
"""

from __future__ import annotations


class P2PError(Exception):
    """Root of every error raised by `dkms.node.p2p`."""


class ListenError(P2PError, OSError):
    """We cannot listen where we were asked to (the port is taken, the address is not ours)."""


class PeerUnreachable(P2PError):
    """No connection could be made (refused, no route, wrong identity, dial timed out)."""


class RequestTimeout(P2PError):
    """The peer did not answer within the request's timeout."""


class Refused(P2PError):
    """The peer would not take the request at all (protocol not served, stream reset)."""


class MessageTooLarge(P2PError, ValueError):
    """A local payload exceeds the configured maximum; nothing was sent."""


class PublishRejected(P2PError):
    """Our own validator rejects a payload we were asked to publish; nothing was sent."""


class RemoteP2PError(P2PError):
    """The peer broke the wire format; `reason` says how, in words fit for a log or a score."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)

"""Errors of the protocol layer.

One root, `ProtocolError`, split the h11 way:

- `LocalProtocolError`: the caller misused the API (built an event with impossible
  arguments). It is a bug on our side of the wire.
- `RemoteProtocolError`: bytes from outside are wrong. It carries a plain-words `reason`
  (what the peer should be told) and, where known, the byte `offset` in the stream read.

Escrow and duplicity are not errors: the validator reports them as results.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Root of every error raised by `dkms.protocol`."""


class LocalProtocolError(ProtocolError):
    """The API was used wrongly (bad builder arguments, unknown code asked for)."""


class RemoteProtocolError(ProtocolError):
    """Input from outside is malformed or invalid; `reason` says what, `offset` where."""

    def __init__(self, reason: str, offset: int | None = None) -> None:
        self.reason = reason
        self.offset = offset
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{reason}{where}")

    def at(self, base: int) -> RemoteProtocolError:
        """Return the same error with its offset shifted by `base` (for nested parsing)."""
        return type(self)(self.reason, (self.offset or 0) + base)


class ParseError(RemoteProtocolError):
    """Bytes could not be framed or decoded (bad counter, truncated primitive, bad body)."""


class EventError(RemoteProtocolError):
    """An event decoded but breaks KERI's rules for its own fields (bad SAID, bad field)."""


class EvidenceError(RemoteProtocolError):
    """A piece of duplicity evidence does not prove what it claims."""


class RosterError(RemoteProtocolError):
    """A governance roster is malformed, or not signed by the governance's current keys."""


class LocationError(RemoteProtocolError):
    """A node's location record is not signed by the node it names."""

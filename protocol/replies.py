"""KERI `rpy` (reply) messages: a signer's word on its endpoints, `/loc/scheme` and `/end/role/*`,
and a witness's key state notice, `/ksn/{eid}`.

Theory of operation: a reply is a routed message (`routed.py`) whose `a` carries the route's
data. A witness states where it listens with `/loc/scheme` (`a: {eid, scheme, url}`: `eid` is
the witness, who signs) and that it is its own controller with `/end/role/add` (`a: {cid, role,
eid}`: `cid` signs). keripy writes both with `dt` the caller gives (this module reads no clock)
and a `-V` group holding the witness's `-CAB` couple; `loc_scheme` and `end_role` build the
same bytes for the same key, url and dt. `read_reply` parses a reply with its attachment text
and says who had to sign it and whether they did: `eid` for a location, `cid` for a role.
Which of two replies is newer (`dt`) is the reader's decision. `key_state_notice` writes the
`/ksn` reply keripy's witness answers `GET /ksn` with: keripy's key state record, signed the
same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from . import crypto
from .crypto import Signer
from .errors import EventError, LocalProtocolError
from .events import Kind
from .keystate import Authority
from .routed import (
    Endorsed,
    Endorsements,
    Routed,
    build_routed,
    check_endorsement,
    endorse_couple,
    parse_endorsements,
    parse_routed,
)
from .signing import Verifier

LOC_SCHEME: Final = "/loc/scheme"
END_ROLE_ADD: Final = "/end/role/add"
END_ROLE_CUT: Final = "/end/role/cut"
SCHEMES: Final = frozenset({"http", "https", "tcp"})
ROLES: Final = frozenset(
    {"controller", "witness", "registrar", "watcher", "judge", "juror", "peer", "mailbox", "agent"}
)
MAX_URL: Final = 2048
# keripy's key state record (`KeyStateRecord`), the data of a `/ksn/{eid}` reply, in its order.
KSN_FIELDS: Final = (
    "vn", "i", "s", "p", "d", "f", "dt", "et", "kt", "k", "nt", "n", "bt", "b", "c", "ee", "di",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class LocScheme:
    """`/loc/scheme`: endpoint `eid` is reached at `url` with `scheme`."""

    eid: str
    scheme: str
    url: str


@dataclass(frozen=True, slots=True)
class EndRole:
    """`/end/role/add` (or `cut`): controller `cid` gives (takes) `role` to endpoint `eid`."""

    cid: str
    role: str
    eid: str
    add: bool = True


@dataclass(frozen=True, slots=True)
class Reply:
    """A parsed reply: its body, what it says, and the signatures attached to it."""

    message: Routed
    says: LocScheme | EndRole | None  # None for a route this module does not read
    endorsements: Endorsements

    @property
    def signer(self) -> str | None:
        """Who must have signed it for it to count."""
        if isinstance(self.says, LocScheme):
            return self.says.eid
        if isinstance(self.says, EndRole):
            return self.says.cid
        return None

    def serialize(self) -> bytes:
        return self.message.raw + self.endorsements.qb64().encode("ascii")


def _prefix(value: object, what: str) -> str:
    if type(value) is not str or len(value) != 44 or not value.isascii():
        raise EventError(f"{what} must be a 44-character prefix, got {value!r}"[:200])
    return value


def _says(message: Routed) -> LocScheme | EndRole | None:
    data = message.ked["a"]
    if type(data) is not dict:
        raise EventError("reply data a must be a map")
    if message.route == LOC_SCHEME:
        if tuple(data) != ("eid", "scheme", "url"):
            raise EventError("/loc/scheme data must be eid scheme url in that order")
        scheme, url = data["scheme"], data["url"]
        if scheme not in SCHEMES:
            raise EventError(f"scheme must be one of {sorted(SCHEMES)}, got {scheme!r}"[:200])
        if type(url) is not str or not 0 < len(url) <= MAX_URL or not url.isprintable():
            raise EventError(f"url must be printable text of at most {MAX_URL} characters")
        return LocScheme(_prefix(data["eid"], "eid"), scheme, url)
    if message.route in (END_ROLE_ADD, END_ROLE_CUT):
        if tuple(data) != ("cid", "role", "eid"):
            raise EventError(f"{message.route} data must be cid role eid in that order")
        if data["role"] not in ROLES:
            raise EventError(f"role must be one of {sorted(ROLES)}, got {data['role']!r}"[:200])
        return EndRole(
            _prefix(data["cid"], "cid"),
            data["role"],
            _prefix(data["eid"], "eid"),
            message.route == END_ROLE_ADD,
        )
    return None


def read_reply(body: bytes, attachments: str | bytes) -> Reply:
    """Parse a reply body and its attachment text; raises `RemoteProtocolError`s only."""
    message = parse_routed(body, "rpy")
    return Reply(message, _says(message), parse_endorsements(attachments))


def verify_reply(
    reply: Reply, authority: Authority | None = None, verify: Verifier = crypto.verify
) -> Endorsed:
    """Did the one who must sign `reply` sign it? `authority`: that signer's key state, when
    it is transferable (a `B` signer needs none).
    """
    signer = reply.signer
    if signer is None:
        return Endorsed(False, "", f"replies on route {reply.message.route!r} are not read here")
    return check_endorsement(reply.message.raw, reply.endorsements, signer, authority, verify)


def _reply(route: str, data: dict[str, Any], dt: str, kind: Kind) -> Routed:
    ked: dict[str, Any] = {"v": "", "t": "rpy", "d": "", "dt": dt, "r": route, "a": data}
    try:
        return build_routed(ked, kind)
    except EventError as err:
        raise LocalProtocolError(err.reason) from None


def loc_scheme(
    signer: Signer, url: str, dt: str, *, scheme: str = "http", kind: Kind = Kind.JSON
) -> Reply:
    """A non-transferable signer's signed `/loc/scheme` reply, as keripy's witness writes it."""
    message = _reply(LOC_SCHEME, {"eid": signer.verfer, "scheme": scheme, "url": url}, dt, kind)
    return Reply(message, _says(message), endorse_couple(message, signer))


def end_role(
    signer: Signer,
    dt: str,
    *,
    role: str = "controller",
    eid: str | None = None,
    kind: Kind = Kind.JSON,
) -> Reply:
    """A non-transferable signer's signed `/end/role/add` reply (itself as `eid` by default)."""
    data = {"cid": signer.verfer, "role": role, "eid": eid or signer.verfer}
    message = _reply(END_ROLE_ADD, data, dt, kind)
    return Reply(message, _says(message), endorse_couple(message, signer))


def key_state_notice(
    signer: Signer, state: dict[str, Any], dt: str, *, kind: Kind = Kind.JSON
) -> Reply:
    """A non-transferable signer's signed `/ksn/{eid}` reply carrying `state` (a key state
    record, its fields `KSN_FIELDS` in that order), as keripy's witness answers `GET /ksn`."""
    if tuple(state) != KSN_FIELDS:
        raise LocalProtocolError(f"a key state notice has the fields {' '.join(KSN_FIELDS)}")
    message = _reply(f"/ksn/{signer.verfer}", state, dt, kind)
    return Reply(message, None, endorse_couple(message, signer))

"""KERI `qry` (query) messages, chiefly the mailbox query `r: "mbx"` kli polls witnesses with.

Theory of operation: a query is a routed message (`routed.py`) whose `q` holds its arguments.
For the mailbox, `q` is `{pre, topics, i, src}`: `pre` whose mailbox is read, `topics` the next
index wanted per topic (`/receipt`, `/replay`, `/reply`, ...), `i` who asks (and signs) and
`src` the witness asked. kli signs it with a `-H` group (its prefix and `-A` signatures by its
current keys). `read_query` parses body and attachment text; `verify_query` checks the
signatures of `i` against the key state the caller holds for it (this module knows no KEL),
and that `i` reads only its own mailbox. A query is read, never stored, so replaying one reveals
only what it asked for: `dt` is not checked against any clock here.
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
    EstGroup,
    LastEstGroup,
    Routed,
    build_routed,
    check_endorsement,
    parse_endorsements,
    parse_routed,
)
from .signing import Verifier

MAILBOX: Final = "mbx"
MAX_TOPICS: Final = 16  # kli asks three; a topic name is a short path
MAX_TOPIC: Final = 64
MAX_INDEX: Final = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class MailboxQuery:
    """What a mailbox query asks: `topics` maps each topic to the first index wanted."""

    pre: str
    topics: tuple[tuple[str, int], ...]
    requester: str
    src: str | None


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed query: its body, the mailbox request (None for other routes), its signatures."""

    message: Routed
    mailbox: MailboxQuery | None
    endorsements: Endorsements

    def serialize(self) -> bytes:
        return self.message.raw + self.endorsements.qb64().encode("ascii")


def _prefix(value: object, what: str) -> str:
    if type(value) is not str or len(value) != 44 or not value.isascii():
        raise EventError(f"{what} must be a 44-character prefix, got {value!r}"[:200])
    return value


def _mailbox(q: object) -> MailboxQuery:
    if type(q) is not dict:
        raise EventError("query arguments q must be a map")
    topics = q.get("topics")
    if type(topics) is not dict or len(topics) > MAX_TOPICS:
        raise EventError(f"mailbox topics must be a map of at most {MAX_TOPICS} topics")
    wanted: list[tuple[str, int]] = []
    for topic, index in topics.items():
        if type(topic) is not str or not 0 < len(topic) <= MAX_TOPIC:
            raise EventError(f"a mailbox topic must be a name of at most {MAX_TOPIC} characters")
        if type(index) is not int or not 0 <= index <= MAX_INDEX:
            raise EventError(f"topic {topic!r} needs a whole index of at least 0"[:200])
        wanted.append((topic, index))
    src = q.get("src")
    if src is not None:
        src = _prefix(src, "src")
    return MailboxQuery(_prefix(q.get("pre"), "pre"), tuple(wanted), _prefix(q.get("i"), "i"), src)


def read_query(body: bytes, attachments: str | bytes) -> Query:
    """Parse a query body and its attachment text; raises `RemoteProtocolError`s only."""
    message = parse_routed(body, "qry")
    mailbox = _mailbox(message.ked["q"]) if message.route == MAILBOX else None
    return Query(message, mailbox, parse_endorsements(attachments))


def verify_query(
    query: Query, authority: Authority | None, verify: Verifier = crypto.verify
) -> Endorsed:
    """Is a mailbox query signed by its requester `i` (whose key state is `authority`), for
    its own mailbox? Any other query is refused.
    """
    box = query.mailbox
    if box is None:
        return Endorsed(False, "", f"queries on route {query.message.route!r} are not read here")
    if box.requester != box.pre:
        return Endorsed(
            False, box.requester, f"{box.requester} may not read the mailbox of {box.pre}"
        )
    return check_endorsement(
        query.message.raw, query.endorsements, box.requester, authority, verify
    )


def mailbox_query(
    signers: list[Signer],
    pre: str,
    topics: dict[str, int],
    dt: str,
    *,
    src: str | None = None,
    establishment: tuple[int, str] | None = None,
    kind: Kind = Kind.JSON,
) -> Query:
    """A mailbox query for `pre`'s own mailbox signed by its current `signers` (in key order),
    with a `-H` group as kli sends it, or a `-F` group at `establishment` (sn, SAID).
    """
    q: dict[str, Any] = {"pre": pre, "topics": dict(topics), "i": pre}
    if src is not None:
        q["src"] = src
    ked: dict[str, Any] = {"v": "", "t": "qry", "d": "", "dt": dt, "r": MAILBOX, "rr": "", "q": q}
    try:
        message = build_routed(ked, kind)
    except EventError as err:
        raise LocalProtocolError(err.reason) from None
    sigs = tuple(s.sign_indexed(message.raw, i) for i, s in enumerate(signers))
    if establishment is None:
        endorsements = Endorsements(last_groups=(LastEstGroup(pre, sigs),))
    else:
        endorsements = Endorsements(groups=(EstGroup(pre, *establishment, sigs),))
    return Query(message, _mailbox(q), endorsements)

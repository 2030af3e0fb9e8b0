"""Governance rosters: which nodes an ecosystem appoints as watchers, jurors and judges.

An ecosystem's governance is a KERI identifier. It signs a roster (CBOR) with the keys of its
latest establishment event, naming that event's sequence number and SAID; a node accepts the
roster only when that event is still the latest establishment event of the governance KEL it
holds. So a rotation of the governance keys retires the old keys: they can sign no roster a
node will accept, however it reaches the node. A roster with a higher epoch replaces a lower
one; the roster in force stays in force across later rotations until replaced.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import cbor2

from . import crypto
from .cbormap import cbor_map
from .cesr import IndexedSig, parse_indexed_sig
from .crypto import Signer
from .errors import LocalProtocolError, ParseError, ProtocolError, RosterError
from .kel import Kel
from .signing import Verifier

ROSTER_TYPE: Final = "dkms/roster/1"
SIGNED_ROSTER_TYPE: Final = "dkms/signed-roster/1"
MAX_MEMBERS: Final = 10_000


class Duty(StrEnum):
    """What a roster asks of a node it names."""

    WATCHER = "watcher"  # its answers about identifiers are the ecosystem's
    JUROR = "juror"  # its duplicity evidence is published and believed
    JUDGE = "judge"  # it rules on evidence


@dataclass(frozen=True, slots=True)
class Roster:
    """Appointments of one epoch by the governance identifier `governance`."""

    governance: str
    epoch: int
    watchers: tuple[str, ...] = ()
    jurors: tuple[str, ...] = ()
    judges: tuple[str, ...] = ()

    def body(self) -> bytes:
        out: bytes = cbor2.dumps(
            {
                "t": ROSTER_TYPE,
                "g": self.governance,
                "e": self.epoch,
                "w": list(self.watchers),
                "j": list(self.jurors),
                "u": list(self.judges),
            }
        )
        return out

    @classmethod
    def from_body(cls, data: bytes) -> Roster:
        obj = cbor_map(data, "roster")
        if obj.get("t") != ROSTER_TYPE:
            raise ParseError(f"not a {ROSTER_TYPE} roster")
        gov, epoch = obj.get("g"), obj.get("e")
        lists = [obj.get(k) for k in ("w", "j", "u")]
        if not (isinstance(gov, str) and isinstance(epoch, int) and epoch >= 0):
            raise ParseError("roster fields g (governance) and e (epoch) are missing or wrong")
        for members in lists:
            if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
                raise ParseError("roster fields w, j, u must be lists of node prefixes")
            if len(members) > MAX_MEMBERS:
                raise ParseError(f"a roster list holds at most {MAX_MEMBERS} prefixes")
        w, j, u = (tuple(m) for m in lists)  # type: ignore[arg-type]
        return cls(gov, epoch, w, j, u)

    def roles_of(self, prefix: str) -> tuple[Duty, ...]:
        """The duties `prefix` holds in this roster."""
        named = (
            (Duty.WATCHER, self.watchers),
            (Duty.JUROR, self.jurors),
            (Duty.JUDGE, self.judges),
        )
        return tuple(duty for duty, members in named if prefix in members)


@dataclass(frozen=True, slots=True)
class SignedRoster:
    """A roster body with the governance's indexed signatures and the establishment event
    (sequence number and SAID) whose keys made them."""

    roster: Roster
    body: bytes
    sn: int
    said: str
    sigs: tuple[IndexedSig, ...]

    @classmethod
    def sign(cls, roster: Roster, kel: Kel, signers: list[Signer]) -> SignedRoster:
        """Sign with `signers`, the governance's current keys in key-list order."""
        authority = kel.authority
        if kel.prefix != roster.governance:
            raise LocalProtocolError("the KEL given is not the roster's governance identifier")
        if [s.verfer for s in signers] != list(authority.keys):
            raise LocalProtocolError("signers must be the governance's current keys, in order")
        body = roster.body()
        sigs = tuple(s.sign_indexed(body, i) for i, s in enumerate(signers))
        return cls(roster, body, authority.sn, authority.said, sigs)

    def to_cbor(self) -> bytes:
        out: bytes = cbor2.dumps(
            {
                "t": SIGNED_ROSTER_TYPE,
                "r": self.body,
                "s": self.sn,
                "d": self.said,
                "x": [s.qb64() for s in self.sigs],
            }
        )
        return out

    @classmethod
    def from_cbor(cls, data: bytes) -> SignedRoster:
        obj = cbor_map(data, "signed roster")
        if obj.get("t") != SIGNED_ROSTER_TYPE:
            raise ParseError(f"not a {SIGNED_ROSTER_TYPE} object")
        body, sn, said, sigs = obj.get("r"), obj.get("s"), obj.get("d"), obj.get("x")
        if not (
            isinstance(body, bytes)
            and isinstance(sn, int)
            and sn >= 0
            and isinstance(said, str)
            and isinstance(sigs, list)
            and all(isinstance(s, str) for s in sigs)
            and len(sigs) <= MAX_MEMBERS
        ):
            raise ParseError("signed roster fields r, s, d, x are missing or of the wrong type")
        parsed = []
        for text in sigs:
            sig, size = parse_indexed_sig(text)
            if size != len(text):
                raise ParseError(f"roster signature {text[:12]}... has trailing characters")
            parsed.append(sig)
        return cls(Roster.from_body(body), body, sn, said, tuple(parsed))

    def verify(self, kel: Kel, verify: Verifier = crypto.verify) -> Roster:
        """Return the roster if the governance's current keys (per `kel`) signed it."""
        roster = self.roster
        if kel.prefix != roster.governance:
            raise RosterError(f"roster is for governance {roster.governance}, not {kel.prefix}")
        authority = kel.authority
        if (self.sn, self.said) != (authority.sn, authority.said):
            if any(a.said == self.said for a in kel.authorities):
                raise RosterError(
                    f"roster signed with keys of sn {self.sn}, since rotated out at sn "
                    f"{authority.sn}: the governance must sign it again"
                )
            raise RosterError(f"roster names establishment event {self.said}, not in the KEL")
        good: set[int] = set()
        for sig in self.sigs:
            index = sig.index
            if index < len(authority.raw_keys) and index not in good:
                try:
                    if verify(authority.raw_keys[index], sig.raw, self.body):
                        good.add(index)
                except ProtocolError:
                    continue
        if not good or not authority.kt.satisfied(good):
            raise RosterError(
                f"{len(good)} valid governance signature(s) do not meet threshold "
                f"{authority.kt.value}"
            )
        return roster

"""What a node knows of its ecosystem's governance: the governance KEL and the roster in force.

Theory of operation. A node is configured with one governance prefix. Governance reaches it as
a bundle (CBOR: the governance KEL as a CESR stream, and a signed roster), handed over on the
`/dkms/1/governance` surface or heard on the `/dkms/1/governance` topic. `offer` applies the
bundle's KEL to the governance validator (so a rotation is learnt from any bundle that carries
it), then checks the roster against that KEL: it must be signed by the keys of the latest
establishment event. A higher epoch replaces the roster in force; the same or a lower epoch
changes nothing. `check` answers the same question without changing anything, for gossip
validation. Pure: no I/O, no clock.
"""

from __future__ import annotations

from typing import Final

import cbor2

from dkms.protocol import crypto
from dkms.protocol.cbormap import cbor_map
from dkms.protocol.errors import ParseError, ProtocolError, RosterError
from dkms.protocol.roster import Duty, Roster, SignedRoster
from dkms.protocol.signing import Verifier
from dkms.protocol.stream import BadFrame, Message, parse_stream
from dkms.protocol.validator import Validator

from .controller import Controller
from .topics import peer_parse

BUNDLE_TYPE: Final = "dkms/governance/1"


def make_bundle(kel: bytes, signed: SignedRoster) -> bytes:
    """The governance KEL (CESR) and a signed roster, as one CBOR object."""
    out: bytes = cbor2.dumps({"t": BUNDLE_TYPE, "k": kel, "r": signed.to_cbor()})
    return out


def roster_bundle(controller: Controller, name: str, roster: Roster) -> bytes:
    """Sign `roster` with the current keys of identifier `name` and bundle it with its KEL."""
    ident = controller.identity(name)
    kel = controller.validator.kel(ident.prefix)
    if kel is None:
        raise ValueError(f"{name} has no accepted KEL yet")
    signed = SignedRoster.sign(roster, kel, list(ident.signers))
    return make_bundle(controller.export(name), signed)


def read_bundle(data: bytes) -> tuple[list[Message], SignedRoster]:
    """The KEL messages and the signed roster of a bundle, or `ParseError`."""
    obj = cbor_map(data, "governance bundle")
    kel, roster = obj.get("k"), obj.get("r")
    if obj.get("t") != BUNDLE_TYPE or not isinstance(kel, bytes) or not isinstance(roster, bytes):
        raise ParseError(f"not a {BUNDLE_TYPE} bundle (fields k, r)")
    messages = []
    for frame in peer_parse(kel):
        if isinstance(frame, BadFrame):
            raise frame.error
        messages.append(frame)
    return messages, SignedRoster.from_cbor(roster)


class Governance:
    """The governance identifier `prefix` as one node sees it."""

    def __init__(self, prefix: str, verify: Verifier = crypto.verify) -> None:
        self.prefix = prefix
        self._verify = verify
        self.validator = Validator(verify=verify)
        self.roster: Roster | None = None
        self.bundle: bytes | None = None  # the bundle that brought the roster in force

    @property
    def epoch(self) -> int:
        return -1 if self.roster is None else self.roster.epoch

    def check(self, data: bytes) -> Roster:
        """The roster a bundle carries, if valid for this governance; else raise why not."""
        messages, signed = read_bundle(data)
        validator = Validator(verify=self._verify)
        for message in [*self._known(), *messages]:
            validator.process(message, 0.0)
        return self._verified(validator, signed)

    def offer(self, data: bytes, now: float) -> tuple[bool, str]:
        """Take a bundle in: (True, what changed) if its roster is now in force, else
        (False, why not). Raises `ProtocolError` for a bundle that is not valid at all."""
        messages, signed = read_bundle(data)
        for message in messages:
            if message.event.prefix == self.prefix:
                self.validator.process(message, now)
        roster = self._verified(self.validator, signed)
        if roster.epoch <= self.epoch:
            return False, f"roster epoch {roster.epoch} is not newer than {self.epoch}"
        self.roster, self.bundle = roster, data
        return True, (
            f"governance roster epoch {roster.epoch}: {len(roster.watchers)} watcher(s), "
            f"{len(roster.jurors)} juror(s), {len(roster.judges)} judge(s)"
        )

    def restore(self, data: bytes, now: float) -> None:
        """Reinstate the stored bundle (verified again: a damaged one is dropped)."""
        try:
            self.offer(data, now)
        except ProtocolError:
            self.roster, self.bundle = None, None

    def allows(self, signer: str, duty: Duty) -> bool:
        """Does the roster in force give `signer` that duty?"""
        return self.roster is not None and duty in self.roster.roles_of(signer)

    def _known(self) -> list[Message]:
        if self.validator.kel(self.prefix) is None:
            return []
        return [
            f for f in parse_stream(self.validator.replay(self.prefix)) if isinstance(f, Message)
        ]

    def _verified(self, validator: Validator, signed: SignedRoster) -> Roster:
        if signed.roster.governance != self.prefix:
            raise RosterError(
                f"roster of governance {signed.roster.governance}, not ours ({self.prefix})"
            )
        kel = validator.kel(self.prefix)
        if kel is None:
            raise RosterError(f"no valid KEL of governance {self.prefix} came with the roster")
        return signed.verify(kel, self._verify)

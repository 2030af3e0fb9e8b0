"""Governance rosters from the command line: sign one with a governance identifier, hand it
to nodes, and read the one a node holds.

    dkms governance roster create GOVNAME --watcher P... [--juror P...] [--judge P...]
                                  [--epoch N] --publish-to PREFIX@MULTIADDR...
    dkms governance roster show --from PREFIX@MULTIADDR [--json]
"""

from __future__ import annotations

from dkms.protocol.roster import Roster, SignedRoster

from .roles.controller import Controller
from .roles.governance import make_bundle


def roster_bundle(controller: Controller, name: str, roster: Roster) -> bytes:
    """Sign `roster` with the current keys of identifier `name` and bundle it with its KEL."""
    ident = controller.identity(name)
    kel = controller.validator.kel(ident.prefix)
    if kel is None:
        raise ValueError(f"{name} has no accepted KEL yet")
    signed = SignedRoster.sign(roster, kel, list(ident.signers))
    return make_bundle(controller.export(name), signed)

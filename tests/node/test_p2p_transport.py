"""The gossip validator judges bytes alone: garbage is dropped, any well-formed event passes."""

from __future__ import annotations

from pathlib import Path

from dkms.node.p2p.transport import well_formed

VECTORS = Path(__file__).parents[1] / "vectors" / "keri-v1" / "cbor"


def test_well_formed_events_pass_even_when_duplicitous() -> None:
    assert well_formed((VECTORS / "basic.cesr").read_bytes())
    assert well_formed((VECTORS / "duplicitous_ixn.cesr").read_bytes())


def test_garbage_and_bad_bodies_are_dropped() -> None:
    assert not well_formed(b"")
    assert not well_formed(b"\x00not cesr")
    assert not well_formed((VECTORS / "bad_said.cesr").read_bytes())
    assert not well_formed((VECTORS / "basic.cesr").read_bytes()[:-5])

"""Signatures checked and made, as the nodes count them (`benchmarks/network.py`'s crypto
floor); the controller does not verify the signatures it just made."""

from __future__ import annotations

from dkms.node.roles.codes import Code
from dkms.node.roles.controller import Controller
from dkms.node.roles.effects import Reply, Send, Surface
from dkms.node.roles.inputs import Request
from dkms.node.roles.witness import Witness
from dkms.node.testing.keys import node_signer
from dkms.protocol.crypto import MemoVerifier
from dkms.protocol.ids import NodePrefix


def test_own_events_enter_the_kel_without_a_signature_check() -> None:
    memo = MemoVerifier()
    ctl = Controller(verify=memo)
    ctl.incept("a", [b"\x01" * 32], [b"\x02" * 32], now=0.0)
    for n in range(3):
        ctl.interact("a", [{"n": n}], now=0.0)
    kel = ctl.validator.kel(ctl.identity("a").prefix)
    assert kel is not None and kel.sn == 3  # all four accepted into its own KEL
    assert memo.checked == 0
    # Only the exact (key, signature, event) made here is taken on trust.
    signer = ctl.identity("a").signers[0]
    assert not memo(signer.public, b"\x00" * 64, b"not an event of ours")
    assert memo.checked == 1


def test_a_witness_counts_what_it_verified_and_signed() -> None:
    witness = Witness(node_signer(0))
    ctl = Controller()
    effects = ctl.incept(
        "a", [b"\x01" * 32], [b"\x02" * 32], now=0.0, witnesses=[witness.prefix], toad=1
    )
    [submission] = [e.payload for e in effects if isinstance(e, Send)]
    # The second time a repeat, answered with the receipt held: nothing checked or signed.
    for code in (Code.OK, Code.ALREADY):
        out = witness.step(Request(Surface.SUBMIT, NodePrefix("Epeer"), submission), 0.0)
        [reply] = [e for e in out if isinstance(e, Reply)]
        assert reply.code is code
    assert (witness.signatures_checked, witness.signed) == (1, 1)

"""A witness keeps the rosters it hears, of any governance, and answers watchers for them."""

from __future__ import annotations

import cbor2

from dkms.node.roles.codes import Code
from dkms.node.roles.controller import Controller
from dkms.node.roles.effects import (
    Effect,
    PersistMeta,
    Publish,
    Reply,
    Report,
    Subscribe,
    Surface,
)
from dkms.node.roles.governance import roster_bundle
from dkms.node.roles.inputs import Heard, Request
from dkms.node.roles.rosters import KEY_PREFIX, Rosters
from dkms.node.roles.topics import GOVERNANCE_TOPIC
from dkms.node.roles.witness import Witness
from dkms.node.testing.keys import seed
from dkms.protocol import crypto
from dkms.protocol.crypto import Signer
from dkms.protocol.roster import Roster

WITNESS = Signer(seed(0x50), transferable=False)
WATCHER = Signer(seed(0x51), transferable=False).verfer


def governance(n: int) -> tuple[str, Controller]:
    gov = Controller()
    gov.incept("gov", [seed(100 + 2 * n)], [seed(101 + 2 * n)], now=0.0)
    return gov.identity("gov").prefix, gov


def bundle(gov: Controller, epoch: int) -> bytes:
    prefix = gov.identity("gov").prefix
    return roster_bundle(gov, "gov", Roster(prefix, epoch, watchers=(WATCHER,)))


def ask(witness: Witness, **query: str) -> Reply:
    (reply,) = witness.step(
        Request(Surface.QUERY, "asker", cbor2.dumps({"t": "roster", **query})), 0
    )
    assert isinstance(reply, Reply)
    return reply


def test_a_witness_keeps_the_newest_roster_it_hears_and_answers_for_it() -> None:
    witness = Witness(WITNESS)
    assert Subscribe(GOVERNANCE_TOPIC) in witness.start(0.0)
    prefix, gov = governance(1)
    assert ask(witness, g=prefix).code == Code.NO_ROSTER
    first, second = bundle(gov, 1), bundle(gov, 2)
    assert witness.admits(GOVERNANCE_TOPIC, second)
    effects = witness.step(Heard(GOVERNANCE_TOPIC, "peer", second), 0.0)
    assert PersistMeta(KEY_PREFIX + prefix, second) in effects
    assert ask(witness, g=prefix) == Reply.accept(second)
    assert ask(witness) == Reply.accept(second)  # the only one held: an older watcher's ask
    # An older epoch heard later changes nothing.
    assert not any(
        isinstance(e, PersistMeta) for e in witness.step(Heard(GOVERNANCE_TOPIC, "p", first), 0)
    )
    assert ask(witness, g=prefix) == Reply.accept(second)


def test_a_roster_handed_to_a_witness_is_kept_and_published_and_garbage_is_refused() -> None:
    witness = Witness(WITNESS)
    _, gov = governance(1)
    data = bundle(gov, 1)
    effects = witness.step(Request(Surface.GOVERNANCE, "gov", data), 0.0)
    assert Publish(GOVERNANCE_TOPIC, data) in effects
    assert isinstance(effects[-1], Reply) and effects[-1].code.ok
    again = witness.step(Request(Surface.GOVERNANCE, "gov", data), 0.0)
    assert not any(isinstance(e, Publish) for e in again)  # not new: not published twice
    broken = data[:-3] + bytes(b ^ 1 for b in data[-3:])
    (refused,) = witness.step(Request(Surface.GOVERNANCE, "x", broken), 0.0)
    assert isinstance(refused, Reply) and refused.code == Code.INVALID
    assert not witness.admits(GOVERNANCE_TOPIC, broken)
    (ignored,) = witness.step(Heard(GOVERNANCE_TOPIC, "x", b"\xa0"), 0.0)
    assert isinstance(ignored, Report) and ignored.level == "debug"


def test_a_roster_that_its_bundles_kel_did_not_sign_is_not_kept() -> None:
    _, gov = governance(1)
    _, impostor = governance(2)
    # The impostor's own valid roster, carried with the other governance's KEL.
    obj = cbor2.loads(bundle(impostor, 9))
    obj["k"] = gov.export("gov")
    forged = cbor2.dumps(obj)
    rosters = Rosters(crypto.verify)
    assert not rosters.admits(forged)
    assert not Witness(WITNESS).admits(GOVERNANCE_TOPIC, forged)


def test_the_table_is_bounded_least_recently_used_out_and_deleted_from_the_store() -> None:
    rosters = Rosters(crypto.verify, max_governances=3)
    govs = [governance(n) for n in range(5)]
    effects: list[Effect] = []
    for _, gov in govs[:3]:
        rosters.offer(bundle(gov, 1), 0.0, effects)
    rosters.answer({"g": govs[0][0]})  # asked for: the freshest now
    effects.clear()
    rosters.offer(bundle(govs[3][1], 1), 0.0, effects)
    assert PersistMeta(KEY_PREFIX + govs[1][0], b"") in effects  # the least recently used
    assert len(rosters) == 3
    assert rosters.answer({"g": govs[0][0]}).code.ok
    assert rosters.answer({"g": govs[1][0]}).code == Code.NO_ROSTER
    kept = sum(len(bundle(g, 1)) for _, g in (govs[0], govs[2], govs[3]))
    assert rosters.bytes == kept
    small = Rosters(crypto.verify, max_bytes=len(bundle(govs[4][1], 1)) + 10)
    small.offer(bundle(govs[4][1], 1), 0.0, [])
    small.offer(bundle(govs[0][1], 1), 0.0, [])
    assert len(small) == 1 and small.answer({"g": govs[0][0]}).code.ok


def test_a_restarted_witness_answers_with_the_stored_roster() -> None:
    prefix, gov = governance(1)
    data = bundle(gov, 4)
    witness = Witness(WITNESS)
    witness.restore_roster(KEY_PREFIX + prefix, data, 0.0)
    witness.restore_roster(KEY_PREFIX + "damaged", b"\x00junk", 0.0)  # skipped, not raised
    assert ask(witness, g=prefix) == Reply.accept(data)

"""The watcher role as a state machine: bytes and times in, effects out (no network)."""

from __future__ import annotations

import cbor2

from dkms.node.roles.codes import Code
from dkms.node.roles.controller import Controller
from dkms.node.roles.effects import (
    Effect,
    PersistEvidence,
    PersistMeta,
    PersistRuling,
    Publish,
    Reply,
    Report,
    Send,
    Surface,
    Tag,
    TimerKey,
)
from dkms.node.roles.follower import MAX_GAP_ASKS
from dkms.node.roles.governance import roster_bundle
from dkms.node.roles.inputs import (
    Answered,
    Heard,
    LagCheck,
    Request,
    RosterQuery,
    RosterRetry,
    TimerFired,
)
from dkms.node.roles.juror import LOG_EVERY, LOG_LINES
from dkms.node.roles.pages import PAGE_EVENTS
from dkms.node.roles.topics import DUPLICITY_TOPIC, GOVERNANCE_TOPIC, kel_topic
from dkms.node.roles.watcher import Watcher
from dkms.node.testing.keys import seed
from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.envelope import Signed
from dkms.protocol.events import Event, incept, interact, receipt
from dkms.protocol.ids import NodePrefix
from dkms.protocol.roster import Roster
from dkms.protocol.stream import Attachments, messagize


def hear(watcher: Watcher, topic: str, payload: bytes, now: float) -> list[Effect]:
    return watcher.step(Heard(topic, NodePrefix(""), payload), now)


def govern(watcher: Watcher, bundle: bytes, now: float) -> list[Effect]:
    return watcher.step(Request(Surface.GOVERNANCE, NodePrefix(""), bundle), now)


def answer(
    watcher: Watcher, tag: Tag, ok: bool, payload: bytes, reason: str, now: float
) -> list[Effect]:
    code = Code.OK if ok else Code.NO_ROSTER
    return watcher.step(Answered(tag, code, payload, reason), now)


def timer(watcher: Watcher, key: TimerKey, now: float) -> list[Effect]:
    return watcher.step(TimerFired(key), now)


WITNESSES = [Signer(seed(0x40 + i), transferable=False) for i in range(4)]
ME = Signer(seed(9), transferable=False)


def governance(epoch: int, **roles: tuple[str, ...]) -> tuple[str, bytes, Controller]:
    gov = Controller()
    gov.incept("gov", [seed(90)], [seed(91)], now=0.0)
    prefix = gov.identity("gov").prefix
    return prefix, roster_bundle(gov, "gov", Roster(prefix, epoch, **roles)), gov


def witnessed(event: Event, witnesses: list[Signer]) -> bytes:
    """The signed event followed by a receipt from each of `witnesses`."""
    rct = receipt(event.prefix, event.sn, event.said)
    couples = tuple((w.verfer, w.sign_raw(event.raw)) for w in witnesses)
    return signed(event) + messagize(rct, Attachments(couples=couples))


def test_stale_roster_changes_nothing_and_a_newer_one_replaces_it() -> None:
    prefix, bundle1, gov = governance(1, watchers=(ME.verfer,))
    watcher = Watcher(ME, prefix)
    effects = govern(watcher, bundle1, 0.0)
    assert any(isinstance(e, PersistMeta) for e in effects)
    assert any(isinstance(e, Publish) and e.topic == GOVERNANCE_TOPIC for e in effects)
    assert watcher.governance.epoch == 1
    again = govern(watcher, bundle1, 0.0)
    assert not any(isinstance(e, PersistMeta) for e in again)
    reply = next(e for e in again if isinstance(e, Reply))
    assert "not newer" in reply.reason
    bundle2 = roster_bundle(gov, "gov", Roster(prefix, 2, jurors=(ME.verfer,)))
    govern(watcher, bundle2, 0.0)
    assert watcher.governance.epoch == 2
    assert watcher.governance.allows(ME.verfer, "juror")


def test_a_roster_of_another_governance_is_refused() -> None:
    prefix, _, _ = governance(1)
    watcher = Watcher(ME, prefix)
    other = Controller()
    other.incept("x", [seed(70)], [seed(71)], now=0.0)
    foreign = roster_bundle(other, "x", Roster(other.identity("x").prefix, 5))
    [reply] = [e for e in govern(watcher, foreign, 0.0) if isinstance(e, Reply)]
    assert not reply.ok and "not ours" in reply.reason
    assert not watcher.admits(GOVERNANCE_TOPIC, foreign)
    assert not watcher.admits(GOVERNANCE_TOPIC, b"garbage")


def inception(witnesses: list[Signer] = WITNESSES) -> Event:
    key = Signer(seed(1))
    return incept(
        [key.verfer],
        next_digests=[next_key_digest(Signer(seed(2)).verfer)],
        witnesses=[w.verfer for w in witnesses],
        toad=3,
    )


def signed(event: Event) -> bytes:
    return messagize(event, Attachments(sigs=(Signer(seed(1)).sign_indexed(event.raw, 0),)))


def split(watcher: Watcher) -> tuple[str, list[Effect]]:
    """Feed the watcher a fully witnessed inception, then two versions of sn 1 each receipted
    by two witnesses; return the prefix and every effect."""
    icp = inception()
    topic = kel_topic(icp.prefix)
    effects = hear(watcher, topic, witnessed(icp, WITNESSES), 0.0)
    a = interact(icp.prefix, prior=icp.said, sn=1, anchors=[{"d": "a"}])
    b = interact(icp.prefix, prior=icp.said, sn=1, anchors=[{"d": "b"}])
    effects += hear(watcher, topic, witnessed(a, WITNESSES[:2]), 1.0)
    effects += hear(watcher, topic, witnessed(b, WITNESSES[2:]), 1.0)
    return icp.prefix, effects


def test_without_a_roster_evidence_is_kept_but_not_published() -> None:
    prefix, bundle, _ = governance(1, jurors=(ME.verfer,), judges=(ME.verfer,))
    watcher = Watcher(ME, prefix)
    kel_prefix, effects = split(watcher)
    assert any(isinstance(e, PersistEvidence) for e in effects)
    assert not any(isinstance(e, Publish) and e.topic == DUPLICITY_TOPIC for e in effects)
    assert watcher.holdings.standing(kel_prefix, True) == ("duplicitous", 1)
    # The roster arrives: the juror publishes what it held, and the judge rules.
    later = govern(watcher, bundle, 2.0)
    published = [e for e in later if isinstance(e, Publish) and e.topic == DUPLICITY_TOPIC]
    assert len(published) == 2  # the evidence, then the ruling
    assert any(isinstance(e, PersistRuling) for e in later)
    kinds = {Signed.from_cbor(p.payload).kind for p in published}
    assert kinds == {"dkms/duplicity/1", "dkms/ruling/1"}


def test_duplicity_gossip_is_admitted_only_from_rostered_jurors() -> None:
    juror = Signer(seed(12), transferable=False)
    prefix, bundle, _ = governance(1, jurors=(juror.verfer,))
    finder = Watcher(Signer(seed(13), transferable=False), prefix)
    split(finder)
    [held] = finder.holdings.evidence.values()
    watcher = Watcher(ME, prefix)
    govern(watcher, bundle, 0.0)
    by_juror = Signed.make(juror, held.evidence).to_cbor()
    by_stranger = Signed.make(Signer(seed(14), transferable=False), held.evidence).to_cbor()
    assert watcher.admits(DUPLICITY_TOPIC, by_juror)
    assert not watcher.admits(DUPLICITY_TOPIC, by_stranger)
    assert not watcher.admits(DUPLICITY_TOPIC, b"\x00junk")
    hear(watcher, DUPLICITY_TOPIC, by_stranger, 0.0)
    assert not watcher.holdings.evidence
    hear(watcher, DUPLICITY_TOPIC, by_juror, 0.0)
    assert len(watcher.holdings.evidence) == 1


def test_a_lagging_witness_is_an_anomaly() -> None:
    prefix, _, _ = governance(1)
    watcher = Watcher(ME, prefix, anomaly_after=5.0)
    icp = inception()
    hear(watcher, kel_topic(icp.prefix), witnessed(icp, WITNESSES[:3]), 0.0)
    assert timer(watcher, LagCheck(), 4.0) and not watcher.lag.anomalies
    timer(watcher, LagCheck(), 6.0)
    [anomaly] = list(watcher.lag.anomalies)
    assert anomaly["w"] == WITNESSES[3].verfer
    state = watcher.key_state(icp.prefix)
    assert state["standing"] == "ok" and state["anomalies"] == [anomaly]
    assert cbor2.loads(cbor2.dumps(state))["fully_witnessed"]


def test_a_gap_in_a_kel_makes_the_watcher_ask_its_witnesses() -> None:
    prefix, _, _ = governance(1)
    watcher = Watcher(ME, prefix)
    icp = inception()
    topic = kel_topic(icp.prefix)
    hear(watcher, topic, witnessed(icp, WITNESSES), 0.0)
    one = interact(icp.prefix, prior=icp.said, sn=1, anchors=[])
    two = interact(icp.prefix, prior=one.said, sn=2, anchors=[])
    effects = hear(watcher, topic, witnessed(two, WITNESSES), 1.0)  # sn 1 never arrived
    asks = [e for e in effects if isinstance(e, Send)]
    assert {a.to for a in asks} == {w.verfer for w in WITNESSES}
    assert all(
        cbor2.loads(a.payload) == {"t": "kel", "i": icp.prefix, "s": 1, "n": PAGE_EVENTS}
        for a in asks
    )
    assert not [
        e for e in hear(watcher, topic, witnessed(two, WITNESSES), 1.5) if isinstance(e, Send)
    ]
    # A witness's answer fills the gap; both events are then in the watcher's copy.
    answer(watcher, asks[0].tag, True, witnessed(one, WITNESSES), "", 2.0)
    kel = watcher.validator.kel(icp.prefix)
    assert kel is not None and kel.sn == 2


def test_after_a_restart_a_watcher_publishes_and_rules_what_it_held() -> None:
    """A crash between storing evidence and publishing it (or ruling on it) loses nothing:
    the restarted watcher publishes its own evidence again and rules on what is unruled."""
    prefix, bundle, _ = governance(1, jurors=(ME.verfer,), judges=(ME.verfer,))
    first = Watcher(ME, prefix)
    govern(first, bundle, 0.0)
    _, effects = split(first)
    stored = [e.envelope for e in effects if isinstance(e, PersistEvidence)]
    assert stored
    again = Watcher(ME, prefix)
    again.restore_governance(bundle, 0.0)
    for envelope in stored:  # the ruling was never stored
        again.restore_held(envelope)
    published = [e for e in again.start(5.0) if isinstance(e, Publish)]
    kinds = [Signed.from_cbor(p.payload).kind for p in published if p.topic == DUPLICITY_TOPIC]
    assert sorted(kinds) == ["dkms/duplicity/1", "dkms/ruling/1"]


def with_witness_sigs(event: Event, witnesses: list[Signer], *, as_receipt: bool) -> bytes:
    """The signed event with `-B` signatures of `witnesses` (indexed into WITNESSES), keripy's
    form: attached to the event itself, or to a receipt of it."""
    wigs = tuple(w.sign_indexed(event.raw, WITNESSES.index(w), None) for w in witnesses)
    if as_receipt:
        rct = receipt(event.prefix, event.sn, event.said)
        return signed(event) + messagize(rct, Attachments(wigs=wigs))
    sigs = (Signer(seed(1)).sign_indexed(event.raw, 0),)
    return messagize(event, Attachments(sigs=sigs, wigs=wigs))


def test_a_witness_signing_two_versions_with_indexed_signatures_is_caught() -> None:
    # w1 receipts version a with a couple (our witnesses' form) and signs version b with an
    # indexed signature on the event (keripy's form); w2 and w3 sign only b; w0 only a.
    for as_receipt in (False, True):
        watcher = Watcher(ME, "")
        icp = inception()
        topic = kel_topic(icp.prefix)
        hear(watcher, topic, witnessed(icp, WITNESSES), 0.0)
        a = interact(icp.prefix, prior=icp.said, sn=1, anchors=[{"d": "a"}])
        b = interact(icp.prefix, prior=icp.said, sn=1, anchors=[{"d": "b"}])
        hear(watcher, topic, witnessed(a, WITNESSES[:2]), 1.0)
        effects = hear(
            watcher, topic, with_witness_sigs(b, WITNESSES[1:], as_receipt=as_receipt), 1.0
        )
        accused = watcher.holdings.accused()
        assert accused.get(WITNESSES[1].verfer) == 1, as_receipt
        assert WITNESSES[0].verfer not in accused and WITNESSES[2].verfer not in accused
        assert accused.get(icp.prefix) == 1  # the controller's own equivocation too
        assert sum(isinstance(e, PersistEvidence) for e in effects) == 2


def test_indexed_signatures_of_one_version_accuse_no_one() -> None:
    watcher = Watcher(ME, "")
    icp = inception()
    topic = kel_topic(icp.prefix)
    hear(watcher, topic, with_witness_sigs(icp, WITNESSES, as_receipt=False), 0.0)
    a = interact(icp.prefix, prior=icp.said, sn=1)
    hear(watcher, topic, with_witness_sigs(a, WITNESSES[:3], as_receipt=True), 1.0)
    hear(watcher, topic, with_witness_sigs(a, WITNESSES[1:], as_receipt=False), 1.0)
    assert watcher.holdings.accused() == {}
    assert watcher.validator.kel(icp.prefix) is not None
    assert watcher.validator.kel(icp.prefix).sn == 1  # type: ignore[union-attr]


def test_a_watcher_without_a_roster_asks_its_peers_until_one_answers() -> None:
    prefix, bundle, _ = governance(1, watchers=(ME.verfer,), jurors=(ME.verfer,))
    peers = [w.verfer for w in WITNESSES[:2]]
    watcher = Watcher(ME, prefix, peers=[*peers, ME.verfer])  # never asks itself
    asks = [e for e in watcher.start(0.0) if isinstance(e, Send)]
    assert [(s.to, s.tag) for s in asks] == [(p, RosterQuery(NodePrefix(p))) for p in peers]
    assert all(cbor2.loads(s.payload) == {"t": "roster", "g": prefix} for s in asks)
    # Nobody has one yet: the next ask comes when the timer fires.
    assert answer(watcher, asks[0].tag, False, b"", "this node holds no roster yet", 0.1)
    assert watcher.governance.roster is None
    again = [e for e in timer(watcher, RosterRetry(), 15.0) if isinstance(e, Send)]
    assert len(again) == 2
    # An answer that is not a bundle of our governance changes nothing.
    answer(watcher, again[0].tag, True, b"not a bundle", "", 15.1)
    assert watcher.governance.roster is None
    effects = answer(watcher, again[1].tag, True, bundle, "", 15.2)
    assert watcher.governance.epoch == 1
    assert any(isinstance(e, PersistMeta) for e in effects)
    assert timer(watcher, RosterRetry(), 30.0) == []  # has one: stops asking


def test_a_watcher_with_a_roster_or_no_peers_asks_nobody() -> None:
    prefix, bundle, _ = governance(1, watchers=(ME.verfer,))
    alone = Watcher(ME, prefix)
    assert not [e for e in alone.start(0.0) if isinstance(e, Send)]
    restored = Watcher(ME, prefix, peers=[WITNESSES[0].verfer])
    restored.restore_governance(bundle, 0.0)
    assert not [e for e in restored.start(0.0) if isinstance(e, Send)]


def test_an_identifier_begun_before_the_watcher_listened_is_asked_of_its_peers() -> None:
    prefix, _, _ = governance(1)
    peers = [w.verfer for w in WITNESSES[:2]]
    watcher = Watcher(ME, prefix, peers=peers)
    icp = inception()
    topic = kel_topic(icp.prefix)
    one = interact(icp.prefix, prior=icp.said, sn=1, anchors=[])
    effects = hear(watcher, topic, witnessed(one, WITNESSES), 1.0)  # the inception went by
    asks = [e for e in effects if isinstance(e, Send)]
    assert {a.to for a in asks} == set(peers)
    assert all(
        cbor2.loads(a.payload) == {"t": "kel", "i": icp.prefix, "s": 0, "n": PAGE_EVENTS}
        for a in asks
    )
    answer(watcher, asks[0].tag, True, witnessed(icp, WITNESSES), "", 2.0)
    kel = watcher.validator.kel(icp.prefix)
    assert kel is not None and kel.sn == 1


def test_gap_queries_in_flight_are_bounded() -> None:
    prefix, _, _ = governance(1)
    watcher = Watcher(ME, prefix, peers=[WITNESSES[0].verfer])
    asked = 0
    for n in range(MAX_GAP_ASKS + 10):
        key = Signer(seed(1))
        icp = incept(
            [key.verfer], next_digests=[next_key_digest(Signer(bytes([n % 250 + 3]) * 32).verfer)]
        )
        one = interact(icp.prefix, prior=icp.said, sn=1)
        sigs = (key.sign_indexed(one.raw, 0),)
        effects = hear(watcher, kel_topic(icp.prefix), messagize(one, Attachments(sigs=sigs)), 1.0)
        asked += sum(isinstance(e, Send) for e in effects)
    assert asked == MAX_GAP_ASKS


def made_up_receipts(event: Event, count: int, start: int = 0) -> bytes:
    """A receipt of `event` signed by `count` keys nobody named as a witness."""
    keys = [Signer((n + 5000).to_bytes(32, "big"), transferable=False) for n in range(count)]
    couples = tuple((k.verfer, k.sign_raw(event.raw)) for k in keys[start:])
    return messagize(receipt(event.prefix, event.sn, event.said), Attachments(couples=couples))


def test_receipts_by_keys_a_kel_never_named_take_no_room_in_the_receipt_detector() -> None:
    """Formerly each took a first-receipt slot (some 550 bytes, up to a million of them)."""
    watcher = Watcher(ME, "")
    icp = inception()
    topic = kel_topic(icp.prefix)
    hear(watcher, topic, witnessed(icp, WITNESSES), 0.0)
    assert len(watcher.receipts._first) == len(WITNESSES)
    a = interact(icp.prefix, prior=icp.said, sn=1, anchors=[{"d": "a"}])
    hear(watcher, topic, witnessed(a, WITNESSES[:3]), 1.0)
    hear(watcher, topic, made_up_receipts(icp, 100), 2.0)
    hear(watcher, topic, made_up_receipts(a, 100), 2.0)
    assert len(watcher.receipts._first) == len(WITNESSES) + 3
    # The detector still works: a witness receipting a second version is caught.
    b = interact(icp.prefix, prior=icp.said, sn=1, anchors=[{"d": "b"}])
    hear(watcher, topic, witnessed(b, WITNESSES[2:]), 3.0)
    assert WITNESSES[2].verfer in watcher.holdings.accused()


def test_events_of_identifiers_not_held_are_not_checked_for_lag() -> None:
    """Formerly every escrowed event took a lag entry for `anomaly_after` seconds (junk
    included: interactions of identifiers nobody incepted), and made an anomaly."""
    watcher = Watcher(ME, "", anomaly_after=5.0)
    for n in range(20):
        key = Signer(seed(1))
        icp = incept([key.verfer], next_digests=[next_key_digest(Signer(seed(100 + n)).verfer)])
        one = interact(icp.prefix, prior=icp.said, sn=1)
        sigs = (key.sign_indexed(one.raw, 0),)
        hear(watcher, kel_topic(icp.prefix), messagize(one, Attachments(sigs=sigs)), 1.0)
    assert not watcher.lag._due
    # An escrowed event of a KEL held, with witnesses, is checked still.
    icp = inception()
    topic = kel_topic(icp.prefix)
    hear(watcher, topic, witnessed(icp, WITNESSES), 1.0)
    one = interact(icp.prefix, prior=icp.said, sn=1, anchors=[])
    two = interact(icp.prefix, prior=one.said, sn=2, anchors=[])
    hear(watcher, topic, witnessed(two, WITNESSES), 1.0)  # out of order: sn 1 went by
    timer(watcher, LagCheck(), 10.0)
    assert [(a["s"], "w" in a) for a in watcher.lag.anomalies] == [(2, False)]


def test_anomalies_are_logged_a_few_a_minute_and_the_rest_counted() -> None:
    """Formerly each anomaly was a warning line of its own (a flood of junk made 208,000)."""
    watcher = Watcher(ME, "", anomaly_after=5.0)
    icp = inception()
    topic = kel_topic(icp.prefix)
    hear(watcher, topic, witnessed(icp, WITNESSES[:3]), 0.0)  # WITNESSES[3] never receipts
    prior, count = icp.said, LOG_LINES + 5
    for sn in range(1, count):
        event = interact(icp.prefix, prior=prior, sn=sn, anchors=[])
        hear(watcher, topic, witnessed(event, WITNESSES[:3]), 0.0)
        prior = event.said

    def warnings(effects: list[Effect]) -> list[str]:
        return [e.message for e in effects if isinstance(e, Report) and e.level == "warning"]

    lines = warnings(timer(watcher, LagCheck(), 6.0))
    assert len(lines) == LOG_LINES and all(line.startswith("anomaly in") for line in lines)
    assert len(watcher.lag.anomalies) == count  # all of them kept, and in the key state
    assert len(watcher.key_state(icp.prefix)["anomalies"]) == count
    assert warnings(timer(watcher, LagCheck(), 6.0 + LOG_EVERY / 2)) == []
    assert warnings(timer(watcher, LagCheck(), 6.0 + LOG_EVERY)) == [
        f"anomalies not logged in {LOG_EVERY:g} s: {count - LOG_LINES}"
    ]

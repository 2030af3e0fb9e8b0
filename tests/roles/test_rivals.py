"""The duplicitous-event log (`roles/rivals.py`): witnesses keep, bound, publish and serve the
validly signed rivals they refuse, follow up their co-witnesses' receipts of versions they do
not hold, and raise no alarm over a recovery rotation. Pure: the in-memory driver, no clock.
"""

from __future__ import annotations

from typing import Any

import cbor2

from dkms.node.roles.codes import Code
from dkms.node.roles.effects import Effect, Publish, Reply, Send, Surface
from dkms.node.roles.inputs import Heard, Request, RivalQuery
from dkms.node.roles.rivals import ENTRY_BYTES, MAX_VERSIONS, Rivals
from dkms.node.roles.topics import kel_topic
from dkms.node.roles.watcher import Watcher
from dkms.node.roles.witness import Witness
from dkms.node.testing.keys import node_signer, seed
from dkms.node.testing.witnessed import CONTROLLER, Witnessed
from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.events import Event, Ilk, interact, rotate
from dkms.protocol.evidence import parse_evidence, verify_evidence
from dkms.protocol.ids import NodePrefix, Prefix, Said
from dkms.protocol.stream import Attachments, Message, messagize, parse_stream

from .kit import governance, receipts, signed

WATCHERS = [Signer(seed(130 + i), transferable=False) for i in range(2)]
GOV, BUNDLE = governance(
    watchers=tuple(w.verfer for w in WATCHERS),
    jurors=tuple(w.verfer for w in WATCHERS),
    judges=(WATCHERS[0].verfer,),
)


def network(watchers: bool = False) -> Witnessed:
    """4 witnesses, a controller and, with `watchers`, two rostered watchers."""
    net = Witnessed.of(4)
    if watchers:
        for signer in WATCHERS:
            net.add(signer.verfer, Watcher(signer, GOV))
            net.step(signer.verfer, Request(Surface.GOVERNANCE, NodePrefix(""), BUNDLE))
    return net


def incepted(net: Witnessed, name: str, first: int, events: int = 1) -> str:
    """Incept `name` (bt = 3) and make `events` interactions, all fully witnessed."""
    ctl = net.controller
    ident = [seed(first)], [seed(first + 1)]
    net.run(ctl.incept(name, *ident, witnesses=net.prefixes, toad=3, now=net.now))
    for n in range(events):
        net.run(ctl.interact(name, [{"n": n}], now=net.now))
    return ctl.identity(name).prefix


def rival(net: Witnessed, name: str, sn: int, mark: str) -> Event:
    """An interaction at `sn` of `name`, chained to the event before it, that the controller
    never made."""
    ident = net.controller.identity(name)
    kel = net.witness(net.prefixes[0]).validator.kel(ident.prefix)
    assert kel is not None
    prior = kel.chain[sn - 1].event.said
    event = interact(ident.prefix, prior=prior, sn=sn, anchors=[{"rival": mark}])
    RIVALS.add(event.said)
    return event


def sign(net: Witnessed, name: str, event: Event, key: Signer | None = None) -> bytes:
    return signed(event, [key] if key else net.controller.identity(name).signers)


def submit(net: Witnessed, witness: str, message: bytes) -> list[Effect]:
    """`message` submitted to `witness`, its effects carried out (gossip delivered)."""
    return net.step(witness, Request(Surface.SUBMIT, NodePrefix(CONTROLLER), message))


def rival_publishes(effects: list[Effect], prefix: str) -> list[Message]:
    """The rivals of `prefix` published: messages on its shard of events not in its KEL."""
    out = []
    for effect in effects:
        if isinstance(effect, Publish) and effect.topic == kel_topic(prefix):
            for frame in parse_stream(effect.payload):
                if isinstance(frame, Message) and frame.event.ilk is not Ilk.RCT:
                    out.append(frame)
    return [m for m in out if m.event.said in RIVALS]


RIVALS: set[str] = set()  # the SAIDs of every rival these tests made


def events_in(publish: Publish) -> set[str]:
    """The SAIDs of the events (not receipts) a KEL gossip payload carries."""
    if not publish.topic.startswith("/dkms/1/kel/"):
        return set()
    frames = parse_stream(publish.payload)
    return {f.event.said for f in frames if isinstance(f, Message) and f.event.ilk is not Ilk.RCT}


def publishers(net: Witnessed, said: str) -> list[str]:
    """Who published the event `said`, once per payload."""
    return [who for who, p in net.published if said in events_in(p)]


def ask_rivals(witness: Witness, prefix: Any) -> Reply:
    [reply] = witness.step(
        Request(Surface.QUERY, NodePrefix(""), cbor2.dumps({"t": "rivals", "i": prefix})), 0.0
    )
    assert isinstance(reply, Reply)
    return reply


def test_a_refused_rival_is_kept_published_once_and_served_as_evidence() -> None:
    net = network()
    prefix = incepted(net, "carol", 1)
    w0, others = net.prefixes[0], net.prefixes[1:]
    held = net.witness(w0).validator.kel(prefix)
    assert held is not None
    a = held.chain[1].event
    b = rival(net, "carol", 1, "b")
    effects = submit(net, w0, sign(net, "carol", b))
    [reply] = [e for e in effects if isinstance(e, Reply)]
    assert reply.code is Code.CONFLICT
    [published] = rival_publishes(effects, prefix)
    assert published.event.said == b.said
    assert len(published.attachments.sigs) == 1 and not published.attachments.couples
    assert net.witness(w0).rivals.held(prefix, 1, b.said)
    # The co-witnesses heard it on the gossip: they keep it, and publish it no more.
    for other in others:
        assert net.witness(other).rivals.held(prefix, 1, b.said)
    assert publishers(net, b.said) == [w0]
    # Submitted again: refused, not published again.
    assert rival_publishes(submit(net, w0, sign(net, "carol", b)), prefix) == []
    # Served as evidence that verifies offline (the plain verifier, not the witness's memo).
    reply = ask_rivals(net.witness(others[0]), prefix)
    answer = cbor2.loads(reply.payload)
    assert answer["witness"] == others[0] and answer["i"] == prefix and not answer["more"]
    [item] = answer["rivals"]
    accusation = verify_evidence(parse_evidence(item))
    assert accusation.kind == "controller" and accusation.accused == prefix
    assert accusation.sn == 1 and accusation.saids == (a.said, b.said)
    # Nothing kept of others; a query without a prefix is refused.
    assert cbor2.loads(ask_rivals(net.witness(w0), "Enobody").payload)["rivals"] == []
    assert ask_rivals(net.witness(w0), 7).code is Code.BAD_QUERY


def test_a_rival_is_published_once_more_for_watchers_that_lost_it() -> None:
    net = network(watchers=True)
    prefix = incepted(net, "lou", 19)
    w0 = net.prefixes[0]
    watchers = [s.verfer for s in WATCHERS]

    def standing() -> set[str]:
        roles = [net.roles[w] for w in watchers]
        return {r.key_state(prefix)["standing"] for r in roles if isinstance(r, Watcher)}

    b = rival(net, "lou", 1, "lost")
    net.down.update(watchers)  # the first publication is lost on its way to both
    submit(net, w0, sign(net, "lou", b))
    net.down.clear()
    assert standing() == {"ok"}
    net.advance(4.9)
    assert standing() == {"ok"} and publishers(net, b.said) == [w0]
    net.advance(0.2)  # REPEAT_AFTER: b again, after the version held (other bytes)
    assert publishers(net, b.said) == [w0, w0]
    first, again = [p.payload for _, p in net.published if b.said in events_in(p)]
    assert again.endswith(first) and len(again) > len(first)
    assert standing() == {"duplicitous"}
    net.advance(60.0)  # and no more
    assert publishers(net, b.said) == [w0, w0]


def test_rivals_not_signed_by_the_keys_in_force_are_neither_kept_nor_published() -> None:
    net = network()
    prefix = incepted(net, "dora", 3)
    w0 = net.prefixes[0]
    b = rival(net, "dora", 1, "forged")
    thief = Signer(seed(99))  # not dora's key
    for message in (sign(net, "dora", b, thief), messagize(b, Attachments())):
        effects = submit(net, w0, message)
        assert rival_publishes(effects, prefix) == []
        assert not net.witness(w0).rivals.held(prefix, 1, b.said)
    # The next keys (committed to, not yet in force) do not sign an interaction either.
    effects = submit(net, w0, sign(net, "dora", b, Signer(seed(4))))
    assert rival_publishes(effects, prefix) == []
    assert net.witness(w0).rivals.table_sizes()["rivals"] == 0


def test_watchers_hearing_the_rival_stand_the_identifier_duplicitous() -> None:
    net = network(watchers=True)
    prefix = incepted(net, "mallory", 5)
    for signer in WATCHERS:
        watcher = net.roles[signer.verfer]
        assert isinstance(watcher, Watcher)
        assert watcher.key_state(prefix)["standing"] == "ok"
    b = rival(net, "mallory", 1, "pay eve")
    submit(net, net.prefixes[2], sign(net, "mallory", b))
    for signer in WATCHERS:
        watcher = net.roles[signer.verfer]
        assert isinstance(watcher, Watcher)
        state = watcher.key_state(prefix)
        assert state["standing"] == "duplicitous" and state["duplicitous_from"] == 1
        assert state["evidence"]
    judge = net.roles[WATCHERS[0].verfer]
    assert isinstance(judge, Watcher) and judge.holdings.rulings


def test_a_recovery_rotation_is_no_rival_and_raises_no_alarm() -> None:
    net = network(watchers=True)
    prefix = incepted(net, "rita", 7)  # icp, then an interaction at sn 1 (keys stolen?)
    kel = net.witness(net.prefixes[0]).validator.kel(prefix)
    assert kel is not None
    stale = kel.chain[1].event
    nxt = Signer(seed(8))
    recovery = rotate(
        prefix,
        keys=[nxt.verfer],
        prior=kel.chain[0].event.said,
        sn=1,
        next_digests=[next_key_digest(Signer(seed(9)).verfer)],
        witnesses=net.prefixes,
        toad=3,
    )
    for witness in net.prefixes:
        effects = submit(net, witness, signed(recovery, [nxt]))
        [reply] = [e for e in effects if isinstance(e, Reply)]
        assert reply.code.ok, reply.reason
    # The superseded interaction, sent again, is stale: rejected, not a rival either.
    again = submit(net, net.prefixes[0], signed(stale, net.controller.identity("rita").signers))
    assert rival_publishes(again, prefix) == []
    for witness in net.prefixes:
        assert net.witness(witness).rivals.table_sizes()["rivals"] == 0
    for signer in WATCHERS:
        watcher = net.roles[signer.verfer]
        assert isinstance(watcher, Watcher)
        state = watcher.key_state(prefix)
        assert state["d"] == recovery.said
        assert state["standing"] == "ok" and state["evidence"] == []


def test_versions_per_sequence_number_are_bounded() -> None:
    net = network()
    prefix = incepted(net, "vera", 11)
    w0 = net.prefixes[0]
    net.gossip = False
    published = []
    for n in range(MAX_VERSIONS + 2):
        b = rival(net, "vera", 1, f"v{n}")
        published += rival_publishes(submit(net, w0, sign(net, "vera", b)), prefix)
    assert len(published) == MAX_VERSIONS  # the first ones; the rest refused, unpublished
    rivals = net.witness(w0).rivals
    assert [r.said for _, r in rivals.rivals(prefix)] == [m.event.said for m in published]


def test_sequence_numbers_per_identifier_and_bytes_are_bounded() -> None:
    net = network()
    vera = incepted(net, "vera", 13, events=5)
    walt = incepted(net, "walt", 15, events=1)
    w0 = net.prefixes[0]
    witness = net.witness(w0)
    net.gossip = False
    witness.rivals = Rivals(witness.validator, witness.prefix, max_sns=2)

    def offer(name: str, sn: int) -> bool:
        b = rival(net, name, sn, f"{name}{sn}")
        return bool(
            rival_publishes(
                submit(net, w0, sign(net, name, b)), net.controller.identity(name).prefix
            )
        )

    assert offer("vera", 3) and offer("vera", 4)
    assert not offer("vera", 5)  # full, and 5 is above what is held: refused
    assert offer("vera", 2)  # lower than the highest held: replaces sn 4
    assert [sn for sn, _ in witness.rivals.rivals(vera)] == [2, 3]
    # Bytes: room for about two rivals; the oldest slot is forgotten first.
    one = witness.rivals.bytes // 2
    witness.rivals = Rivals(witness.validator, witness.prefix, max_bytes=2 * one + one // 2)
    assert offer("vera", 1) and offer("vera", 2)
    assert offer("walt", 1)
    assert [sn for sn, _ in witness.rivals.rivals(vera)] == [2]
    assert len(witness.rivals.rivals(walt)) == 1
    weights = sum(r.weight for p in (vera, walt) for _, r in witness.rivals.rivals(p))
    assert witness.rivals.bytes == weights <= witness.rivals.max_bytes
    assert all(r.weight > ENTRY_BYTES for _, r in witness.rivals.rivals(walt))


def split(net: Witnessed, name: str) -> tuple[str, Event, Event]:
    """`name` incepted; then version a of sn 1 accepted by witnesses 0-2, b by witness 3
    (the controller split them, and no gossip went between them)."""
    prefix = incepted(net, name, 17, events=0)
    net.gossip = False
    ident = net.controller.identity(name)
    a = interact(prefix, prior=ident.last_said, sn=1, anchors=[{"v": "a"}])
    b = interact(prefix, prior=ident.last_said, sn=1, anchors=[{"v": "b"}])
    RIVALS.add(b.said)
    for witness, event in zip(net.prefixes, (a, a, a, b), strict=True):
        [reply] = [
            e for e in submit(net, witness, signed(event, ident.signers)) if isinstance(e, Reply)
        ]
        assert reply.code is Code.OK, reply.reason
    return prefix, a, b


def test_a_co_witness_receipt_of_another_version_is_followed_up_to_the_rival() -> None:
    net = network()
    prefix, _a, b = split(net, "sam")
    w0, w3 = net.prefixes[0], net.prefixes[3]
    # Only w3's receipt of b reaches w0 (its gossip of b itself was lost).
    heard = Heard(kel_topic(prefix), NodePrefix(w3), receipts(b, [node_signer(3)]))
    effects = net.step(w0, heard)
    [ask] = [e for e in effects if isinstance(e, Send)]
    assert ask.to == w3 and ask.surface is Surface.QUERY
    assert ask.tag == RivalQuery(Prefix(prefix), 1, Said(b.said), NodePrefix(w3))
    # The driver carried the ask out: w3 answered with b, which w0 judged and kept.
    rivals = net.witness(w0).rivals
    assert rivals.held(prefix, 1, b.said) and rivals.asking == 0
    assert publishers(net, b.said) == [w3, w0]  # w3 as it accepted b, w0 as a rival
    # Heard again: the rival is held already, nobody is asked.
    assert not [e for e in net.step(w0, heard) if isinstance(e, Send)]


def test_receipts_that_prove_nothing_ask_little() -> None:
    net = network()
    prefix, a, b = split(net, "sue")
    w0, w1, w3 = net.prefixes[0], net.prefixes[1], net.prefixes[3]

    def asked(payload: bytes) -> list[str]:
        effects = net.step(w0, Heard(kel_topic(prefix), NodePrefix(""), payload))
        return [e.to for e in effects if isinstance(e, Send)]

    # A receipt by a key the KEL never named: nobody is asked.
    assert asked(receipts(b, [Signer(seed(120), transferable=False)])) == []
    # A receipt of b naming w1, which holds a (a forgery: w1 never signed it): w1 is asked
    # once, answers with a, and nothing is kept.
    w3_key = node_signer(3).verfer.encode()
    forged = receipts(b, [node_signer(3)]).replace(w3_key, w1.encode())
    assert asked(forged) == [w1]
    rivals = net.witness(w0).rivals
    assert not rivals.held(prefix, 1, b.said) and rivals.asking == 0
    # Nor again, for b or for any other version at that sn: its answer would be the same.
    made_up = interact(prefix, prior=a.prior or "", sn=1, anchors=[{"v": "made up"}])
    assert asked(forged) == []
    assert asked(receipts(made_up, [node_signer(3)]).replace(w3_key, w1.encode())) == []
    # The forgeries cost the real receipt nothing: w3's makes w0 ask w3, and keep b.
    assert asked(receipts(b, [node_signer(3)])) == [w3]
    assert rivals.held(prefix, 1, b.said)

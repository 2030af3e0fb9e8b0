"""When a watcher asks for the events before one it heard out of order (roles/watcher.py).

Under load a KEL's next event is often heard before the last receipts of the one before it,
which then waits in escrow short of receipts: nothing is missing, so nothing is asked (asking
at once cost about one gap query per event at both watchers, benchmarks/network.py). An event
that is really missing is asked for at once, as before.
"""

from __future__ import annotations

from dkms.node.roles.effects import Effect, Send
from dkms.node.roles.inputs import GapQuery, Heard
from dkms.node.roles.topics import kel_topic
from dkms.node.roles.watcher import Watcher
from dkms.node.testing.keys import node_signer, seed
from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.events import Event, incept, interact
from dkms.protocol.ids import NodePrefix

from .kit import governance, receipts, signed

WIT = [node_signer(i) for i in range(4)]
ME = Signer(seed(40), transferable=False)
GOV, _ = governance(watchers=(ME.verfer,), jurors=(), judges=())
KEY = Signer(seed(41))


def kel(events: int) -> list[Event]:
    icp = incept(
        [KEY.verfer],
        next_digests=[next_key_digest(Signer(seed(42)).verfer)],
        witnesses=[w.verfer for w in WIT],
        toad=3,
    )
    chain = [icp]
    for sn in range(1, events):
        chain.append(interact(icp.prefix, prior=chain[-1].said, sn=sn, anchors=[{"n": sn}]))
    return chain


def hear(watcher: Watcher, event: Event, payload: bytes, now: float) -> list[Effect]:
    return watcher.step(Heard(kel_topic(event.prefix), NodePrefix(WIT[0].verfer), payload), now)


def gap_asks(effects: list[Effect]) -> list[Send]:
    return [e for e in effects if isinstance(e, Send) and isinstance(e.tag, GapQuery)]


def test_a_successor_heard_before_the_last_receipts_asks_for_nothing() -> None:
    watcher = Watcher(ME, GOV)
    icp, ixn1, ixn2 = kel(3)
    assert gap_asks(hear(watcher, icp, signed(icp, [KEY]) + receipts(icp, WIT[:3]), 1.0)) == []
    # sn 1 with one receipt of three: escrowed, short of receipts.
    assert gap_asks(hear(watcher, ixn1, signed(ixn1, [KEY]) + receipts(ixn1, WIT[:1]), 1.1)) == []
    # sn 2 whole: out of order behind sn 1, which is here: no query.
    assert gap_asks(hear(watcher, ixn2, signed(ixn2, [KEY]) + receipts(ixn2, WIT[:3]), 1.2)) == []
    # The last receipts of sn 1 come: both go into the KEL.
    hear(watcher, ixn1, receipts(ixn1, WIT[1:3]), 1.3)
    state = watcher.validator.state(icp.prefix)
    assert state is not None and state.sn == 2


def test_a_missing_event_is_asked_for_at_once() -> None:
    watcher = Watcher(ME, GOV)
    icp, _ixn1, ixn2 = kel(3)
    hear(watcher, icp, signed(icp, [KEY]) + receipts(icp, WIT[:3]), 1.0)
    asks = gap_asks(hear(watcher, ixn2, signed(ixn2, [KEY]) + receipts(ixn2, WIT[:3]), 1.1))
    assert {a.to for a in asks} and all(a.to in {w.verfer for w in WIT} for a in asks)

"""Watchers tell each other their KELs' tips (`roles/views.py`), so a key state says how many
of the roster's watchers hold it: agree, behind, ahead, unknown; a peer that does not answer is
left alone a while and told again; only rostered watchers are recorded; bounded asks.
Pure: the in-memory driver, no clock.
"""

from __future__ import annotations

from typing import Any

import cbor2

from dkms.node.roles.codes import Code
from dkms.node.roles.effects import Reply, Send, Surface
from dkms.node.roles.inputs import Request
from dkms.node.roles.views import BATCH, QUIET, ROUND, Views
from dkms.node.roles.watcher import Watcher
from dkms.node.testing.witnessed import Witnessed
from dkms.protocol.ids import NodePrefix

from .test_checking import APP, WATCHERS, check, incepted, network, shown, watcher


def agreement(net: Witnessed, i: int, prefix: str) -> dict[str, Any]:
    state = watcher(net, i).key_state(prefix)
    result: dict[str, Any] = state["agreement"]
    return result


def views_of(net: Witnessed, i: int, prefix: str) -> dict[str, str]:
    return {v["watcher"]: v["view"] for v in agreement(net, i, prefix)["views"]}


def test_watchers_that_hold_the_same_tip_agree() -> None:
    net = network()
    prefix = incepted(net, "alice", 31)
    for i in (0, 1):  # nothing told yet
        assert agreement(net, i, prefix) == {"roster": 2, "agree": 1, "views": [], "unknown": 1}
    net.advance(ROUND)
    for i in (0, 1):
        other = WATCHERS[1 - i].verfer
        found = agreement(net, i, prefix)
        assert (found["roster"], found["agree"], found["unknown"]) == (2, 2, 0)
        kel = watcher(net, i).validator.kel(prefix)
        assert kel is not None
        assert found["views"] == [
            {"watcher": other, "view": "agree", "sn": kel.sn, "d": kel.last_said}
        ]
    # No more asks while nothing moves.
    before = net.requests
    net.advance(10 * ROUND)
    assert net.requests == before


def test_a_watcher_behind_is_seen_behind_until_its_tip_moves() -> None:
    net = network()
    prefix = incepted(net, "bob", 33, events=0)
    net.advance(ROUND)
    w1 = WATCHERS[1].verfer
    net.down.add(w1)  # watcher 1 loses the gossip of the next event
    net.run(net.controller.interact("bob", [{"n": 1}], now=net.now), "controller")
    net.down.clear()
    net.advance(ROUND)  # watcher 0 tells watcher 1 its tip, and hears watcher 1's
    assert views_of(net, 0, prefix) == {w1: "behind"}
    assert agreement(net, 0, prefix)["agree"] == 1
    assert views_of(net, 1, prefix) == {WATCHERS[0].verfer: "ahead"}
    # Watcher 1 takes the event (an application's check): its tip moves and it tells.
    assert check(net, 1, prefix, shown(net, prefix))["verdict"] == "ahead"
    net.advance(ROUND)
    for i in (0, 1):
        assert agreement(net, i, prefix)["agree"] == 2
        assert set(views_of(net, i, prefix).values()) == {"agree"}


def test_a_peer_that_does_not_answer_is_told_again_later() -> None:
    net = network()
    w1 = WATCHERS[1].verfer
    net.down.add(w1)
    prefix = incepted(net, "cy", 35, events=0)
    net.advance(ROUND)  # the ask fails: watcher 1 is down
    assert agreement(net, 0, prefix)["unknown"] == 1
    before = net.requests
    net.advance(QUIET / 2)
    assert net.requests == before  # left alone for QUIET seconds
    net.down.clear()
    assert check(net, 1, prefix, shown(net, prefix))["verdict"] == "ahead"
    net.advance(QUIET)
    assert views_of(net, 0, prefix) == {w1: "agree"}


def test_tips_from_a_node_off_the_roster_are_not_recorded_and_asks_are_bounded() -> None:
    net = network()
    prefix = incepted(net, "dee", 37, events=0)
    kel = watcher(net, 0).validator.kel(prefix)
    assert kel is not None
    tips = [[prefix, kel.sn + 5, "E" + "x" * 43]]
    for peer, recorded in ((APP, False), (NodePrefix(WATCHERS[1].verfer), True)):
        ask = cbor2.dumps({"t": "tips", "v": tips})
        [reply] = watcher(net, 0).step(Request(Surface.QUERY, peer, ask), net.now)
        assert isinstance(reply, Reply) and reply.code is Code.OK
        assert cbor2.loads(reply.payload) == {"v": [[prefix, kel.sn, kel.last_said]]}
        assert (views_of(net, 0, prefix) != {}) is recorded
    assert views_of(net, 0, prefix) == {WATCHERS[1].verfer: "ahead"}
    for bad in ("x", [[prefix, 0, "d"]] * (BATCH + 1)):
        ask = cbor2.dumps({"t": "tips", "v": bad})
        [reply] = watcher(net, 0).step(Request(Surface.QUERY, APP, ask), net.now)
        assert isinstance(reply, Reply) and reply.code is Code.BAD_QUERY
    # Many identifiers move at once: each ask carries at most BATCH of them.
    net.advance(ROUND)  # dee's tip told first
    role: Watcher = watcher(net, 0)
    for n in range(BATCH + 10):
        role.views.changed(f"E{n:043d}", net.now)
    sends = [e for e in role.views.round(net.now + ROUND) if isinstance(e, Send)]
    [send] = sends
    assert len(cbor2.loads(send.payload)["v"]) == BATCH
    assert role.views.table_sizes()["queued"] == 10


def test_a_watcher_off_the_roster_tells_no_one() -> None:
    """A relay (a watcher the roster does not name) would be told nothing back and recorded
    by no one: it sends no tips (it did, costing rostered watchers a request a second)."""
    sent: list[Any] = []
    relay = Views("relay", lambda prefix: None, lambda: ("w0", "w1"))
    sent += relay.changed("Eprefix", 0.0)
    sent += relay.round(ROUND)
    assert not [e for e in sent if isinstance(e, Send)]
    rostered = Views("w0", lambda prefix: None, lambda: ("w0", "w1"))
    effects = rostered.changed("Eprefix", 0.0) + rostered.round(ROUND)
    assert [e.to for e in effects if isinstance(e, Send)] == ["w1"]

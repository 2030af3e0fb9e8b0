"""The engine and the gossipsub model on their own (no roles): ordering, mesh bounds,
repair of losses by lazy gossip, scoring, partitions."""

from __future__ import annotations

import random

from dkms.simulations.engine import SLOTS, Sim
from dkms.simulations.gossip import Gossip, GossipParams, Msg
from dkms.simulations.links import LinkModel, Links


def network(
    nodes: int, *, loss: float = 0.0, history: int = 3, seed: int = 1
) -> tuple[Sim, Gossip, list[tuple[int, Msg]]]:
    sim = Sim(seed)
    links = Links(LinkModel(loss=loss).check(), sim.rng)
    got: list[tuple[int, Msg]] = []
    params = GossipParams(history=history).check()
    gossip = Gossip(
        sim,
        links,
        params,
        nodes,
        validate=lambda m: not m.payload.startswith(b"bad"),
        receive=lambda node, msg: got.append((node, msg)),
    )
    gossip.connect_randomly(list(range(nodes)))
    for node in range(nodes):
        gossip.subscribe(node, "t")
    gossip.start()
    return sim, gossip, got


def test_events_run_in_time_order_and_ties_in_scheduling_order() -> None:
    sim = Sim(1)
    seen: list[str] = []
    sim.at(2.0, seen.append, "c")
    sim.at(1.0, seen.append, "a")
    sim.at(1.0, seen.append, "b")
    sim.run(1.5)
    assert seen == ["a", "b"] and sim.now == 1.5
    sim.run(3.0)
    assert seen == ["a", "b", "c"]


def test_the_bucketed_queue_plays_exactly_the_order_one_heap_would() -> None:
    """Times spread over many 1 ms buckets, on their edges, tied, and scheduled while play
    is inside a bucket (before and after what is playing): played in (time, order) order."""
    sim = Sim(1)
    rng = random.Random(7)
    played: list[tuple[float, int]] = []
    expected: list[tuple[float, int]] = []
    counter = iter(range(10**6))

    def hit(when: float, label: int, spawn: bool) -> None:
        assert sim.now == when
        played.append((when, label))
        if spawn:  # schedule more from inside play: same bucket, next bucket, far ahead
            for delay in (0.0, 0.0001, 1 / SLOTS, rng.random() * 0.01, 3.0):
                add(when + delay, spawn=False)

    def add(when: float, *, spawn: bool) -> None:
        label = next(counter)
        expected.append((when, label))
        sim.at(when, hit, when, label, spawn)

    edges = [k / SLOTS for k in range(40)]
    for when in [rng.random() * 2 for _ in range(300)] + edges + edges + [0.5] * 5:
        add(when, spawn=rng.random() < 0.3)
    assert sim.pending == len(expected)
    sim.run(1.0)
    assert all(when <= 1.0 for when, _ in played) and sim.now == 1.0
    sim.run(10.0)
    assert played == sorted(expected) and sim.pending == 0


def test_received_counters_survive_folding() -> None:
    sim, gossip, _ = network(200)
    for i in range(5):
        gossip.publish(i, "t", f"m{i}".encode())
    sim.run(3.0)
    before = [(gossip.recv_msgs[n], gossip.recv_bytes[n]) for n in range(200)]
    assert sum(c for c, _ in before) == gossip.deliveries
    gossip.fold()
    assert not any(gossip.recv)
    gossip.received(3, 100)
    after = [(gossip.recv_msgs[n], gossip.recv_bytes[n]) for n in range(200)]
    before[3] = (before[3][0] + 1, before[3][1] + 100)
    assert after == before


def test_mesh_changes_reach_the_forwarding_cache() -> None:
    sim, gossip, _ = network(300)
    first = gossip.publish(0, "t", b"one")
    sim.run(3.0)
    t = gossip.topics["t"]

    def cached() -> dict[int, tuple[int, ...]]:
        return {n: peers for n, peers in enumerate(t.fwd) if peers is not None}

    assert cached() and all(tuple(t.mesh[n]) == peers for n, peers in cached().items())
    gone = next(n for n in cached() if n > 1)  # not a publisher
    neighbours = set(t.mesh[gone])
    gossip.leave(gone)
    assert gone not in cached() and not neighbours & set(cached())
    second = gossip.publish(1, "t", b"two")
    sim.run(8.0)
    assert all(tuple(t.mesh[n]) == peers for n, peers in cached().items())
    assert first.reached == 300 and second.reached == 299 and not second.got[gone]


def test_a_run_in_pieces_plays_what_one_run_plays() -> None:
    """`Gossip.drive` checks `until` only in the bucket that holds it: stopping anywhere (just
    before a delivery in the same bucket, on a bucket's edge) and going on must play the same
    deliveries at the same times, and none after the stop."""

    def play(stops: list[float]) -> tuple[list[tuple[float, int, int]], int, int]:
        sim, gossip, _ = network(300)
        heard: list[tuple[float, int, int]] = []
        inner = gossip.receive
        gossip.receive = lambda node, msg: (heard.append((sim.now, node, msg.id)), inner(node, msg))
        for i in range(6):
            gossip.publish(i * 11, "t", f"m{i}".encode())
        for until in stops:
            sim.run(until)
            assert sim.now == until and all(when <= until for when, _, _ in heard)
        return heard, gossip.deliveries, gossip.duplicates

    whole = play([6.0])
    times = sorted({when for when, _, _ in whole[0]})
    # Just before deliveries, inside their bucket: what is due after the stop must wait.
    stops = [t - 1e-9 for t in times[5::97] if int((t - 1e-9) * SLOTS) == int(t * SLOTS)]
    stops += [k / SLOTS for k in (3000, 9000)]  # on bucket edges
    assert len(stops) >= 10
    assert play([*sorted(stops), 6.0]) == whole and len(whole[0]) == 6 * 299


def test_meshes_stay_within_bounds_and_every_member_gets_every_message() -> None:
    sim, gossip, _ = network(500)
    msgs = [gossip.publish(i * 7, "t", f"m{i}".encode()) for i in range(20)]
    sim.run(10.0)
    mesh = gossip.topics["t"].mesh
    p = gossip.p
    assert all(p.d_low <= len(peers) <= p.d_high for peers in mesh.values())
    assert all(m.reached == 500 for m in msgs)
    assert gossip.duplicates > 0


def test_lazy_gossip_repairs_what_lossy_links_drop() -> None:
    sim, gossip, _ = network(400, loss=0.3)
    msgs = [gossip.publish(i, "t", f"m{i}".encode()) for i in range(10)]
    sim.run(20.0)
    repaired = sum(m.reached for m in msgs) / (400 * len(msgs))
    assert repaired > 0.99
    assert gossip.control > 0


def test_invalid_messages_are_not_forwarded_and_cost_their_sender() -> None:
    sim, gossip, got = network(200)
    for i in range(15):
        gossip.publish(0, "t", b"bad" + bytes([i]))
    sim.run(5.0)
    assert not got  # nobody accepted, so nobody forwarded
    assert gossip.invalid > 0
    assert any(peer == 0 for _, peer in gossip.graylisted)


def test_a_partition_cuts_delivery_until_it_heals() -> None:
    sim, gossip, _ = network(300)
    cut = set(range(0, 300, 3))
    gossip.links.partition([set(range(300)) - cut, cut])
    during = gossip.publish(1, "t", b"during")
    sim.run(5.0)
    assert during.reached <= 300 - len(cut)
    gossip.links.heal()
    after = gossip.publish(1, "t", b"after")
    sim.run(10.0)
    assert after.reached == 300


def test_the_same_seed_replays_the_same_run() -> None:
    def trace(seed: int) -> list[tuple[int, int]]:
        sim, gossip, got = network(200, seed=seed)
        for i in range(5):
            gossip.publish(i, "t", f"m{i}".encode())
        sim.run(5.0)
        return [(node, msg.id) for node, msg in got]

    assert trace(4) == trace(4)
    assert trace(4) != trace(5)


def test_regions_and_bandwidth_slow_delivery_down() -> None:
    def p99_reach(model: LinkModel) -> float:
        sim = Sim(3)
        links = Links(model.check(), sim.rng, region=[i % 2 for i in range(300)])
        first: dict[int, float] = {}
        gossip = Gossip(
            sim,
            links,
            GossipParams().check(),
            300,
            validate=lambda m: True,
            receive=lambda node, msg: first.setdefault(node, sim.now),
        )
        gossip.connect_randomly(list(range(300)))
        for node in range(300):
            gossip.subscribe(node, "t")
        gossip.publish(0, "t", b"x" * 2000)
        sim.run(30.0)
        times = sorted(first.values())
        return times[int(0.99 * (len(times) - 1))]

    plain = p99_reach(LinkModel(kind="constant", median_ms=10.0))
    far = p99_reach(
        LinkModel(
            kind="constant",
            median_ms=10.0,
            regions=("eu", "us"),
            region_ms=((0.0, 80.0), (80.0, 0.0)),
        )
    )
    thin = p99_reach(LinkModel(kind="constant", median_ms=10.0, bandwidth_kbps=100.0))
    assert plain < far and plain < thin

"""The engine and the gossipsub model on their own (no roles): ordering, mesh bounds,
repair of losses by lazy gossip, scoring, partitions."""

from __future__ import annotations

from dkms.simulations.engine import Sim
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

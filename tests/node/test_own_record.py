"""A node's own location record (`runtime/ownrecord.py`): signed with the wall clock, held by
its role, gossiped at start, after its first neighbour (+2, +10, +60 s) and then every few
minutes, never counted as per-event traffic. Two witnesses on the in-memory network, on
trio's autojump clock."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from dkms.node.roles.outbox import GOSSIP, GOSSIP_BYTES
from dkms.node.roles.witness import Witness
from dkms.node.runtime.loop import Runtime
from dkms.node.runtime.ownrecord import OwnRecord, fitting
from dkms.node.runtime.transport import MemoryNetwork
from dkms.node.testing.keys import node_signer
from dkms.protocol.location import MAX_ADDRESS, MAX_ADDRESSES

ADDRS = ["/ip4/127.0.0.2/tcp/4001", "/ip4/127.0.0.1/tcp/4001"]


def test_only_addresses_a_record_can_carry_go_in_it() -> None:
    long = "/dns/" + "x" * MAX_ADDRESS + "/tcp/1"
    many = [f"/ip4/10.0.0.{n}/tcp/1" for n in range(12)]
    assert fitting([long, "/ip4/1.2.3.4/tcp/1", "", "/dns/é/tcp/1"]) == ["/ip4/1.2.3.4/tcp/1"]
    assert fitting(many) == many[:MAX_ADDRESSES]


@pytest.mark.trio
async def test_the_record_goes_out_on_schedule_and_reaches_a_peer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    a, b = Witness(node_signer(1)), Witness(node_signer(2))
    wall = [1_700_000_000.0]  # seconds; stepped back below, as a clock may be
    neighbour = trio.Event()

    async def neighbours(count: int) -> None:
        await neighbour.wait()

    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            runtime_a = Runtime(a, net.join(a.prefix))
            runtime_b = Runtime(b, net.join(b.prefix))
            await nursery.start(runtime_a.run)
            await nursery.start(runtime_b.run)
            own = OwnRecord(runtime_a, a.locations, a.signer, lambda: ADDRS, clock=lambda: wall[0])
            nursery.start_soon(own.run, neighbours)
            await trio.testing.wait_all_tasks_blocked()
            first = a.locations.get(a.prefix)
            assert first is not None and list(first.addresses) == ADDRS
            assert first.time == 1_700_000_000_000
            assert b.locations.get(a.prefix) == first  # gossiped to b, admitted, kept
            await trio.sleep(100)
            assert own.published == 1  # nothing more until a neighbour comes
            wall[0] -= 50  # the wall clock steps back
            neighbour.set()
            start = trio.current_time()
            for due, count in ((2, 2), (10, 3), (60, 4), (360, 5), (660, 6)):
                await trio.sleep_until(start + due - 0.5)
                assert own.published == count - 1
                await trio.sleep(1)
                assert own.published == count
                held = a.locations.get(a.prefix)
                assert held is not None and b.locations.get(a.prefix) == held
            assert held.time == first.time + 5  # never older than the last, though
            nursery.cancel_scope.cancel()
    assert runtime_a.metrics.value("locations_published") == 6
    assert runtime_a.metrics.value(GOSSIP) == 0 and runtime_a.metrics.value(GOSSIP_BYTES) == 0

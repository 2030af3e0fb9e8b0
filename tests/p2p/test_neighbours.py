"""Bootstrap through one peer: peer exchange gives every host D_low neighbours, and gossip
crosses a network that is no longer a star."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack

import trio

from dkms.node.p2p import PEERS_PROTOCOL, HostConfig, P2PHost, open_host, parse_introduction

TOPIC = "/dkms/1/duplicity"
LIMIT = 30  # seconds any test may take


async def test_bootstrap_from_one_peer_reaches_d_low_and_survives_its_loss() -> None:
    count = 8
    config = HostConfig(maintenance_interval=0.5)
    with trio.fail_after(LIMIT):
        async with AsyncExitStack() as stack:
            leaves = [
                await stack.enter_async_context(
                    open_host(bytes([i + 1]) * 32, config=config, topics=[TOPIC])
                )
                for i in range(1, count)
            ]
            subs = [await h.subscribe(TOPIC) for h in leaves]
            async with open_host(b"\x01" * 32, config=config, topics=[TOPIC]) as boot:
                start = time.perf_counter()
                reports = []

                async def join(host: P2PHost) -> None:
                    reports.append(await host.connect([boot.introduction]))

                async with trio.open_nursery() as nursery:  # everyone at once, all via `boot`
                    for host in leaves:
                        nursery.start_soon(join, host)
                assert all(not r.failed for r in reports)
                for host in [boot, *leaves]:
                    await host.wait_for_peers(config.min_peers)
                connected = time.perf_counter() - start
                # libp2p signals each graft, not a mesh's size: poll the size (heartbeat 1 s).
                while any(len(h.mesh_peers(TOPIC)) < config.min_peers for h in leaves):
                    await trio.sleep(0.05)
                meshed = time.perf_counter() - start
                degrees = [len(h.connected_peers()) for h in leaves]
                meshes = [len(h.mesh_peers(TOPIC)) for h in leaves]
            # The bootstrap peer is gone; the leaves still reach each other.
            await leaves[-1].publish(TOPIC, b"evidence")
            for sub in subs:
                assert (await sub.receive()).payload == b"evidence"
            assert min(degrees) >= config.min_peers
            print(
                f"\n{count} hosts via one bootstrap peer: >= {config.min_peers} neighbours each "
                f"after {connected * 1000:.0f} ms, meshes >= {config.min_peers} after "
                f"{meshed * 1000:.0f} ms; degrees {degrees}; mesh sizes {meshes}"
            )


async def test_peer_exchange_lists_known_peers_but_not_the_asker() -> None:
    with trio.fail_after(LIMIT):
        async with AsyncExitStack() as stack:
            a, b, c = [
                await stack.enter_async_context(open_host(bytes([i + 1]) * 32)) for i in range(3)
            ]
            await b.connect([a.introduction])  # b introduces itself to a
            code, payload, _ = await c.request(
                a.introduction, PEERS_PROTOCOL, c.introduction.encode()
            )
            listed = [parse_introduction(line) for line in payload.decode().splitlines()]
            assert code.ok and [str(i) for i in listed] == [b.introduction]
            # A peer may only introduce itself: a claim about someone else is ignored.
            forged = f"{b.prefix}@/ip4/127.0.0.1/tcp/1"
            code, payload, _ = await c.request(a.introduction, PEERS_PROTOCOL, forged.encode())
            assert code.ok and payload.decode().splitlines() == [b.introduction]


async def test_announced_address_replaces_the_listen_address() -> None:
    with trio.fail_after(LIMIT):
        config = HostConfig(announce=("/ip4/127.0.0.1/tcp/4001",))
        async with open_host(b"\x05" * 32, config=config) as host:
            assert host.introduction == f"{host.prefix}@/ip4/127.0.0.1/tcp/4001"
            assert host.listen_addrs[0] != host.introductions()[0].addr

"""Bootstrap through one peer: peer exchange gives every host D_low neighbours, and gossip
crosses a network that is no longer a star."""

from __future__ import annotations

import logging
import socket
import time
from contextlib import AsyncExitStack

import pytest
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
            for sub in subs[:-1]:  # every other leaf (the publisher is not handed its own)
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


async def test_a_node_on_every_interface_introduces_itself_with_concrete_addresses() -> None:
    with trio.fail_after(LIMIT):
        async with open_host(b"\x06" * 32, "/ip4/0.0.0.0/tcp/0") as host:
            port = host.listen_addrs[0].value_for_protocol("tcp")
            addrs = [str(i.addr) for i in host.introductions()]
            assert addrs[-1] == f"/ip4/127.0.0.1/tcp/{port}"  # loopback last
            assert not any("0.0.0.0" in a for a in addrs)
            async with open_host(b"\x07" * 32) as other:  # and the loopback one is dialable
                report = await other.connect([f"{host.prefix}@{addrs[-1]}"])
                assert report.connected == (host.prefix,)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_bootstrap_peer_down_at_start_is_joined_once_it_comes_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="dkms.node.p2p.neighbours")
    listen = f"/ip4/127.0.0.1/tcp/{_free_port()}"
    config = HostConfig(maintenance_interval=30.0)  # only the bootstrap back-off wakes it
    with trio.fail_after(LIMIT):
        async with open_host(b"\x08" * 32, config=config) as node:
            boot_seed = b"\x09" * 32
            async with open_host(boot_seed, listen) as probe:
                intro = probe.introduction  # where the bootstrap peer will be
            report = await node.connect([intro])
            assert report.connected == () and list(report.failed) == [intro]
            await trio.sleep(2.5)  # the bootstrap peer stays down a while: a few retries fail
            async with open_host(boot_seed, listen) as boot:
                up = trio.current_time()
                await node.wait_for_peers(1)
                joined = trio.current_time() - up
                assert node.connected_peers() == [boot.prefix]
    messages = [r.getMessage() for r in caplog.records]
    warning = "isolated: no neighbours; retrying bootstrap peers ("
    assert any(m.startswith(warning) for m in messages)
    assert f"joined bootstrap peer {intro}" in messages
    print(f"\njoined the bootstrap peer {joined:.2f} s after it came up")

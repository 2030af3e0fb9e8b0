"""A watcher that joins after the network got going (real nodes on 127.0.0.1).

Gossip keeps no history: a roster published, or an identifier incepted, before a node joined
never reaches it that way. It asks its bootstrap peers instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import trio

from dkms.node.config import NodeConfig
from dkms.node.daemon import _bootstrap_prefixes
from dkms.node.p2p import open_host
from dkms.node.roles.controller import Controller
from dkms.node.roles.duties import GOVERNANCE_KEY
from dkms.node.roles.effects import PersistEvent, PersistMeta, PersistReceipts, Surface
from dkms.node.roles.governance import roster_bundle
from dkms.node.roles.topics import kel_topic
from dkms.node.roles.watcher import Watcher
from dkms.node.runtime.loop import Runtime
from dkms.node.runtime.store import FILENAME, Store
from dkms.node.secretfiles import load_or_create_node_seed
from dkms.node.testing.keys import seed
from dkms.node.testing.localnet import LOOPBACK, start_node
from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.events import incept, interact
from dkms.protocol.roster import Roster
from dkms.protocol.stream import Attachments, messagize


def governance() -> Controller:
    gov = Controller()
    gov.incept("gov", [seed(90)], [seed(91)], now=0.0)
    return gov


def watcher(tmp_path: Path, gov: Controller, name: str, *bootstrap: str) -> NodeConfig:
    return NodeConfig(
        role="watcher",
        data_dir=tmp_path / name,
        listen=LOOPBACK,
        governance=gov.identity("gov").prefix,
        bootstrap=bootstrap,
    )


async def test_a_watcher_without_a_roster_gets_it_from_its_bootstrap_peer(
    tmp_path: Path,
) -> None:
    # The peer holds its roster from an earlier run (restored from its store, so it gossips
    # nothing at start): the newcomer can only have it by asking.
    gov = governance()
    old = tmp_path / "old"
    old_prefix = Signer(load_or_create_node_seed(old), transferable=False).verfer
    roster = Roster(gov.identity("gov").prefix, 3, watchers=(old_prefix,))
    with Store.open(old / FILENAME) as store:
        store.apply([PersistMeta(GOVERNANCE_KEY, roster_bundle(gov, "gov", roster))])

    runtimes: dict[str, Runtime] = {}
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            peer = await start_node(nursery, watcher(tmp_path, gov, "old"), runtimes)
            assert isinstance(runtimes[peer.prefix].role, Watcher)
            config = watcher(tmp_path, gov, "new", peer.introduction)
            host = await start_node(nursery, config, runtimes)
            runtime = runtimes[host.prefix]
            new = runtime.role
            assert isinstance(new, Watcher)
            while new.governance.roster is None:
                await runtime.changed.wait()
            assert new.governance.epoch == 3
            nursery.cancel_scope.cancel()


def test_bootstrap_entries_give_the_peers_to_ask_and_bad_ones_are_skipped() -> None:
    prefix = Signer(seed(7), transferable=False).verfer
    entries = [f"{prefix}@/ip4/127.0.0.1/tcp/4001", "not an introduction", "x@/ip4/1.2.3.4"]
    assert _bootstrap_prefixes(entries) == (prefix,)


def kel_sn(watcher: Watcher, prefix: str) -> int:
    kel = watcher.validator.kel(prefix)
    return kel.sn if kel is not None else -1


async def test_a_watcher_that_joins_later_fills_in_a_kel_begun_before_it(tmp_path: Path) -> None:
    # The peer holds an identifier's inception from an earlier run (restored from its store:
    # nothing is gossiped). The newcomer then hears only the next interaction, and can have
    # the inception only by asking its peer.
    gov = governance()
    witnesses = [Signer(seed(40 + i), transferable=False) for i in range(4)]
    key, nxt = Signer(seed(10)), Signer(seed(11))
    icp = incept(
        [key.verfer],
        next_digests=[next_key_digest(nxt.verfer)],
        witnesses=[w.verfer for w in witnesses],
        toad=3,
    )
    stored = messagize(icp, Attachments(sigs=(key.sign_indexed(icp.raw, 0),)))
    receipts = tuple((w.verfer, w.sign_raw(icp.raw)) for w in witnesses)
    with Store.open(tmp_path / "old" / FILENAME) as store:
        store.apply(
            [
                PersistEvent(icp.prefix, 0, icp.said, stored),
                PersistReceipts(icp.prefix, 0, icp.said, receipts),
            ]
        )
    ixn = interact(icp.prefix, prior=icp.said, sn=1)
    wigs = tuple(w.sign_indexed(ixn.raw, i, None) for i, w in enumerate(witnesses))
    heard = messagize(ixn, Attachments(sigs=(key.sign_indexed(ixn.raw, 0),), wigs=wigs))

    runtimes: dict[str, Runtime] = {}
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            peer = await start_node(nursery, watcher(tmp_path, gov, "old"), runtimes)
            old = runtimes[peer.prefix].role
            assert isinstance(old, Watcher) and kel_sn(old, icp.prefix) == 0
            config = watcher(tmp_path, gov, "new", peer.introduction)
            host = await start_node(nursery, config, runtimes)
            runtime = runtimes[host.prefix]
            new = runtime.role
            assert isinstance(new, Watcher)
            topic = kel_topic(icp.prefix)
            async with open_host(os.urandom(32), LOOPBACK) as publisher:
                await publisher.connect([host.introduction])
                await publisher.subscribe(topic)
                await publisher.wait_for_peers(1)
                while kel_sn(new, icp.prefix) != 1:
                    await publisher.publish(topic, heard)
                    with trio.move_on_after(1):
                        await runtime.changed.wait()
            kel = new.validator.kel(icp.prefix)
            assert kel is not None and [r.event.said for r in kel.chain] == [icp.said, ixn.said]
            nursery.cancel_scope.cancel()


async def test_a_watcher_bootstrapped_only_from_a_witness_gets_the_roster_the_witness_kept(
    tmp_path: Path,
) -> None:
    # The roster is handed to the witness (as `dkms governance roster create --publish-to`
    # does); the witness is then restarted (it must answer from its store); a watcher that
    # knows only the witness asks it.
    gov = governance()
    prefix = gov.identity("gov").prefix
    bundle = roster_bundle(gov, "gov", Roster(prefix, 2, watchers=(prefix,)))
    witness = NodeConfig(role="witness", data_dir=tmp_path / "w", listen=LOOPBACK)
    runtimes: dict[str, Runtime] = {}
    with trio.fail_after(30):
        async with trio.open_nursery() as first:  # ends once this witness has stopped
            host = await start_node(first, witness, runtimes)
            async with open_host(os.urandom(32), LOOPBACK) as client:
                code, _, reason = await client.request(
                    host.introduction, Surface.GOVERNANCE, bundle
                )
            assert code.ok, reason
            first.cancel_scope.cancel()
        async with trio.open_nursery() as nursery:
            host = await start_node(nursery, witness, runtimes)  # from its store now
            config = watcher(tmp_path, gov, "new", host.introduction)
            started = trio.current_time()
            new_host = await start_node(nursery, config, runtimes)
            runtime = runtimes[new_host.prefix]
            new = runtime.role
            assert isinstance(new, Watcher)
            while new.governance.roster is None:
                await runtime.changed.wait()
            took = trio.current_time() - started
            assert new.governance.epoch == 2
            nursery.cancel_scope.cancel()
    print(f"\nroster from the witness {took:.2f} s after the watcher started")

"""A watcher that starts without a roster gets one from its bootstrap peer (real nodes).

Gossip keeps no history, so a roster published before a node joined never reaches it that
way. Here the peer holds its roster from an earlier run (restored from its store, so it
gossips nothing at start): the newcomer can only have it by asking.
"""

from __future__ import annotations

from pathlib import Path

import trio

from dkms.node.config import NodeConfig
from dkms.node.govcmd import roster_bundle
from dkms.node.localnet import LOOPBACK, start_node
from dkms.node.nodecli import _bootstrap_prefixes
from dkms.node.roles.controller import Controller
from dkms.node.roles.effects import PersistMeta
from dkms.node.roles.watcher import GOVERNANCE_KEY, Watcher
from dkms.node.runtime import Runtime
from dkms.node.secretfiles import load_or_create_node_seed
from dkms.node.store import FILENAME, Store
from dkms.protocol.crypto import Signer
from dkms.protocol.roster import Roster


def seed(n: int) -> bytes:
    return bytes([n]) * 32


async def test_a_watcher_without_a_roster_gets_it_from_its_bootstrap_peer(
    tmp_path: Path,
) -> None:
    gov = Controller()
    gov.incept("gov", [seed(90)], [seed(91)], now=0.0)
    governance = gov.identity("gov").prefix
    old = tmp_path / "old"
    old_prefix = Signer(load_or_create_node_seed(old), transferable=False).verfer
    bundle = roster_bundle(gov, "gov", Roster(governance, 3, watchers=(old_prefix,)))
    with Store.open(old / FILENAME) as store:
        store.apply([PersistMeta(GOVERNANCE_KEY, bundle)])

    def watcher(name: str, *bootstrap: str) -> NodeConfig:
        return NodeConfig(
            role="watcher",
            data_dir=tmp_path / name,
            listen=LOOPBACK,
            governance=governance,
            bootstrap=bootstrap,
        )

    runtimes: dict[str, Runtime] = {}
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            peer = await start_node(nursery, watcher("old"), runtimes)
            assert isinstance(runtimes[peer.prefix].role, Watcher)
            host = await start_node(nursery, watcher("new", peer.introduction), runtimes)
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

"""Anti-entropy between real nodes on 127.0.0.1 (`roles/reconcile.py`): a watcher started after
a witness took its KELs, with gossip giving it nothing, holds every KEL within one
reconciliation period; so does a watcher that knows only that watcher.

The witness is restarted from its store before the watcher starts, so nothing of these KELs
is on the gossip (a restored witness publishes nothing, and re-sends no tails): the watcher
can have them only by reconciling with its bootstrap peer.
"""

from __future__ import annotations

import os
from pathlib import Path

import trio

from dkms.node.config import NodeConfig
from dkms.node.p2p import open_host
from dkms.node.roles.effects import Surface
from dkms.node.roles.watcher import Watcher
from dkms.node.roles.witness import Witness
from dkms.node.runtime.loop import Runtime
from dkms.node.secretfiles import load_or_create_node_seed
from dkms.node.testing.keys import seed
from dkms.node.testing.localnet import LOOPBACK, start_node
from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.events import incept, interact
from dkms.protocol.stream import Attachments, messagize

PERIOD = 5.0  # seconds between reconciliations, short for the test
IDENTIFIERS = 4
EVENTS = 5  # per identifier


def kel(witness: str, n: int) -> tuple[str, list[bytes]]:
    """An identifier witnessed by `witness` alone (toad 1): its events, signed, in order."""
    key, nxt = Signer(seed(60 + 2 * n)), Signer(seed(61 + 2 * n))
    icp = incept(
        [key.verfer], next_digests=[next_key_digest(nxt.verfer)], witnesses=[witness], toad=1
    )
    events = [icp]
    for sn in range(1, EVENTS):
        events.append(interact(icp.prefix, prior=events[-1].said, sn=sn, anchors=[{"n": sn}]))
    signed = [messagize(e, Attachments(sigs=(key.sign_indexed(e.raw, 0),))) for e in events]
    return icp.prefix, signed


def held(watcher: Watcher, prefixes: list[str]) -> int:
    return sum(
        1 for p in prefixes if (k := watcher.validator.kel(p)) is not None and k.sn == EVENTS - 1
    )


async def late_watcher(
    nursery: trio.Nursery,
    runtimes: dict[str, Runtime],
    data_dir: Path,
    governance: str,
    bootstrap: str,
    prefixes: list[str],
) -> tuple[str, Watcher, float, int]:
    """Start a watcher bootstrapped from `bootstrap`; wait (at most two periods and 5 s) until
    it holds every KEL. Its introduction, role, the seconds it took, and the KELs it holds."""
    config = NodeConfig(
        role="watcher",
        data_dir=data_dir,
        listen=LOOPBACK,
        governance=governance,
        bootstrap=(bootstrap,),
        reconcile_every=PERIOD,
    )
    started = trio.current_time()
    host = await start_node(nursery, config, runtimes)
    runtime = runtimes[host.prefix]
    watcher = runtime.role
    assert isinstance(watcher, Watcher)
    with trio.move_on_after(2 * PERIOD + 5):
        while held(watcher, prefixes) < IDENTIFIERS:
            await runtime.changed.wait()
    return host.introduction, watcher, trio.current_time() - started, held(watcher, prefixes)


async def test_a_late_watcher_holds_every_kel_within_one_period(tmp_path: Path) -> None:
    data = tmp_path / "witness"
    me = Signer(load_or_create_node_seed(data), transferable=False).verfer
    witness = NodeConfig(role="witness", data_dir=data, listen=LOOPBACK)
    kels = [kel(me, n) for n in range(IDENTIFIERS)]
    prefixes = [prefix for prefix, _ in kels]
    runtimes: dict[str, Runtime] = {}
    with trio.fail_after(60):
        async with trio.open_nursery() as first:  # the witness takes the KELs, then stops
            host = await start_node(first, witness, runtimes)
            async with open_host(os.urandom(32), LOOPBACK) as client:
                for _, events in kels:
                    for event in events:
                        code, _, reason = await client.request(
                            host.introduction, Surface.SUBMIT, event
                        )
                        assert code.ok, reason
            first.cancel_scope.cancel()
        async with trio.open_nursery() as nursery:
            host = await start_node(nursery, witness, runtimes)  # from its store
            restored = runtimes[host.prefix].role
            assert isinstance(restored, Witness)
            assert all(restored.validator.kel(p) is not None for p in prefixes)
            governance = Signer(seed(90)).verfer
            intro, watcher, took, count = await late_watcher(
                nursery, runtimes, tmp_path / "watcher", governance, host.introduction, prefixes
            )
            fetched = watcher.reconciler.fetched_kels
            # A second watcher that knows only the first reconciles with it.
            _, _, second_took, second_count = await late_watcher(
                nursery, runtimes, tmp_path / "second", governance, intro, prefixes
            )
            nursery.cancel_scope.cancel()
    print(f"\nevery KEL held {took:.2f} s after the watcher started (period {PERIOD:g} s)")
    print(f"by a watcher reconciling with that watcher: {second_took:.2f} s")
    assert count == IDENTIFIERS
    assert fetched == IDENTIFIERS  # each came by reconciliation, none by gossip
    assert took <= PERIOD
    assert second_count == IDENTIFIERS
    assert second_took <= PERIOD  # a watcher's summary is current (no FRESH wait)

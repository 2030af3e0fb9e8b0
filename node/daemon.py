"""A node assembled from its config: the store, the role, the host, the runtime.

`serve(config)` opens the store (one node identity per data directory, bound to one role),
rebuilds the role from what the store kept, listens, dials the bootstrap peers and runs the
runtime until cancelled; `dkms-node` (`cli/node.py`) is its command line. `node_info` says who
the node in a data directory is.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import gc
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import trio

from dkms.node import configvalues
from dkms.node.config import NodeConfig
from dkms.node.configvalues import BadValue
from dkms.node.http import HttpLimits, Listening, listen_http, node_app, serve_listening
from dkms.node.http.oobis import http_url
from dkms.node.p2p import (
    HostConfig,
    NodeIdentity,
    P2PError,
    open_host,
    parse_introduction,
)
from dkms.node.p2p.hotpaths import SIGNATURE_CHECKS
from dkms.node.p2p.neighbours import ConnectReport
from dkms.node.p2p.transport import P2PTransport
from dkms.node.roles.duties import GOVERNANCE_KEY
from dkms.node.roles.rosters import KEY_PREFIX as ROSTER_KEYS
from dkms.node.roles.watcher import Watcher
from dkms.node.roles.witness import Witness
from dkms.node.runtime import heap, memreport
from dkms.node.runtime.loop import Runtime
from dkms.node.runtime.metrics import Metrics, serve_metrics
from dkms.node.runtime.ownrecord import OwnRecord
from dkms.node.runtime.ratelimit import RateLimit
from dkms.node.runtime.store import Mark, Store, StoreError
from dkms.node.secretfiles import (
    SEED_FILE,
    SecretError,
    atomic_write,
    exposed,
    load_or_create_node_seed,
    read_private,
)
from dkms.node.signals import handle_signals as answer_signals
from dkms.node.status import NodeView
from dkms.node.storecheck import StoreRefused, open_proven, refused
from dkms.protocol.crypto import Signer
from dkms.protocol.errors import ProtocolError
from dkms.protocol.escrow import EscrowLimits

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from dkms.node.p2p import P2PHost

log = logging.getLogger("dkms.node")
NODE_FILE: Final = "node.json"  # who the node is and where it last listened (no secrets)


class NodeError(Exception):
    """The node cannot start or go on; the message says what to do."""


async def serve(
    config: NodeConfig,
    *,
    announce: Callable[[str], None] = print,
    handle_signals: bool = False,
    on_start: Callable[[Runtime], None] | None = None,
    freeze_heap: bool = False,
    config_file: Path | None = None,
    task_status: TaskStatus[P2PHost] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a witness or a watcher until cancelled (or signalled); `task_status` gets the
    host once it is up, and `on_start` (for embedding and tests) the runtime with its role.
    With `handle_signals`, SIGHUP re-reads `log_level` from `config_file` (`signals.py`).

    `freeze_heap` (the `dkms-node` process sets it; an embedding process decides for itself)
    moves everything alive once the state is restored (imports, libp2p, the restored KELs)
    out of the garbage collector's sight: a full collection otherwise walks all of it, about
    45 ms on a bare node and more with every KEL held, stalling gossip while it runs (see
    benchmarks/gcpause.py). Only reference cycles among those objects would be kept forever,
    and they are collected just before. It also keeps glibc's malloc to two arenas and has it
    give freed memory back every few seconds (`runtime/heap.py`)."""
    if freeze_heap:
        heap.limit_arenas()
    try:
        seed = load_or_create_node_seed(config.data_dir)
    except SecretError as err:
        raise NodeError(str(err)) from None
    warning = exposed(config.data_dir)
    if warning is not None:
        log.warning("%s", warning)
    signer = Signer(seed, transferable=False)
    limits = EscrowLimits(
        max_entries=config.escrow_entries,
        max_age=config.escrow_age,
        max_bytes=config.escrow_bytes,
        max_receipt_bytes=max(1, config.escrow_bytes // 4),
    )
    role: Witness | Watcher
    if config.role == "watcher":
        role = Watcher(
            signer,
            config.governance,
            limits=limits,
            watch=frozenset(config.watch),
            anomaly_after=config.anomaly_after,
            reconcile_every=config.reconcile_every,
            peers=_bootstrap_prefixes(config.bootstrap),
            page_bytes=config.kel_page,
            store_quota=config.store_quota,
            unwitnessed_quota=config.unwitnessed_quota,
        )
    else:
        role = Witness(
            signer,
            limits=limits,
            page_bytes=config.kel_page,
            store_quota=config.store_quota,
            unwitnessed_quota=config.unwitnessed_quota,
        )
    try:
        store, expect, record = open_proven(config.data_dir, signer.verfer)
    except StoreRefused as err:
        raise NodeError(str(err)) from None
    with contextlib.closing(record), store:
        store.after_commit(record.advance)  # before any receipt that depends on a commit
        _bind_role(store, config.role)
        restored = _restore(role, store, expect, config.data_dir)
        if freeze_heap:
            gc.collect()
            gc.freeze()
        try:
            host_config = HostConfig(
                max_message_size=config.max_message,
                request_timeout=config.request_timeout,
                announce=config.announce,
            )
        except ValueError as err:
            raise NodeError(f"announce: {err}") from None
        try:
            async with open_host(seed, config.listen, host_config) as host:
                await _run(
                    config,
                    role,
                    store,
                    host,
                    restored,
                    announce,
                    handle_signals,
                    task_status,
                    on_start,
                    own_process=freeze_heap,
                    config_file=config_file,
                )
        except P2PError as err:
            raise NodeError(f"network: {err}") from None
        except OSError as err:
            raise NodeError(f"cannot listen on {config.listen}: {err.strerror or err}") from None


def _bind_role(store: Store, role: str) -> None:
    """One node identity serves one infrastructure: the seed insists that the witnesses of an
    identifier and the watchers judging it be governed apart."""
    held = store.claim("role", role)
    if held is not None:
        raise NodeError(
            f"{store.path.parent} holds a node that served as a {held};"
            f" one identity may not be both a witness and a watcher: give the {role} its own"
            " --data-dir (and so its own key)"
        )


def _restore(role: Witness | Watcher, store: Store, expect: Mark | None, data_dir: Path) -> int:
    """Rebuild the role from the store, strictly: the hash chain must hold (and pass the
    node's recorded mark, `expect`), and every stored event must be accepted again. A stored
    event dropped here would let the role accept, and receipt, another version of it.
    The role's storage policy then learns what the store holds (`Store.usage`)."""
    now = trio.current_time()
    try:
        if isinstance(role, Witness):
            for key, kept in store.metas(ROSTER_KEYS):
                role.restore_roster(key, kept, now)
        if isinstance(role, Watcher):
            bundle = store.get_meta(GOVERNANCE_KEY)
            if bundle is not None:
                role.restore_governance(bundle, now)
            for held in [*store.evidence(), *store.rulings()]:
                role.restore_held(held.body)
        for page in store.pages(expect=expect):
            role.restore(page.stream, now)
            for prefix, sn, said in page.events:
                if role.validator.record(said) is None:
                    why = f"stored event {said} (sn {sn} of {prefix}) does not verify on replay"
                    raise refused(data_dir, why)
        if isinstance(role, Witness):
            for prefix, sn in store.floors().items():
                role.floors.hold(prefix, sn)
        usage = store.usage()
        role.restore_storage(usage.stored, usage.loose)
    except StoreError as err:
        raise NodeError(str(refused(data_dir, str(err)))) from None
    except ProtocolError as err:
        raise NodeError(str(refused(data_dir, f"a stored message does not read: {err}"))) from None
    except StoreRefused as err:
        raise NodeError(str(err)) from None
    stats = store.stats()
    return stats.events + stats.loose


async def _run(
    config: NodeConfig,
    role: Witness | Watcher,
    store: Store,
    host: P2PHost,
    restored: int,
    announce: Callable[[str], None],
    handle_signals: bool,
    task_status: TaskStatus[P2PHost],
    on_start: Callable[[Runtime], None] | None = None,
    *,
    own_process: bool = False,
    config_file: Path | None = None,
) -> None:
    transport = P2PTransport(host)
    metrics = Metrics()
    metrics.gauge("store_events", lambda: store.stats().events, "events in the store")
    metrics.gauge("store_receipts", lambda: store.stats().receipts, "receipts in the store")
    metrics.gauge("peers", lambda: len(host.connected_peers()), "connected peers")
    _storage_metrics(metrics, role)
    _table_metrics(metrics, role)
    _crypto_metrics(metrics, role)
    runtime = Runtime(
        role,
        transport,
        store,
        request_timeout=config.request_timeout,
        rate_limit=RateLimit(config.peer_rate, 2 * config.peer_rate),
        metrics=metrics,
    )
    try:
        _write_node_file(config.data_dir, host)
    except OSError as err:
        raise NodeError(f"cannot write {config.data_dir / NODE_FILE}: {err.strerror}") from None
    if isinstance(role, Watcher):
        held = len(role.holdings.evidence)
        metrics.gauge("evidence", lambda: len(role.holdings.evidence), "evidence held")
        metrics.gauge("rulings", lambda: len(role.holdings.rulings), "rulings held")
        log.info(
            "watcher %s: %d stored events and %d pieces of evidence restored; governance %s",
            role.prefix,
            restored,
            held,
            f"epoch {role.governance.epoch}" if role.governance.roster else "not known yet",
        )
    else:
        log.info("witness %s: %d stored events restored", role.prefix, restored)
    storage = role.storage
    log.info(
        "store: %d bytes stored and %d held in memory, of %d (store_quota); %d unwitnessed"
        " identifiers hold %d of %d bytes (unwitnessed_quota)",
        storage.stored,
        storage.held,
        storage.quota,
        len(storage.loose),
        storage.loose_held,
        storage.loose_quota,
    )
    http = _listen_http(config, runtime, role, host) if config.http_listen is not None else None
    announce(f"{config.role} {host.introduction}")
    introductions = [bootstrap_introduction(b) for b in config.bootstrap]
    for intro in introductions:  # so that requests in the start effects can reach them
        with contextlib.suppress(ValueError):  # host.connect reports what does not read
            transport.learn(intro)
    async with trio.open_nursery() as nursery:
        if own_process:
            nursery.start_soon(heap.trim_forever)
        memory_report = memreport.wanted()
        if memory_report is not None:
            nursery.start_soon(
                memreport.report_memory,
                memory_report,
                {"role": role, "runtime": runtime, "host": host},
            )
        # Subscribed before connecting: peers learn every topic from our first hello.
        await nursery.start(runtime.run)
        own = OwnRecord(runtime, role.locations, role.signer, lambda: _announced(host))
        nursery.start_soon(own.run, host.wait_for_peers)  # where we listen, signed, gossiped
        view = NodeView(role, host, store)  # status, /health, peer and minute logs
        await nursery.start(view.run, config.data_dir)
        if introductions:
            report = await host.connect(introductions)
            _log_bootstrap(report)
        if config.http_port is not None:
            port = await nursery.start(
                functools.partial(serve_metrics, health=view.health_check),
                metrics,
                config.http_port,
                config.http_host,
            )
            log.info("metrics and health on http://%s:%d/", config.http_host, port)
        if http is not None:
            url = await nursery.start(serve_listening, http)
            log.info("HTTP API on %s/ (described at %s/openapi.json)", url, url)
        if on_start is not None:
            on_start(runtime)
        task_status.started(host)
        if handle_signals:
            await answer_signals(
                nursery.cancel_scope, config_file, config.log_level, config.data_dir
            )


def _listen_http(
    config: NodeConfig, runtime: Runtime, role: Witness | Watcher, p2p: P2PHost
) -> Listening:
    """The HTTP API (`node/http/`) bound to `http_listen`, within the node's request limits;
    bound before any task starts, so a port in use is one line, not an exception group."""
    assert config.http_listen is not None
    host, port = configvalues.http_listen_parts(config.http_listen)
    limits = HttpLimits(max_body=config.max_message, read_timeout=config.request_timeout)
    bound: list[int] = []  # the port, once bound (0 asks for any): the OOBIs name it
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
    app = node_app(
        runtime,
        role.prefix,
        watcher=isinstance(role, Watcher),
        limits=limits,
        timeout=config.request_timeout,
        oobi=(role.signer, lambda: http_url(host, bound[0], _announced(p2p)), started),
    )
    try:
        listening = listen_http(app, host, port)
        bound.append(listening.sockets.insecure_sockets[0].getsockname()[1])
        return listening
    except OSError as err:
        raise NodeError(
            f"cannot listen on --http-listen {config.http_listen}: {err.strerror or err}"
        ) from None


def _log_bootstrap(report: ConnectReport) -> None:
    for intro, why in report.failed.items():
        log.warning("bootstrap peer %s unreachable (%s); trying again until it answers", intro, why)
    if report.connected:
        log.info("connected to %d peers: %s", len(report.connected), ", ".join(report.connected))


def _crypto_metrics(metrics: Metrics, role: Witness | Watcher) -> None:
    """Signatures checked and made: with each node's events handled, the protocol's crypto
    floor (`benchmarks/network.py` reports it per event)."""
    metrics.counted(
        "signatures_checked",
        lambda: role.signatures_checked,
        "KERI signatures verified (answers from the node's memory of checked ones not counted)",
    )
    metrics.counted(
        "gossip_signatures_checked",
        lambda: SIGNATURE_CHECKS.count,
        "gossip message signatures verified (libp2p's own, one per message first received)",
    )
    if isinstance(role, Witness):
        metrics.counted("receipts_signed", lambda: role.signed, "receipts this witness signed")


def _storage_metrics(metrics: Metrics, role: Witness | Watcher) -> None:
    """The storage policy's budgets (`roles/storage.py`) and the validator's escrows."""
    storage = role.storage
    metrics.gauge(
        "store_message_bytes",
        lambda: storage.stored,
        "bytes of event messages and receipts stored (store_quota bounds them)",
    )
    metrics.gauge(
        "kept_bytes",
        lambda: storage.held,
        "bytes the KELs kept hold in memory, estimated (store_quota bounds them too)",
    )
    metrics.gauge("store_quota_bytes", lambda: storage.quota, "the store_quota setting")
    metrics.gauge(
        "unwitnessed_bytes",
        lambda: storage.loose_held,
        "bytes held in memory (estimated) for identifiers without witnesses",
    )
    metrics.gauge(
        "unwitnessed_quota_bytes", lambda: storage.loose_quota, "the unwitnessed_quota setting"
    )
    metrics.gauge(
        "unwitnessed_identifiers", lambda: len(storage.loose), "identifiers without witnesses held"
    )
    metrics.counted("unwitnessed_evictions", lambda: storage.evictions, "unwitnessed KELs evicted")
    metrics.counted(
        "unwitnessed_evicted_bytes",
        lambda: storage.evicted_bytes,
        "bytes of the store the evicted unwitnessed KELs took",
    )
    metrics.counted(
        "quota_refusals",
        lambda: storage.refusals,
        "new identifiers not kept because the store was at its quota",
    )
    validator = role.validator
    for escrow in validator.escrow_fill():

        def entries(name: str = escrow) -> float:
            return validator.escrow_fill()[name][0]

        def held(name: str = escrow) -> float:
            return validator.escrow_fill()[name][1]

        metrics.gauge("escrow_entries", entries, "entries held in each escrow", escrow=escrow)
        metrics.gauge("escrow_bytes", held, "bytes held in each escrow (estimated)", escrow=escrow)


def _table_metrics(metrics: Metrics, role: Witness | Watcher) -> None:
    """`dkms_table_entries{table="follower.asked"}` and so on: what the role's bounded tables
    hold (the follower's asks and gaps; a witness's log of rivals)."""
    tables: dict[str, Callable[[], dict[str, int]]] = {"follower": role.follower.table_sizes}
    tables["locations"] = role.locations.table_sizes
    if isinstance(role, Witness):
        tables["rivals"] = role.rivals.table_sizes
    else:
        tables["reconcile"] = role.reconciler.table_sizes
    for owner, sizes in tables.items():
        for name in sizes():

            def size(sizes: Callable[[], dict[str, int]] = sizes, name: str = name) -> float:
                return sizes()[name]

            metrics.gauge(
                "table_entries", size, "what each bounded table holds", table=f"{owner}.{name}"
            )


def bootstrap_introduction(text: str) -> str:
    """`PREFIX@MULTIADDR` of a bootstrap entry written either way (`PREFIX@MULTIADDR`, or
    `MULTIADDR/p2p/PEER_ID`); `NodeConfig.check` refused any other before the node started."""
    try:
        return configvalues.bootstrap_introduction(text)
    except BadValue as err:
        raise NodeError(f"bootstrap {text!r}: {err}") from None


def _bootstrap_prefixes(entries: Sequence[str]) -> tuple[str, ...]:
    """The prefixes of the bootstrap nodes (the ones a watcher asks for a roster); entries
    that do not read are left to the bootstrap dialling, which reports them."""
    prefixes = []
    for entry in entries:
        try:
            prefixes.append(parse_introduction(bootstrap_introduction(entry)).prefix)
        except (NodeError, ValueError):
            continue
    return tuple(prefixes)


def _announced(host: P2PHost) -> list[str]:
    return [str(i.addr) for i in host.introductions()]


def _write_node_file(data_dir: Path, host: P2PHost) -> None:
    info = {
        "prefix": host.prefix,
        "peer_id": host.peer_id.to_base58(),
        "introductions": [str(i) for i in host.introductions()],
    }
    atomic_write(data_dir / NODE_FILE, (json.dumps(info, indent=2) + "\n").encode())  # 0600


def node_info(data_dir: Path) -> dict[str, Any]:
    """Prefix, peer id and (where it last listened) introductions of the node in `data_dir`."""
    seed_path = data_dir / SEED_FILE
    if not seed_path.exists():
        raise NodeError(
            f"no node in {data_dir}: start one with `dkms-node run --data-dir {data_dir}`"
        )
    try:
        identity = NodeIdentity(read_private(seed_path, "node seed"))
    except (SecretError, ValueError) as err:
        raise NodeError(str(err)) from None
    info: dict[str, Any] = {
        "prefix": identity.prefix,
        "peer_id": identity.peer_id.to_base58(),
        "introductions": [],
    }
    try:
        last = json.loads((data_dir / NODE_FILE).read_text())
        info["introductions"] = list(last.get("introductions", []))
    except (OSError, ValueError):
        pass  # never ran yet: no addresses to tell
    return info

"""A model of libp2p gossipsub over `Links`, cheap enough for tens of thousands of nodes.

Theory of operation.

    connections  every node keeps `degree` random connections (a random graph, as bootstrap
                 and peer exchange give); a topic with few members (the duplicity topic: only
                 watchers) is found through discovery: a member short of `d_low` connected
                 members connects to random other members
    mesh         per topic, each member keeps up to `d` mesh peers among its connected
                 members (symmetric: a graft is refused by a peer already at `d_high`);
                 a topic's overlay is built the first time it is used
    push         a member receiving a message for the first time validates it (validate
                 before forward: invalid ones are dropped and cost the sender score), hands it
                 to its role, and forwards it to every mesh peer but the sender; duplicates
                 are counted and dropped by the seen cache
    heartbeat    every `heartbeat_s`: meshes that lost peers (churn, pruning) are refilled to
                 `d` and trimmed above `d_high`; then lazy gossip: a member missing a message
                 of the window (published one to `history` heartbeats ago) gets an IHAVE from
                 each connected member holding it outside its mesh with probability
                 `d_lazy / (that member's non-mesh peers)`, and fetches it with IWANT (three
                 link delays). Modelled from the receiving side, so a message everyone already
                 has costs nothing; a message is left to mesh push for its first heartbeat
                 (which, unlike libp2p, sends no IHAVE for it to members it is still reaching)
    scoring      each invalid message costs its forwarder `invalid_penalty`; at
                 `graylist_score` the receiver prunes and ignores it
    sybils       members that take part in meshes but forward nothing

Seen caches are one byte per node per message (`Msg.got`), so a message costs N bytes however
many times it arrives; while it spreads (its gossip window) it also has a float per node, the
earliest arrival already scheduled (`Msg.eta`), so a copy that cannot be a first delivery is
counted when sent instead of being scheduled. Per-node counters are flat arrays, meshes are
walked as cached tuples, and deliveries are played by an inlined loop (`Gossip.drive`): the
work per delivery is a few array look-ups (what grows with N is the memory they touch).

Validity of KEL messages depends on the bytes alone and is decided once per message for
everyone (the memoisation the real nodes get from their caches); topics with node-dependent
validation (the duplicity topic) ask each node.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from heapq import heappop, heappush

from .capacity import land
from .engine import SLOTS, Sim
from .links import Links


@dataclass(frozen=True)
class GossipParams:
    d: int = 6
    d_low: int = 4
    d_high: int = 12
    d_lazy: int = 6
    heartbeat_s: float = 1.0
    history: int = 3  # heartbeats a message stays in the gossip window
    degree: int = 16  # random connections each node opens
    invalid_penalty: float = 10.0
    graylist_score: float = -100.0
    control_bytes: int = 64  # size of an IHAVE / IWANT / GRAFT

    def check(self) -> GossipParams:
        if not 0 < self.d_low <= self.d <= self.d_high:
            raise ValueError("need 0 < d_low <= d <= d_high")
        if self.heartbeat_s <= 0 or self.history < 1 or self.degree < 1:
            raise ValueError("heartbeat_s > 0, history >= 1 and degree >= 1 are needed")
        return self


class Msg:
    """One gossip message: its payload, and who has seen it (a byte per node)."""

    __slots__ = (
        "eta",
        "got",
        "id",
        "inc",
        "missing",
        "net",
        "origin",
        "payload",
        "reached",
        "sent",
        "size",
        "topic",
        "valid",
    )

    def __init__(
        self, ident: int, topic: str, payload: bytes, origin: int, sent: float, nodes: int
    ) -> None:
        self.id = ident
        self.topic = topic
        self.payload = payload
        self.size = len(payload) + 64
        self.inc = self.size << COUNT_BITS | 1  # one copy received, packed (`Gossip.recv`)
        self.origin = origin
        self.sent = sent
        self.got = bytearray(nodes)
        # Per node: the earliest arrival scheduled, or HELD once it holds the message (so one
        # look-up says whether a copy can be a first delivery).
        self.eta: array[float] | None = _NEVER * nodes
        self.reached = 0  # valid first deliveries (the origin included)
        self.valid: bool | None = None
        self.missing: list[int] | None = None  # members still without it (lazy gossip)
        self.net: Topic | None = None  # the overlay it travels on


_NEVER = array("d", [math.inf])
HELD = -math.inf


def _eta(got: bytearray) -> array[float]:
    """A released `Msg.eta` made again: nothing on its way, HELD where the message is."""
    return array("d", map((math.inf, HELD).__getitem__, got))


def _hold(msg: Msg, node: int) -> None:
    msg.got[node] = 1
    if msg.eta is not None:
        msg.eta[node] = HELD


COUNT_BITS = 32  # `Gossip.recv[node]`: bytes received << COUNT_BITS | copies received
COUNT_MASK = (1 << COUNT_BITS) - 1
FOLD = 64  # heartbeats between folds of `Gossip.recv`
Validate = Callable[[Msg], bool]  # content-only: decided once per message
NodeCheck = Callable[[int, Msg], bool]  # per node (e.g. a watcher's roster)
Receive = Callable[[int, Msg], None]


class Unpacked:
    """One half of `Gossip.recv` (copies or bytes received), indexed by node."""

    __slots__ = ("folded", "high", "packed")

    def __init__(self, packed: array[int], folded: list[int] | None, high: bool) -> None:
        self.packed = packed
        self.folded = folded
        self.high = high

    def __getitem__(self, node: int) -> int:
        value = self.packed[node] + (self.folded[node] if self.folded is not None else 0)
        return value >> COUNT_BITS if self.high else value & COUNT_MASK

    def __len__(self) -> int:
        return len(self.packed)


@dataclass
class Topic:
    name: str
    nodes: int  # in the whole network (node ids are 0..nodes-1)
    members: set[int] = field(default_factory=set)
    mesh: dict[int, set[int]] = field(default_factory=dict)
    built: bool = False
    _ordered: list[int] | None = None
    # Each node's mesh as a tuple in its set's order (what `drive` iterates: a tuple is a
    # third of a set's memory and walks in order), indexed by node (a list: a dict of a
    # million entries cost a cache miss per look-up); None until made and whenever the
    # node's mesh changes.
    fwd: list[tuple[int, ...] | None] = field(init=False)

    def __post_init__(self) -> None:
        self.fwd = [None] * self.nodes

    def changed(self, *nodes: int) -> None:
        for node in nodes:
            self.fwd[node] = None

    def ordered(self) -> list[int]:
        """The members in order (kept until the next one joins: members never leave)."""
        if self._ordered is None:
            self._ordered = sorted(self.members)
        return self._ordered


class Gossip:
    """Every node's gossipsub state, and the message flow between them."""

    def __init__(
        self,
        sim: Sim,
        links: Links,
        params: GossipParams,
        nodes: int,
        *,
        validate: Validate,
        receive: Receive,
    ) -> None:
        self.sim = sim
        self.links = links
        self.p = params
        self.n = nodes
        self.validate = validate
        self.receive = receive
        self.node_check: dict[str, NodeCheck] = {}  # topic -> per-node validation
        # Topics that share one overlay (every node joins every KEL shard: one mesh for all
        # of them is statistically the same and costs a shard count less memory).
        self.overlay: Callable[[str], str] = lambda topic: topic
        self.conn: list[set[int]] = [set() for _ in range(nodes)]
        self.topics: dict[str, Topic] = {}
        self.silent: set[int] = set()  # sybils: never forward
        self.only: dict[int, set[int]] = {}  # eclipsed nodes: the only peers they may have
        self.score: dict[tuple[int, int], float] = {}
        self.graylisted: set[tuple[int, int]] = set()  # (node, peer it ignores)
        self.window: list[tuple[int, Msg]] = []  # (heartbeat, message) for lazy gossip
        self._by_payload: dict[tuple[str, bytes], Msg] = {}  # the window's messages by content
        self.dirty: set[tuple[str, int]] = set()
        self.beat = 0
        self.next_id = 0
        # statistics
        self.deliveries = 0
        self.duplicates = 0
        self.invalid = 0
        self.control = 0
        # Per node: bytes received << COUNT_BITS | copies received, one machine word each
        # (updated for every copy: contiguous, no int object per node); folded into `folded`
        # (Python ints) every FOLD heartbeats, so no word overflows however long the run.
        self.recv = array("Q", bytes(8 * nodes))
        self.folded: list[int] | None = None
        self.listening: bytearray | None = None  # nodes `receive` is called for (None: all)
        sim.driver = self.drive

    # ---------------------------------------------------------------- set-up

    def connect_randomly(self, members: list[int]) -> None:
        rng = self.sim.rng
        count = len(members)
        if count < 2:
            return
        for node in members:
            for _ in range(min(self.p.degree // 2 or 1, count - 1)):
                peer = members[rng.randrange(count)]
                if peer != node:
                    self.conn[node].add(peer)
                    self.conn[peer].add(node)

    def subscribe(self, node: int, topic: str) -> None:
        topic = self.overlay(topic)
        t = self.topics.get(topic)
        if t is None:
            t = self.topics[topic] = Topic(topic, self.n)
        if node in t.members:
            return
        t.members.add(node)
        t._ordered = None
        if t.built:
            self._join(t, node)

    def _build(self, t: Topic) -> None:
        """Build a topic's overlay on first use: discovery, then meshes."""
        t.built = True
        for node in t.ordered():
            self._join(t, node)

    def _join(self, t: Topic, node: int) -> None:
        p, rng = self.p, self.sim.rng
        members = t.members
        known = [q for q in self.conn[node] if q in members and q != node]
        if len(known) < p.d_low and len(members) > 1 and node not in self.only:
            pool = t.ordered()
            for _ in range(4 * p.d):
                if len(known) >= p.d:
                    break
                q = pool[rng.randrange(len(pool))]
                if q != node and q not in self.conn[node] and q not in self.only:
                    self.conn[node].add(q)
                    self.conn[q].add(node)
                    known.append(q)
        mesh = t.mesh.setdefault(node, set())
        known.sort()
        rng.shuffle(known)
        for q in known:
            if len(mesh) >= p.d:
                break
            self._graft(t, node, q)

    def _graft(self, t: Topic, a: int, b: int) -> bool:
        if (a, b) in self.graylisted or (b, a) in self.graylisted:
            return False
        if b in self.links.down:
            return False
        other = t.mesh.setdefault(b, set())
        if len(other) >= self.p.d_high:
            return False
        t.mesh.setdefault(a, set()).add(b)
        other.add(a)
        t.changed(a, b)
        self.control += 1
        return True

    # ---------------------------------------------------------------- messages

    def publish(self, node: int, topic: str, payload: bytes) -> Msg:
        net = self.overlay(topic)
        t = self.topics.get(net)
        if t is None:
            t = self.topics[net] = Topic(net, self.n)
        if not t.built:
            self._build(t)
        msg = self._by_payload.get((topic, payload))
        if msg is not None:  # ids are content hashes (as ours): the same bytes, one message
            if msg.got[node]:
                return msg  # the seen cache drops it
            _hold(msg, node)
            msg.reached += 1
            self._forward(node, msg, t.mesh.get(node) or set(), -1)
            return msg
        msg = Msg(self.next_id, topic, payload, node, self.sim.now, self.n)
        msg.net = t
        self.next_id += 1
        self._by_payload[(topic, payload)] = msg
        _hold(msg, node)
        if self.validate(msg) if msg.valid is None else msg.valid:
            msg.valid = True
        msg.reached = 1
        self.window.append((self.beat, msg))
        peers = t.mesh.get(node)
        if not peers:  # not a member: fanout to up to d connected members
            peers = {q for q in self.conn[node] if q in t.members}
            if len(peers) > self.p.d:
                peers = set(self.sim.rng.sample(sorted(peers), self.p.d))
        self._forward(node, msg, peers, -1)
        return msg

    def _forward(self, node: int, msg: Msg, peers: Collection[int], skip: int) -> None:
        """Send `msg` to `peers` but `skip`. A copy to a peer that already holds it can only
        be a duplicate when it lands, so it is counted now rather than scheduled, without a
        latency drawn for it (with a lossy or bandwidth-limited link it still goes through the
        link model). `drive`
        inlines the plain case (no loss, regions, bandwidth, partitions, nodes down or
        graylisting) for deliveries; this is the same code for publications and the rest."""
        sim, links = self.sim, self.links
        now, size, got = sim.now, msg.size, msg.got
        dup = 0
        recv, inc = self.recv, msg.inc
        push, seq = sim.push, sim.seq
        if links.plain():
            # Only the earliest copy to a node can be its first delivery: a later one (it
            # holds the message already, or an earlier copy is on its way) is counted now.
            table, bits, rand = links.table, links.bits, sim.rng.getrandbits
            eta = msg.eta
            if eta is None:  # released when the message left the gossip window
                eta = msg.eta = _eta(got)
            ignored = self.graylisted
            for q in peers:
                if q == skip:
                    continue
                if ignored and (q, node) in ignored:
                    continue  # q ignores everything from us: this copy can never count
                first = eta[q]
                if first == HELD:  # it holds the message: no latency to draw
                    dup += 1
                    recv[q] += inc
                    continue
                when = now + table[rand(bits)]
                if when >= first:  # an earlier copy is on its way
                    dup += 1
                    recv[q] += inc
                    continue
                eta[q] = when
                push((when, next(seq), msg, q, node))
        else:
            cpu = links.cpu  # with capacity every copy lands first, then queues for a CPU
            exact = links.model.loss or links.model.bandwidth_kbps or cpu is not None
            for q in peers:
                if q == skip:
                    continue
                if got[q] and not exact and q not in links.down:
                    dup += 1
                    recv[q] += inc
                    continue
                delay = links.delay(node, q, size, now)
                if delay is None:
                    continue
                if cpu is None:
                    push((now + delay, next(seq), msg, q, node))
                else:
                    push((now + delay, next(seq), land, (self, msg, q, node)))
        self.deliveries += dup
        self.duplicates += dup

    def drive(self, until: float, progress: Callable[[float], None] | None, every: float) -> None:
        """`Sim.run` with deliveries `(when, seq, msg, node, sender)` played inline: a first
        delivery is validated, handed to the node's role (`listening`: only nodes with one)
        and forwarded to its mesh peers, with the plain case of `_forward` inlined too. This
        loop is most of a large simulation's time; every other entry is called as usual."""
        sim, links = self.sim, self.links
        model = links.model
        table, bits, rand = links.table, links.bits, sim.rng.getrandbits
        plain = bool(bits) and not (
            model.loss or model.bandwidth_kbps or links.regional or links.cpu is not None
        )
        seq, later, keys, advance = sim.seq, sim.later, sim.keys, sim.advance
        recv = self.recv
        graylisted, silent, down = self.graylisted, self.silent, links.down
        node_check, listening = self.node_check, self.listening
        receive, validate = self.receive, self.validate
        mark = sim.now + every
        steps = deliveries = duplicates = 0
        heap, cur = sim.heap, sim.cur
        # Every entry of the current bucket is due by its end (bucket bounds are exact:
        # SLOTS is a power of two), so `until` is checked per entry only in its last bucket.
        inside = (cur + 1) / SLOTS <= until
        while True:
            if not heap:
                if not advance(until):
                    break
                heap, cur = sim.heap, sim.cur
                inside = (cur + 1) / SLOTS <= until
                continue
            if not inside and heap[0][0] > until:
                break
            entry = heappop(heap)
            steps += 1
            if len(entry) == 4:
                sim.now = entry[0]
                entry[2](*entry[3])
                now = sim.now  # progress below
            else:
                now, _, msg, node, frm = entry
                sim.now = now
                deliveries += 1
                recv[node] += msg.inc
                got = msg.got
                if got[node]:
                    duplicates += 1
                elif (down and node in down) or (graylisted and (node, frm) in graylisted):
                    # Dropped: if it was the earliest copy on its way, later copies may be
                    # first deliveries again (those sent meanwhile were counted as
                    # duplicates; lazy gossip repairs what that loses).
                    eta = msg.eta
                    if eta is not None and eta[node] == now:
                        eta[node] = math.inf
                else:
                    valid = msg.valid
                    if valid is None:
                        valid = msg.valid = validate(msg)
                    if valid and node_check:
                        check = node_check.get(msg.topic)
                        if check is not None:
                            valid = check(node, msg)
                    if not valid:
                        self.invalid += 1
                        self._penalise(node, frm, msg.topic)
                    else:
                        got[node] = 1
                        eta = msg.eta
                        if eta is not None:
                            eta[node] = HELD
                        msg.reached += 1
                        if listening is None or listening[node]:
                            receive(node, msg)
                        net = msg.net
                        assert net is not None
                        if silent and node in silent:
                            peers = None
                        else:
                            peers = net.fwd[node]
                            if peers is None:
                                mesh = net.mesh.get(node)
                                peers = net.fwd[node] = tuple(mesh) if mesh else ()
                        if not peers:
                            pass
                        elif not plain or down or graylisted or links.side:
                            self._forward(node, msg, peers, frm)
                        else:
                            if eta is None:
                                eta = msg.eta = _eta(got)
                            sent = len(peers) - (frm in peers)
                            inc = msg.inc
                            dup = sent
                            for q in peers:
                                if q == frm:
                                    continue
                                first = eta[q]
                                if first == HELD:  # it holds the message: no draw needed
                                    recv[q] += inc
                                    continue
                                when = now + table[rand(bits)]
                                if when >= first:  # an earlier copy is on its way
                                    recv[q] += inc
                                    continue
                                eta[q] = when
                                dup -= 1
                                new = (when, next(seq), msg, q, node)
                                slot = int(when * SLOTS)
                                if slot <= cur:
                                    heappush(heap, new)
                                else:
                                    bucket = later.get(slot)
                                    if bucket is None:
                                        later[slot] = [new]
                                        heappush(keys, slot)
                                    else:
                                        bucket.append(new)
                            deliveries += dup
                            duplicates += dup
            if progress is not None and now >= mark:
                self.deliveries += deliveries
                self.duplicates += duplicates
                deliveries = duplicates = 0
                progress(now)
                mark = now + every
        sim.now = max(sim.now, until)
        sim.steps += steps
        self.deliveries += deliveries
        self.duplicates += duplicates

    @property
    def recv_msgs(self) -> Unpacked:
        """Copies each node received."""
        return Unpacked(self.recv, self.folded, False)

    @property
    def recv_bytes(self) -> Unpacked:
        """Bytes each node received."""
        return Unpacked(self.recv, self.folded, True)

    def received(self, node: int, size: int) -> None:
        """Count a copy of `size` bytes `node` received outside the gossip (a request)."""
        self.recv[node] += size << COUNT_BITS | 1

    def fold(self) -> None:
        """Move the packed counters into Python ints (in place: `drive` holds `recv`)."""
        folded = self.folded
        if folded is None:
            folded = self.folded = [0] * self.n
        recv = self.recv
        for node, value in enumerate(recv):
            if value:
                folded[node] += value
        recv[:] = array("Q", bytes(8 * self.n))

    def _penalise(self, node: int, frm: int, topic: str) -> None:
        key = (node, frm)
        score = self.score.get(key, 0.0) - self.p.invalid_penalty
        self.score[key] = score
        if score <= self.p.graylist_score and key not in self.graylisted:
            self.graylisted.add(key)
            for t in self.topics.values():
                mesh = t.mesh.get(node)
                if mesh is not None and frm in mesh:
                    mesh.discard(frm)
                    t.mesh.get(frm, set()).discard(node)
                    t.changed(node, frm)
                    self.dirty.add((t.name, node))

    # ---------------------------------------------------------------- heartbeat

    def start(self) -> None:
        self.sim.after(self.p.heartbeat_s, self._heartbeat)

    def _heartbeat(self) -> None:
        self.beat += 1
        if self.beat % FOLD == 0:
            self.fold()
        self._maintain()
        self._lazy()
        self.sim.after(self.p.heartbeat_s, self._heartbeat)

    def _maintain(self) -> None:
        p = self.p
        for name, node in sorted(self.dirty):
            t = self.topics[name]
            if node in self.links.down or node not in t.members:
                continue
            mesh = t.mesh.setdefault(node, set())
            if len(mesh) < p.d_low:
                candidates = sorted(
                    q
                    for q in self.conn[node]
                    if q in t.members and q not in mesh and q not in self.links.down
                )
                self.sim.rng.shuffle(candidates)
                for q in candidates:
                    if len(mesh) >= p.d:
                        break
                    self._graft(t, node, q)
            while len(mesh) > p.d_high:
                q = max(mesh)
                mesh.discard(q)
                t.mesh.get(q, set()).discard(node)
                t.changed(node, q)
                self.control += 1
        self.dirty.clear()

    def _lazy(self) -> None:
        """IHAVE/IWANT for members still missing a message of the gossip window."""
        p, sim, links, rng = self.p, self.sim, self.links, self.sim.rng
        oldest = self.beat - p.history - 1
        for b, m in self.window:
            if b <= oldest:
                m.eta = None  # 8 bytes a node: only needed while it spreads
        self.window = [(b, m) for b, m in self.window if b > oldest]
        keep = {(m.topic, m.payload) for _, m in self.window}
        self._by_payload = {k: m for k, m in self._by_payload.items() if k in keep}
        down, ignored = links.down, self.graylisted
        for beat, msg in self.window:
            if beat >= self.beat - 1:
                continue  # still being pushed through the mesh: repair what push missed
            t = msg.net
            if t is None or msg.reached >= len(t.members) or not msg.valid:
                continue
            got = msg.got
            if msg.missing is None:
                msg.missing = [n for n in t.ordered() if not got[n]]
            else:
                msg.missing = [n for n in msg.missing if not got[n]]
            for node in msg.missing:
                if node in down:
                    continue
                for q in sorted(self.conn[node]):
                    if not got[q] or q in self.silent or q in down:
                        continue
                    if ignored and (node, q) in ignored:
                        continue  # node ignores q: its IHAVE would go unanswered
                    mesh_q = t.mesh.get(q, ())
                    if node in mesh_q:
                        continue  # a mesh peer pushes; it has (or lost it on the way)
                    others = sum(1 for x in self.conn[q] if x in t.members) - len(mesh_q)
                    if others <= 0 or rng.random() >= p.d_lazy / others:
                        continue
                    self.control += 2  # IHAVE, IWANT
                    there = links.delay(q, node, p.control_bytes, sim.now)
                    back = links.delay(node, q, p.control_bytes, sim.now)
                    again = links.delay(q, node, msg.size, sim.now)
                    if there is None or back is None or again is None:
                        continue
                    sim.push((sim.now + there + back + again, next(sim.seq), msg, node, q))
                    break

    # ---------------------------------------------------------------- churn

    def leave(self, node: int) -> None:
        self.links.down.add(node)
        for t in self.topics.values():
            t.changed(node)
            for q in t.mesh.pop(node, set()):
                peer_mesh = t.mesh.get(q)
                t.changed(q)
                if peer_mesh is not None:
                    peer_mesh.discard(node)
                    self.dirty.add((t.name, q))

    def rejoin(self, node: int) -> None:
        self.links.down.discard(node)
        for t in self.topics.values():
            if node in t.members and t.built:
                self._join(t, node)

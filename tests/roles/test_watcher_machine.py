"""The watcher role as a hypothesis state machine (h2's `test_state_machines.py` style).

Two watchers on the in-memory driver with `hold=True`, both jurors, the first also judge;
only the first is handed the governance roster, the other must get it from its peer. They
hear KEL gossip in any order, duplicated or lost, with timers firing and restarts from their
stores: the KEL of an honest identifier `H`, and pieces of the KEL of a duplicitous one `D`,
whose keys signed two versions of sn 1 and one of whose witnesses (`W2`) receipted both. Each
watcher must:

- never let an identifier's standing go back from duplicitous (not even by restarting);
- never accuse anyone honest: only `D` and `W2` may stand accused, and `H` never does;
- hold only evidence and rulings that verify from their bytes, as everything it published
  on the duplicity topic must;
- let the network go quiet once no new gossip comes (`kit.quiesce`).
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule

from dkms.node.roles.effects import (
    Persist,
    PersistEvidence,
    PersistMeta,
    PersistRuling,
    Surface,
)
from dkms.node.roles.holdings import Conflict, Held, Standing, conflict_of
from dkms.node.roles.inputs import Heard, Request
from dkms.node.roles.topics import DUPLICITY_TOPIC, kel_topic
from dkms.node.roles.watcher import Watcher
from dkms.node.testing.driver import Delivery, Driver
from dkms.node.testing.keys import node_signer, seed
from dkms.protocol.crypto import Signer, next_key_digest
from dkms.protocol.envelope import Signed
from dkms.protocol.events import Event, incept, interact, rotate
from dkms.protocol.evidence import Accusation
from dkms.protocol.ids import NodePrefix

from .kit import (
    MACHINE_SETTINGS,
    NetworkMachine,
    governance,
    proven,
    quiesce,
    receipts,
    signed,
)

WIT = [node_signer(i) for i in range(4)]
WATCHERS = [Signer(seed(30 + i), transferable=False) for i in range(2)]
GOV, BUNDLE = governance(
    watchers=tuple(w.verfer for w in WATCHERS),
    jurors=tuple(w.verfer for w in WATCHERS),
    judges=(WATCHERS[0].verfer,),
)
INDEX = st.integers(min_value=0, max_value=63)
WATCHER = st.sampled_from(range(len(WATCHERS)))


def inception(key: Signer, following: Signer) -> Event:
    return incept(
        [key.verfer],
        next_digests=[next_key_digest(following.verfer)],
        witnesses=[w.verfer for w in WIT],
        toad=3,
    )


def honest() -> tuple[str, list[bytes]]:
    """H: icp, ixn, rot, ixn; each whole, bare, and with its receipts split in two."""
    k1, k2, k3 = Signer(seed(1)), Signer(seed(2)), Signer(seed(3))
    icp = inception(k1, k2)
    ixn = interact(icp.prefix, prior=icp.said, sn=1, anchors=[{"n": 1}])
    rot = rotate(
        icp.prefix,
        [k2.verfer],
        prior=ixn.said,
        sn=2,
        next_digests=[next_key_digest(k3.verfer)],
        toad=3,
        witnesses=[w.verfer for w in WIT],
    )
    last = interact(icp.prefix, prior=rot.said, sn=3, anchors=[{"n": 3}])
    pool = []
    for event, key in ((icp, k1), (ixn, k1), (rot, k2), (last, k2)):
        message = signed(event, [key])
        pool += [message + receipts(event, WIT), message]
        pool += [receipts(event, WIT[:2]), receipts(event, WIT[2:])]
    return icp.prefix, pool


def duplicitous() -> tuple[str, list[bytes]]:
    """D: version a of sn 1 receipted by W0-W2, version b by W2 (duplicity) and W3."""
    k5, k6 = Signer(seed(5)), Signer(seed(6))
    icp = inception(k5, k6)
    a = interact(icp.prefix, prior=icp.said, sn=1, anchors=[{"v": "a"}])
    b = interact(icp.prefix, prior=icp.said, sn=1, anchors=[{"v": "b"}])
    after = interact(icp.prefix, prior=a.said, sn=2, anchors=[])
    return icp.prefix, [
        signed(icp, [k5]) + receipts(icp, WIT),
        signed(a, [k5]) + receipts(a, WIT[:3]),
        signed(b, [k5]) + receipts(b, WIT[3:]),
        receipts(b, WIT[2:3]),
        signed(after, [k5]) + receipts(after, WIT),
    ]


H, HONEST = honest()
D, DUPLICITOUS = duplicitous()
KELS = {"H": (H, HONEST), "D": (D, DUPLICITOUS)}
POOL = [(H, m) for m in HONEST] + [(D, m) for m in DUPLICITOUS]
MAY_BE_ACCUSED = {D, WIT[2].verfer}
PREFIXES = [H, D, *(w.verfer for w in WIT)]


class WatcherMachine(NetworkMachine):
    def __init__(self) -> None:
        super().__init__()
        self.net = Driver(hold=True)
        for signer in WATCHERS:
            self.net.add(signer.verfer, self.fresh(signer))
        request = Request(Surface.GOVERNANCE, NodePrefix(""), BUNDLE)
        self.net.step(WATCHERS[0].verfer, request)
        self.ever: set[tuple[str, str]] = set()  # (watcher, prefix) once duplicitous
        self.checked: dict[bytes, Accusation] = {}

    @staticmethod
    def fresh(signer: Signer) -> Watcher:
        peers = [w.verfer for w in WATCHERS]
        return Watcher(signer, GOV, anomaly_after=5.0, peers=peers)

    def watcher(self, name: str) -> Watcher:
        role = self.net.roles[name]
        assert isinstance(role, Watcher)
        return role

    # ---------------------------------------------------------------- rules

    def hear(self, to: int, prefix: str, payload: bytes, n: int) -> None:
        heard = Heard(kel_topic(prefix), NodePrefix(WIT[n % 4].verfer), payload)
        self.net.pending.append(Delivery(WATCHERS[to].verfer, heard))

    @rule(item=st.sampled_from(range(len(POOL))), to=WATCHER)
    def gossip(self, item: int, to: int) -> None:
        prefix, payload = POOL[item]
        self.hear(to, prefix, payload, item)

    @rule(kel=st.sampled_from(sorted(KELS)), to=st.sets(WATCHER))
    def gossip_kel(self, kel: str, to: set[int]) -> None:
        """Every piece of one KEL, on its way to some watchers (in order, until shuffled)."""
        prefix, pieces = KELS[kel]
        for watcher in sorted(to):
            for n, payload in enumerate(pieces):
                self.hear(watcher, prefix, payload, n)

    @precondition(lambda self: self.net.pending)
    @rule()
    def settle(self) -> None:
        quiesce(self.net)




    @rule(seconds=st.sampled_from([0.25, 1.0, 6.0, 16.0, 61.0]))
    def advance(self, seconds: float) -> None:
        self.net.advance(seconds)

    @rule(watcher=WATCHER)
    def restart(self, watcher: int) -> None:
        """A fresh watcher rebuilt the way the node does: roster, evidence, then KELs."""
        which = WATCHERS[watcher]
        fresh, now = self.fresh(which), self.net.now
        stored: list[Persist] = [e for b in self.net.disk[which.verfer] for e in b]
        for effect in stored:
            if isinstance(effect, PersistMeta):
                fresh.restore_governance(effect.value, now)
        for effect in stored:
            if isinstance(effect, PersistEvidence | PersistRuling):
                fresh.restore_held(effect.envelope)
        fresh.restore(self.net.stored(which.verfer), now)
        self.net.add(which.verfer, fresh, start=True)

    # ---------------------------------------------------------------- invariants

    @invariant()
    def duplicitous_stays_duplicitous(self) -> None:
        for signer in WATCHERS:
            watcher = self.watcher(signer.verfer)
            once = {p for w, p in self.ever if w == signer.verfer}
            for prefix in {*PREFIXES, *watcher.holdings.accused(), *once}:
                standing = watcher.key_state(prefix)["standing"]
                if standing == Standing.DUPLICITOUS:
                    self.ever.add((signer.verfer, prefix))
                else:
                    assert (signer.verfer, prefix) not in self.ever, (
                        f"{prefix[:12]} went back from duplicitous to {standing}"
                    )

    @invariant()
    def nobody_honest_is_accused(self) -> None:
        for signer in WATCHERS:
            watcher = self.watcher(signer.verfer)
            assert watcher.key_state(H)["standing"] != Standing.DUPLICITOUS, "H accused"
            accused = set(watcher.holdings.accused())
            assert accused <= MAY_BE_ACCUSED, f"honest accused: {accused - MAY_BE_ACCUSED}"

    @invariant()
    def held_evidence_verifies(self) -> None:
        for signer in WATCHERS:
            holdings = self.watcher(signer.verfer).holdings
            for table in (holdings.evidence, holdings.rulings):
                for key, held in table.items():
                    self.verifies(key, held)
        for _, publish in self.net.published:
            if publish.topic == DUPLICITY_TOPIC:
                self.accusation(Signed.from_cbor(publish.payload))

    def verifies(self, key: Conflict, held: Held) -> None:
        accusation = self.accusation(held.envelope)
        assert conflict_of(accusation) == key == conflict_of(held.accusation)
        assert accusation[:4] == held.accusation[:4]

    def accusation(self, envelope: Signed) -> Accusation:
        raw = envelope.to_cbor()
        if raw not in self.checked:
            self.checked[raw] = proven(envelope)  # raises if it does not verify
        return self.checked[raw]


TestWatcherMachine = WatcherMachine.TestCase
TestWatcherMachine.settings = MACHINE_SETTINGS

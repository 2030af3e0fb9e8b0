"""Where nodes listen: the newest verified location record of each node prefix, bounded.

Theory of operation. Every node keeps a table of location records (`protocol/location.py`:
a node's prefix, its announced addresses and its own time, signed by its key), hears them on
`/dkms/1/locations`, and answers for them, so that a prefix named in a KEL resolves to where
that node listens. Inputs, as the witness and the watcher hand them over:

    admits(payload)       gossip validation: every record in the payload decodes and verifies,
                          and one at least is newer than the record held for its prefix (so a
                          replayed old record goes no further than its first hop)
    heard(payload)        each verified record newer than the one held replaces it
    own(record)           this node's own record, signed by the I/O side (its wall clock, the
                          addresses its host announces): kept, never evicted, and published
    reply(ask)            `{"t": "loc", "i": PREFIX}`: the record's bytes, or `Code.UNKNOWN`

A node is the only authority on its own record: records of our prefix heard from others (an
old run's, replayed) are not kept, and answers for ourselves are always the newest we signed.

Bounds. Node prefixes are free to make, so a flood of fresh records (each from its own made-up
key, each verifying) must not push out the ones that matter. The table holds at most
`max_entries` records and `max_bytes` of their estimated weight. When a new record does not
fit, the least recently refreshed record goes, except records of *pinned* prefixes, which are
never evicted: our own, the witnesses named by the key state of any KEL the node holds, and,
for a watcher, the nodes its governance roster names and its bootstrap peers. When only pinned
records are left to evict, the new record is not kept. The pinned set is worked out only when
something must be evicted, and then at most once every `PIN_REFRESH` seconds (it walks every
KEL held). Records are kept in memory only: a restarted node hears them again, and its own is
signed afresh.

Pure: no I/O, no clock (`now` is handed in; record times are the signers' and only compared).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Final

from dkms.protocol import crypto
from dkms.protocol.errors import LocalProtocolError, ProtocolError
from dkms.protocol.location import LocationRecord, read_record, split_records
from dkms.protocol.roster import Roster
from dkms.protocol.signing import Verifier
from dkms.protocol.validator import Validator

from .codes import Code
from .effects import Effect, Publish, Reply, Report, Subscribe
from .topics import LOCATIONS_TOPIC

QUERY: Final = "loc"  # the query's "t"
MAX_ENTRIES: Final = 16_384
MAX_BYTES: Final = 8 << 20  # 8 MiB of estimated weight
ENTRY_BYTES: Final = 600  # what a held record weighs beside twice its bytes (objects, strings)
PER_PAYLOAD: Final = 8  # records in one gossip payload, at most
PIN_REFRESH: Final = 30.0  # seconds a computed pinned set is used for


def roster_nodes(roster: Roster | None) -> tuple[str, ...]:
    """Every node a governance roster names (a watcher's records to keep)."""
    if roster is None:
        return ()
    return (*roster.watchers, *roster.jurors, *roster.judges)


def weight(record: LocationRecord) -> int:
    """Estimated memory a held record takes: its bytes, its decoded fields, the objects."""
    return 2 * len(record.raw) + ENTRY_BYTES


class Locations:
    """The location records one node holds, newest per prefix."""

    def __init__(
        self,
        prefix: str,
        validator: Validator,
        *,
        verify: Verifier = crypto.verify,
        pinned: Callable[[], Iterable[str]] = tuple,
        max_entries: int = MAX_ENTRIES,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        """`prefix` is this node's own; `validator` holds the KELs whose witnesses are
        pinned; `pinned` names more prefixes never to evict (a watcher's roster and peers)."""
        self.prefix = prefix
        self._validator = validator
        self._verify = verify
        self._also = pinned
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        # least recently refreshed first
        self._held: OrderedDict[str, LocationRecord] = OrderedDict()
        self.weight = 0
        self.refused = 0  # records not kept: only pinned ones were left to evict
        self.evictions = 0
        self._pins: frozenset[str] = frozenset()
        self._pins_at: float | None = None

    def start(self) -> list[Effect]:
        return [Subscribe(LOCATIONS_TOPIC)]

    def __len__(self) -> int:
        return len(self._held)

    def get(self, prefix: str) -> LocationRecord | None:
        return self._held.get(prefix)

    # ---------------------------------------------------------------- inputs

    def admits(self, payload: bytes) -> bool:
        """Gossip validation: the bytes decode into records that all verify, one at least
        newer than held. A "no" is final (libp2p caches it): a record does not get newer."""
        try:
            records = split_records(payload, PER_PAYLOAD)
            for record in records:
                record.verify(self._verify)
        except ProtocolError:
            return False
        return any(self._admissible(record) for record in records)

    def heard(self, payload: bytes, now: float) -> list[Effect]:
        """Records heard on the gossip: each verified one newer than held is kept."""
        try:
            records = split_records(payload, PER_PAYLOAD)
        except ProtocolError as err:
            return [Report("debug", f"ignored location gossip: {err}")]
        effects: list[Effect] = []
        for record in records:
            try:
                record.verify(self._verify)
            except ProtocolError as err:
                effects.append(Report("debug", f"ignored location record: {err}"))
                continue
            if record.prefix != self.prefix and record.newer_than(self._held.get(record.prefix)):
                self._keep(record, now, effects)
        return effects

    def own(self, raw: bytes, now: float) -> list[Effect]:
        """This node's record, newly signed: held (so we answer for ourselves) and published."""
        record = read_record(raw, self._verify)
        if record.prefix != self.prefix:
            raise LocalProtocolError(f"the record of {record.prefix} is not this node's")
        held = self._held.get(self.prefix)
        if not record.newer_than(held):
            raise LocalProtocolError("our new location record must be newer than the last")
        self._put(record)
        return [
            Publish(LOCATIONS_TOPIC, raw),
            Report("debug", f"location record published: {', '.join(record.addresses)}"),
        ]

    def reply(self, ask: dict[Any, Any]) -> Reply:
        """The answer to `{"t": "loc", "i": PREFIX}` (`ask`, "t" already read)."""
        prefix = ask.get("i")
        if not isinstance(prefix, str) or not prefix:
            return Reply.refuse(Code.BAD_QUERY, "a location query needs the node prefix i")
        record = self._held.get(prefix)
        if record is None:
            return Reply.refuse(Code.UNKNOWN, f"no location record of {prefix[:60]} here")
        return Reply.accept(record.raw)

    def table_sizes(self) -> dict[str, int]:
        return {"records": len(self._held), "bytes": self.weight}

    # ---------------------------------------------------------------- internals

    def _admissible(self, record: LocationRecord) -> bool:
        held = self._held.get(record.prefix)
        if record.prefix == self.prefix:  # the libp2p adapter validates our publishes too
            return held is not None and record.raw == held.raw
        return record.newer_than(held)

    def _keep(self, record: LocationRecord, now: float, effects: list[Effect]) -> None:
        prefix = record.prefix
        old = self._held.pop(prefix, None)
        if old is not None:
            self.weight -= weight(old)
        if not self._room(weight(record), now):
            if old is not None:  # a pinned table too full for the newer record: keep the old
                self._put(old)
            self.refused += 1
            effects.append(Report("debug", f"location record of {prefix} not kept: table full"))
            return
        self._put(record)

    def _put(self, record: LocationRecord) -> None:
        old = self._held.pop(record.prefix, None)
        if old is not None:
            self.weight -= weight(old)
        self._held[record.prefix] = record
        self.weight += weight(record)

    def _room(self, size: int, now: float) -> bool:
        """Evict least recently refreshed unpinned records until `size` more bytes and one
        more entry fit; False if only pinned records were left to evict."""
        held = self._held
        if len(held) < self.max_entries and self.weight + size <= self.max_bytes:
            return True
        pins = self._pinned(now)
        checked = 0  # pinned records met go to the back: each is looked at once per pass
        while held and (len(held) >= self.max_entries or self.weight + size > self.max_bytes):
            if checked == len(held):
                return False
            prefix = next(iter(held))
            if prefix in pins:
                held.move_to_end(prefix)
                checked += 1
                continue
            gone = held.pop(prefix)
            self.weight -= weight(gone)
            self.evictions += 1
        return len(held) < self.max_entries and self.weight + size <= self.max_bytes

    def _pinned(self, now: float) -> frozenset[str]:
        if self._pins_at is None or now - self._pins_at >= PIN_REFRESH:
            validator = self._validator
            named: set[str] = {self.prefix, *self._also()}
            for prefix in validator.prefixes:
                state = validator.state(prefix)
                if state is not None:
                    named.update(state.witnesses)
            self._pins, self._pins_at = frozenset(named), now
        return self._pins

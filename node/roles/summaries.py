"""What a node holds, summed up per shard: the answers to a reconciling watcher's queries.

Theory of operation. Two queries on `Surface.QUERY`, which watchers and witnesses both answer
(`reconcile.py` asks them):

    summary   `{"t": "digest", "k": SHARDS}` -> `{"k": SHARDS, "d": [digest, ...],
              "c": [count, ...]}`: per shard of the prefix space (`topics.shard_of`, as the
              gossip topics cut it) the number of KELs held and the XOR of a 16-byte Blake3
              digest of each one's tip, (prefix, sn, SAID of its last event). About 1.5 KB
    listing   `{"t": "shard", "k": SHARDS, "s": shard, "a": after}` ->
              `{"v": [[prefix, sn, said], ...], "more": bool}`: the tips held in that shard,
              in prefix order after `after`, `LIST_PAGE` at a time

A peer's answers are read within bounds (`read_digest`, `read_listing`: at most
`ANSWER_BYTES`, fixed shapes; None for anything else).

The answering side (`Digests`) keeps each shard's prefixes sorted for the listings (a list
of references to strings it holds anyway). A witness builds its summary from the validator's
KELs (O(KELs held), some 5 us each) at most once every `FRESH` seconds, or `FRESH_PER_KEL`
per KEL held if longer, however often it is asked; a watcher is told of every KEL that
changed and sums only those again (O(1) each, for a digest and a shard kept per KEL held,
some 150 bytes), so its summary is current; it is built whole every `REBUILD` seconds all
the same. Pure: no I/O, no clock (times come in).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Final

import blake3
import cbor2

from dkms.protocol.validator import Validator

from .codes import Code
from .effects import Reply
from .topics import shard_of

DIGEST: Final = "digest"  # the summary query's "t"
SHARD: Final = "shard"  # the listing query's "t"
QUERIES: Final = frozenset({DIGEST, SHARD})
SHARDS: Final = 64
DIGEST_BYTES: Final = 16
FRESH: Final = 5.0  # seconds an untracked summary is reused before it is built again
FRESH_PER_KEL: Final = 0.0005  # ... or this per KEL held, if longer (100,000 KELs: 50 s)
REBUILD: Final = 300.0  # seconds between whole builds of a tracked summary
LIST_PAGE: Final = 256  # tips in one listing (some 25 KB of CBOR)
MAX_PREFIX: Final = 128  # characters of a prefix or SAID taken from a peer
MAX_SN: Final = (1 << 64) - 1
ANSWER_BYTES: Final = 64 << 10  # a peer's summary or listing larger than this is not read

Tip = tuple[str, int, str]  # (prefix, sn, SAID of the last event)


def tip_digest(prefix: str, sn: int, said: str) -> int:
    """The 16-byte digest of one KEL's tip, as an integer (shard digests XOR them)."""
    data = f"{prefix}\x00{sn}\x00{said}".encode("utf-8", "surrogatepass")
    return int.from_bytes(blake3.blake3(data).digest(DIGEST_BYTES), "big")


@dataclass(frozen=True, slots=True)
class Summary:
    """What a node held when it last summed up: per shard, the XOR of its tips' digests, the
    number of KELs, and their prefixes in order."""

    at: float
    digests: tuple[bytes, ...]
    counts: tuple[int, ...]
    members: tuple[list[str], ...]

    def of(self, shard: int) -> tuple[bytes, int]:
        return self.digests[shard], self.counts[shard]


class Digests:
    """The answering side: summaries and listings of the KELs a validator holds.

    Untracked (a witness), the summary is built again from every KEL held once it is older
    than `fresh` seconds. Tracked (a watcher, which calls `changed` for every KEL whose tip
    moved or that it forgot), only the KELs changed since are summed again, so the summary
    is always current; it is still built whole every `REBUILD` seconds, so that a change it
    was not told of cannot stay wrong for long."""

    def __init__(
        self, validator: Validator, *, fresh: float = FRESH, tracked: bool = False
    ) -> None:
        self.validator = validator
        self.fresh = fresh
        self.tracked = tracked
        self._summary: Summary | None = None
        self._whole = -REBUILD  # when last built whole
        self._memo: dict[str, tuple[int, int]] = {}  # prefix -> (its tip digest, its shard)
        self._digests = [0] * SHARDS
        self._counts = [0] * SHARDS
        self._members: tuple[list[str], ...] = tuple([] for _ in range(SHARDS))
        self._dirty: set[str] = set()
        self.built = 0  # summaries built whole (for tests)

    def changed(self, prefix: str) -> None:
        """The KEL of `prefix` changed (its tip moved, or it was forgotten)."""
        if self.tracked:
            self._dirty.add(prefix)
            self._summary = None

    def summary(self, now: float) -> Summary:
        """The summary as of now (tracked) or of at most `fresh` seconds ago."""
        held = self._summary
        if self.tracked:
            if self._whole <= now < self._whole + REBUILD:
                if held is not None:
                    return held
                self._apply()
            else:
                self._build(now)
        elif held is not None and held.at <= now < held.at + self._fresh(held):
            return held
        else:
            self._build(now)
        self._summary = Summary(
            now,
            tuple(d.to_bytes(DIGEST_BYTES, "big") for d in self._digests),
            tuple(self._counts),
            self._members,
        )
        return self._summary

    def _fresh(self, held: Summary) -> float:
        """How long an untracked summary is reused: a whole build costs some 5 us per KEL
        (100,000 KELs: 0.5 s), so at most about 1% of a core however often it is asked."""
        return max(self.fresh, FRESH_PER_KEL * sum(held.counts))

    def _build(self, now: float) -> None:
        self._memo.clear()
        self._dirty.clear()
        self._digests = [0] * SHARDS
        self._counts = [0] * SHARDS
        self._members = tuple([] for _ in range(SHARDS))
        for prefix in self.validator.prefixes:
            self._add(prefix)
        for listed in self._members:
            listed.sort()
        self._whole = now
        self.built += 1

    def _apply(self) -> None:
        """Sum the KELs changed since again: out with what we summed, in with what is held."""
        for prefix in self._dirty:
            old = self._memo.pop(prefix, None)
            if old is not None:
                digest, shard = old
                self._digests[shard] ^= digest
                self._counts[shard] -= 1
                listed = self._members[shard]
                at = bisect.bisect_left(listed, prefix)
                if at < len(listed) and listed[at] == prefix:
                    del listed[at]
            self._add(prefix, sort=True)
        self._dirty.clear()

    def _add(self, prefix: str, *, sort: bool = False) -> None:
        kel = self.validator.kel(prefix)
        if kel is None:
            return
        shard = shard_of(prefix, SHARDS)
        digest = tip_digest(prefix, kel.sn, kel.last_said)
        if self.tracked:  # else never read: built whole each time
            self._memo[prefix] = (digest, shard)
        self._digests[shard] ^= digest
        self._counts[shard] += 1
        if sort:
            bisect.insort(self._members[shard], prefix)
        else:
            self._members[shard].append(prefix)

    def answer(self, ask: dict[Any, Any], now: float) -> Reply:
        """The reply to a `digest` or `shard` query (`ask` is its CBOR map)."""
        if ask.get("k", SHARDS) != SHARDS or isinstance(ask.get("k"), bool):
            return Reply.refuse(Code.BAD_QUERY, f"k must be {SHARDS}, the number of shards")
        if ask.get("t") == DIGEST:
            summary = self.summary(now)
            body = {"k": SHARDS, "d": list(summary.digests), "c": list(summary.counts)}
            return Reply.accept(cbor2.dumps(body))
        shard, after = ask.get("s"), ask.get("a", "")
        if not (isinstance(shard, int) and not isinstance(shard, bool) and 0 <= shard < SHARDS):
            return Reply.refuse(Code.BAD_QUERY, f"s must be a shard, 0 to {SHARDS - 1}")
        if not isinstance(after, str) or len(after) > MAX_PREFIX:
            return Reply.refuse(Code.BAD_QUERY, "a must be the last prefix received")
        members = self.summary(now).members[shard]
        at = bisect.bisect_right(members, after)
        tips: list[list[object]] = []
        while at < len(members) and len(tips) < LIST_PAGE:
            kel = self.validator.kel(members[at])
            if kel is not None:  # else forgotten since the summary
                tips.append([kel.prefix, kel.sn, kel.last_said])
            at += 1
        return Reply.accept(cbor2.dumps({"v": tips, "more": at < len(members)}))


def digest_ask() -> bytes:
    return cbor2.dumps({"t": DIGEST, "k": SHARDS})


def shard_ask(shard: int, after: str) -> bytes:
    return cbor2.dumps({"t": SHARD, "k": SHARDS, "s": shard, "a": after})


def _loads(payload: bytes) -> dict[Any, Any] | None:
    if len(payload) > ANSWER_BYTES:
        return None
    try:
        value = cbor2.loads(payload)
    except Exception:  # cbor2 raises many types on hostile input
        return None
    return value if isinstance(value, dict) else None


def _count(value: object, top: int = MAX_SN) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= top


def read_digest(payload: bytes) -> list[tuple[bytes, int]] | None:
    """A peer's summary, (digest, count) per shard, or None if it is not one."""
    body = _loads(payload)
    if body is None or body.get("k") != SHARDS or isinstance(body.get("k"), bool):
        return None
    digests, counts = body.get("d"), body.get("c")
    if not (isinstance(digests, list) and isinstance(counts, list)):
        return None
    if len(digests) != SHARDS or len(counts) != SHARDS:
        return None
    if not all(isinstance(d, bytes) and len(d) == DIGEST_BYTES for d in digests):
        return None
    if not all(_count(c) for c in counts):
        return None
    return list(zip(digests, counts, strict=True))


def read_listing(payload: bytes, after: str) -> tuple[list[Tip], bool] | None:
    """A peer's listing of one shard: its well-formed tips (others skipped), in strictly
    increasing prefix order after `after`, and whether more follow; None if it is none."""
    body = _loads(payload)
    if body is None:
        return None
    items, more = body.get("v"), body.get("more")
    if not isinstance(items, list) or len(items) > LIST_PAGE or not isinstance(more, bool):
        return None
    tips: list[Tip] = []
    last = after
    for item in items:
        if not (isinstance(item, list) and len(item) == 3):
            continue
        prefix, sn, said = item
        if not (isinstance(prefix, str) and 0 < len(prefix) <= MAX_PREFIX and prefix > last):
            continue
        if not (_count(sn) and isinstance(said, str) and 0 < len(said) <= MAX_PREFIX):
            continue
        tips.append((prefix, sn, said))
        last = prefix
    return tips, more

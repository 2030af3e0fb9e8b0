"""The governance rosters a witness keeps and answers for, whatever governance they belong to.

Theory of operation. A watcher is configured with one governance identifier and learns its
roster from a bundle (`governance.py`: the governance KEL and a roster signed by its current
keys) handed to it, heard on `/dkms/1/governance`, or asked of its peers, since gossip carries
no history. Its peers are often witnesses (the nodes it bootstraps from), so a witness keeps
the newest roster of every governance it hears or is handed and answers `{"t": "roster",
"g": GOVERNANCE}` with its bundle. A witness serves no governance itself and trusts none: a
bundle is kept only when it verifies on its own (its KEL validates and its keys signed the
roster), and a newer epoch replaces an older one.

Governance identifiers are free to make, so the table is bounded: `MAX_GOVERNANCES` entries and
`MAX_BYTES` of bundles, the least recently offered or asked for evicted first (a watcher asking
keeps its governance fresh). Each change leaves as a `PersistMeta` under `roster:<prefix>`
(an empty value deletes an evicted one), so a restarted witness still answers. Pure: no I/O.
"""

from __future__ import annotations

import contextlib
from typing import Any, Final

from dkms.protocol.errors import ProtocolError
from dkms.protocol.signing import Verifier

from .codes import Code
from .effects import Effect, PersistMeta, Reply, Report
from .governance import Governance, read_bundle

KEY_PREFIX: Final = "roster:"  # meta key of a kept bundle: roster:<governance prefix>
MAX_GOVERNANCES: Final = 64
MAX_BYTES: Final = 8 << 20


class Rosters:
    """The newest verified roster bundle of each governance heard of (bounded)."""

    def __init__(
        self,
        verify: Verifier,
        *,
        max_governances: int = MAX_GOVERNANCES,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self._verify = verify
        self._max = max_governances
        self._max_bytes = max_bytes
        self._kept: dict[str, Governance] = {}  # least recently used first
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._kept)

    def admits(self, data: bytes) -> bool:
        """Gossip validation: a bundle that verifies on its own, of any governance."""
        try:
            self._governance_of(data).check(data)
        except ProtocolError:
            return False
        return True

    def offer(self, data: bytes, now: float, effects: list[Effect]) -> tuple[bool, str]:
        """Keep `data` if it verifies and is newer than what we hold of its governance;
        (kept, why). Raises `ProtocolError` if it does not verify."""
        governance = self._governance_of(data)
        governance.check(data)  # before it touches a kept validator
        old = governance.bundle
        changed, why = governance.offer(data, now)
        self._touch(governance)
        if not changed:
            return False, why
        self.bytes += len(data) - (len(old) if old else 0)
        effects.append(PersistMeta(KEY_PREFIX + governance.prefix, data))
        effects.append(Report("info", f"{governance.prefix}: {why}"))
        self._evict(effects)
        return True, why

    def restore(self, key: str, data: bytes, now: float) -> None:
        """Reinstate a bundle stored under `key` (verified again; a bad one is skipped)."""
        if not key.startswith(KEY_PREFIX):
            return
        with contextlib.suppress(ProtocolError):
            self.offer(data, now, [])

    def answer(self, ask: dict[Any, Any]) -> Reply:
        """`{"t": "roster", "g": GOVERNANCE}`: the bundle kept for it. Without `g`, the only
        one kept (an older watcher asks that way)."""
        prefix = ask.get("g")
        if prefix is None and len(self._kept) == 1:
            prefix = next(iter(self._kept))
        if not isinstance(prefix, str):
            return Reply.refuse(Code.BAD_QUERY, "name the governance: g must be its prefix")
        governance = self._kept.get(prefix)
        if governance is None or governance.bundle is None:
            return Reply.refuse(Code.NO_ROSTER, f"no roster of governance {prefix} held here")
        self._touch(governance)
        return Reply.accept(governance.bundle)

    def _governance_of(self, data: bytes) -> Governance:
        _, signed = read_bundle(data)
        prefix = signed.roster.governance
        return self._kept.get(prefix) or Governance(prefix, self._verify)

    def _touch(self, governance: Governance) -> None:
        self._kept.pop(governance.prefix, None)
        if governance.bundle is not None:
            self._kept[governance.prefix] = governance

    def _evict(self, effects: list[Effect]) -> None:
        while len(self._kept) > self._max or (self.bytes > self._max_bytes and len(self._kept) > 1):
            prefix, governance = next(iter(self._kept.items()))
            del self._kept[prefix]
            self.bytes -= len(governance.bundle or b"")
            effects.append(PersistMeta(KEY_PREFIX + prefix, b""))
            effects.append(Report("info", f"roster of governance {prefix} evicted (table full)"))

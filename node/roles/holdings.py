"""The evidence and rulings one node holds, and the standing they give each identifier.

Theory of operation. Every piece of evidence or ruling is kept as the signed envelope it came
in (or that this node made), with the accusation it proves, after verification. One conflict
(the same accused, prefix, sn and pair of versions) is held once, whoever found it first, so
two jurors reporting the same equivocation do not double the evidence; rulings likewise, once
per conflict. `standing(prefix)` is "duplicitous" when anything held accuses `prefix`, from the
lowest sequence number accused. Pure: the watcher role feeds it and persists what it adds.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from dkms.protocol.envelope import Signed
from dkms.protocol.evidence import Accusation

Conflict = tuple[str, str, str, int, frozenset[str]]  # kind, accused, prefix, sn, SAIDs


class Standing(StrEnum):
    """What a watcher answers about an identifier (or a witness)."""

    OK = "ok"  # known, and nothing held against it
    DUPLICITOUS = "duplicitous"  # verified evidence accuses it; this never goes back
    UNKNOWN = "unknown"  # nothing known of it


def conflict_of(accusation: Accusation) -> Conflict:
    a = accusation
    return (a.kind, a.accused, a.prefix, a.sn, frozenset(a.saids))


@dataclass(frozen=True, slots=True)
class Held:
    """One verified piece of evidence (or ruling), as signed by `envelope.signer`."""

    accusation: Accusation
    envelope: Signed
    evidence: bytes  # the evidence CBOR (for a ruling, the evidence it rests on)

    def summary(self) -> dict[str, Any]:
        a = self.accusation
        return {
            "kind": a.kind,
            "accused": a.accused,
            "i": a.prefix,
            "s": a.sn,
            "events": list(a.saids),
            "signer": self.envelope.signer,
        }


class Holdings:
    """Evidence and rulings by conflict, and who stands accused from which sn."""

    def __init__(self) -> None:
        self.evidence: dict[Conflict, Held] = {}
        self.rulings: dict[Conflict, Held] = {}
        self.published: set[Conflict] = set()  # evidence this node made and gossiped
        self._accused: dict[str, int] = {}

    def knows(self, accusation: Accusation) -> bool:
        return conflict_of(accusation) in self.evidence

    def ruled(self, accusation: Accusation) -> bool:
        return conflict_of(accusation) in self.rulings

    def add_evidence(self, held: Held) -> bool:
        """Keep `held` unless its conflict is held already; True if it was new."""
        return self._add(self.evidence, held)

    def add_ruling(self, held: Held) -> bool:
        """Keep a ruling unless one on its conflict is held already; True if it was new."""
        return self._add(self.rulings, held)

    def _add(self, table: dict[Conflict, Held], held: Held) -> bool:
        key = conflict_of(held.accusation)
        if key in table:
            return False
        table[key] = held
        self._accuse(held.accusation)
        return True

    def standing(self, prefix: str, known: bool) -> tuple[Standing, int | None]:
        """The standing of `prefix`, and the first sn it is duplicitous from (or None)."""
        if prefix in self._accused:
            return Standing.DUPLICITOUS, self._accused[prefix]
        return (Standing.OK if known else Standing.UNKNOWN), None

    def about(self, prefix: str | None) -> tuple[list[Held], list[Held]]:
        """Evidence and rulings that accuse `prefix` or concern its KEL (all when None)."""

        def wanted(h: Held) -> bool:
            return prefix is None or prefix in (h.accusation.accused, h.accusation.prefix)

        return (
            [h for h in self.evidence.values() if wanted(h)],
            [h for h in self.rulings.values() if wanted(h)],
        )

    def accused(self) -> dict[str, int]:
        return dict(self._accused)

    def _accuse(self, accusation: Accusation) -> None:
        sn = self._accused.get(accusation.accused)
        if sn is None or accusation.sn < sn:
            self._accused[accusation.accused] = accusation.sn

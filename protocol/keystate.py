"""Key state: what an identifier's establishment events have made true, and its snapshot.

`Authority` is the part of key state that only establishment events change: current signing
keys and threshold, next-key commitments, witnesses and witness threshold. Interaction events
leave it untouched, so the validator keeps one `Authority` per establishment event and shares it.
`KeyState` is the frozen snapshot handed to callers (and printed by `dkms kel verify`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import cesr
from .errors import ParseError
from .events import Event, Ilk
from .thresholds import Threshold, ThresholdValue, parse_hex, parse_threshold


@dataclass(frozen=True, slots=True)
class Authority:
    """Keys, commitments and witnesses established at sequence number `sn`."""

    sn: int
    said: str
    keys: tuple[str, ...]
    raw_keys: tuple[bytes, ...]
    kt: Threshold
    next_digests: tuple[str, ...]
    nt: Threshold
    witnesses: tuple[str, ...]
    toad: int

    @property
    def transferable(self) -> bool:
        return bool(self.next_digests)

    def witness_key(self, index: int) -> bytes | None:
        """Raw key of the witness at `index`, or None when out of range or not a key."""
        if index >= len(self.witnesses):
            return None
        try:
            return cesr.decode_key(self.witnesses[index])
        except ParseError:
            return None


def authority_of(event: Event, witnesses: tuple[str, ...]) -> Authority:
    """The authority an establishment event sets up (fields already checked by the parser)."""
    ked = event.ked
    return Authority(
        sn=event.sn,
        said=event.said,
        keys=tuple(ked["k"]),
        raw_keys=tuple(cesr.decode_key(k) for k in ked["k"]),
        kt=parse_threshold(ked["kt"], "signing threshold kt"),
        next_digests=tuple(ked["n"]),
        nt=parse_threshold(ked["nt"], "next threshold nt"),
        witnesses=witnesses,
        toad=parse_hex(ked["bt"], "witness threshold bt"),
    )


@dataclass(frozen=True, slots=True)
class KeyState:
    """An identifier's key state after its latest accepted event."""

    prefix: str
    sn: int
    said: str
    ilk: Ilk
    authority: Authority
    traits: tuple[str, ...]
    delegator: str

    @property
    def keys(self) -> tuple[str, ...]:
        return self.authority.keys

    @property
    def witnesses(self) -> tuple[str, ...]:
        return self.authority.witnesses

    @property
    def toad(self) -> int:
        return self.authority.toad

    @property
    def kt(self) -> ThresholdValue:
        return self.authority.kt.value

    @property
    def nt(self) -> ThresholdValue:
        return self.authority.nt.value

    def to_json(self) -> dict[str, Any]:
        """keripy's key-state fields (`sn d k n kt nt b bt c di et ee`) as plain JSON."""
        auth = self.authority
        return {
            "sn": self.sn,
            "d": self.said,
            "k": list(auth.keys),
            "n": list(auth.next_digests),
            "kt": auth.kt.value,
            "nt": auth.nt.value,
            "b": list(auth.witnesses),
            "bt": auth.toad,
            "c": list(self.traits),
            "di": self.delegator,
            "et": self.ilk.value,
            "ee": {"s": auth.sn, "d": auth.said},
        }

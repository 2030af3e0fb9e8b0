"""Receipt floors: where a witness rebuilt from its co-witnesses signs nothing new.

A witness that lost its store and was rebuilt from its co-witnesses (`dkms-node recover`)
cannot know which versions it had receipted: the peers may hold another version than the
one it signed, or not hold what it signed at all. So for each identifier the recovery
records a floor, the highest sn its peers reported, and at or below it the witness signs no
new receipt: it hands out only receipts of its own that the peers held (and so that it had
signed before), and refuses everything else as a conflict (resubmitting cannot help). Above
the floor it witnesses as usual. Floors only ever rise.

Pure: no I/O.
"""

from __future__ import annotations


class Floors:
    """prefix -> the sn at or below which no new receipt is signed."""

    def __init__(self, floors: dict[str, int] | None = None) -> None:
        self._floors: dict[str, int] = {}
        for prefix, sn in (floors or {}).items():
            self.hold(prefix, sn)

    def hold(self, prefix: str, sn: int) -> None:
        """Raise the floor of `prefix` to `sn` (a lower one is ignored)."""
        if sn > self._floors.get(prefix, -1):
            self._floors[prefix] = sn

    def allows(self, prefix: str, sn: int) -> bool:
        """May a new receipt be signed for the event of `prefix` at `sn`?"""
        floor = self._floors.get(prefix)
        return floor is None or sn > floor

    def refusal(self, prefix: str, sn: int) -> str:
        """Why a receipt at `sn` is refused (for the reply)."""
        return (
            f"no new receipt: this witness was rebuilt from its co-witnesses and signs"
            f" none at or below sn {self._floors.get(prefix, -1):x} of {prefix}"
            f" (asked for sn {sn:x})"
        )

    def __len__(self) -> int:
        return len(self._floors)

    def __contains__(self, prefix: object) -> bool:
        return prefix in self._floors

"""Signing thresholds: numeric (`"2"`) and weighted (fraction lists, or lists of such lists).

A weighted threshold is a list of clauses; each clause is a list of fractional weights, one per
key, numbered across clauses in order. It is satisfied when, in every clause, the weights of the
keys that signed add up to at least 1. A flat fraction list is one clause.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

from .errors import EventError, LocalProtocolError

_HEX: Final = re.compile(r"(?:0|[1-9a-f][0-9a-f]{0,31})")
# At most 9 digits a side: real weights are small fractions, and this keeps Fraction cheap.
_WEIGHT: Final = re.compile(r"(?:0|[1-9][0-9]{0,8})(?:/[1-9][0-9]{0,8})?")

ThresholdValue = str | list[str] | list[list[str]]
"""The form a threshold takes inside an event: hex string, fraction list, list of lists."""


def parse_hex(text: object, what: str) -> int:
    """A KERI hex number: lowercase, no leading zeros (the forms keripy writes)."""
    if not isinstance(text, str) or not _HEX.fullmatch(text):
        raise EventError(f"{what} must be lowercase hex without leading zeros, got {text!r}")
    return int(text, 16)


@dataclass(frozen=True, slots=True)
class Threshold:
    """A parsed threshold; `clauses` is None for a numeric one."""

    value: ThresholdValue
    number: int
    clauses: tuple[tuple[Fraction, ...], ...] | None

    @property
    def size(self) -> int:
        """Number of keys a weighted threshold weighs (0 for numeric)."""
        return sum(len(c) for c in self.clauses) if self.clauses is not None else 0

    @property
    def weighted(self) -> bool:
        return self.clauses is not None

    def satisfied(self, indices: Iterable[int]) -> bool:
        """True when the keys at `indices` (positions in the key list) meet the threshold."""
        if self.clauses is None:
            return len(set(indices)) >= self.number
        signed = set(indices)
        at = 0
        for clause in self.clauses:
            total = Fraction(0)
            for offset, weight in enumerate(clause):
                if at + offset in signed:
                    total += weight
            if total < 1:
                return False
            at += len(clause)
        return True

    def check_size(self, count: int, what: str) -> None:
        """Refuse a threshold that cannot fit a list of `count` keys or digests."""
        if self.clauses is None:
            if self.number > count:
                raise EventError(f"{what} threshold {self.number} exceeds {count} keys")
        elif self.size != count:
            raise EventError(f"{what} weighted threshold has {self.size} weights for {count} keys")


def parse_threshold(value: object, what: str) -> Threshold:
    """Parse an event's `kt`/`nt` field."""
    if isinstance(value, str):
        return Threshold(value, parse_hex(value, what), None)
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            clauses: list[list[str]] = [value]
        elif all(isinstance(v, list) and v for v in value):
            clauses = value
        else:
            raise EventError(f"{what} must be a hex string, a fraction list or a list of lists")
        parsed = tuple(_clause(c, what) for c in clauses)
        return Threshold(value, 0, parsed)
    raise EventError(f"{what} must be a hex string, a fraction list or a list of lists")


def _clause(items: Sequence[object], what: str) -> tuple[Fraction, ...]:
    weights = []
    for item in items:
        if not isinstance(item, str) or not _WEIGHT.fullmatch(item):
            raise EventError(f"{what} weight {item!r} is not a fraction like '1/2'")
        weight = Fraction(item)
        if weight > 1:
            raise EventError(f"{what} weight {item!r} is above 1")
        weights.append(weight)
    if sum(weights) < 1:
        raise EventError(f"{what} clause {items!r} can never be satisfied (weights sum below 1)")
    return tuple(weights)


def threshold_value(threshold: int | ThresholdValue) -> ThresholdValue:
    """The event field form of a threshold given as an int or already in field form."""
    if isinstance(threshold, int):
        if threshold < 0:
            raise LocalProtocolError("a threshold cannot be negative")
        return f"{threshold:x}"
    return threshold


def ample(n: int) -> int:
    """keripy's default witness threshold for `n` witnesses (tolerates f = (n-1)//3 faults)."""
    if n <= 0:
        return 0
    f1 = max(1, (n - 1) // 3)
    f2 = max(1, -(-(n - 1) // 3))
    return min(n, -(-(n + f1 + 1) // 2), -(-(n + f2 + 1) // 2))


def default_threshold(count: int, minimum: int) -> int:
    """keripy's default signing threshold: a simple majority of `count` keys."""
    return max(minimum, -(-count // 2))

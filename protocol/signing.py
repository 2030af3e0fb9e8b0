"""Which attached signatures verify, and whether they meet the thresholds that apply.

Controller signatures are indexed into the signing key list; for rotations each may also carry
an `ondex` into the prior next-key digests, exposing the committed key it reveals. Witness
signatures come either indexed into the witness list (`-B`) or as receipt couples (`-C`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import Enum
from typing import NamedTuple

from .cesr import IndexedSig, new_tuple
from .crypto import next_key_digest
from .events import Event
from .keystate import Authority

Verifier = Callable[[bytes, bytes, bytes], bool]
"""(public key, signature, message) -> bool. Swappable so a simulator can memoise checks."""


class SigVerdict(Enum):
    SATISFIED = "satisfied"
    PARTIAL = "partial"  # some valid signatures, more could still arrive
    NONE_VALID = "none-valid"  # not one signature verifies
    UNSATISFIABLE = "unsatisfiable"  # no set of signatures over these keys can ever suffice


_SATISFIED = SigVerdict.SATISFIED  # module constant: enum lookups are slow on the hot path


class SigCheck(NamedTuple):
    verdict: SigVerdict
    verified: tuple[IndexedSig, ...]
    reason: str = ""


def verify_controller(
    event: Event,
    sigs: Iterable[IndexedSig],
    signing: Authority,
    prior: Authority | None,
    verify: Verifier,
) -> SigCheck:
    """Check controller signatures of `event` against `signing` keys.

    `signing` is the authority whose keys sign the event (the event's own for establishment
    events, the one in force for interactions). `prior` is given for rotations: its next-key
    digests and threshold must be fulfilled by the keys the rotation reveals.
    """
    raw = event.raw
    keys = signing.raw_keys
    count = len(keys)
    verified: dict[int, IndexedSig] = {}
    for sig in sigs:
        index = sig.index
        if index < count and index not in verified and verify(keys[index], sig.raw, raw):
            verified[index] = sig
    good = tuple(verified.values())
    if not good:
        return SigCheck(SigVerdict.NONE_VALID, good, "no attached signature verifies")
    if prior is not None:
        exposed = _exposed(good, signing.keys, prior.next_digests)
        if not prior.nt.satisfied(exposed):
            if not prior.nt.satisfied(_committed(signing.keys, prior.next_digests)):
                return SigCheck(
                    SigVerdict.UNSATISFIABLE,
                    good,
                    "rotation keys do not fulfil the prior next-key commitment",
                )
            return SigCheck(
                SigVerdict.PARTIAL, good, "needs more signatures from pre-committed next keys"
            )
    kt = signing.kt
    if len(good) < kt.number if kt.clauses is None else not kt.satisfied(verified):
        return SigCheck(
            SigVerdict.PARTIAL,
            good,
            f"{len(good)} valid signature(s) do not yet meet threshold {signing.kt.value}",
        )
    return new_tuple(SigCheck, (_SATISFIED, good, ""))  # SigCheck(...), see cesr.new_tuple


def _exposed(
    sigs: tuple[IndexedSig, ...], keys: tuple[str, ...], digests: tuple[str, ...]
) -> list[int]:
    """Prior next-key positions whose committed key a verified signature reveals."""
    return [
        s.ondex
        for s in sigs
        if s.ondex is not None
        and s.ondex < len(digests)
        and next_key_digest(keys[s.index]) == digests[s.ondex]
    ]


def _committed(keys: tuple[str, ...], digests: tuple[str, ...]) -> list[int]:
    revealed = {next_key_digest(k) for k in keys}
    return [i for i, d in enumerate(digests) if d in revealed]


def verify_witnesses(
    raw: bytes,
    authority: Authority,
    wigs: Iterable[IndexedSig],
    couples: Iterable[tuple[str, bytes]],
    verify: Verifier,
) -> dict[str, bytes]:
    """Witness prefix -> signature for every witness signature of `raw` that verifies."""
    good: dict[str, bytes] = {}
    witnesses = authority.witnesses
    for wig in wigs:
        key = authority.witness_key(wig.index)
        prefix = witnesses[wig.index] if key is not None else None
        if (
            prefix is not None
            and key is not None
            and prefix not in good
            and verify(key, wig.raw, raw)
        ):
            good[prefix] = wig.raw
    for prefix, sig in couples:
        if prefix in good or prefix not in witnesses:
            continue
        key = authority.witness_key(witnesses.index(prefix))
        if key is not None and verify(key, sig, raw):
            good[prefix] = sig
    return good

"""Duplicity evidence and rulings on the command line: check them offline and say what they prove.

    dkms evidence verify FILE       FILE (or - for stdin) holds raw evidence CBOR, a signed
                                    envelope (evidence or ruling), or the JSON printed by
                                    `dkms evidence list --json` or `dkms keystate --json`
    dkms evidence list --from ...   asked in netcmd; printed here (`print_held`)

Everything a node sends is checked again before it is explained (`client/evidencejson.py`):
the envelope signature, then the evidence (for a ruling, the evidence it rests on). Whether
the signer is on the governance roster is a separate question (`dkms governance roster show`).
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
from typing import Any, Final

from dkms.node.cli.cesrfile import read_upto
from dkms.node.cli.textout import safe
from dkms.node.client.evidencejson import Piece, check_envelope, dumps, envelopes, held_json
from dkms.node.client.home import CommandError
from dkms.protocol.cbormap import cbor_map
from dkms.protocol.duplicity import EVIDENCE_TYPE as CONTROLLER_TYPE
from dkms.protocol.envelope import ENVELOPE_TYPE
from dkms.protocol.errors import ProtocolError
from dkms.protocol.evidence import Accusation, parse_evidence, verify_evidence
from dkms.protocol.witness_duplicity import EVIDENCE_TYPE as WITNESS_TYPE

MAX_INPUT: Final = 64 << 20  # bytes of FILE read at most


def check_cbor(data: bytes) -> Piece:
    """A signed envelope or bare evidence, told apart by its type tag, verified."""
    tag = cbor_map(data, "input").get("t")
    if tag == ENVELOPE_TYPE:
        return check_envelope(data)
    if tag in (CONTROLLER_TYPE, WITNESS_TYPE):
        return Piece("evidence", None, verify_evidence(parse_evidence(data)))
    raise ProtocolError(
        f"unknown CBOR object type {safe(tag)}: expected evidence or a signed envelope"
    )


# ---------------------------------------------------------------- evidence list


def print_held(node: str, answer: dict[str, Any], *, as_json: bool) -> None:
    """What a watcher holds (`{"watcher", "evidence", "rulings"}`), explained."""
    evidence, rulings = envelopes(answer.get("evidence")), envelopes(answer.get("rulings"))
    if as_json:
        print(dumps(held_json(node, answer)))
        return
    print(
        f"{safe(answer.get('watcher', node))} holds {len(evidence)} piece(s) of evidence and "
        f"{len(rulings)} ruling(s)"
    )
    for what, items in (("evidence", evidence), ("ruling", rulings)):
        for n, envelope in enumerate(items, 1):
            try:
                piece = check_envelope(envelope)
            except ProtocolError as err:
                print(f"{what} {n}: does NOT verify: {safe(str(err))}")
                continue
            print(f"{what} {n}, signed by {safe(piece.signer)}:")
            print(f"  {safe(piece.finding())}")


def print_standing(answer: dict[str, Any]) -> None:
    """The standing part of a watcher's key state answer, in plain words."""
    print(f"  standing: {safe(answer.get('standing'))}")
    if answer.get("duplicitous_from") is not None:
        print(f"  duplicitous from sn {safe(answer['duplicitous_from'])}")
    witnesses = answer.get("duplicitous_witnesses")
    if isinstance(witnesses, list) and witnesses:
        print(f"  duplicitous witnesses: {', '.join(safe(w) for w in witnesses)}")
    held = envelopes(answer.get("evidence")) + envelopes(answer.get("rulings"))
    bad = 0
    for envelope in held:
        try:
            check_envelope(envelope)
        except ProtocolError:
            bad += 1
    counts = (
        f"  evidence: {len(envelopes(answer.get('evidence')))}, "
        f"rulings: {len(envelopes(answer.get('rulings')))}"
    )
    print(counts + (f" ({bad} do NOT verify)" if bad else ""))
    anomalies = answer.get("anomalies")
    anomalies = anomalies if isinstance(anomalies, list) else []
    print(f"  anomalies: {len(anomalies)}")
    for anomaly in anomalies:
        text = anomaly.get("anomaly") if isinstance(anomaly, dict) else anomaly
        sn = anomaly.get("s") if isinstance(anomaly, dict) else None
        print(f"    sn {safe(sn)}: {safe(text)}")


# ---------------------------------------------------------------- evidence verify

Item = tuple[str, bytes | str, dict[str, Any]]  # label, CBOR (or why unreadable), claims


def verify(path: str) -> int:
    """Verify every piece in FILE offline; 0 if all are valid, 1 otherwise."""
    data = _read(path)
    name = "stdin" if path == "-" else path
    if data.lstrip()[:1] == b"{":
        items = _from_json(data, name)
    else:
        try:
            tag = cbor_map(data, "it").get("t")
        except ProtocolError as err:
            raise CommandError(f"{name} is not evidence, an envelope or JSON: {err}") from None
        if tag not in (ENVELOPE_TYPE, CONTROLLER_TYPE, WITNESS_TYPE):
            raise CommandError(
                f"{name} is a CBOR object of type {safe(tag)}, not evidence or an envelope"
            )
        items = [(name, data, {})]
    if not items:
        print(f"{safe(name)} holds no evidence or rulings")
        return 0
    invalid = 0
    for label, cbor, claims in items:
        try:
            if isinstance(cbor, str):
                raise ProtocolError(cbor)
            piece = check_cbor(cbor)
            _as_claimed(piece.accusation, claims)
        except ProtocolError as err:
            invalid += 1
            print(f"{safe(label)}: INVALID: {safe(str(err))}")
            continue
        print(f"{safe(label)}: valid {piece.what}: {safe(piece.words())}")
    if invalid:
        print(f"dkms: {invalid} of {len(items)} do not verify", file=sys.stderr)
        return 1
    return 0


def _as_claimed(accusation: Accusation, claims: dict[str, Any]) -> None:
    """A JSON item's summary must say what its CBOR proves (a summary edited by hand)."""
    a = accusation
    proven: dict[str, Any] = {"kind": a.kind, "accused": a.accused, "i": a.prefix, "s": a.sn}
    for key, value in proven.items():
        if claims.get(key) is not None and claims[key] != value:
            raise ProtocolError(
                f"its summary says {key} {safe(claims[key])}, but its CBOR proves {safe(value)}"
            )


def _read(path: str) -> bytes:
    try:
        data = read_upto(path, MAX_INPUT)
    except OSError as err:
        raise CommandError(f"cannot read {path}: {err.strerror}") from None
    if len(data) > MAX_INPUT:
        raise CommandError(f"{path} is over {MAX_INPUT >> 20} MiB: not evidence")
    return data


def _from_json(data: bytes, name: str) -> list[Item]:
    """The envelopes of `evidence list --json` or `keystate --json` output."""
    try:
        obj = json.loads(data)
    except ValueError as err:  # UnicodeDecodeError is one
        raise CommandError(f"{name} is not JSON: {err}") from None
    if not isinstance(obj, dict) or not ("evidence" in obj or "rulings" in obj):
        raise CommandError(
            f"{name} is not the JSON of `dkms evidence list --json` (no evidence, rulings)"
        )
    found: list[Item] = []
    for key in ("evidence", "rulings"):
        items = obj.get(key) or []
        if not isinstance(items, list):
            raise CommandError(f"{name}: {key} is not a list")
        for n, item in enumerate(items, 1):
            label = f"{key} {n}"
            text = item.get("cbor") if isinstance(item, dict) else None
            if not isinstance(text, str):
                found.append((label, "it has no cbor field (base64)", {}))
                continue
            try:
                found.append((label, base64.b64decode(text, validate=True), item))
            except (binascii.Error, ValueError):
                found.append((label, "its cbor field is not base64", {}))
    return found

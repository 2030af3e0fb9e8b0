"""Evidence and rulings a watcher sends, checked and turned into JSON: what `dkms evidence
list --json` and `dkms keystate --json` print and the HTTP API answers (`node/http/`), each
envelope with its CBOR in base64 so that `dkms evidence verify` can check it again offline.

Everything a node sends is checked here before it is summed up: the envelope's signature,
then the evidence (for a ruling, the evidence it rests on). Whether the signer is on the
governance roster is a separate question.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from dkms.protocol.envelope import Signed
from dkms.protocol.errors import ProtocolError
from dkms.protocol.evidence import Accusation, explain, parse_evidence, verify_evidence
from dkms.protocol.ruling import RULING_TYPE, Ruling


@dataclass(frozen=True, slots=True)
class Piece:
    """One verified piece: evidence or a ruling, who signed it (None: bare evidence)."""

    what: str  # "evidence" or "ruling"
    signer: str | None
    accusation: Accusation

    def finding(self) -> str:
        """What it proves, in plain words."""
        a = self.accusation
        if self.what == "ruling":
            return f"{a.kind} {a.accused} duplicitous from sn {a.sn}, on evidence that {explain(a)}"
        return explain(a)

    def words(self) -> str:
        """What it proves, and who vouches for it."""
        if self.what == "ruling":
            return f"judge {self.signer} ruled {self.finding()}"
        return self.finding() + (f" (signed by {self.signer})" if self.signer else "")


def check_envelope(data: bytes) -> Piece:
    """Verify a signed envelope (evidence or ruling), or raise `ProtocolError` saying why."""
    signed = Signed.from_cbor(data)
    signed.verify()
    if signed.kind == RULING_TYPE:
        return Piece("ruling", signed.signer, Ruling.from_cbor(signed.body).verify())
    return Piece("evidence", signed.signer, verify_evidence(parse_evidence(signed.body)))


def summary(envelope: bytes) -> dict[str, Any]:
    """A held envelope as JSON: what it accuses, its signer, its bytes (base64), verified."""
    item: dict[str, Any] = {
        "kind": None,
        "accused": None,
        "i": None,
        "s": None,
        "events": [],
        "signer": None,
        "cbor": base64.b64encode(envelope).decode(),
        "verified": False,
    }
    try:
        item["signer"] = Signed.from_cbor(envelope).signer
        piece = check_envelope(envelope)
    except ProtocolError as err:
        item["error"] = str(err)
        return item
    a = piece.accusation
    item.update(kind=a.kind, accused=a.accused, i=a.prefix, s=a.sn, events=list(a.saids))
    item["verified"] = True
    return item


def envelopes(value: object) -> list[bytes]:
    """The envelopes of a node's answer (a list of byte strings), skipping anything else."""
    return [e for e in value if isinstance(e, bytes)] if isinstance(value, list) else []


def dumps(value: object) -> str:
    """JSON for anything a node may have put in its CBOR answer (bytes become base64)."""

    def fallback(obj: object) -> object:
        if isinstance(obj, bytes):
            return base64.b64encode(obj).decode()
        return str(obj)

    return json.dumps(value, default=fallback)


def standing_json(answer: dict[str, Any]) -> dict[str, Any]:
    """A watcher's key state answer with its envelopes as JSON summaries."""
    out = dict(answer)
    out.setdefault("duplicitous_from", None)
    out["evidence"] = [summary(e) for e in envelopes(answer.get("evidence"))]
    out["rulings"] = [summary(r) for r in envelopes(answer.get("rulings"))]
    return out


def held_json(node: str, answer: dict[str, Any]) -> dict[str, Any]:
    """A watcher's evidence list (`{"watcher", "evidence", "rulings"}`) with summaries."""
    return {
        "watcher": answer.get("watcher", node),
        "evidence": [summary(e) for e in envelopes(answer.get("evidence"))],
        "rulings": [summary(r) for r in envelopes(answer.get("rulings"))],
    }

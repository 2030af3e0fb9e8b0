"""The OpenAPI paths of keripy's routes on our nodes (`oobis.py`, `kelreads.py`, and on witnesses
`witnessing.py`), merged into `openapi.DOCUMENT`. Their bodies are KERI's, not JSON: CESR
streams (`application/json+cesr`, `application/cesr`) and, for the mailbox, server-sent
events; docs/keripy-http.md says byte by byte what keripy 1.3.6 sends and expects."""

from __future__ import annotations

from typing import Any, Final

_AID: Final = "^[EDB][A-Za-z0-9_-]{43}$"
_ERROR: Final = {"$ref": "#/components/schemas/Error"}
_BINARY: Final = {"type": "string", "format": "binary"}


def _cesr(description: str, media: str = "application/json+cesr") -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": _BINARY}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def _param(name: str, where: str, description: str, *, required: bool = True) -> dict[str, Any]:
    schema = {"type": "string", "pattern": _AID} if name in ("aid", "pre", "eid") else {}
    return {
        "name": name,
        "in": where,
        "required": required,
        "schema": schema or {"type": "string"},
        "description": description,
    }


_BAD: Final = {"400": _error("a malformed request (the line says what)")}
_OOBI_ANSWERS: Final = {
    "200": _cesr(
        "this node's own KEL and its signed /loc/scheme and /end/role/add replies; for"
        " another identifier, its KEL as this witness holds it (-A signatures, -B receipts),"
        " then this node's /loc/scheme. Header KERI-AID names the identifier"
    ),
    "404": _error("unknown, not fully witnessed here, or a role or witness this node is not"),
    **_BAD,
}
_CESR_BODY: Final = {
    "required": True,
    "description": (
        "one KERI message: its JSON body here, its attachments as qb64 text in the"
        " CESR-ATTACHMENT header, CESR-DESTINATION this witness's prefix"
    ),
    "content": {"application/cesr+json": {"schema": _BINARY}},
}
_CESR_HEADERS: Final = [
    {"name": "CESR-ATTACHMENT", "in": "header", "required": True, "schema": {"type": "string"}},
    {"name": "CESR-DESTINATION", "in": "header", "required": False, "schema": {"type": "string"}},
]


def _oobi(*params: dict[str, Any]) -> dict[str, Any]:
    return {
        "get": {
            "summary": "keripy's OOBI: how kli finds this node, or an identifier through it",
            "parameters": list(params),
            "responses": _OOBI_ANSWERS,
        }
    }


_AID_PATH: Final = _param("aid", "path", "an identifier, or this node's own prefix")
_ROLE_PATH: Final = _param("role", "path", "controller (this node) or witness (another aid)")
_EID_PATH: Final = _param("eid", "path", "this node's prefix")

PATHS: Final[dict[str, Any]] = {
    "/oobi": _oobi(),
    "/oobi/{aid}": _oobi(_AID_PATH),
    "/oobi/{aid}/{role}": _oobi(_AID_PATH, _ROLE_PATH),
    "/oobi/{aid}/{role}/{eid}": _oobi(_AID_PATH, _ROLE_PATH, _EID_PATH),
    "/ksn": {
        "get": {
            "summary": "keripy's key state notice: a /ksn/{eid} reply signed by this node",
            "parameters": [_param("pre", "query", "the identifier")],
            "responses": {
                "200": _cesr("the rpy with keripy's key state record", "application/cesr"),
                "404": _error("unknown, or its latest event is not fully witnessed here"),
                **_BAD,
            },
        }
    },
    "/log": {
        "get": {
            "summary": "keripy's KEL read: the events with their attachments",
            "parameters": [
                _param("pre", "query", "the identifier"),
                _param("s", "query", "hex sn that must be held and witnessed", required=False),
                _param("fn", "query", "hex first-seen ordinal to start at", required=False),
            ],
            "responses": {
                "200": _cesr("the KEL from fn", "application/cesr"),
                "404": _error("unknown, or nothing held at s or from fn"),
                **_BAD,
            },
        }
    },
    "/query": {
        "get": {
            "summary": "keripy's KEL query (typ=kel; TELs are not served)",
            "parameters": [
                _param("typ", "query", "kel"),
                _param("pre", "query", "the identifier"),
                _param("sn", "query", "decimal sn to start at", required=False),
            ],
            "responses": {
                "200": _cesr("the KEL from sn"),
                "404": _error("unknown identifier"),
                **_BAD,
            },
        }
    },
}

WITNESS_PATHS: Final[dict[str, Any]] = {
    "/": {
        "post": {
            "summary": "keripy's witness input: an event, a relayed rct, an rpy or a qry",
            "description": (
                "Events are witnessed as over libp2p (204: accepted, held or escrowed; 409"
                " a conflicting version, kept as evidence); rct go to the witness agreement"
                " (200); rpy are read (204); a mailbox qry (r: mbx) is answered as"
                " server-sent events of the receipts asked for."
            ),
            "parameters": _CESR_HEADERS,
            "requestBody": _CESR_BODY,
            "responses": {
                "200": {"description": "a rct taken, or the mailbox's text/event-stream"},
                "204": {"description": "taken"},
                "406": _error("content type is not application/cesr+json"),
                "409": _error("another version of this event is held"),
                "412": _error("no CESR-ATTACHMENT header"),
                **_BAD,
            },
        }
    },
    "/receipts": {
        "post": {
            "summary": "keripy's receipt endpoint: an event, receipted in the answer",
            "parameters": _CESR_HEADERS,
            "requestBody": _CESR_BODY,
            "responses": {
                "200": _cesr("the rct and this witness's -CAB couple"),
                "202": {"description": "escrowed: the receipt comes when it is accepted"},
                **_BAD,
            },
        },
        "get": {
            "summary": "keripy's receipts read: every receipt held of one event",
            "parameters": [
                _param("pre", "query", "the identifier"),
                _param("sn", "query", "decimal sn (or said)", required=False),
                _param("said", "query", "the event's SAID (or sn)", required=False),
            ],
            "responses": {
                "200": _cesr("the rct with -B receipts indexed into the witness list"),
                "404": _error("no such event held"),
                **_BAD,
            },
        },
    },
}

"""The OpenAPI 3 description of the HTTP API, written by hand as data (`GET /openapi.json`).

A test holds it to the routes the apps serve (every route a watcher's or a witness's app
serves described, nothing described that neither serves), so the two cannot drift; a new
surface adds its paths here. keripy's routes are described in `openapi_keri.py`.
"""

from __future__ import annotations

from typing import Any, Final

from .openapi_keri import PATHS as KERI_PATHS
from .openapi_keri import WITNESS_PATHS as KERI_WITNESS_PATHS

_PREFIX_PATTERN: Final = "^[EDB][A-Za-z0-9_-]{43}$"
_ERROR: Final = {"$ref": "#/components/schemas/Error"}
_SUMMARIES: Final = {"type": "array", "items": {"$ref": "#/components/schemas/Summary"}}
_VERDICTS: Final = ["consistent", "behind", "ahead", "duplicitous", "invalid", "error"]


def _answer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _answer(description, _ERROR)


_LIMITS: Final = {
    "400": _error("a malformed request (the line says what)"),
    "408": _error("the body did not arrive within the read timeout"),
    "413": _error("the body is over the node's max_message"),
    "429": _error("this client's rate limit (peer_rate); retry after Retry-After seconds"),
    "500": _error("the node failed on this request (one line; details in its debug log)"),
    "503": _error("too many requests in progress, or the node cannot store; retry later"),
    "504": _error("the node did not answer in time"),
}
_PREFIX_PARAMETER: Final = {
    "name": "prefix",
    "schema": {"type": "string", "pattern": _PREFIX_PATTERN},
    "description": "an identifier prefix, 44 characters of CESR beginning E, D or B",
}

DOCUMENT: Final[dict[str, Any]] = {
    "openapi": "3.0.3",
    "info": {
        "title": "dkms node HTTP API",
        "version": "1",
        "description": (
            "Key state, standing and duplicity evidence from dkms watchers (and key state"
            ' from witnesses), for applications. Errors are JSON: {"error": "one line"}.'
            " Also keripy's routes (OOBIs, /ksn, /log, /query; on witnesses POST / and"
            " /receipts), whose bodies are CESR: see docs/keripy-http.md."
        ),
    },
    "paths": {
        "/keystate/{prefix}": {
            "get": {
                "summary": "Key state of an identifier; on a watcher with its standing",
                "description": (
                    "As `dkms keystate --json` prints a node's answer: the key state (sn, d,"
                    " k, n, b, ...), the latest event's receipts and fully_witnessed; a"
                    " watcher adds standing (ok, duplicitous, unknown), duplicitous_from,"
                    " evidence and rulings (checked, each with its CBOR in base64 for `dkms"
                    " evidence verify`), anomalies and agreement."
                ),
                "parameters": [{**_PREFIX_PARAMETER, "in": "path", "required": True}],
                "responses": {
                    "200": _answer("the key state", {"$ref": "#/components/schemas/KeyState"}),
                    "404": _error("a witness that holds no KEL of this identifier"),
                    **_LIMITS,
                },
            }
        },
        "/evidence": {
            "get": {
                "summary": "Duplicity evidence and rulings a watcher holds",
                "description": "As `dkms evidence list --json` prints it.",
                "parameters": [{**_PREFIX_PARAMETER, "in": "query", "required": False}],
                "responses": {
                    "200": _answer("what the watcher holds", {"$ref": "#/components/schemas/Held"}),
                    "404": _error("this node is a witness: only watchers hold evidence"),
                    **_LIMITS,
                },
            }
        },
        "/check": {
            "post": {
                "summary": "Check a KEL an application was shown against the watcher's copy",
                "description": (
                    "As `dkms kel check FILE --with THIS-WATCHER --json` prints its line."
                    " verdict: consistent, behind, ahead, duplicitous (with evidence that"
                    " verifies), invalid, or error. A fork the watcher did not know becomes"
                    " evidence, which it publishes as a juror."
                ),
                "parameters": [
                    {
                        **_PREFIX_PARAMETER,
                        "in": "query",
                        "required": False,
                        "description": "the identifier to check, when the KEL holds several",
                    }
                ],
                "requestBody": {
                    "required": True,
                    "description": "the KEL shown: events with signatures and receipts (CESR)",
                    "content": {
                        "application/cesr": {"schema": {"type": "string", "format": "binary"}}
                    },
                },
                "responses": {
                    "200": _answer("the watcher's verdict", {"$ref": "#/components/schemas/Check"}),
                    "404": _error("this node is a witness: only watchers check KELs"),
                    **_LIMITS,
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This description",
                "responses": {"200": _answer("OpenAPI 3", {"type": "object"})},
            }
        },
        "/dkms/location": {
            "get": {
                "summary": "This node's signed location record: where it listens for libp2p",
                "description": (
                    "The CBOR record it gossips (its prefix, multiaddrs and time, signed by its"
                    " key), for a client that found the node by its OOBI; checked by the"
                    " client against the prefix, so the HTTP hop is trusted with nothing."
                ),
                "responses": {
                    "200": {
                        "description": "the record",
                        "content": {
                            "application/cbor": {"schema": {"type": "string", "format": "binary"}}
                        },
                    },
                    "503": _error("the node has not signed its record yet; retry"),
                },
            }
        },
        **KERI_PATHS,
        **KERI_WITNESS_PATHS,
    },
    "components": {
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string", "description": "one line"}},
            },
            "Summary": {
                "type": "object",
                "description": "one piece of evidence or a ruling, checked by the node",
                "properties": {
                    "kind": {"type": "string", "nullable": True},
                    "accused": {"type": "string", "nullable": True},
                    "i": {"type": "string", "nullable": True},
                    "s": {"type": "integer", "nullable": True},
                    "events": {"type": "array", "items": {"type": "string"}},
                    "signer": {"type": "string", "nullable": True},
                    "cbor": {"type": "string", "format": "byte"},
                    "verified": {"type": "boolean"},
                    "error": {"type": "string"},
                },
            },
            "KeyState": {
                "type": "object",
                "properties": {
                    "i": {"type": "string"},
                    "sn": {"type": "integer"},
                    "d": {"type": "string"},
                    "k": {"type": "array", "items": {"type": "string"}},
                    "b": {"type": "array", "items": {"type": "string"}},
                    "fully_witnessed": {"type": "boolean"},
                    "standing": {"type": "string", "enum": ["ok", "duplicitous", "unknown"]},
                    "duplicitous_from": {"type": "integer", "nullable": True},
                    "evidence": _SUMMARIES,
                    "rulings": _SUMMARIES,
                    "agreement": {"type": "object"},
                    "watcher": {"type": "string"},
                },
            },
            "Held": {
                "type": "object",
                "properties": {
                    "watcher": {"type": "string"},
                    "evidence": _SUMMARIES,
                    "rulings": _SUMMARIES,
                },
            },
            "Check": {
                "type": "object",
                "properties": {
                    "i": {"type": "string"},
                    "events": {"type": "integer"},
                    "watcher": {"type": "string"},
                    "verdict": {
                        "type": "string",
                        "enum": _VERDICTS,
                    },
                    "reason": {"type": "string"},
                    "sn": {"type": "integer", "nullable": True},
                    "d": {"type": "string", "nullable": True},
                    "matched": {"type": "integer"},
                    "taken": {"type": "integer"},
                    "at": {"type": "integer", "nullable": True},
                    "standing": {"type": "string", "nullable": True},
                    "duplicitous_from": {"type": "integer", "nullable": True},
                    "evidence": _SUMMARIES,
                },
            },
        }
    },
}

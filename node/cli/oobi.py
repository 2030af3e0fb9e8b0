"""`dkms oobi show NAME|PREFIX`: the OOBI URLs others resolve an identifier of this home by.

keripy finds an identifier through its witnesses: `http://WITNESS_HTTP/oobi/AID/witness/W`
answers AID's KEL as witness W holds it (`node/http/oobis.py` serves it on our nodes). One
URL per witness in AID's current key state, from its stored KEL. A witness's HTTP URL is
the one it signed when it was named by its OOBI URL (`client/oobis.py`, kept in the home's
witness-urls.json); a witness named by `PREFIX@MULTIADDR` has told us none, and is said so
on stderr. The command fails (status 1) only when no URL at all can be given.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from dkms.node.cli.textout import safe
from dkms.node.client.home import CommandError, Home, read_kel

UNKNOWN = "HTTP address unknown (name the witness by its OOBI URL)"


def witness_oobi(url: str, aid: str, witness: str) -> str:
    """keripy's OOBI of `aid` through `witness`, reached at `url`."""
    return f"{url.rstrip('/')}/oobi/{aid}/witness/{witness}"


def show(home: Home, name_or_prefix: str, *, as_json: bool) -> int:
    """Print NAME's witness OOBI URLs, one a line (or one JSON object)."""
    name = _name_of(home, name_or_prefix)
    kel = home.require_kel(name)
    validator = read_kel(kel, str(home.kel_path(name)))
    states = [(p, s) for p in validator.prefixes if (s := validator.state(p)) is not None]
    if len(states) != 1:
        raise CommandError(f"{home.kel_path(name)} does not hold exactly one identifier's KEL")
    aid, state = states[0]
    if not state.witnesses:
        raise CommandError(f"{name} has no witnesses, so no OOBI: it is known only here")
    urls = home.urls()
    rows: list[dict[str, Any]] = []
    for witness in state.witnesses:
        url = urls.get(witness)
        row: dict[str, Any] = {"witness": witness, "url": None}
        if url is None:
            row["error"] = UNKNOWN
        else:
            row["url"] = witness_oobi(url, aid, witness)
        rows.append(row)
    if all(r["url"] is None for r in rows):
        raise CommandError(
            f"no OOBI URL for {name}: the HTTP address of none of its {len(rows)} witnesses is"
            " known (name them by their OOBI URLs, http://HOST:PORT/oobi/W/controller, in"
            " `dkms id create --witness` or `dkms id rotate --add-witness`)"
        )
    if as_json:
        print(json.dumps({"name": name, "prefix": aid, "oobis": rows}))
        return 0
    for row in rows:
        if row["url"] is not None:
            print(safe(row["url"]))
        else:
            print(f"dkms: witness {row['witness']}: {UNKNOWN}", file=sys.stderr)
    return 0


def _name_of(home: Home, text: str) -> str:
    """The identifier of this home named `text`, or whose prefix `text` is."""
    if text in home.names():
        return text
    for name in home.names():
        kel = home.kel(name)
        if kel is not None and text in read_kel(kel, str(home.kel_path(name))).prefixes:
            return name
    return home.known(text)  # says why not, in the words `id show` uses

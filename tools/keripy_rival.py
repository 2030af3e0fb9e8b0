"""Sign a rival interaction event with a kli keystore: keripy's own keys equivocating.

Run with keripy's Python (tools/keripy_env.py), on a keystore `kli` made:

    .venv-keripy/bin/python tools/keripy_rival.py --name NAME --base BASE --alias ALIAS \
        --sn SN --prior SAID --data JSON

It opens the keystore as kli does (no passcode), builds an `ixn` at `--sn` whose prior event
is `--prior` and whose anchors are `--data`, signs it with the identifier's current keys
(`Hab.sign`, indexed) and prints one JSON object: `body` (the event's JSON) and `attachments`
(the `-A` group, qb64 text), the two halves keripy's HTTP client posts as a request's body and
its `CESR-ATTACHMENT` header. Nothing is processed into the keystore's own KEL: the rival
leaves kli's view of the identifier as it was, as an equivocating controller would keep it.
"""

from __future__ import annotations

import argparse
import json
import sys

from keri.app.cli.common import existing
from keri.core import eventing


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--base", required=True)
    parser.add_argument("--alias", required=True)
    parser.add_argument("--sn", type=int, required=True)
    parser.add_argument("--prior", required=True, help="SAID of the event at sn - 1")
    parser.add_argument("--data", default="[]", help="anchors, a JSON list")
    args = parser.parse_args(argv)

    hby = existing.setupHby(name=args.name, base=args.base, bran=None)
    try:
        hab = hby.habByName(args.alias)
        if hab is None:
            print(f"keripy_rival: no identifier {args.alias!r} in {args.name}", file=sys.stderr)
            return 1
        serder = eventing.interact(
            pre=hab.pre, dig=args.prior, sn=args.sn, data=json.loads(args.data)
        )
        sigers = hab.sign(ser=serder.raw, indexed=True)
        message = bytes(eventing.messagize(serder, sigers=sigers))
    finally:
        hby.close()
    body, attachments = message[: len(serder.raw)], message[len(serder.raw) :]
    print(json.dumps({"body": body.decode(), "attachments": attachments.decode("ascii")}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
